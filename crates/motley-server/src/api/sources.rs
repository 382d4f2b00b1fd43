//! Source routes: list and show git sources, sync one now, and the webhook a git
//! server calls on a push.

use super::*;
use motley_core::api::{SourceView, SyncRequest};

use super::workloads::NsQuery;

fn ns_of(spec: &motley_core::model::SourceSpec) -> &str {
    motley_core::model::namespace_or_default(&spec.namespace)
}

/// The named source; with `?namespace=NS`, only one in that namespace (a source's
/// name is unique in the cluster, so without it the name alone finds it).
fn spec_or_404(s: &Shared, name: &str, q: &NsQuery) -> ApiResult<motley_core::model::SourceSpec> {
    crate::sources::spec_of(s, name)
        .filter(|spec| q.namespace.as_deref().is_none_or(|ns| ns_of(spec) == ns))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("source {name} not found")))
}

/// `GET /v1/sources[?namespace=NS]`: every source (of the namespace) with its last
/// sync.
pub(crate) async fn list_sources(
    State(s): State<Arc<Shared>>,
    Query(q): Query<NsQuery>,
) -> Json<Vec<SourceView>> {
    Json(
        crate::sources::declared_sources(&s)
            .iter()
            .filter(|spec| q.namespace.as_deref().is_none_or(|ns| ns_of(spec) == ns))
            .map(|spec| crate::sources::view_of(&s, spec))
            .collect(),
    )
}

/// `GET /v1/sources/{name}`: one source, with its kept plan and its events.
pub(crate) async fn get_source(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<NsQuery>,
) -> ApiResult<Json<SourceView>> {
    let spec = spec_or_404(&s, &name, &q)?;
    Ok(Json(crate::sources::view_of(&s, &spec)))
}

/// `POST /v1/sources/{name}/sync`: syncs now and answers with the outcome. The sync
/// runs in its own task: a client that gives up does not cut it short.
pub(crate) async fn sync_source(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<NsQuery>,
    body: Result<Json<SyncRequest>, JsonRejection>,
) -> ApiResult<Json<SourceView>> {
    let Json(req) = body?;
    let spec = spec_or_404(&s, &name, &q)?;
    let task =
        motley_rt::spawn(async move { crate::sources::sync(&s, &spec, req.allow_empty).await });
    task.await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `POST /hooks/sources/{name}`: a git server says the repository changed. It needs
/// no token: it only moves the source's next poll forward (never more often than the
/// shortest interval), and what is applied still comes from git.
pub(crate) async fn hook(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, &'static str)> {
    if crate::sources::spec_of(&s, &name).is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such source"));
    }
    s.sources.ask(&name);
    Ok((StatusCode::ACCEPTED, "sync asked\n"))
}
