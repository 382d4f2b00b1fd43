//! Containers in `network: bridge` have a network namespace of their own, whose
//! loopback is not the node's: the agent serves each service address (and DNS, at
//! [`DNS_ADDR`]) inside each such namespace too, with listening sockets bound there on a
//! short-lived thread that entered it. The container driver registers namespaces here
//! ([`attach`], [`detach`]); the node's proxy and DNS follow the set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::sync::watch;

/// Where a bridge container's resolver is, inside its namespace.
pub const DNS_ADDR: &str = "127.0.0.53:53";

struct Registry {
    /// Each namespace with the ports its container listens on itself (never taken by
    /// a service address there: a container binding `0.0.0.0:5432` would find the port
    /// in use by a listener on `127.77.x.y:5432`).
    set: Mutex<BTreeMap<PathBuf, BTreeSet<u16>>>,
    changed: watch::Sender<u64>,
    serving: AtomicBool,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        set: Mutex::default(),
        changed: watch::channel(0).0,
        serving: AtomicBool::new(false),
    })
}

/// A container's namespace is up: serve it, leaving alone the ports its container
/// listens on (`own`): a service address there with such a port is not served in it.
pub fn attach(path: &Path, own: BTreeSet<u16>) {
    let r = registry();
    let changed = crate::lock(&r.set).insert(path.to_path_buf(), own.clone()) != Some(own);
    if changed {
        r.changed.send_modify(|n| *n += 1);
    }
}

/// A container's namespace is going away.
pub fn detach(path: &Path) {
    let r = registry();
    if crate::lock(&r.set).remove(path).is_some() {
        r.changed.send_modify(|n| *n += 1);
    }
}

/// Whether this process serves names inside containers' namespaces (a mesh runs):
/// only then does a bridge container get [`DNS_ADDR`] as its resolver.
pub fn serving() -> bool {
    registry().serving.load(Ordering::Relaxed)
}

pub(crate) fn set_serving() {
    registry().serving.store(true, Ordering::Relaxed);
}

/// The namespaces served now.
pub(crate) fn current() -> BTreeSet<PathBuf> {
    crate::lock(&registry().set).keys().cloned().collect()
}

/// The namespaces served now, each with the ports its container keeps for itself.
pub(crate) fn current_with_ports() -> BTreeMap<PathBuf, BTreeSet<u16>> {
    crate::lock(&registry().set).clone()
}

/// Wakes when the set changes.
pub(crate) fn subscribe() -> watch::Receiver<u64> {
    registry().changed.subscribe()
}

/// A TCP listener and (with `udp`) a UDP socket on `addr` inside the namespace at
/// `ns` (`None`: this one), bound on a thread of their own that entered it and ends
/// with the binding; the sockets stay in that namespace.
pub(crate) fn bind(
    ns: Option<&Path>,
    addr: SocketAddr,
    udp: bool,
) -> std::io::Result<(std::net::TcpListener, Option<std::net::UdpSocket>)> {
    // Bound and made non-blocking (tokio takes them) wherever it runs.
    let sockets =
        move || -> std::io::Result<(std::net::TcpListener, Option<std::net::UdpSocket>)> {
            let t = std::net::TcpListener::bind(addr)?;
            let u = if udp {
                Some(std::net::UdpSocket::bind(addr)?)
            } else {
                None
            };
            t.set_nonblocking(true)?;
            if let Some(u) = &u {
                u.set_nonblocking(true)?;
            }
            Ok((t, u))
        };
    let Some(ns) = ns else {
        return sockets();
    };
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns)?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        sockets()
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}
