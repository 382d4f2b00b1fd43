//! This server's events (issue 23): `motley_core::events::Ring` in memory behind a
//! lock, and a sequence number watchers wait on. Nothing here is stored: an idle
//! cluster writes nothing for its events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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

    /// The newest event's sequence number, changing as events arrive.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }
}

/// Most events in one forwarded post.
const FORWARD_BATCH: usize = 500;

/// `--events-forward URL`: the leading server POSTs new events to `url` as JSON lines
/// (`application/x-ndjson`; a collector's HTTP input), nothing stored. Posts that fail
/// are tried again every 2 s with what is still in the ring (the oldest of 1,000 go
/// first, so a collector away for long misses some); a server that does not lead
/// sends nothing, and one that comes to lead starts from its newest event (a leader
/// change may repeat or skip the few events around it).
pub async fn forward(s: Arc<crate::state::Shared>, url: String) {
    let http = match motley_containerd::registry_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("events are not forwarded: {e}");
            return;
        }
    };
    let mut rx = s.events.subscribe();
    let mut sent = *rx.borrow_and_update();
    loop {
        let latest = *rx.borrow_and_update();
        if s.ha.leading().is_none() {
            sent = latest;
        } else if latest > sent {
            let f = Filter {
                after: sent,
                ..Filter::default()
            };
            let batch = s.events.query(&f, FORWARD_BATCH);
            let mut body = String::new();
            for e in &batch {
                if let Ok(line) = serde_json::to_string(e) {
                    body.push_str(&line);
                    body.push('\n');
                }
            }
            let post = http
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .timeout(Duration::from_secs(5))
                .body(body)
                .send()
                .await;
            match post {
                Ok(r) if r.status().is_success() => {
                    sent = batch.last().map_or(latest, |e| e.seq);
                    continue; // more may wait beyond one batch
                }
                Ok(r) => tracing::warn!("forwarding events to {url}: {}", r.status()),
                Err(e) => tracing::warn!(
                    "forwarding events to {url}: {}",
                    motley_net::error_chain(&e)
                ),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
