//! This server's events (issue 23): `motley_core::events::Ring` in memory behind a
//! lock, and a sequence number watchers wait on. Nothing here is stored: an idle
//! cluster writes nothing for its events.

use std::sync::Mutex;

use motley_core::events::{Event, Filter, New, Ring};
use tokio::sync::watch;

/// How many events a server keeps (the oldest go first).
pub const CAP: usize = 1_000;

/// The ring and its watchers.
pub struct Events {
    ring: Mutex<Ring>,
    seq: watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            ring: Mutex::new(Ring::new(CAP)),
            seq: watch::channel(0).0,
        }
    }
}

impl Events {
    /// Records events that happened now.
    pub fn push_all(&self, events: Vec<New>) {
        if events.is_empty() {
            return;
        }
        let now = crate::util::now_ms();
        let last = {
            let mut ring = crate::util::lock(&self.ring);
            for e in events {
                tracing::debug!("event {}: {} {}", e.kind.as_str(), e.object, e.message);
                ring.push(now, e);
            }
            ring.last_seq()
        };
        self.seq.send_replace(last);
    }

    /// Records one event that happened now.
    pub fn push(&self, e: New) {
        self.push_all(vec![e]);
    }

    /// The last `limit` events `f` lets through, oldest first.
    pub fn query(&self, f: &Filter, limit: usize) -> Vec<Event> {
        crate::util::lock(&self.ring).query(f, limit)
    }

    /// The oldest `limit` events after sequence number `after` ([`Ring::oldest_after`]).
    pub fn oldest_after(&self, after: u64, limit: usize) -> Vec<Event> {
        crate::util::lock(&self.ring).oldest_after(after, limit)
    }

    /// The newest event's sequence number, changing as events arrive.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }
}
