//! Namespaces in a manifest set: `-n NS` for the documents that name none, and a
//! namespace's quota against what its workloads would ask for after the apply.

use std::collections::BTreeMap;

use crate::model::{Spec, WorkloadRef};
use crate::quota::{self, Quota};

use super::{Document, ManifestError};

/// Puts each document that names no namespace into `ns`; one that names another is
/// an error at its `namespace` field. Namespaces themselves are cluster-wide.
pub fn in_namespace(docs: &mut [Document], ns: &str) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    for d in docs.iter_mut() {
        if matches!(d.spec, Spec::Namespace(_)) {
            continue;
        }
        if d.spans.get("namespace").is_some() {
            if d.spec.namespace() != ns {
                errors.push(d.error_at(
                    "namespace",
                    format!(
                        "is {} but the set is applied to namespace {ns} (-n): drop one of them",
                        d.spec.namespace()
                    ),
                ));
            }
        } else {
            d.spec.set_namespace(ns);
        }
    }
    errors
}

/// What each namespace's quota says of the set: for every namespace a workload of
/// `docs` is in, the demand of its workloads after the apply (`current`: the
/// cluster's specs, replaced by the set's where they name the same object) against its
/// quota (the set's Namespace, else `quotas`). The error is at the set's first
/// workload in that namespace.
pub fn quota_problems(
    docs: &[Document],
    current: &BTreeMap<WorkloadRef, &Spec>,
    quotas: &BTreeMap<String, Quota>,
    ready_nodes: u32,
) -> Vec<ManifestError> {
    let mut quotas = quotas.clone();
    for d in docs {
        if let Spec::Namespace(n) = &d.spec {
            quotas.insert(n.name.clone(), n.quota);
        }
    }
    let mut errors = Vec::new();
    let mut namespaces: Vec<&str> = docs
        .iter()
        .filter(|d| d.spec.kind().is_workload())
        .map(|d| d.spec.namespace())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        let Some(q) = quotas.get(ns) else { continue };
        let before: BTreeMap<WorkloadRef, &Spec> = current
            .iter()
            .filter(|(r, _)| r.namespace == ns)
            .map(|(r, s)| (r.clone(), *s))
            .collect();
        let mut after = before.clone();
        for d in docs.iter().filter(|d| d.spec.namespace() == ns) {
            after.insert(d.spec.reference(), &d.spec);
        }
        let was = quota::demand(before.values().copied(), ready_nodes);
        let will = quota::demand(after.values().copied(), ready_nodes);
        let over = quota::exceeded(q, &will);
        // A set that asks for no more of anything is a step towards the quota (one
        // lowered below what runs): never refused.
        let grows = will.cpu > was.cpu
            || will.memory > was.memory
            || will.gpu > was.gpu
            || will.allocations > was.allocations;
        if over.is_empty() || !grows {
            continue;
        }
        let Some(d) = docs
            .iter()
            .find(|d| d.spec.namespace() == ns && d.spec.kind().is_workload())
        else {
            continue;
        };
        let field = match &d.spec {
            Spec::Service(_) => "replicas",
            Spec::Job(_) => "parallelism",
            _ => "task.resources",
        };
        errors.push(d.error_at(
            field,
            format!("namespace {ns} would exceed its quota: {}", over.join(", ")),
        ));
    }
    errors
}
