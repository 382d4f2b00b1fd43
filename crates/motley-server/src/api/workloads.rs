//! Workload routes: apply, plan and delete a manifest set (all or nothing), list and
//! get workloads with their status.

use super::*;
use crate::apply::{ApplyAs, apply_set, check_secret_refs, plan_set, seal_secrets};
use crate::error::invalid;

/// The set's documents; with `?namespace=NS` (the CLI's `-n`) those that name none
/// are put there, one naming another is an error, and so is a Namespace (cluster-wide:
/// applied without `-n`, so a token limited to namespaces cannot make or change one).
pub(crate) fn parse_manifests(
    set: &ManifestSet,
    q: &NsQuery,
) -> ApiResult<Vec<manifest::Document>> {
    let mut docs = parse_in(set, q)?;
    resolve_secret_inputs(set, &mut docs).map_err(invalid)?;
    Ok(docs)
}

fn parse_in(set: &ManifestSet, q: &NsQuery) -> ApiResult<Vec<manifest::Document>> {
    let docs = manifest::parse_set_in(&set.sources(), q.namespace.as_deref()).map_err(invalid)?;
    if q.namespace.is_some() {
        let errors: Vec<_> = docs
            .iter()
            .filter(|d| d.spec.kind() == Kind::Namespace)
            .map(|d| {
                d.error_at(
                    "kind",
                    "a Namespace is cluster-wide: apply it without -n (and with a token not limited to namespaces)",
                )
            })
            .collect();
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
    }
    Ok(docs)
}

/// Replaces every Secret or Config value given `fromFile` or `fromEnv` by what the
/// client read (the set's inputs), and checks each one's total size.
pub(crate) fn resolve_secret_inputs(
    set: &ManifestSet,
    docs: &mut [manifest::Document],
) -> Result<(), Vec<manifest::ManifestError>> {
    let mut errors = Vec::new();
    for d in docs.iter_mut() {
        let file = d.file.clone();
        let mut found = Vec::new();
        let wanted: Vec<(String, (&str, String, &str))> = match &d.spec {
            Spec::Secret(sec) => sec
                .data
                .iter()
                .filter_map(|(k, v)| {
                    v.input()
                        .map(|(f, n, fld)| (k.clone(), (f, n.to_string(), fld)))
                })
                .collect(),
            Spec::Config(c) => c
                .data
                .iter()
                .filter_map(|(k, v)| {
                    v.from_file
                        .as_ref()
                        .map(|n| (k.clone(), ("file", n.clone(), "fromFile")))
                })
                .collect(),
            _ => continue,
        };
        for (k, (from, name, field)) in wanted {
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
        let (total, limit) = match &mut d.spec {
            Spec::Secret(sec) => {
                for (k, value) in found {
                    if let Some(v) = sec.data.get_mut(&k) {
                        *v = motley_core::model::SecretValue {
                            value: Some(value),
                            ..Default::default()
                        };
                    }
                }
                let total = sec
                    .data
                    .values()
                    .map(|v| v.value.as_ref().map_or(0, String::len));
                (total.sum::<usize>(), manifest::MAX_SECRET_BYTES)
            }
            Spec::Config(c) => {
                for (k, value) in found {
                    if let Some(v) = c.data.get_mut(&k) {
                        *v = motley_core::model::ConfigValue {
                            value: Some(value),
                            from_file: None,
                        };
                    }
                }
                let total = c
                    .data
                    .values()
                    .map(|v| v.value.as_ref().map_or(0, String::len));
                (total.sum::<usize>(), motley_core::config::MAX_CONFIG_BYTES)
            }
            _ => continue,
        };
        if total > limit {
            errors.push(d.error_at(
                "data",
                format!("the values add up to {total} bytes; at most {limit}"),
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
    Query(q): Query<NsQuery>,
    body: Result<Json<ManifestSet>, JsonRejection>,
) -> ApiResult<Json<ObjectResults>> {
    let Json(set) = body?;
    let mut docs = parse_manifests(&set, &q)?;
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
/// A set as `plan` and `what-if` take it: parsed (secret inputs resolved), its
/// Secret references and namespaces checked against the cluster; nothing stored.
pub(crate) fn planned_docs(
    s: &Shared,
    set: &ManifestSet,
    q: &NsQuery,
) -> ApiResult<Vec<manifest::Document>> {
    let mut docs = parse_manifests(set, q)?;
    let mut details = check_secret_refs(&s.cache(), &docs);
    details.extend(crate::namespaces::check_set(s, &docs));
    if details.is_empty() {
        crate::configs::stamp_docs(&s.cache(), &mut docs);
        Ok(docs)
    } else {
        Err(invalid(details))
    }
}

pub(crate) async fn plan(
    State(s): State<Arc<Shared>>,
    Query(q): Query<NsQuery>,
    body: Result<Json<ManifestSet>, JsonRejection>,
) -> ApiResult<Json<motley_core::api::PlanResponse>> {
    let Json(set) = body?;
    let docs = planned_docs(&s, &set, &q)?;
    let mut plan = plan_set(&s, &docs, &[]).await;
    // Asked in a namespace (a limited token must): what concerns it, nothing of others.
    if let Some(ns) = &q.namespace {
        let mine = |r: &WorkloadRef| r.namespace == *ns;
        plan.placements.retain(|p| mine(&p.workload));
        plan.stops.retain(|p| mine(&p.workload));
        plan.blocked.retain(|(r, _)| mine(r));
        plan.queue.retain(|r| mine(r));
        plan.bind.retain(|(name, _)| match name.split_once('/') {
            Some((n, _)) => n == ns,
            None => ns == motley_core::model::DEFAULT_NAMESPACE,
        });
    }
    Ok(Json(plan))
}

pub(crate) async fn delete_set(
    State(s): State<Arc<Shared>>,
    Query(q): Query<NsQuery>,
    body: Result<Json<ManifestSet>, JsonRejection>,
) -> ApiResult<Json<ObjectResults>> {
    let Json(set) = body?;
    // Deleting needs names only: secret values named by fromFile/fromEnv are not read.
    let docs = parse_in(&set, &q)?;
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
                crate::namespaces::refuse_nonempty(s, r, refs).await?;
                let current = s.store.get(&keys::workload(r)).await?;
                txn = crate::apply::delete_op(s, txn, r, current.as_ref(), &mut results);
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
        motley_store::Updated::Committed(out, rev) => {
            crate::apply::read_your_writes(s, rev).await;
            Ok(out)
        }
        motley_store::Updated::Unchanged(out) => Ok(out),
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

/// `?namespace=NS` of the routes that name one object (absent: `default`).
#[derive(Deserialize)]
pub(crate) struct NsQuery {
    pub(crate) namespace: Option<String>,
}

impl NsQuery {
    /// The namespace asked for.
    pub(crate) fn ns(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(motley_core::model::DEFAULT_NAMESPACE)
    }
}

pub(crate) fn workload_ref(kind: &str, name: String, q: &NsQuery) -> ApiResult<WorkloadRef> {
    let kind = parse_kind(kind)?;
    if kind == Kind::Namespace && q.namespace.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a Namespace is cluster-wide: name it without -n",
        ));
    }
    Ok(WorkloadRef::in_namespace(q.ns(), kind, name))
}

pub(crate) async fn delete_workload(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<NsQuery>,
) -> ApiResult<Json<ObjectResults>> {
    let r = workload_ref(&kind, name, &q)?;
    let res = delete_refs(&s, std::slice::from_ref(&r), false).await?;
    if res.results.iter().all(|x| x.action == "not found") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{r} not found"),
        ));
    }
    Ok(Json(res))
}

/// `?kind=K&namespace=NS` of the list (absent: every kind, every namespace).
#[derive(Deserialize)]
pub(crate) struct KindQuery {
    kind: Option<String>,
    namespace: Option<String>,
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
        uptime: match &w.spec {
            Spec::Service(svc) => {
                let target = svc.slo.map(|s| s.availability.fraction());
                s.uptime.view(&r, now_ms(), target)
            }
            _ => None,
        },
        periodic: reconcile::periodic_view(w, &cache.workloads, &cache.allocs, now_ms()),
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
        .filter(|(r, _)| q.namespace.as_ref().is_none_or(|ns| r.namespace == *ns))
        .map(|(r, w)| view(&s, &cache, w, by_w.get(r).map(Vec::as_slice).unwrap_or(&[])))
        .collect();
    Ok(Json(out))
}

pub(crate) async fn get_workload(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<NsQuery>,
) -> ApiResult<Response> {
    let r = workload_ref(&kind, name, &q)?;
    detail(&s, &r)
}

/// A workload with its allocations, newest first, as the cache has it now: encoded
/// under the cache's read lock from the cached allocations (10,000 replicas are not
/// copied to be encoded).
fn detail(s: &Shared, r: &WorkloadRef) -> ApiResult<Response> {
    let cache = s.cache();
    let w = cache
        .workloads
        .get(r)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{r} not found")))?;
    let mut allocs: Vec<&Allocation> = cache.allocs.values().filter(|a| a.workload == *r).collect();
    allocs.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    let (energy_mj, energy_estimated) = s
        .liveness
        .energy_of(allocs.iter().map(|a| (a.node.as_str(), a.id.as_str())));
    let detail = WorkloadDetail {
        view: view(s, &cache, w, &allocs),
        allocations: allocs,
        energy_mj,
        energy_estimated,
    };
    Ok(Json(detail).into_response())
}

/// `POST /v1/workloads/job/{name}/run`: a run of periodic job `name` now, beside its
/// schedule (`motley job run`); answers the run as `describe` does.
pub(crate) async fn run_now(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<NsQuery>,
) -> ApiResult<Response> {
    let r = workload_ref(&kind, name, &q)?;
    if r.kind != Kind::Job {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{r}: only a periodic job is run by hand (motley job run NAME)"),
        ));
    }
    let now = now_ms();
    let key = keys::workload(&r);
    let (run, rev) = {
        let cache = s.cache();
        let w = cache
            .workloads
            .get(&r)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{r} not found")))?;
        let Spec::Job(j) = &w.spec else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{r} not found"),
            ));
        };
        if j.schedule.is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{r} is not periodic (it has no schedule): it ran when it was applied"),
            ));
        }
        (
            reconcile::periodic_run(w, j, now, true, now),
            cache.rev(&key),
        )
    };
    let run_ref = run.spec.reference();
    let run_key = keys::workload(&run_ref);
    let value = serde_json::to_vec(&run)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let t = Txn::new()
        .when(&key, rev)
        .when(&run_key, 0)
        .put(run_key.clone(), value);
    let done = s.store.txn(t).await?;
    if !done.succeeded {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{r} changed, or was already run by hand this second; nothing was started"),
        ));
    }
    crate::apply::read_your_writes(&s, done.revision).await;
    s.plans.kick.notify_one();
    detail(&s, &run_ref)
}

/// `POST /v1/workloads/service/{name}/promote`: the current update's canaries are
/// promoted; the rest of the replicas are replaced.
pub(crate) async fn promote(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<NsQuery>,
) -> ApiResult<Response> {
    let r = workload_ref(&kind, name.clone(), &q)?;
    super::update_record(&s, &keys::workload(&r), &r.to_string(), |w: &Workload| {
        motley_core::rollout::promote(w)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))
    })
    .await?;
    s.plans.kick.notify_one();
    detail(&s, &r)
}
