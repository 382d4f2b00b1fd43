//! The agents connected to this server (only the leader holds any) and the log streams
//! open through them: who can be sent what. Registering a connection is
//! `Shared::connect_agent`, which sends the full set under the cache lock.

use motley_rt::HashMap;
use std::collections::BTreeSet;
use std::sync::Mutex;

use motley_core::proto::ServerMsg;
use tokio::sync::mpsc;

use crate::util::lock;

/// Most messages queued for one agent. An agent that falls this far behind (a stalled
/// node, a slow link) is disconnected, and gets its full set again when it reconnects,
/// instead of growing the server's memory without bound.
pub const OUTBOX_LIMIT: usize = 16_384;

/// A message queued for an agent, boxed: a queue allocates its first block of 32 slots
/// when made, for every connected node, and a node's queue is mostly empty (32 × 64
/// bytes of `ServerMsg`, 256 boxed; docs/decisions.md, "A connection's memory").
pub type Queued = Box<ServerMsg>;

/// Where messages to one agent go: a bounded queue, and the signal that it overflowed.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Queued>,
    overflow: std::sync::Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// An outbox over a queue of [`OUTBOX_LIMIT`] messages (the link's writer reads it).
    pub fn new(tx: mpsc::Sender<Queued>) -> Outbox {
        Outbox {
            tx,
            overflow: Default::default(),
        }
    }

    /// Queues `msg`; false when the connection is gone or [`OUTBOX_LIMIT`] messages
    /// behind (then [`Outbox::overflowed`] fires and the session ends).
    pub fn send(&self, msg: ServerMsg) -> bool {
        match self.tx.try_send(Box::new(msg)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Waits until a message did not fit.
    pub async fn overflowed(&self) {
        self.overflow.notified().await
    }

    /// Waits until the connection's writer is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A piece of log data for an HTTP log stream.
pub type LogPiece = Result<String, String>;

/// One agent connection held by this server.
pub struct AgentConn {
    /// Messages to the agent.
    pub tx: Outbox,
    /// Distinguishes a reconnect from the connection it replaces.
    pub conn_id: u64,
    /// The address other nodes reach this one at (what it advertised, else where its
    /// connection comes from).
    pub addr: Option<std::net::IpAddr>,
}

/// Agent connections and log streams.
#[derive(Default)]
pub struct Hub {
    conns: Mutex<HashMap<String, AgentConn>>,
    /// How many are held, read without the lock (every heartbeat reads it to pace).
    held: std::sync::atomic::AtomicUsize,
    /// Counts connections registered and removed.
    changes: std::sync::atomic::AtomicU64,
    /// Open log streams by request id: the node asked, and where its data goes.
    log_streams: Mutex<HashMap<u64, (String, mpsc::Sender<LogPiece>)>>,
}

impl Hub {
    /// Holds `conn` as `node`'s connection (replacing an older one); how many are held.
    pub fn insert(&self, node: &str, conn: AgentConn) -> usize {
        let mut conns = lock(&self.conns);
        conns.insert(node.to_string(), conn);
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.held
            .store(conns.len(), std::sync::atomic::Ordering::Relaxed);
        conns.len()
    }

    /// How many times a connection was registered or removed: equal counts, the same
    /// connections (read before what depends on them).
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many agent connections are held.
    pub fn count(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets `node`'s connection `conn_id`, unless a newer one replaced it; how many
    /// are held.
    pub fn remove(&self, node: &str, conn_id: u64) -> usize {
        let mut conns = lock(&self.conns);
        if conns.get(node).is_some_and(|c| c.conn_id == conn_id) {
            conns.remove(node);
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.held
            .store(conns.len(), std::sync::atomic::Ordering::Relaxed);
        conns.len()
    }

    /// The address of every node connected here that has one.
    pub fn addresses(&self) -> std::collections::BTreeMap<String, std::net::IpAddr> {
        lock(&self.conns)
            .iter()
            .filter_map(|(n, c)| Some((n.clone(), c.addr?)))
            .collect()
    }

    /// The nodes whose agents are connected here.
    pub fn connected(&self) -> BTreeSet<String> {
        lock(&self.conns).keys().cloned().collect()
    }

    /// Whether each of `names` is connected here, in their order (no names copied).
    pub fn connected_among(&self, names: &[String]) -> Vec<bool> {
        let conns = lock(&self.conns);
        names.iter().map(|n| conns.contains_key(n)).collect()
    }

    /// Sends a message to a node's agent, if connected here.
    pub fn send_to(&self, node: &str, msg: ServerMsg) -> bool {
        lock(&self.conns).get(node).is_some_and(|c| c.tx.send(msg))
    }

    /// Sends each node in `out` the message `make` builds for it, in order; `make` runs
    /// only for nodes connected here.
    pub fn send_each<T>(&self, out: Vec<(String, T)>, mut make: impl FnMut(T) -> ServerMsg) {
        let conns = lock(&self.conns);
        for (node, item) in out {
            if let Some(conn) = conns.get(&node) {
                conn.tx.send(make(item));
            }
        }
    }

    /// Sends every connected agent `msg`.
    pub fn broadcast(&self, msg: &ServerMsg) {
        for conn in lock(&self.conns).values() {
            conn.tx.send(msg.clone());
        }
    }

    /// Opens a log stream asked of `node`: what that node's agent sends for it goes to
    /// `tx`. Returns its request id: random, so a node cannot guess another's.
    pub fn open_log(&self, node: &str, tx: mpsc::Sender<LogPiece>) -> u64 {
        let mut streams = lock(&self.log_streams);
        let req = loop {
            let id = motley_net::random_u64();
            if id != 0 && !streams.contains_key(&id) {
                break id;
            }
        };
        streams.insert(req, (node.to_string(), tx));
        req
    }

    /// Where log stream `req`'s data goes, when `node` sends it: `Err(true)` when the
    /// stream was asked of another node (refused: a node writes only into its own
    /// streams), `Err(false)` when no such stream is open.
    pub fn log_target(&self, req: u64, node: &str) -> Result<mpsc::Sender<LogPiece>, bool> {
        match lock(&self.log_streams).get(&req) {
            Some((asked, tx)) if asked == node => Ok(tx.clone()),
            Some(_) => Err(true),
            None => Err(false),
        }
    }

    /// Closes log stream `req`, if `node` is the one it was asked of.
    pub fn close_log(&self, req: u64, node: &str) {
        let mut streams = lock(&self.log_streams);
        if streams.get(&req).is_some_and(|(asked, _)| asked == node) {
            streams.remove(&req);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_writes_only_into_the_log_streams_asked_of_it() {
        let hub = Hub::default();
        let (tx, _rx) = mpsc::channel(1);
        let req = hub.open_log("pi1", tx);
        assert!(hub.log_target(req, "pi1").is_ok());
        assert_eq!(
            hub.log_target(req, "pi2").err(),
            Some(true),
            "another node's stream"
        );
        assert_eq!(
            hub.log_target(req ^ 1, "pi1").err(),
            Some(false),
            "no such stream"
        );
        hub.close_log(req, "pi2");
        assert!(
            hub.log_target(req, "pi1").is_ok(),
            "another node cannot close it"
        );
        hub.close_log(req, "pi1");
        assert_eq!(hub.log_target(req, "pi1").err(), Some(false));
    }

    #[test]
    fn log_stream_ids_are_not_sequential() {
        let hub = Hub::default();
        let ids: Vec<u64> = (0..4)
            .map(|_| hub.open_log("pi1", mpsc::channel(1).0))
            .collect();
        let consecutive = ids.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert_eq!(consecutive, 0, "{ids:?}");
    }
}
