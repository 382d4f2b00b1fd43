//! A namespace's quota and the demand its workloads make on it (issue 22; the rules
//! admission will apply once namespaces exist: docs/decisions.md, "Namespaces: the
//! plan"). Pure: the demand of a set of specs, and what of a quota it passes.

use serde::{Deserialize, Serialize};

use crate::model::Spec;
use crate::quantity::{Bytes, MilliCpu};

/// What a namespace may ask for at once; an unset field is unlimited.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Millicores requested by every instance together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<MilliCpu>,
    /// Memory requested together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// GPUs requested together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Instances running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocations: Option<u32>,
}

/// What a set of workloads asks for at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    /// Millicores.
    pub cpu: u64,
    /// Bytes of memory.
    pub memory: u64,
    /// GPUs.
    pub gpu: u64,
    /// Instances.
    pub allocations: u64,
}

/// Instances of a spec that may run at once: a service's replicas, a job's
/// parallelism (never more than its completions), a daemon's nodes (`nodes`: the
/// ready nodes, the most it can have); volumes, secrets and sources run nothing.
pub fn instances(spec: &Spec, nodes: u32) -> u64 {
    u64::from(match spec {
        Spec::Service(s) => s.replicas,
        Spec::Job(j) => j.parallelism.min(j.completions),
        Spec::Daemon(_) => nodes,
        Spec::Volume(_)
        | Spec::Secret(_)
        | Spec::Source(_)
        | Spec::Namespace(_)
        | Spec::Config(_) => 0,
    })
}

/// The demand of `specs` with `nodes` ready nodes (each instance at its requests,
/// defaults included, as the scheduler reserves them).
pub fn demand<'a>(specs: impl IntoIterator<Item = &'a Spec>, nodes: u32) -> Demand {
    let mut d = Demand::default();
    for spec in specs {
        let n = instances(spec, nodes);
        let r = &spec.task().resources;
        d.cpu = d.cpu.saturating_add(n.saturating_mul(r.cpu_or_default().0));
        d.memory = d
            .memory
            .saturating_add(n.saturating_mul(r.memory_or_default().0));
        d.gpu = d
            .gpu
            .saturating_add(n.saturating_mul(u64::from(r.gpu.as_ref().map_or(0, |g| g.count))));
        d.allocations = d.allocations.saturating_add(n);
    }
    d
}

/// What of `quota` the demand passes, in words (empty: it fits).
pub fn exceeded(quota: &Quota, d: &Demand) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(q) = quota.cpu
        && d.cpu > q.0
    {
        out.push(format!("cpu {} of {q}", MilliCpu(d.cpu)));
    }
    if let Some(q) = quota.memory
        && d.memory > q.0
    {
        out.push(format!("memory {} of {q}", Bytes(d.memory).readable()));
    }
    if let Some(q) = quota.gpu
        && d.gpu > u64::from(q)
    {
        out.push(format!("gpu {} of {q}", d.gpu));
    }
    if let Some(q) = quota.allocations
        && d.allocations > u64::from(q)
    {
        out.push(format!("allocations {} of {q}", d.allocations));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(yaml: &str) -> Spec {
        match serde_saphyr::from_str(yaml) {
            Ok(s) => s,
            Err(e) => panic!("{yaml}: {e}"),
        }
    }

    fn service(replicas: u32, cpu: &str, memory: &str) -> Spec {
        spec(&format!(
            "kind: Service\nname: s\nreplicas: {replicas}\ntask:\n  command: [x]\n  resources: {{ cpu: {cpu}, memory: {memory} }}\n"
        ))
    }

    #[test]
    fn demand_counts_what_may_run_at_once() {
        let job = spec(
            "kind: Job\nname: j\ncompletions: 100\nparallelism: 4\ntask:\n  command: [x]\n  resources: { cpu: 1, memory: 1Gi, gpu: { count: 1 } }\n",
        );
        let daemon = spec("kind: Daemon\nname: d\ntask:\n  command: [x]\n");
        let secret = spec("kind: Secret\nname: k\ndata: { a: b }\n");
        let specs = [service(3, "500m", "256Mi"), job, daemon, secret];
        let d = demand(&specs, 5);
        // 3 × 500m + 4 × 1000m + 5 × 100m (the default request); memory likewise.
        assert_eq!(
            d,
            Demand {
                cpu: 1_500 + 4_000 + 500,
                memory: (3 * 256 + 4 * 1024 + 5 * 64) << 20,
                gpu: 4,
                allocations: 12,
            }
        );
        let q = Quota {
            cpu: Some(MilliCpu(4_000)),
            memory: Some(Bytes(8 << 30)),
            gpu: Some(2),
            allocations: Some(20),
        };
        assert_eq!(exceeded(&q, &d), ["cpu 6 of 4", "gpu 4 of 2"]);
        assert!(
            exceeded(&Quota::default(), &d).is_empty(),
            "unset: unlimited"
        );
    }

    proptest! {
        /// Adding a workload never lowers the demand, and a demand fits a quota set to
        /// exactly it.
        #[test]
        fn demand_is_monotone_and_an_exact_quota_fits(
            replicas in proptest::collection::vec(0u32..50, 0..8),
            extra in 0u32..50,
            nodes in 0u32..20,
        ) {
            let specs: Vec<Spec> = replicas.iter().map(|r| service(*r, "250m", "128Mi")).collect();
            let before = demand(&specs, nodes);
            let mut more = specs.clone();
            more.push(service(extra, "250m", "128Mi"));
            let after = demand(&more, nodes);
            prop_assert!(after.cpu >= before.cpu && after.memory >= before.memory);
            prop_assert!(after.allocations >= before.allocations);
            let exact = Quota {
                cpu: Some(MilliCpu(after.cpu)),
                memory: Some(Bytes(after.memory)),
                gpu: Some(after.gpu as u32),
                allocations: Some(after.allocations as u32),
            };
            prop_assert!(exceeded(&exact, &after).is_empty());
        }
    }
}
