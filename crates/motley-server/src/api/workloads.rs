//! Workload routes: apply, plan and delete a manifest set (all or nothing), list and
//! get workloads with their status.

use super::*;
use crate::apply::{ApplyAs, apply_set, check_secret_refs, plan_set, seal_secrets};
use crate::error::invalid;

pub(crate) fn parse_manifests(set: &ManifestSet) -> ApiResult<Vec<manifest::Document>> {
    let mut docs = manifest::parse_set(&set.sources()).map_err(invalid)?;
    resolve_secret_inputs(set, &mut docs).map_err(invalid)?;
    Ok(docs)
}

/// Replaces every Secret value given `fromFile` or `fromEnv` by what the client read
/// (the set's inputs), and checks each secret's total size.
pub(crate) fn resolve_secret_inputs(
    set: &ManifestSet,
    docs: &mut [manifest::Document],
) -> Result<(), Vec<manifest::ManifestError>> {
    let mut errors = Vec::new();
    for d in docs.iter_mut() {
        let file = d.file.clone();
        let mut found = Vec::new();
        let Spec::Secret(sec) = &d.spec else { continue };
        for (k, v) in &sec.data {
            let Some((from, name, field)) = v.input() else {
                continue;
            };
            match set
                .inputs
                .iter()
                .find(|i| i.source == file && i.from == from && i.name == name)
            {
                Some(i) => found.push((k.clone(), i.value.clone())),
                None => errors.push(d.error_at(
                    &format!("data.{k}.{field}"),
                    format!(
                        "{name} was not read at apply time: `motley apply` reads {field} values and sends them along"
                    ),
                )),
            }
        }
        let mut total = 0;
        if let Spec::Secret(sec) = &mut d.spec {
            for (k, value) in found {
                if let Some(v) = sec.data.get_mut(&k) {
                    *v = motley_core::model::SecretValue {
                        value: Some(value),
                        ..Default::default()
                    };
                }
            }
            total = sec
                .data
                .values()
                .map(|v| v.value.as_ref().map_or(0, String::len))
                .sum::<usize>();
        }
        if total > manifest::MAX_SECRET_BYTES {
            errors.push(d.error_at(
                "data",
                format!(
                    "the values add up to {total} bytes; at most {}",
                    manifest::MAX_SECRET_BYTES
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A workload as shown: a secret's values hidden.
pub fn redacted(mut w: Workload) -> Workload {
    if let Spec::Secret(s) = &mut w.spec {
        for v in s.data.values_mut() {
            *v = motley_core::model::SecretValue::redacted();
        }
    }
    w
}

pub(crate) async fn apply(
    State(s): State<Arc<Shared>>,
    body: Result<Json<ManifestSet>, JsonRejection>,
) -> ApiResult<Json<ObjectResults>> {
    let Json(set) = body?;
    let mut docs = parse_manifests(&set)?;
    {
        let cache = s.cache();
        let details = check_secret_refs(&cache, &docs);
        if !details.is_empty() {
            return Err(invalid(details));
        }
        seal_secrets(&s, &cache, &mut docs)?;
    }
    let how = ApplyAs {
        dry_run: set.dry_run,
        ..ApplyAs::default()
    };
    apply_set(&s, &docs, &how).await.map(Json)
}

/// `POST /v1/plan`: runs one reconcile against the live cluster as if the set were
/// applied, and returns what it would place, stop, bind and queue. Nothing is stored.
pub(crate) async fn plan(
    State(s): State<Arc<Shared>>,
    body: Result<Json<ManifestSet>, JsonRejection>,
) -> ApiResult<Json<motley_core::api::PlanResponse>> {
    let Json(set) = body?;
    let docs = parse_manifests(&set)?;
    {
        let details = check_secret_refs(&s.cache(), &docs);
        if !details.is_empty() {
            return Err(invalid(details));
        }
    }
    Ok(Json(plan_set(&s, &docs, &[]).await))
}

pub(crate) async fn delete_set(
    State(s): State<Arc<Shared>>,
    body: Result<Json<ManifestSet>, JsonRejection>,
) -> ApiResult<Json<ObjectResults>> {
    let Json(set) = body?;
    // Deleting needs names only: secret values named by fromFile/fromEnv are not read.
    let docs = manifest::parse_set(&set.sources()).map_err(invalid)?;
    let refs: Vec<WorkloadRef> = docs.iter().map(|d| d.spec.reference()).collect();
    delete_refs(&s, &refs, set.dry_run).await.map(Json)
}

pub(crate) async fn delete_refs(
    s: &Shared,
    refs: &[WorkloadRef],
    dry_run: bool,
) -> ApiResult<ObjectResults> {
    let outcome = motley_store::update(
        &*s.store,
        || async move {
            let mut txn = Txn::new();
            let mut results = Vec::new();
            for r in refs {
                let current = s.store.get(&keys::workload(r)).await?;
                let (next, result) = crate::apply::delete_op(txn, r, current.as_ref());
                txn = next;
                results.push(result);
            }
            let out = ObjectResults { results };
            Ok::<_, ApiError>(if dry_run {
                motley_store::Attempt::Done(out)
            } else {
                motley_store::Attempt::Write(txn, out)
            })
        },
        || {},
    )
    .await?;
    match outcome {
        motley_store::Updated::Committed(out, _) | motley_store::Updated::Unchanged(out) => Ok(out),
        motley_store::Updated::Conflicted => Err(ApiError::new(
            StatusCode::CONFLICT,
            "the objects kept changing concurrently; nothing was deleted",
        )),
    }
}

pub(crate) fn parse_kind(kind: &str) -> ApiResult<Kind> {
    Kind::parse(kind)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("unknown kind {kind:?}")))
}

pub(crate) fn workload_ref(kind: &str, name: String) -> ApiResult<WorkloadRef> {
    Ok(WorkloadRef {
        kind: parse_kind(kind)?,
        name,
    })
}

pub(crate) async fn delete_workload(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Json<ObjectResults>> {
    let r = workload_ref(&kind, name)?;
    let res = delete_refs(&s, std::slice::from_ref(&r), false).await?;
    if res.results.iter().all(|x| x.action == "not found") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{r} not found"),
        ));
    }
    Ok(Json(res))
}

#[derive(Deserialize)]
pub(crate) struct KindQuery {
    kind: Option<String>,
}

pub(crate) fn ready_matching(s: &Shared, cache: &crate::state::Cache, w: &Workload) -> u32 {
    let ready = s.ready_nodes();
    let sel = w
        .spec
        .placement()
        .require
        .as_deref()
        .and_then(|r| Selector::parse(r).ok());
    cache
        .nodes
        .values()
        .filter(|n| ready.contains(&n.name) && sel.as_ref().is_none_or(|sel| node_matches(n, sel)))
        .count() as u32
}

pub(crate) fn view(
    s: &Shared,
    cache: &crate::state::Cache,
    w: &Workload,
    allocs: &[&Allocation],
) -> WorkloadView {
    let r = w.spec.reference();
    WorkloadView {
        workload: redacted(w.clone()),
        status: reconcile::status(w, allocs, ready_matching(s, cache, w)),
        blocked: lock(&s.plans.blocked).get(&r).cloned(),
        queue_position: lock(&s.plans.queue)
            .iter()
            .position(|q| *q == r)
            .map(|p| p as u32 + 1),
        rollout: motley_core::rollout::status(w, allocs.iter().copied(), now_ms()),
    }
}

pub(crate) async fn list_workloads(
    State(s): State<Arc<Shared>>,
    Query(q): Query<KindQuery>,
) -> ApiResult<Json<Vec<WorkloadView>>> {
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let cache = s.cache();
    let mut by_w: BTreeMap<&WorkloadRef, Vec<&Allocation>> = BTreeMap::new();
    for a in cache.allocs.values() {
        by_w.entry(&a.workload).or_default().push(a);
    }
    let out = cache
        .workloads
        .iter()
        .filter(|(r, _)| kind.is_none_or(|k| r.kind == k))
        .map(|(r, w)| view(&s, &cache, w, by_w.get(r).map(Vec::as_slice).unwrap_or(&[])))
        .collect();
    Ok(Json(out))
}

pub(crate) async fn get_workload(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Json<WorkloadDetail>> {
    let r = workload_ref(&kind, name)?;
    detail(&s, &r).map(Json)
}

/// A workload with its allocations, newest first, as the cache has it now.
fn detail(s: &Shared, r: &WorkloadRef) -> ApiResult<WorkloadDetail> {
    let cache = s.cache();
    let w = cache
        .workloads
        .get(r)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{r} not found")))?;
    let mut allocs: Vec<&Allocation> = cache.allocs.values().filter(|a| a.workload == *r).collect();
    allocs.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    Ok(WorkloadDetail {
        view: view(s, &cache, w, &allocs),
        allocations: allocs.into_iter().cloned().collect(),
    })
}

/// `POST /v1/workloads/service/{name}/promote`: the current update's canaries are
/// promoted; the rest of the replicas are replaced.
pub(crate) async fn promote(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Json<WorkloadDetail>> {
    let r = workload_ref(&kind, name.clone())?;
    super::update_record(&s, &keys::workload(&r), &r.to_string(), |w: &Workload| {
        motley_core::rollout::promote(w)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))
    })
    .await?;
    s.plans.kick.notify_one();
    detail(&s, &r).map(Json)
}
