//! `POST /v1/what-if`: what the control plane would do if nodes died or were drained
//! ([`motley_scheduler::whatif`], the real controllers and scheduler on a copy of the
//! cache; nothing is stored).

use super::*;
use motley_scheduler::whatif::{self, Change, NodeLoss, Outcome};

/// The question.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WhatIf {
    #[serde(flatten)]
    change: Change,
    /// Every ready node's loss, one at a time, instead.
    #[serde(default)]
    each_node: bool,
}

/// The answer: one outcome, or a line per node.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    each_node: Option<Vec<NodeLoss>>,
}

pub(crate) async fn what_if(
    State(s): State<Arc<Shared>>,
    body: Result<Json<WhatIf>, JsonRejection>,
) -> ApiResult<Json<Answer>> {
    let Json(q) = body?;
    let state = {
        let cache = s.cache();
        whatif::State {
            workloads: cache.workloads.clone(),
            nodes: cache.nodes.clone(),
            ready: s.ready_nodes(),
            allocs: cache.allocs.clone(),
            now: now_ms(),
            fence_after_ms: s.liveness.config.fence_after_ms(),
        }
    };
    let cfg = s.scheduler.clone();
    let answer = motley_rt::spawn_blocking(move || {
        if q.each_node {
            Ok(Answer {
                outcome: None,
                each_node: Some(whatif::each_node(
                    &state,
                    &cfg,
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                )),
            })
        } else {
            whatif::run(&state, &q.change, &cfg).map(|o| Answer {
                outcome: Some(o),
                each_node: None,
            })
        }
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    answer
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))
}
