//! The agents connected to this server (only the leader holds any) and the log streams
//! open through them: who can be sent what. Registering a connection is
//! `Shared::connect_agent`, which sends the full set under the cache lock.

use motley_rt::HashMap;
use std::collections::BTreeSet;
use std::sync::Mutex;

use motley_core::proto::ServerMsg;
use tokio::sync::mpsc;

use crate::util::lock;

/// A piece of log data for an HTTP log stream.
pub type LogPiece = Result<String, String>;

/// One agent connection held by this server.
pub struct AgentConn {
    /// Messages to the agent.
    pub tx: mpsc::UnboundedSender<ServerMsg>,
    /// Distinguishes a reconnect from the connection it replaces.
    pub conn_id: u64,
}

/// Agent connections and log streams.
#[derive(Default)]
pub struct Hub {
    conns: Mutex<HashMap<String, AgentConn>>,
    log_streams: Mutex<HashMap<u64, mpsc::Sender<LogPiece>>>,
}

impl Hub {
    /// Holds `conn` as `node`'s connection (replacing an older one); how many are held.
    pub fn insert(&self, node: &str, conn: AgentConn) -> usize {
        let mut conns = lock(&self.conns);
        conns.insert(node.to_string(), conn);
        conns.len()
    }

    /// Forgets `node`'s connection `conn_id`, unless a newer one replaced it; how many
    /// are held.
    pub fn remove(&self, node: &str, conn_id: u64) -> usize {
        let mut conns = lock(&self.conns);
        if conns.get(node).is_some_and(|c| c.conn_id == conn_id) {
            conns.remove(node);
        }
        conns.len()
    }

    /// The nodes whose agents are connected here.
    pub fn connected(&self) -> BTreeSet<String> {
        lock(&self.conns).keys().cloned().collect()
    }

    /// Sends a message to a node's agent, if connected here.
    pub fn send_to(&self, node: &str, msg: ServerMsg) -> bool {
        lock(&self.conns)
            .get(node)
            .is_some_and(|c| c.tx.send(msg).is_ok())
    }

    /// Sends each node in `out` the message `make` builds for it, in order; `make` runs
    /// only for nodes connected here.
    pub fn send_each<T>(&self, out: Vec<(String, T)>, mut make: impl FnMut(T) -> ServerMsg) {
        let conns = lock(&self.conns);
        for (node, item) in out {
            if let Some(conn) = conns.get(&node) {
                let _ = conn.tx.send(make(item));
            }
        }
    }

    /// Sends every connected agent `msg`.
    pub fn broadcast(&self, msg: &ServerMsg) {
        for conn in lock(&self.conns).values() {
            let _ = conn.tx.send(msg.clone());
        }
    }

    /// Opens log stream `req`: what its agent sends goes to `tx`.
    pub fn open_log(&self, req: u64, tx: mpsc::Sender<LogPiece>) {
        lock(&self.log_streams).insert(req, tx);
    }

    /// Where log stream `req`'s data goes, while it is open.
    pub fn log_target(&self, req: u64) -> Option<mpsc::Sender<LogPiece>> {
        lock(&self.log_streams).get(&req).cloned()
    }

    /// Closes log stream `req`.
    pub fn close_log(&self, req: u64) {
        lock(&self.log_streams).remove(&req);
    }
}
