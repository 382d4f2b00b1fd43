//! TCP routes of the ingress (`expose_tcp:`): a listener on the ingress's address at
//! each route's node port, every connection forwarded to a healthy endpoint, with a
//! PROXY protocol v2 header first when the route asks (the client's address for the
//! service, as `X-Forwarded-For` is for HTTP).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::Mesh;

/// The PROXY protocol v2 signature.
const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// A PROXY protocol v2 header (command PROXY, STREAM over the addresses' family) for a
/// connection from `src` to `dst`; both must be of one family (IPv4-mapped IPv6
/// addresses are sent as IPv4).
pub fn proxy_v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let canon = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    };
    let (src, dst) = (canon(src), canon(dst));
    let mut h = SIGNATURE.to_vec();
    h.push(0x21); // version 2, PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11); // AF_INET, STREAM
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            h.push(0x21); // AF_INET6, STREAM
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
        }
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// Keeps a listener on `ip` at every TCP route's node port while the catalog has it.
pub async fn run(mesh: Mesh, ip: IpAddr) {
    let mut rx = mesh.inner.catalog.clone();
    let mut listeners: BTreeMap<u16, ((String, String, bool), AbortHandle)> = BTreeMap::new();
    loop {
        let cat = rx.borrow_and_update().clone();
        let mut wanted: BTreeMap<u16, (String, String, bool)> = BTreeMap::new();
        for (name, svc) in &cat.services {
            for (node_port, port, proxy) in &svc.tcp {
                wanted
                    .entry(*node_port)
                    .or_insert_with(|| (name.clone(), port.clone(), *proxy));
            }
        }
        listeners.retain(|p, (route, task)| {
            let keep = wanted.get(p) == Some(route);
            if !keep {
                task.abort();
            }
            keep
        });
        for (node_port, route) in wanted {
            if listeners.contains_key(&node_port) {
                continue;
            }
            let addr = SocketAddr::new(ip, node_port);
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!("ingress: TCP {addr} → {}.{}", route.0, route.1);
                    let (service, port, proxy) = route.clone();
                    let task = motley_rt::spawn(crate::proxy::accept(
                        mesh.clone(),
                        l,
                        service,
                        port,
                        proxy,
                    ));
                    listeners.insert(node_port, (route, task.abort_handle()));
                }
                Err(e) => tracing::warn!("ingress: cannot listen on {addr} for {}: {e}", route.0),
            }
        }
        if rx.changed().await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v2_headers_are_as_the_specification_spells_them() {
        let h = proxy_v2_header(
            "192.0.2.7:51000".parse().expect("addr"),
            "10.0.0.2:5432".parse().expect("addr"),
        );
        let mut want = SIGNATURE.to_vec();
        want.extend([0x21, 0x11, 0x00, 0x0C]);
        want.extend([192, 0, 2, 7, 10, 0, 0, 2]);
        want.extend(51000u16.to_be_bytes());
        want.extend(5432u16.to_be_bytes());
        assert_eq!(h, want);
        assert_eq!(h.len(), 16 + 12);
        // IPv4-mapped addresses (a dual-stack listener) go as IPv4.
        let mapped = proxy_v2_header(
            "[::ffff:192.0.2.7]:51000".parse().expect("addr"),
            "[::ffff:10.0.0.2]:5432".parse().expect("addr"),
        );
        assert_eq!(mapped, h);
        let v6 = proxy_v2_header(
            "[2001:db8::1]:40000".parse().expect("addr"),
            "[2001:db8::2]:443".parse().expect("addr"),
        );
        assert_eq!(&v6[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(v6.len(), 16 + 36);
        assert_eq!(&v6[48..52], &[0x9C, 0x40, 0x01, 0xBB]);
    }
}
