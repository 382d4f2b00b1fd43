//! `--events-forward URL`: the leader sends new events to a collector (issue 23). A
//! layer above `events` and `state`: it reads the ring through the shared state.

use std::sync::Arc;
use std::time::Duration;

/// Most events in one forwarded post.
const FORWARD_BATCH: usize = 500;

/// `--events-forward URL`: the leading server POSTs new events to `url` as JSON lines
/// (`application/x-ndjson`; a collector's HTTP input), nothing stored. Posts that fail
/// are tried again every 2 s with what is still in the ring (the oldest of 1,000 go
/// first, so a collector away for long misses some); a server that does not lead
/// sends nothing, and one that comes to lead starts from its newest event (a leader
/// change may repeat or skip the few events around it).
pub async fn forward(s: Arc<crate::state::Shared>, url: String) {
    // Every event of the ring (this process's, from its start) is to be sent, also those
    // pushed before this task first ran: building the HTTP client takes a while, and a
    // busy machine ran an apply's first events before it (a flaky system test).
    let mut rx = s.events.subscribe();
    let mut sent = 0;
    let http = match motley_containerd::registry_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("events are not forwarded: {e}");
            return;
        }
    };
    loop {
        let latest = *rx.borrow_and_update();
        if s.ha.leading().is_none() {
            sent = latest;
        } else if latest > sent {
            // The oldest first: a burst of more than one post goes out whole.
            let batch = s.events.oldest_after(sent, FORWARD_BATCH);
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
