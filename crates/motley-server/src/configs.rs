//! Configs on the apply path: references checked against the set and the cluster, each
//! reference stamped with its Config's version (`motley_core::config`), and the users of
//! a changed Config rewritten in the same transaction, which rolls them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use motley_core::api::ObjectResult;
use motley_core::config;
use motley_core::manifest::{Document, ManifestError};
use motley_core::model::{Kind, Spec, Workload, WorkloadRef};
use motley_store::Txn;

use crate::error::ApiResult;
use crate::keys;
use crate::state::{Cache, Shared};

/// Every task's config references must name a Config of the set or the cluster, and a
/// key it has.
pub(crate) fn check_refs(cache: &Cache, docs: &[Document]) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    for d in docs {
        for (i, r) in d.spec.task().configs.iter().enumerate() {
            let wr = d.spec.reference().sibling(Kind::Config, &r.config);
            let in_set = docs.iter().find_map(|x| match &x.spec {
                Spec::Config(c) if x.spec.reference() == wr => Some(c),
                _ => None,
            });
            let found = in_set.or_else(|| match cache.workloads.get(&wr).map(|w| &w.spec) {
                Some(Spec::Config(c)) => Some(c),
                _ => None,
            });
            match found {
                None => errors.push(d.error_at(
                    &format!("task.configs[{i}].config"),
                    format!(
                        "config {} is neither in this set nor in the cluster",
                        r.config
                    ),
                )),
                Some(c) if !c.data.contains_key(&r.key) => errors.push(d.error_at(
                    &format!("task.configs[{i}].key"),
                    format!(
                        "config {} has no key {} (it has: {})",
                        r.config,
                        r.key,
                        c.data.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    errors
}

/// Stamps the set's references with the versions of the Configs of the set, or else of
/// the cluster as this server's cache holds them: what a plan or a source compares.
/// The transaction stamps again from the store ([`versions`]).
pub(crate) fn stamp_docs(cache: &Cache, docs: &mut [Document]) {
    let in_set = set_versions(docs);
    for d in docs.iter_mut() {
        config::stamp(&mut d.spec, |r| match in_set.get(r) {
            Some(v) => Some(v.clone()),
            None => match cache.workloads.get(r).map(|w| &w.spec) {
                Some(Spec::Config(c)) => Some(config::version(c)),
                _ => None,
            },
        });
    }
}

fn set_versions(docs: &[Document]) -> BTreeMap<WorkloadRef, String> {
    docs.iter()
        .filter_map(|d| match &d.spec {
            Spec::Config(c) => Some((d.spec.reference(), config::version(c))),
            _ => None,
        })
        .collect()
}

/// The version of every Config the set's tasks (and the users of the set's Configs)
/// reference: a Config of the set as the set has it, any other as the store has it,
/// its key guarded in `txn` so that a Config changing meanwhile retries the apply.
pub(crate) async fn versions(
    s: &Shared,
    docs: &[Document],
    users: &[WorkloadRef],
    mut txn: Txn,
) -> ApiResult<(BTreeMap<WorkloadRef, Option<String>>, Txn)> {
    let mut out: BTreeMap<WorkloadRef, Option<String>> = set_versions(docs)
        .into_iter()
        .map(|(r, v)| (r, Some(v)))
        .collect();
    let mut wanted: BTreeSet<WorkloadRef> = docs
        .iter()
        .flat_map(|d| config::referenced(&d.spec))
        .collect();
    {
        let cache = s.cache();
        for u in users {
            if let Some(w) = cache.workloads.get(u) {
                wanted.extend(config::referenced(&w.spec));
            }
        }
    }
    for r in wanted {
        if out.contains_key(&r) {
            continue;
        }
        let key = keys::workload(&r);
        let current = s.store.get(&key).await?;
        txn = txn.when(&key, current.as_ref().map_or(0, |kv| kv.mod_revision));
        let v = current
            .and_then(|kv| serde_json::from_slice::<Workload>(&kv.value).ok())
            .and_then(|w| match &w.spec {
                Spec::Config(c) => Some(config::version(c)),
                _ => None,
            });
        out.insert(r, v);
    }
    Ok((out, txn))
}

/// `spec` stamped with `versions` (borrowed when it references no Config).
pub(crate) fn stamped<'a>(
    spec: &'a Spec,
    versions: &BTreeMap<WorkloadRef, Option<String>>,
) -> Cow<'a, Spec> {
    if spec.task().configs.is_empty() {
        return Cow::Borrowed(spec);
    }
    let mut out = spec.clone();
    config::stamp(&mut out, |r| versions.get(r).cloned().flatten());
    Cow::Owned(out)
}

/// The workloads outside the set that use one of the set's Configs, as this server's
/// cache knows them (the transaction reads each again).
pub(crate) fn users_outside(s: &Shared, docs: &[Document]) -> Vec<WorkloadRef> {
    let in_set: BTreeSet<WorkloadRef> = docs.iter().map(|d| d.spec.reference()).collect();
    let cache = s.cache();
    let mut out = BTreeSet::new();
    for d in docs {
        if d.spec.kind() == Kind::Config {
            out.extend(config::users(cache.workloads.values(), &d.spec.reference()));
        }
    }
    out.into_iter().filter(|r| !in_set.contains(r)).collect()
}

/// Rewrites each of `users` whose stamps `versions` change (a new generation: a service
/// rolls; `config::restamped_with`, as the reconcile pass restamps what this misses),
/// guarded by its revision, with a `configured` result for it.
pub(crate) async fn restamp_users(
    s: &Shared,
    users: &[WorkloadRef],
    versions: &BTreeMap<WorkloadRef, Option<String>>,
    now: u64,
    mut txn: Txn,
    results: &mut Vec<ObjectResult>,
) -> ApiResult<Txn> {
    for r in users {
        let key = keys::workload(r);
        let Some(kv) = s.store.get(&key).await? else {
            continue;
        };
        let Ok(w) = serde_json::from_slice::<Workload>(&kv.value) else {
            continue;
        };
        let version_of = |c: &WorkloadRef| versions.get(c).cloned().flatten();
        if let Some(next) = config::restamped_with(&w, version_of, now) {
            let v = serde_json::to_vec(&next).map_err(|e| {
                crate::error::ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    e.to_string(),
                )
            })?;
            txn = txn.when(&key, kv.mod_revision).put(key, v);
            results.push(ObjectResult::of(r, "configured"));
        }
    }
    Ok(txn)
}
