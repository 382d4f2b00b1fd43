//! Which workloads a reconcile pass visits.
//!
//! A finished job has nothing left to decide until it or one of its allocations
//! changes, or its `ttl_after_finished` runs out ([`crate::collect`]). A cluster keeps a
//! day of finished jobs (10,000 of them after a busy day), and a pass that visited every
//! one of them on every change spent three quarters of the server's CPU doing so
//! (issue 25: 13 ms per job submitted one by one with 8,000 kept). [`Active`] is told
//! every change the cache applies ([`Active::touch`], [`Active::put_alloc`],
//! [`Active::remove_alloc`]); a pass visits only the workloads not settled, plus those
//! whose time has come, and reports which it found settled ([`crate::reconcile::Plan`]'s
//! `settled`), which [`Active::settle`] then skips until they change.
//!
//! A run of a periodic job changing, or one of its allocations, is a change of the
//! periodic job too ([`crate::periodic::job_of_run`]): its next decision depends on
//! whether its runs have ended. Whoever tells `Active` of changes touches both.
//!
//! Invariant: a settled workload has no live allocation, no allocation of another uid,
//! and, if it exists, is a finished job (or a kind that has no allocations): so every
//! live allocation belongs to a workload a pass visits, and the placer sees them all.
//! A pass over [`Active`] makes the same plan as a pass over everything (the simulator
//! compares the two after every pass, `motley_server`'s `Plans::check_full`).

use std::collections::{BTreeSet, HashMap};

use crate::model::{Allocation, WorkloadRef};
use crate::reconcile::Plan;

/// The workloads a pass must visit, and every allocation by its workload.
#[derive(Debug, Default)]
pub struct Active {
    /// Every allocation id by its workload reference (of any uid), so that a pass finds
    /// a workload's allocations without walking them all.
    allocs: HashMap<WorkloadRef, BTreeSet<String>>,
    /// Workloads not settled: changed since a pass last found them settled, or never
    /// found so.
    unsettled: BTreeSet<WorkloadRef>,
    /// Settled workloads that must be visited again at a time (their TTL runs out).
    wakes: BTreeSet<(u64, WorkloadRef)>,
    /// The wake of each settled workload that has one, to forget it on a change.
    wake_of: HashMap<WorkloadRef, u64>,
}

impl Active {
    /// The workload `w` (or something about it) changed: visit it again.
    pub fn touch(&mut self, w: &WorkloadRef) {
        if let Some(at) = self.wake_of.remove(w) {
            self.wakes.remove(&(at, w.clone()));
        }
        if !self.unsettled.contains(w) {
            self.unsettled.insert(w.clone());
        }
    }

    /// Allocation `a` was stored (created or changed): its workload is visited again.
    pub fn put_alloc(&mut self, a: &Allocation) {
        let ids = self.allocs.entry(a.workload.clone()).or_default();
        if !ids.contains(&a.id) {
            ids.insert(a.id.clone());
        }
        self.touch(&a.workload);
    }

    /// Allocation `a` was deleted: its workload is visited again.
    pub fn remove_alloc(&mut self, a: &Allocation) {
        if let Some(ids) = self.allocs.get_mut(&a.workload) {
            ids.remove(&a.id);
            if ids.is_empty() {
                self.allocs.remove(&a.workload);
            }
        }
        self.touch(&a.workload);
    }

    /// What a pass found settled: each workload with the time it must be visited again,
    /// if any. Call it with the pass's state unchanged since (under the same lock).
    pub fn settle(&mut self, settled: &[(WorkloadRef, Option<u64>)]) {
        for (w, wake) in settled {
            self.unsettled.remove(w);
            if let Some(at) = self.wake_of.remove(w) {
                self.wakes.remove(&(at, w.clone()));
            }
            if let Some(at) = *wake {
                self.wakes.insert((at, w.clone()));
                self.wake_of.insert(w.clone(), at);
            }
        }
    }

    /// The workloads a pass at `now` visits, in order: those not settled and those whose
    /// time has come.
    pub fn visit(&self, now: u64) -> Vec<&WorkloadRef> {
        let due = self.wakes.iter().take_while(|(at, _)| *at <= now);
        if due.clone().next().is_none() {
            return self.unsettled.iter().collect();
        }
        let mut all: Vec<&WorkloadRef> = self.unsettled.iter().chain(due.map(|(_, w)| w)).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The earliest time after `now` a settled workload must be visited.
    pub fn next_wake(&self, now: u64) -> Option<u64> {
        self.wakes.iter().map(|(at, _)| *at).find(|at| *at > now)
    }

    /// The ids of `w`'s allocations (of any uid), in order.
    pub fn allocs_of(&self, w: &WorkloadRef) -> Option<&BTreeSet<String>> {
        self.allocs.get(w)
    }

    /// How many workloads are not settled (a gauge).
    pub fn unsettled(&self) -> usize {
        self.unsettled.len()
    }
}

/// Whether a pass over [`Active`] made the same plan as a full pass: the same decisions
/// in the same order (new allocations' ids aside, and what was settled, which only the
/// former reports). Otherwise the first field that differs, with both values.
pub fn same_plan(incremental: &Plan, full: &Plan) -> Result<(), String> {
    /// Each decision of a plan as text, new allocations unnamed.
    fn texts(p: &Plan) -> [(&'static str, String); 13] {
        let unnamed: Vec<Allocation> = p
            .create
            .iter()
            .map(|a| Allocation {
                id: String::new(),
                ..a.clone()
            })
            .collect();
        [
            ("create", format!("{unnamed:?}")),
            ("stop", format!("{:?}", p.stop)),
            ("delete", format!("{:?}", p.delete)),
            ("lost", format!("{:?}", p.lost)),
            ("blocked", format!("{:?}", p.blocked)),
            ("bind", format!("{:?}", p.bind)),
            ("queue", format!("{:?}", p.queue)),
            ("wake_at", format!("{:?}", p.wake_at)),
            ("revert", format!("{:?}", p.revert)),
            ("collect", format!("{:?}", p.collect)),
            ("runs", format!("{:?}", p.runs)),
            ("drop_runs", format!("{:?}", p.drop_runs)),
            ("restamp", format!("{:?}", p.restamp)),
        ]
    }
    let (a, b) = (texts(incremental), texts(full));
    match a.iter().zip(&b).find(|(x, y)| x.1 != y.1) {
        None => Ok(()),
        Some(((name, x), (_, y))) => Err(format!("{name}: {} against {}", clip(x), clip(y))),
    }
}

/// At most 400 characters of a long value, saying how long it was.
fn clip(s: &str) -> String {
    match s.char_indices().nth(400) {
        None => s.to_string(),
        Some((at, _)) => format!("{}… ({} characters)", &s[..at], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllocState, Kind, test_alloc};

    fn r(name: &str) -> WorkloadRef {
        WorkloadRef::new(Kind::Job, name)
    }

    fn alloc(id: &str, w: &str) -> Allocation {
        let mut a = test_alloc(id, &format!("job/{w}"), AllocState::Complete);
        a.workload = r(w);
        a
    }

    #[test]
    fn a_change_unsettles_and_a_settled_workload_is_not_visited() {
        let mut act = Active::default();
        act.put_alloc(&alloc("a-1", "a"));
        act.touch(&r("b"));
        assert_eq!(act.visit(0), vec![&r("a"), &r("b")]);
        act.settle(&[(r("a"), None)]);
        assert_eq!(act.visit(0), vec![&r("b")]);
        assert_eq!(
            act.allocs_of(&r("a"))
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
            vec!["a-1"]
        );
        // Its allocation changes: visited again.
        act.put_alloc(&alloc("a-1", "a"));
        assert_eq!(act.visit(0), vec![&r("a"), &r("b")]);
        act.settle(&[(r("a"), None), (r("b"), None)]);
        assert!(act.visit(0).is_empty());
        act.remove_alloc(&alloc("a-1", "a"));
        assert_eq!(act.visit(0), vec![&r("a")]);
        assert!(act.allocs_of(&r("a")).is_none());
        assert!(act.allocs.is_empty(), "an empty entry is forgotten");
    }

    #[test]
    fn a_settled_workload_is_visited_again_when_its_time_comes() {
        let mut act = Active::default();
        act.touch(&r("a"));
        act.touch(&r("b"));
        act.settle(&[(r("a"), Some(100)), (r("b"), Some(50))]);
        assert!(act.visit(49).is_empty());
        assert_eq!(act.next_wake(0), Some(50));
        assert_eq!(act.visit(50), vec![&r("b")]);
        assert_eq!(act.next_wake(50), Some(100));
        assert_eq!(act.visit(100), vec![&r("a"), &r("b")]);
        assert_eq!(act.next_wake(100), None);
        // A change forgets the wake; settling again replaces it.
        act.touch(&r("a"));
        assert_eq!(act.visit(60), vec![&r("a"), &r("b")]);
        act.settle(&[(r("a"), Some(200)), (r("b"), Some(70))]);
        assert_eq!(act.visit(100), vec![&r("b")]);
        assert_eq!(act.next_wake(100), Some(200));
    }
}
