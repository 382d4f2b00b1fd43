//! `GET /v1/events`: what happened and why, from the server's memory; with
//! `?watch=true` a stream of JSON lines that goes on as events arrive.

use super::*;
use motley_core::events::{Event, Filter};

/// The query: `for=KIND/NAME` (or `alloc/ID`, `node/NAME`), `since=10m`,
/// `namespace=NS`, `after=SEQ`, `limit=N` (default 500), `watch=true`.
#[derive(Deserialize)]
pub(crate) struct EventQuery {
    #[serde(rename = "for")]
    object: Option<String>,
    since: Option<String>,
    namespace: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
    #[serde(default)]
    watch: bool,
}

/// At most this many events in one answer (the ring keeps 1,000).
const LIMIT: usize = 500;

pub(crate) async fn list_events(
    State(s): State<Arc<Shared>>,
    Query(q): Query<EventQuery>,
) -> ApiResult<Response> {
    let since = match q.since.as_deref() {
        None => 0,
        Some(t) => {
            let d = motley_core::quantity::Duration::parse(t)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("since={t}: {e}")))?;
            now_ms().saturating_sub(d.as_millis())
        }
    };
    // `service/web` with `namespace=dev` is `dev/service/web`.
    let object = match (q.object, &q.namespace) {
        (Some(o), Some(ns)) => Some(WorkloadRef::parse_in(&o, ns).map_or(o, |r| r.to_string())),
        (o, _) => o,
    };
    let filter = Filter {
        object,
        since,
        after: q.after.unwrap_or(0),
        namespace: q.namespace,
    };
    let limit = q.limit.unwrap_or(LIMIT).min(LIMIT);
    if !q.watch {
        return Ok(Json(s.events.query(&filter, limit)).into_response());
    }
    // The stream: what is kept now, then each new event as it comes, one JSON line
    // each (a blank line every 30 s keeps idle proxies from closing it).
    let first = s.events.query(&filter, limit);
    let rx = s.events.subscribe();
    let state = (s, rx, filter, Some(first));
    let stream = futures_util::stream::unfold(state, |(s, mut rx, mut filter, first)| async move {
        let batch: Vec<Event> = match first {
            Some(b) => b,
            None => loop {
                match tokio::time::timeout(std::time::Duration::from_secs(30), rx.changed()).await {
                    Ok(Ok(())) => {
                        let b = s.events.query(&filter, LIMIT);
                        if !b.is_empty() {
                            break b;
                        }
                    }
                    Ok(Err(_)) => return None,
                    Err(_) => break Vec::new(),
                }
            },
        };
        if let Some(last) = batch.last() {
            filter.after = last.seq;
        }
        let mut text = String::new();
        for e in &batch {
            if let Ok(line) = serde_json::to_string(e) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        if text.is_empty() {
            text.push('\n');
        }
        Some((Ok::<_, std::io::Error>(text), (s, rx, filter, None)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
