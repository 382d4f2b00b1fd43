//! `/v1/experiments` (issue 24): run an experiment (admin; audited), list the runs,
//! read a report, abort the run under way. The run itself is [`crate::experiments`].

use super::*;
use motley_core::api::{ExperimentAccepted, ExperimentRequest, ExperimentSummary};
use motley_core::experiment::{self, Known};
use motley_core::experiment_run::Report;

fn who_of(req: &Request) -> String {
    req.extensions()
        .get::<Who>()
        .map_or_else(|| "-".to_string(), |w| w.0.clone())
}

/// `POST /v1/experiments`: checked against the cluster (unknown nodes and workloads,
/// contradictory faults: 422 with each error at its line and field), then started in
/// the background unless `dry_run`.
pub(crate) async fn run_experiment(
    State(s): State<Arc<Shared>>,
    req: Request,
) -> ApiResult<Json<ExperimentAccepted>> {
    let who = who_of(&req);
    let peer = peer_of(&req).map_or_else(|| "-".into(), |p| p.ip().to_string());
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
    let body: ExperimentRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let known = {
        let cache = s.cache();
        Known {
            nodes: cache.nodes.keys().cloned().collect(),
            workloads: cache.workloads.keys().cloned().collect(),
        }
    };
    let doc = experiment::from_text(&body.file.name, &body.file.content, Some(&known))
        .map_err(crate::error::invalid)?;
    let exp = doc.value;
    let answer = ExperimentAccepted {
        name: exp.name.clone(),
        started: !body.dry_run,
        timeline: experiment::timeline(&exp),
    };
    if body.dry_run {
        return Ok(Json(answer));
    }
    let name = exp.name.clone();
    crate::experiments::start(s.clone(), exp, &who).map_err(|running| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("experiment {running} is under way: one at a time (abort it first)"),
        )
    })?;
    s.trust.audit.record(motley_core::api::AuditEntry {
        at: now_ms(),
        who,
        peer,
        method: "POST".into(),
        path: "/v1/experiments".into(),
        status: 200,
        why: format!("experiment {name} started"),
    });
    Ok(Json(answer))
}

/// `GET /v1/experiments`: the run under way and every stored report, newest first.
pub(crate) async fn list_experiments(
    State(s): State<Arc<Shared>>,
) -> ApiResult<Json<Vec<ExperimentSummary>>> {
    let mut rows: Vec<ExperimentSummary> = crate::experiments::stored(&s)
        .await?
        .iter()
        .map(ExperimentSummary::from)
        .collect();
    if let Some(r) = s.lab.running() {
        rows.retain(|x| x.name != r.name);
        rows.push(ExperimentSummary::from(&r));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.created));
    Ok(Json(rows))
}

/// The report of `name`: the run here (under way or just ended), else the stored one.
pub(crate) async fn report_of(s: &Shared, name: &str) -> ApiResult<Report> {
    if let Some(r) = s.lab.current(name) {
        return Ok(r);
    }
    let kv = s.store.get(&crate::experiments::key(name)).await?;
    let Some(kv) = kv else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no experiment {name:?} has run"),
        ));
    };
    serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("experiment {name}'s stored report: {e}"),
        )
    })
}

/// `GET /v1/experiments/{name}`: its report (JSON).
pub(crate) async fn get_experiment(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Report>> {
    report_of(&s, &name).await.map(Json)
}

/// `POST /v1/experiments/{name}/abort`: every fault held undone at once.
pub(crate) async fn abort_experiment(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Json<serde_json::Value>> {
    let who = who_of(&req);
    if !s.lab.ask_abort(&name, &who) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("experiment {name:?} is not under way"),
        ));
    }
    audit(
        &s,
        &req,
        &who,
        StatusCode::OK,
        &format!("experiment {name} aborted"),
    );
    Ok(Json(serde_json::json!({ "aborting": name })))
}
