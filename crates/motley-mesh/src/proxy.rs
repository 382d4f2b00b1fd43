//! The service proxy: a listener at `vip:service_port` for every service port in the
//! catalog (the loopback's `127.0.0.0/8` needs no address configured), each connection
//! forwarded to the first healthy endpoint that accepts, own node first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::Mesh;

/// Keeps one listener per service port while the catalog has it.
pub async fn run(mesh: Mesh) {
    let mut rx = mesh.inner.catalog.clone();
    let mut spaces = crate::netns::subscribe();
    type Key = (Option<PathBuf>, SocketAddr);
    let mut listeners: BTreeMap<Key, (String, String, AbortHandle)> = BTreeMap::new();
    loop {
        let cat = rx.borrow_and_update().clone();
        spaces.borrow_and_update();
        // The node's own namespace, and every bridge container's (without the ports its
        // container listens on itself).
        let namespaces: Vec<(Option<PathBuf>, std::collections::BTreeSet<u16>)> =
            std::iter::once((None, Default::default()))
                .chain(
                    crate::netns::current_with_ports()
                        .into_iter()
                        .map(|(p, own)| (Some(p), own)),
                )
                .collect();
        let mut wanted: BTreeMap<Key, (String, String)> = BTreeMap::new();
        let mut http: std::collections::BTreeSet<(String, String)> = Default::default();
        for (name, svc) in &cat.services {
            for (port, sp) in &svc.ports {
                if svc.http.contains(port) {
                    http.insert((name.clone(), port.clone()));
                }
                if let Some(sp) = sp {
                    for (ns, own) in &namespaces {
                        if own.contains(sp) {
                            continue;
                        }
                        wanted.insert(
                            (ns.clone(), SocketAddr::new(svc.vip.into(), *sp)),
                            (name.clone(), port.clone()),
                        );
                    }
                }
            }
        }
        listeners.retain(|addr, (s, p, task)| {
            let keep = wanted.get(addr) == Some(&(s.clone(), p.clone()));
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (service, port)) in wanted {
            if listeners.contains_key(&key) {
                continue;
            }
            let (ns, addr) = (key.0.clone(), key.1);
            let bound = {
                let ns = ns.clone();
                motley_rt::spawn_blocking(move || crate::netns::bind(ns.as_deref(), addr, false))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .and_then(|(t, _)| TcpListener::from_std(t))
            };
            let place = ns
                .as_ref()
                .map_or(String::new(), |p| format!(" in {}", p.display()));
            match bound {
                Ok(l) => {
                    tracing::info!("proxy: {service}.motley:{} at {addr}{place}", addr.port());
                    let task = if http.contains(&(service.clone(), port.clone())) {
                        motley_rt::spawn(crate::ingress::serve_fixed(
                            mesh.clone(),
                            l,
                            service.clone(),
                            port.clone(),
                        ))
                    } else {
                        motley_rt::spawn(accept(
                            mesh.clone(),
                            l,
                            service.clone(),
                            port.clone(),
                            false,
                        ))
                    };
                    listeners.insert(key, (service, port, task.abort_handle()));
                }
                Err(e) => {
                    tracing::warn!("proxy: cannot listen on {addr}{place} for {service}: {e}")
                }
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            r = spaces.changed() => if r.is_err() { break },
        }
    }
    for (_, (_, _, t)) in listeners {
        t.abort();
    }
}

/// Forwards every connection `l` accepts to a healthy endpoint of `service`'s `port`;
/// with `proxy_protocol`, a PROXY protocol v2 header with the client's address first
/// (the ingress's TCP routes: `tcp_routes`).
pub(crate) async fn accept(
    mesh: Mesh,
    l: TcpListener,
    service: String,
    port: String,
    proxy_protocol: bool,
) {
    loop {
        let Ok((conn, peer)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (mesh, service, port) = (mesh.clone(), service.clone(), port.clone());
        let header = proxy_protocol.then_some(peer);
        motley_rt::spawn(async move { forward(mesh, conn, &service, &port, header).await });
    }
}

async fn forward(
    mesh: Mesh,
    mut conn: TcpStream,
    service: &str,
    port: &str,
    header_for: Option<SocketAddr>,
) {
    let _ = conn.set_nodelay(true);
    let candidates = mesh.candidates(service, port);
    if candidates.is_empty() {
        tracing::debug!("proxy: {service} has no healthy endpoint");
        return;
    }
    let Some((mut up, label)) = crate::connect(&mesh, &candidates).await else {
        return;
    };
    if let Some(peer) = header_for {
        let local = conn.local_addr().unwrap_or(peer);
        let header = crate::tcp_routes::proxy_v2_header(peer, local);
        if tokio::io::AsyncWriteExt::write_all(&mut up, &header)
            .await
            .is_err()
        {
            mesh.metrics().errors.get_or_create(&label).inc();
            return;
        }
    }
    mesh.metrics().connections.get_or_create(&label).inc();
    let delay = mesh.delay_ms();
    let copied = if delay == 0 {
        tokio::io::copy_bidirectional(&mut conn, &mut up)
            .await
            .map(|_| ())
    } else {
        delayed(conn, up, std::time::Duration::from_millis(u64::from(delay))).await
    };
    if let Err(e) = copied {
        tracing::debug!("proxy: {service} via {}: {e}", label.endpoint);
    }
}

/// Both directions copied with `delay` before each piece is passed on (an
/// experiment's latency, in user space: no `tc netem` needed).
async fn delayed(a: TcpStream, b: TcpStream, delay: std::time::Duration) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn one_way(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        delay: std::time::Duration,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return to.shutdown().await;
            }
            tokio::time::sleep(delay).await;
            to.write_all(&buf[..n]).await?;
        }
    }
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let (x, y) = tokio::join!(one_way(ar, bw, delay), one_way(br, aw, delay));
    x.and(y)
}
