//! How a [`Plan`] is committed: its write groups, their order, and which are skipped
//! after another fails. The server turns each group into one store transaction guarded
//! by the revisions the plan was made from (and its leader fence); this module decides
//! what goes together and in which order.
//!
//! The rule: stops and losses go first, each group with the workloads it touches; a
//! workload whose stop or loss was not committed (its allocation changed meanwhile) gets
//! no new allocations from this plan. Its replacements were planned on the allocation
//! being gone; committed alone they would run an instance twice (a job index lost,
//! replaced, and then completed anyway). Creates come next, one workload per group; deletes of
//! terminal allocations last.

use std::collections::BTreeSet;

use crate::model::{AllocState, Allocation, Desired, WorkloadRef};
use crate::reconcile::Plan;

/// At most this many allocations per transaction (etcd limits operations per txn).
pub const CHUNK: usize = 100;

/// One transaction of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Group {
    /// Stops and losses: the records to write over the current ones.
    Stop {
        /// The new records (desired stop; lost ones also state lost).
        records: Vec<Allocation>,
        /// The workloads they belong to.
        touches: BTreeSet<WorkloadRef>,
    },
    /// New allocations of one workload.
    Create {
        /// The workload (its revision guards the group).
        workload: WorkloadRef,
        /// Its new allocations.
        allocs: Vec<Allocation>,
        /// Volumes this plan binds that these allocations use (written with the
        /// workload's first group only).
        binds: Vec<String>,
    },
    /// Terminal allocations to forget.
    Delete {
        /// Their ids.
        ids: Vec<String>,
    },
}

/// A stopped allocation's new record: desired stop, the reason kept; a lost one is
/// also terminal (state lost, no process) as of `now`.
pub fn stopped(a: &Allocation, reason: &str, lost: bool, now: u64) -> Allocation {
    let mut a = a.clone();
    a.desired = Desired::Stop;
    if lost {
        a.state = AllocState::Lost;
        a.pid = None;
        a.updated_at = now;
        a.push_reason(format!("lost: {reason}"));
    } else {
        a.push_reason(format!("stop: {reason}"));
    }
    a
}

/// An allocation an operator restarts (`motley restart`, the dashboard): asked to stop,
/// `who` named in its reasons; the controller then places its replacement as for any
/// stopped replica (a fenced one only once this one is seen stopped). Refused, with
/// the reason, when it is already stopping or no longer runs.
pub fn restarted(a: &Allocation, who: &str) -> Result<Allocation, String> {
    if !a.is_live() {
        return Err(format!(
            "allocation {} is {}: only a live allocation restarts",
            a.id, a.state
        ));
    }
    if a.desired == Desired::Stop {
        return Err(format!("allocation {} is already stopping", a.id));
    }
    Ok(stopped(a, &format!("restarted by {who}"), false, 0))
}

/// The write groups of `plan` in commit order. `current` finds an allocation's current
/// record; a stop or loss of one it does not know is dropped (already gone).
pub fn groups<'a>(
    plan: &Plan,
    current: impl Fn(&str) -> Option<&'a Allocation>,
    now: u64,
) -> Vec<Group> {
    let mut out = Vec::new();
    let stops: Vec<(&str, &str, bool)> = plan
        .stop
        .iter()
        .map(|(id, r)| (id.as_str(), r.as_str(), false))
        .chain(
            plan.lost
                .iter()
                .map(|(id, r)| (id.as_str(), r.as_str(), true)),
        )
        .collect();
    for chunk in stops.chunks(CHUNK) {
        let mut records = Vec::new();
        let mut touches = BTreeSet::new();
        for (id, reason, lost) in chunk {
            if let Some(a) = current(id) {
                touches.insert(a.workload.clone());
                records.push(stopped(a, reason, *lost, now));
            }
        }
        if !records.is_empty() {
            out.push(Group::Stop { records, touches });
        }
    }
    let mut by_workload: std::collections::BTreeMap<&WorkloadRef, Vec<&Allocation>> =
        Default::default();
    for a in &plan.create {
        by_workload.entry(&a.workload).or_default().push(a);
    }
    let bound: BTreeSet<&WorkloadRef> = plan.bind.iter().map(|(r, _)| r).collect();
    for (w, allocs) in by_workload {
        let uses: BTreeSet<&str> = allocs
            .iter()
            .flat_map(|a| a.volumes.iter().map(|v| v.name.as_str()))
            .filter(|n| bound.contains(&w.sibling(crate::model::Kind::Volume, n)))
            .collect();
        for (k, chunk) in allocs.chunks(CHUNK).enumerate() {
            out.push(Group::Create {
                workload: w.clone(),
                allocs: chunk.iter().map(|a| (*a).clone()).collect(),
                binds: if k == 0 {
                    uses.iter().map(|s| s.to_string()).collect()
                } else {
                    Vec::new()
                },
            });
        }
    }
    for chunk in plan.delete.chunks(CHUNK) {
        out.push(Group::Delete {
            ids: chunk.to_vec(),
        });
    }
    out
}

/// Whether `g` may wait for the store's group commit (a lazy transaction: on the disk
/// within the commit interval, so a power cut of the store's machine may take it with
/// everything after it). What the controller writes is derived from the specs and the
/// agents' reports and is planned again after a cut, with two exceptions that must be
/// on the disk before any agent acts on them:
///
/// * a **fenced** allocation's creation: forgotten, it would be placed again while the
///   first copy still runs on its node (never two copies);
/// * a volume's **binding**: forgotten, the volume could be bound again elsewhere while
///   its data lives where the first allocation wrote it.
///
/// Everything committed before a durable group is durable with it (the store keeps a
/// prefix of its history), so a fenced replacement also carries the loss it replaces.
pub fn may_wait(g: &Group) -> bool {
    match g {
        Group::Create { allocs, binds, .. } => {
            binds.is_empty()
                && (crate::mutants::active("lazy-fenced-create")
                    || allocs
                        .iter()
                        .all(|a| a.on_node_loss != crate::model::NodeLoss::Fence))
        }
        Group::Stop { .. } | Group::Delete { .. } => true,
    }
}

/// Carries out the rule while groups are committed in order: tell it each group's
/// outcome; it says whether the next may run.
#[derive(Debug, Default)]
pub struct Commit {
    held_back: BTreeSet<WorkloadRef>,
}

impl Commit {
    /// Whether `g` may be committed, given what failed before it.
    pub fn may_run(&self, g: &Group) -> bool {
        match g {
            Group::Create { workload, .. } => !self.held_back.contains(workload),
            Group::Stop { .. } | Group::Delete { .. } => true,
        }
    }

    /// `g` was not committed (a compare failed).
    pub fn failed(&mut self, g: &Group) {
        if let Group::Stop { touches, .. } = g {
            self.held_back.extend(touches.iter().cloned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn alloc(id: &str, workload: &str) -> Allocation {
        let mut a = crate::model::test_alloc(id, &format!("job/{workload}"), AllocState::Running);
        a.pid = Some(9);
        a
    }

    fn job(name: &str) -> WorkloadRef {
        WorkloadRef::new(Kind::Job, name)
    }

    #[test]
    fn a_restart_asks_a_live_allocation_to_stop_once() {
        let a = alloc("a-1", "a");
        let r = restarted(&a, "token t1 (admin)").expect("a running allocation restarts");
        assert_eq!(r.desired, Desired::Stop);
        assert_eq!(
            r.state,
            AllocState::Running,
            "still running until its agent stops it"
        );
        assert_eq!(
            r.reasons.last().map(String::as_str),
            Some("stop: restarted by token t1 (admin)")
        );
        let again = restarted(&r, "x").expect_err("already stopping");
        assert!(again.contains("already stopping"), "{again}");
        let mut done = a.clone();
        done.state = AllocState::Complete;
        let e = restarted(&done, "x").expect_err("complete");
        assert!(e.contains("is complete"), "{e}");
    }

    #[test]
    fn only_fenced_creations_and_bindings_must_be_durable_before_agents_act() {
        let old = alloc("a-1", "a");
        let mut fenced = alloc("f-1", "f");
        fenced.on_node_loss = crate::model::NodeLoss::Fence;
        let plan = Plan {
            create: vec![alloc("a-2", "a"), fenced],
            lost: vec![("a-1".into(), "node n1 down".into())],
            delete: vec!["c-0".into()],
            ..Default::default()
        };
        let g = groups(&plan, |id| (id == "a-1").then_some(&old), 77);
        let waits: Vec<bool> = g.iter().map(may_wait).collect();
        // Loss, a's creates, f's creates, deletes.
        assert_eq!(waits, vec![true, true, false, true], "{g:#?}");
        let bound = Group::Create {
            workload: job("a"),
            allocs: vec![alloc("a-3", "a")],
            binds: vec!["data".into()],
        };
        assert!(!may_wait(&bound), "a binding is durable before it is used");
    }

    #[test]
    fn stops_and_losses_first_then_creates_then_deletes() {
        let old = alloc("a-1", "a");
        let plan = Plan {
            create: vec![alloc("a-2", "a"), alloc("b-1", "b")],
            lost: vec![("a-1".into(), "node n1 down".into())],
            delete: vec!["c-0".into()],
            ..Default::default()
        };
        let g = groups(&plan, |id| (id == "a-1").then_some(&old), 77);
        assert_eq!(g.len(), 4, "{g:#?}");
        let Group::Stop { records, touches } = &g[0] else {
            panic!("stops first: {g:#?}")
        };
        assert_eq!(records[0].state, AllocState::Lost);
        assert_eq!(records[0].desired, Desired::Stop);
        assert_eq!(records[0].pid, None);
        assert_eq!(records[0].updated_at, 77);
        assert_eq!(
            records[0].reasons.last().map(String::as_str),
            Some("lost: node n1 down")
        );
        assert!(touches.contains(&job("a")));
        assert!(matches!(&g[1], Group::Create { workload, .. } if *workload == job("a")));
        assert!(matches!(&g[2], Group::Create { workload, .. } if *workload == job("b")));
        assert!(matches!(&g[3], Group::Delete { ids } if ids == &["c-0".to_string()]));
    }

    #[test]
    fn a_failed_loss_holds_back_its_workloads_replacements_only() {
        let old = alloc("a-1", "a");
        let plan = Plan {
            create: vec![alloc("a-2", "a"), alloc("b-1", "b")],
            lost: vec![("a-1".into(), "down".into())],
            ..Default::default()
        };
        let g = groups(&plan, |id| (id == "a-1").then_some(&old), 0);
        let mut c = Commit::default();
        assert!(c.may_run(&g[0]));
        c.failed(&g[0]);
        assert!(!c.may_run(&g[1]), "a's replacement waits for a's loss");
        assert!(c.may_run(&g[2]), "b is not touched");
    }

    #[test]
    fn a_stop_of_an_unknown_allocation_is_dropped() {
        let plan = Plan {
            stop: vec![("gone".into(), "scaled down".into())],
            ..Default::default()
        };
        assert!(groups(&plan, |_| None, 0).is_empty());
    }

    #[test]
    fn groups_hold_at_most_a_chunk() {
        let creates: Vec<Allocation> = (0..(CHUNK * 2 + 1))
            .map(|i| alloc(&format!("a-{i}"), "a"))
            .collect();
        let plan = Plan {
            create: creates,
            ..Default::default()
        };
        let g = groups(&plan, |_| None, 0);
        let sizes: Vec<usize> = g
            .iter()
            .map(|g| match g {
                Group::Create { allocs, .. } => allocs.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![CHUNK, CHUNK, 1]);
    }
}
