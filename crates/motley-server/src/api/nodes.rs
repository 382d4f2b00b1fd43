//! Node and allocation routes: nodes with their liveness, cordon and drain,
//! allocations, and log streams from the agents.

use super::*;

pub(crate) fn node_views(s: &Shared) -> Vec<NodeView> {
    let cache = s.cache();
    // One pass over the allocations, grouped by node: no loop over nodes × allocations.
    let mut by_node: HashMap<&str, Vec<&Allocation>> = HashMap::default();
    for a in cache.allocs.values().filter(|a| a.is_live()) {
        by_node.entry(a.node.as_str()).or_default().push(a);
    }
    cache
        .nodes
        .values()
        .map(|n| {
            let live = by_node.remove(n.name.as_str()).unwrap_or_default();
            let (health, since, reason) = s.liveness.node_health(&n.name);
            let readings = s.liveness.readings_of(&n.name);
            let state = health.as_str();
            NodeView {
                node: n.clone(),
                state: state.into(),
                since,
                reason,
                allocations: live.len() as u32,
                used_cpu: live
                    .iter()
                    .map(|a| a.task.resources.cpu_on(n.facts.cpu_score))
                    .sum(),
                used_memory: live
                    .iter()
                    .map(|a| a.task.resources.memory_or_default().0)
                    .sum(),
                readings_at: readings.as_ref().map(|r| r.1),
                readings: readings.map(|r| r.0),
            }
        })
        .collect()
}

/// `POST /v1/nodes/{name}/cordon|uncordon|drain`.
pub(crate) async fn node_action(
    State(s): State<Arc<Shared>>,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult<Json<NodeView>> {
    let (cordoned, draining) = match action.as_str() {
        "cordon" => (true, false),
        "uncordon" => (false, false),
        "drain" => (true, true),
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no node action {other:?}: use cordon, uncordon or drain"),
            ));
        }
    };
    update_node(&s, &name, |node| {
        if node.cordoned == cordoned && node.draining == draining {
            return Ok(None);
        }
        let mut n = node.clone();
        n.cordoned = cordoned;
        n.draining = draining;
        Ok(Some(n))
    })
    .await
}

/// Changes the stored record of node `name` by `change` (`None`: nothing to change),
/// with compare-and-swap retries, waits until the cache has it, and answers its view.
async fn update_node(
    s: &Arc<Shared>,
    name: &str,
    change: impl Fn(&motley_core::model::Node) -> Result<Option<motley_core::model::Node>, ApiError>,
) -> ApiResult<Json<NodeView>> {
    update_record(s, &keys::node(name), &format!("node {name}"), change).await?;
    node_views(s)
        .into_iter()
        .find(|n| n.node.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("node {name} not found")))
}

/// The body of `POST /v1/nodes/{name}/labels`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Relabel {
    /// Labels to set (the node cannot change or remove them).
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Operator labels to remove.
    #[serde(default)]
    remove: Vec<String>,
}

/// `POST /v1/nodes/{name}/labels`: the operator's labels of a node
/// ([`motley_core::node::relabel`]).
pub(crate) async fn relabel_node(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Result<Json<Relabel>, JsonRejection>,
) -> ApiResult<Json<NodeView>> {
    let Json(body) = body?;
    update_node(&s, &name, |node| {
        motley_core::node::relabel(node, &body.set, &body.remove)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))
    })
    .await
}

pub(crate) async fn list_nodes(State(s): State<Arc<Shared>>) -> Json<Vec<NodeView>> {
    Json(node_views(&s))
}

pub(crate) async fn get_node(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<NodeView>> {
    node_views(&s)
        .into_iter()
        .find(|n| n.node.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("node {name} not found")))
}

#[derive(Deserialize)]
pub(crate) struct AllocQuery {
    workload: Option<String>,
    node: Option<String>,
    namespace: Option<String>,
}

pub(crate) async fn list_allocs(
    State(s): State<Arc<Shared>>,
    axum::Extension(Caller(role)): axum::Extension<Caller>,
    Query(mut q): Query<AllocQuery>,
) -> ApiResult<Json<Vec<Allocation>>> {
    // A node sees its own allocations only (`authorize` already refused it asking for
    // anything else; this keeps the handler safe on its own).
    if let Role::Node { node } = role {
        q.node = Some(node);
    }
    let wref = match &q.workload {
        Some(w) => Some(WorkloadRef::parse(w).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("workload must be KIND/NAME or NAMESPACE/KIND/NAME, not {w:?}"),
            )
        })?),
        None => None,
    };
    let cache = s.cache();
    let mut out: Vec<Allocation> = cache
        .allocs
        .values()
        .filter(|a| wref.as_ref().is_none_or(|r| a.workload == *r))
        .filter(|a| {
            q.namespace
                .as_ref()
                .is_none_or(|ns| a.workload.namespace == *ns)
        })
        .filter(|a| q.node.as_ref().is_none_or(|n| a.node == *n))
        .cloned()
        .collect();
    out.sort_by(|a, b| {
        (&a.workload, a.index, a.created_at).cmp(&(&b.workload, b.index, b.created_at))
    });
    drop(cache);
    let progress = crate::util::lock(&s.progress);
    if !progress.is_empty() {
        for a in &mut out {
            a.progress = progress.get(&a.id).cloned();
        }
    }
    Ok(Json(out))
}

pub(crate) async fn get_alloc(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Allocation>> {
    let mut a = s.cache().allocs.get(&id).cloned().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("allocation {id} not found"))
    })?;
    a.progress = crate::util::lock(&s.progress).get(&id).cloned();
    Ok(Json(a))
}

#[derive(Deserialize)]
pub(crate) struct LogQuery {
    #[serde(default)]
    follow: bool,
    tail: Option<u64>,
}

/// Removes a log stream's registration and tells the agent to stop sending.
pub(crate) struct LogGuard {
    shared: Arc<Shared>,
    req: u64,
    node: String,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.hub.close_log(self.req, &self.node);
        self.shared
            .hub
            .send_to(&self.node, ServerMsg::LogsCancel { req: self.req });
    }
}

pub(crate) async fn logs(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let node = s
        .cache()
        .allocs
        .get(&id)
        .map(|a| a.node.clone())
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("allocation {id} not found"))
        })?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let req = s.hub.open_log(&node, tx);
    let guard = LogGuard {
        shared: s.clone(),
        req,
        node: node.clone(),
    };
    if !s.hub.send_to(
        &node,
        ServerMsg::Logs {
            req,
            alloc: id,
            tail_bytes: q.tail,
            follow: q.follow,
        },
    ) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {node} is not connected"),
        ));
    }
    // The first piece tells whether the agent can serve the logs at all.
    let first = rx.recv().await;
    let first = match first {
        Some(Ok(data)) => data,
        Some(Err(e)) => return Err(ApiError::new(StatusCode::NOT_FOUND, e)),
        None => String::new(),
    };
    let stream = futures_util::stream::unfold(
        (Some(first), rx, guard),
        |(first, mut rx, guard)| async move {
            if let Some(f) = first {
                return Some((Ok::<_, std::io::Error>(f), (None, rx, guard)));
            }
            match rx.recv().await {
                Some(Ok(data)) => Some((Ok(data), (None, rx, guard))),
                Some(Err(e)) => Some((Ok(format!("\n[motley: {e}]\n")), (None, rx, guard))),
                None => None,
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `POST /v1/allocs/{id}/restart`: the allocation is asked to stop, and the controller
/// places its replacement ([`motley_core::writes::restarted`]); answers its record.
pub(crate) async fn restart_alloc(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    axum::Extension(Who(who)): axum::Extension<Who>,
) -> ApiResult<Json<Allocation>> {
    update_record(&s, &keys::alloc(&id), &format!("allocation {id}"), |a| {
        motley_core::writes::restarted(a, &who)
            .map(Some)
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))
    })
    .await?;
    s.plans.kick.notify_one();
    s.cache()
        .allocs
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("allocation {id} not found")))
}
