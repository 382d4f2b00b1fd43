//! A workload's status as `get` and `describe` show it, derived from its allocations.

use super::*;

/// A workload's status, derived from its allocations (never stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadStatus {
    /// Instances wanted now (replicas, remaining parallel job slots, matching nodes).
    pub desired: u32,
    /// Running.
    pub running: u32,
    /// Running and passing the service's check (with a check; else equal to `running`):
    /// what takes traffic.
    #[serde(default)]
    pub ready: u32,
    /// Placed, not yet running.
    pub pending: u32,
    /// Completed (jobs: distinct indices).
    pub complete: u32,
    /// Failed allocations.
    pub failed: u32,
    /// Total restarts in place of live allocations.
    pub restarts: u32,
    /// `running`, `pending`, `complete`, `failed`, `degraded`, `queued`; volumes: `bound`,
    /// `unbound`.
    pub phase: String,
}

/// Computes a workload's status from its allocations.
pub fn status(w: &Workload, allocs: &[&Allocation], ready_matching_nodes: u32) -> WorkloadStatus {
    let mut st = WorkloadStatus::default();
    let mut complete_idx = BTreeSet::new();
    for a in allocs.iter().filter(|a| a.workload_uid == w.uid) {
        match a.state {
            AllocState::Running if a.desired == Desired::Run => {
                st.running += 1;
                st.restarts += a.restarts;
                if a.check.is_none() || a.health == Some(crate::health::Health::Healthy) {
                    st.ready += 1;
                }
            }
            // Crash-looping: alive, but not running.
            AllocState::Backoff if a.desired == Desired::Run => st.restarts += a.restarts,
            AllocState::Pending if a.desired == Desired::Run => st.pending += 1,
            AllocState::Complete => {
                complete_idx.insert(a.index);
            }
            AllocState::Failed => st.failed += 1,
            _ => {}
        }
    }
    st.complete = complete_idx.len() as u32;
    match &w.spec {
        Spec::Service(s) => {
            st.desired = s.replicas;
            st.phase = if st.running >= s.replicas {
                "running"
            } else if st.running + st.pending > 0 {
                "degraded"
            } else {
                "pending"
            }
            .into();
        }
        Spec::Daemon(_) => {
            st.desired = ready_matching_nodes;
            st.phase = if st.running >= ready_matching_nodes {
                "running"
            } else {
                "degraded"
            }
            .into();
        }
        // A periodic job runs through its runs (Jobs of their own).
        Spec::Job(j) if j.schedule.is_some() => st.phase = "scheduled".into(),
        Spec::Job(j) => {
            st.desired = j.completions;
            st.phase = if st.complete >= j.completions {
                "complete"
            } else if st.failed > 0 && st.running + st.pending == 0 {
                "failed"
            } else if st.running + st.pending > 0 {
                "running"
            } else {
                "queued"
            }
            .into();
        }
        Spec::Volume(_) => {
            st.phase = if w.binding.is_some() {
                "bound"
            } else {
                "unbound"
            }
            .into();
        }
        Spec::Secret(s) => {
            st.desired = s.data.len() as u32;
            st.phase = "sealed".into();
        }
        // A source's sync status is the leader's (memory), not the allocations'.
        Spec::Source(_) => st.phase = "declared".into(),
        Spec::Namespace(_) => st.phase = "active".into(),
        Spec::Config(c) => {
            st.desired = c.data.len() as u32;
            st.phase = "declared".into();
        }
    }
    st
}
