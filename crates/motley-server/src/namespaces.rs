//! Namespaces at admission (issue 22; docs/namespaces.md). The rules of a set are
//! pure (`motley_core::manifest::{in_namespace, quota_problems}`); this module feeds
//! them the cluster and guards the transaction:
//!
//! * a document in a namespace other than `default` needs that Namespace, in the set
//!   or stored; the transaction compares the stored one's revision, and creating an
//!   object in it writes the Namespace again (same value), so a concurrent delete of
//!   the namespace (which checks that nothing lives in it) fails instead of leaving
//!   objects behind;
//! * a namespace's quota holds for what its workloads ask for after the set;
//! * a Source's name is unique in the cluster (objects record their source by name).

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use motley_core::manifest::{self, Document, ManifestError};
use motley_core::model::{DEFAULT_NAMESPACE, Kind, Spec, WorkloadRef};
use motley_core::quota::Quota;
use motley_store::Txn;

use crate::error::{ApiError, ApiResult, invalid};
use crate::keys;
use crate::state::Shared;

/// The namespace object `ns` is.
fn namespace_ref(ns: &str) -> WorkloadRef {
    WorkloadRef::new(Kind::Namespace, ns)
}

/// The namespaces a set makes.
fn made_by(docs: &[Document]) -> BTreeSet<&str> {
    docs.iter()
        .filter(|d| d.spec.kind() == Kind::Namespace)
        .map(|d| d.spec.name())
        .collect()
}

/// What a set breaks of the namespace rules, from the cache (before the transaction).
pub(crate) fn check_set(s: &Shared, docs: &[Document]) -> Vec<ManifestError> {
    let cache = s.cache();
    let in_set = made_by(docs);
    let mut errors = Vec::new();
    for d in docs {
        let ns = d.spec.namespace();
        if ns != DEFAULT_NAMESPACE
            && !in_set.contains(ns)
            && !cache.workloads.contains_key(&namespace_ref(ns))
        {
            errors.push(d.error_at(
                "namespace",
                format!(
                    "namespace {ns} does not exist: apply a `kind: Namespace` named {ns} first (or in the same set)"
                ),
            ));
        }
        if let Spec::Source(src) = &d.spec {
            let r = d.spec.reference();
            // Stored sources of that name are adjacent (references order by kind, then
            // name); the set's own are few.
            let from = WorkloadRef::in_namespace("", Kind::Source, &src.name);
            let stored = cache
                .workloads
                .range(from..)
                .map(|(o, _)| o.clone())
                .take_while(|o| o.kind == Kind::Source && o.name == src.name);
            let in_set = docs.iter().map(|x| x.spec.reference());
            let other = stored
                .chain(in_set)
                .find(|o| o.kind == Kind::Source && o.name == src.name && *o != r);
            if let Some(o) = other {
                errors.push(d.error_at(
                    "name",
                    format!(
                        "source {} exists in namespace {} already: a source's name is unique in the cluster",
                        src.name, o.namespace
                    ),
                ));
            }
        }
    }
    // The quotas of the namespaces the set puts workloads in (the set's Namespace,
    // else the stored one). Only those namespaces' workloads are read: an apply into a
    // namespace without a quota (every one into `default`, as a rule) walks nothing.
    let mut quotas: BTreeMap<String, Quota> = BTreeMap::new();
    for d in docs.iter().filter(|d| d.spec.kind().is_workload()) {
        let ns = d.spec.namespace();
        if quotas.contains_key(ns) {
            continue;
        }
        let quota = docs
            .iter()
            .find_map(|x| match &x.spec {
                Spec::Namespace(n) if n.name == ns => Some(n.quota),
                _ => None,
            })
            .or_else(
                || match cache.workloads.get(&namespace_ref(ns)).map(|w| &w.spec) {
                    Some(Spec::Namespace(n)) => Some(n.quota),
                    _ => None,
                },
            );
        if let Some(q) = quota.filter(|q| *q != Quota::default()) {
            quotas.insert(ns.to_string(), q);
        }
    }
    if !quotas.is_empty() {
        let current: BTreeMap<WorkloadRef, &Spec> = cache
            .workloads
            .iter()
            .filter(|(r, _)| quotas.contains_key(&r.namespace))
            .map(|(r, w)| (r.clone(), &w.spec))
            .collect();
        let ready = u32::try_from(s.ready_nodes().len()).unwrap_or(u32::MAX);
        errors.extend(manifest::quota_problems(docs, &current, &quotas, ready));
    }
    errors
}

/// Inside the transaction: every namespace the set writes into that the set does not
/// make must still be stored (compared at its revision), and is written again when
/// the set creates an object in it (`created`: such namespaces).
pub(crate) async fn guard(
    s: &Shared,
    mut txn: Txn,
    docs: &[Document],
    created: &BTreeSet<String>,
) -> ApiResult<Txn> {
    let made = made_by(docs);
    let mut seen = BTreeSet::new();
    for d in docs {
        let ns = d.spec.namespace();
        if ns == DEFAULT_NAMESPACE || made.contains(ns) || !seen.insert(ns) {
            continue;
        }
        let key = keys::workload(&namespace_ref(ns));
        match s.store.get(&key).await? {
            None => {
                return Err(invalid(vec![d.error_at(
                    "namespace",
                    format!("namespace {ns} does not exist (deleted meanwhile?)"),
                )]));
            }
            Some(kv) => {
                txn = txn.when(&key, kv.mod_revision);
                if created.contains(ns) {
                    txn = txn.put(key, kv.value);
                }
            }
        }
    }
    Ok(txn)
}

/// Refuses deleting a namespace that still holds objects (other than those in
/// `deleting`), read from the store inside the transaction.
pub(crate) async fn refuse_nonempty(
    s: &Shared,
    r: &WorkloadRef,
    deleting: &[WorkloadRef],
) -> ApiResult<()> {
    if r.kind != Kind::Namespace {
        return Ok(());
    }
    let range = s.store.range(keys::WORKLOADS).await?;
    let mut held: Vec<String> = range
        .kvs
        .iter()
        .filter_map(|kv| match keys::parse(&kv.key) {
            keys::Parsed::Workload(w) if w.namespace == r.name && !deleting.contains(&w) => {
                Some(format!("{}/{}", w.kind, w.name))
            }
            _ => None,
        })
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    let n = held.len();
    held.truncate(5);
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "namespace {} holds {n} object(s) ({}{}): delete them first; nothing was deleted",
            r.name,
            held.join(", "),
            if n > 5 { ", …" } else { "" }
        ),
    ))
}
