//! `POST /v1/what-if`: what the control plane would do if nodes died, were drained
//! or were added, and manifests applied ([`motley_scheduler::whatif`], the real
//! controllers and scheduler on a copy of the cache; nothing is stored).

use super::*;
use motley_core::api::{ManifestFile, SecretInput};
use motley_scheduler::whatif::{self, Change, NodeLoss, Outcome};

/// A node that is not (yet) in the cluster, as its agent would describe it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddNode {
    name: String,
    facts: motley_core::model::NodeFacts,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The question.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WhatIf {
    #[serde(flatten)]
    change: Change,
    /// Every ready node's loss, one at a time, instead.
    #[serde(default)]
    each_node: bool,
    /// Nodes added first (ready).
    #[serde(default)]
    add: Vec<AddNode>,
    /// Manifests applied first, as `motley plan` takes them.
    #[serde(default)]
    files: Vec<ManifestFile>,
    #[serde(default)]
    inputs: Vec<SecretInput>,
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
    let now = now_ms();
    let applied = if q.files.is_empty() {
        None
    } else {
        let set = ManifestSet {
            files: q.files,
            dry_run: true,
            inputs: q.inputs,
        };
        let docs = planned_docs(&s, &set, &NsQuery { namespace: None })?;
        Some(crate::apply::planned_workloads(&s, &docs, &[]).await.0)
    };
    let mut state = {
        let cache = s.cache();
        whatif::State {
            workloads: cache.workloads.clone(),
            applied,
            nodes: cache.nodes.clone(),
            ready: s.ready_nodes(),
            allocs: cache.allocs.clone(),
            now,
            fence_after_ms: s.liveness.config.fence_after_ms(),
            readings: s.liveness.readings_snapshot(),
        }
    };
    for n in q.add {
        motley_core::model::validate_name(&n.name).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("add {:?}: {e}", n.name),
            )
        })?;
        if state.nodes.contains_key(&n.name) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "add {:?}: a node of that name is in the cluster already",
                    n.name
                ),
            ));
        }
        let node =
            motley_core::node::registration(&n.name, n.facts, &n.labels, &s.taint_policy, now);
        state.ready.insert(n.name.clone());
        state.nodes.insert(n.name, node);
    }
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
