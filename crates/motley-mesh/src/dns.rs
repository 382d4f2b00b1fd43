//! DNS on `--dns-listen` (UDP and TCP): names in the `motley` zone are answered from
//! the catalog, every other query is forwarded unchanged to the node's upstream
//! resolver and its answer relayed unchanged.
//!
//! * `web.motley` A: the service's loopback address, where this node's proxy listens.
//!   AAAA: the same address IPv4-mapped (`::ffff:127.77.x.y`): IPv6 has one loopback
//!   address, not a range, so the proxy has no IPv6 address per service; an IPv6
//!   socket connecting to the mapped address reaches the IPv4 listener, and a client
//!   with IPv6 turned off fails that socket and goes on to the A record.
//! * `web.motley` and `_http._tcp.web.motley` SRV: one record per healthy endpoint,
//!   its host port and target `<allocation>.web.motley`, whose A/AAAA is its node's
//!   address (also in the additional section).
//! * Any other name in the zone: NXDOMAIN.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::{Mesh, MeshError};

/// Time to live of answers from the catalog: short, as endpoints come and go.
pub const TTL: u32 = 5;

/// How long an upstream resolver may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// A bound DNS server.
pub struct Dns {
    mesh: Mesh,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    upstream: Option<SocketAddr>,
}

const BUSY_HINT: &str = " (is systemd-resolved, dnsmasq or Pi-hole on it? Give another address, \
                         e.g. --dns-listen 127.0.0.1:5353, and forward the zone \"motley\" to it: \
                         docs/services.md, \"Names\")";

impl Dns {
    /// Binds UDP and TCP on `addr`.
    pub async fn bind(
        mesh: Mesh,
        addr: SocketAddr,
        upstream: Option<SocketAddr>,
    ) -> Result<Dns, MeshError> {
        let err = |source| MeshError::Listen {
            what: "DNS",
            addr,
            source,
            hint: BUSY_HINT,
        };
        let udp = UdpSocket::bind(addr).await.map_err(err)?;
        let tcp = TcpListener::bind(addr).await.map_err(err)?;
        let upstream = upstream.or_else(|| system_upstream(Some(addr)));
        match upstream {
            Some(u) => tracing::info!("DNS on {addr}, other names asked of {u}"),
            None => tracing::warn!(
                "DNS on {addr}: no upstream resolver (none in /etc/resolv.conf); names outside \"motley\" fail"
            ),
        }
        Ok(Dns {
            mesh,
            udp: Arc::new(udp),
            tcp,
            upstream,
        })
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        let Dns {
            mesh,
            udp,
            tcp,
            upstream,
        } = self;
        // One task for both loops: aborting it (a namespace detached) closes both
        // sockets.
        let tcp_mesh = mesh.clone();
        let tcp_loop = async move {
            loop {
                let Ok((mut conn, _)) = tcp.accept().await else {
                    continue;
                };
                let mesh = tcp_mesh.clone();
                motley_rt::spawn(async move {
                    // Length-prefixed messages until the client closes.
                    while let Ok(len) = conn.read_u16().await {
                        let mut q = vec![0; len as usize];
                        if conn.read_exact(&mut q).await.is_err() {
                            break;
                        }
                        let Some(a) = answer(&mesh, &q, upstream, true).await else {
                            break;
                        };
                        let Ok(n) = u16::try_from(a.len()) else { break };
                        if conn.write_u16(n).await.is_err() || conn.write_all(&a).await.is_err() {
                            break;
                        }
                    }
                });
            }
        };
        let udp_loop = async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let q = buf[..n].to_vec();
                let (mesh, udp) = (mesh.clone(), udp.clone());
                motley_rt::spawn(async move {
                    if let Some(a) = answer(&mesh, &q, upstream, false).await {
                        let _ = udp.send_to(&a, from).await;
                    }
                });
            }
        };
        tokio::join!(tcp_loop, udp_loop);
    }
}

/// The first `nameserver` of `/etc/resolv.conf` that is not `own`.
pub(crate) fn system_upstream(own: Option<SocketAddr>) -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .find(|a| Some(*a) != own)
}

/// DNS inside every bridge container's namespace, at [`crate::netns::DNS_ADDR`], as
/// long as the namespace is attached; other names go to `upstream` (asked from the
/// node's own namespace).
pub async fn run_in_namespaces(mesh: Mesh, upstream: Option<SocketAddr>) {
    let Ok(addr) = crate::netns::DNS_ADDR.parse::<SocketAddr>() else {
        return;
    };
    let mut rx = crate::netns::subscribe();
    let mut served: std::collections::BTreeMap<std::path::PathBuf, tokio::task::AbortHandle> =
        Default::default();
    loop {
        rx.borrow_and_update();
        let now = crate::netns::current();
        served.retain(|p, t| {
            let keep = now.contains(p);
            if !keep {
                t.abort();
            }
            keep
        });
        for ns in now {
            if served.contains_key(&ns) {
                continue;
            }
            let path = ns.clone();
            let bound =
                motley_rt::spawn_blocking(move || crate::netns::bind(Some(&path), addr, true))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
            let sockets = bound.and_then(|(t, u)| {
                let u = u.ok_or_else(|| std::io::Error::other("no UDP socket"))?;
                Ok((TcpListener::from_std(t)?, UdpSocket::from_std(u)?))
            });
            match sockets {
                Ok((tcp, udp)) => {
                    let d = Dns {
                        mesh: mesh.clone(),
                        udp: Arc::new(udp),
                        tcp,
                        upstream,
                    };
                    served.insert(ns, motley_rt::spawn(d.run()).abort_handle());
                }
                Err(e) => tracing::warn!("DNS in {}: {e}", ns.display()),
            }
        }
        if rx.changed().await.is_err() {
            break;
        }
    }
}

/// The answer to query `q` (wire format); `None` when there is nothing to send.
async fn answer(mesh: &Mesh, q: &[u8], upstream: Option<SocketAddr>, tcp: bool) -> Option<Vec<u8>> {
    let Ok(msg) = Message::from_vec(q) else {
        return None; // Not DNS: no answer, as a resolver would.
    };
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let in_zone = msg
        .queries
        .first()
        .is_some_and(|qq| in_zone(&qq.name.to_ascii()));
    if in_zone || msg.metadata.op_code != OpCode::Query {
        return local(mesh, &msg).to_vec().ok();
    }
    let Some(up) = upstream else {
        return Message::error_msg(
            msg.metadata.id,
            msg.metadata.op_code,
            ResponseCode::ServFail,
        )
        .to_vec()
        .ok();
    };
    match forward(q, up, tcp).await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::debug!("DNS: upstream {up}: {e}");
            Message::error_msg(
                msg.metadata.id,
                msg.metadata.op_code,
                ResponseCode::ServFail,
            )
            .to_vec()
            .ok()
        }
    }
}

fn in_zone(name: &str) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    n == motley_core::catalog::ZONE || n.ends_with(".motley")
}

async fn forward(q: &[u8], up: SocketAddr, tcp: bool) -> std::io::Result<Vec<u8>> {
    let timeout =
        |e: tokio::time::error::Elapsed| std::io::Error::new(std::io::ErrorKind::TimedOut, e);
    if tcp {
        let mut s = tokio::time::timeout(UPSTREAM_TIMEOUT, tokio::net::TcpStream::connect(up))
            .await
            .map_err(timeout)??;
        let n = u16::try_from(q.len()).map_err(std::io::Error::other)?;
        s.write_u16(n).await?;
        s.write_all(q).await?;
        let len = tokio::time::timeout(UPSTREAM_TIMEOUT, s.read_u16())
            .await
            .map_err(timeout)??;
        let mut a = vec![0; len as usize];
        tokio::time::timeout(UPSTREAM_TIMEOUT, s.read_exact(&mut a))
            .await
            .map_err(timeout)??;
        return Ok(a);
    }
    let bind: SocketAddr = if up.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(up).await?;
    s.send(q).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, s.recv(&mut buf))
            .await
            .map_err(timeout)??;
        // The answer to this query: same id (a stray datagram is not).
        if n >= 2 && buf[..2] == q[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// An answer from the catalog.
fn local(mesh: &Mesh, q: &Message) -> Message {
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.authoritative = true;
    r.queries = q.queries.clone();
    if q.metadata.op_code != OpCode::Query {
        r.metadata.response_code = ResponseCode::NotImp;
        return r;
    }
    let Some(query) = q.queries.first() else {
        r.metadata.response_code = ResponseCode::FormErr;
        return r;
    };
    let cat = mesh.catalog();
    let asked = query.name.to_ascii();
    let lower = asked.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    let name = query.name.clone();
    // `web.motley`, `web.dev.motley`, `_http._tcp.web.motley`, `<alloc>.web.motley`.
    let Some((service, endpoint, srv_port)) = cat.asked(&labels) else {
        r.metadata.response_code = ResponseCode::NXDomain;
        return r;
    };
    let Some(svc) = service.as_deref().and_then(|s| cat.services.get(s)) else {
        if service.is_some() {
            r.metadata.response_code = ResponseCode::NXDomain;
        }
        return r;
    };
    let service = service.unwrap_or_default();
    let endpoint_name = |alloc: &str| Name::from_ascii(format!("{alloc}.{service}.motley.")).ok();
    let addr_record = |n: Name, ip: IpAddr| match ip {
        IpAddr::V4(v4) => Record::from_rdata(n, TTL, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(n, TTL, RData::AAAA(AAAA(v6))),
    };
    if let Some(alloc) = endpoint {
        let Some(e) = svc
            .endpoints
            .iter()
            .find(|e| e.alloc.eq_ignore_ascii_case(alloc))
        else {
            r.metadata.response_code = ResponseCode::NXDomain;
            return r;
        };
        let family_matches = matches!(
            (query.query_type, e.addr),
            (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_))
        );
        if family_matches {
            r.answers.push(addr_record(name, e.addr));
        }
        return r;
    }
    match query.query_type {
        RecordType::A => r.answers.push(addr_record(name, IpAddr::V4(svc.vip))),
        RecordType::AAAA => r
            .answers
            .push(addr_record(name, IpAddr::V6(svc.vip.to_ipv6_mapped()))),
        RecordType::SRV => {
            let ports: Vec<&str> = match srv_port {
                Some(p) => svc
                    .ports
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(p))
                    .map(|(n, _)| n.as_str())
                    .collect(),
                None => svc.ports.iter().map(|(n, _)| n.as_str()).collect(),
            };
            if srv_port.is_some() && ports.is_empty() {
                r.metadata.response_code = ResponseCode::NXDomain;
                return r;
            }
            for e in &svc.endpoints {
                let Some(target) = endpoint_name(&e.alloc) else {
                    continue;
                };
                for p in &ports {
                    if let Some(port) = e.ports.get(*p) {
                        let srv = SRV::new(u16::from(e.rank), 1, *port, target.clone());
                        r.answers
                            .push(Record::from_rdata(name.clone(), TTL, RData::SRV(srv)));
                    }
                }
                r.additionals.push(addr_record(target, e.addr));
            }
        }
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_is_motley_and_nothing_that_merely_ends_like_it() {
        assert!(in_zone("web.motley."));
        assert!(in_zone("WEB.MOTLEY"));
        assert!(in_zone("motley."));
        assert!(!in_zone("web.notmotley."));
        assert!(!in_zone("example.com."));
    }
}
