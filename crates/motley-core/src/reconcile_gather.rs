//! What a pass looks at: the workloads it visits with their allocations, the live
//! allocations the placer counts, and the live allocations on down nodes (lost). A full
//! pass walks every workload and allocation; with [`crate::active::Active`] a pass visits
//! only the workloads not settled (every live allocation belongs to one of those) and
//! makes the same plan. Orders are the full pass's: workloads by reference, allocations
//! by id. [`UniqueIds`] keeps the shell's allocation ids from repeating.

use std::collections::{BTreeMap, BTreeSet};

use super::{Ids, Input};
use crate::model::{AllocState, Allocation, NodeLoss, Workload, WorkloadRef};

/// Allocations by workload, in reference order, ids in order.
pub(super) type Groups<'a> = Vec<(&'a WorkloadRef, Vec<&'a Allocation>)>;

/// One workload a pass visits.
pub(super) struct Visit<'a> {
    pub wref: &'a WorkloadRef,
    /// Its record; `None` once deleted (its allocations are orphans).
    pub workload: Option<&'a Workload>,
    /// Its allocations of any uid, in id order, lost ones (as lost copies) last.
    pub allocs: Vec<&'a Allocation>,
    /// One of them was lost in this pass.
    pub lost: bool,
}

/// Live allocations on down nodes: copies marked lost, and when the next fenced one
/// may be replaced.
#[derive(Default)]
pub(super) struct Lost {
    pub copies: Vec<Allocation>,
    pub wake: Option<u64>,
}

/// The allocations of the workloads [`crate::active::Active`] says to visit; `None` for
/// a full pass.
pub(super) fn groups<'a>(input: &'a Input<'a>) -> Option<Groups<'a>> {
    let active = input.active?;
    Some(
        active
            .visit(input.now)
            .into_iter()
            .map(|w| {
                (
                    w,
                    active
                        .allocs_of(w)
                        .map_or_else(Vec::new, |ids| find(input, ids)),
                )
            })
            .collect(),
    )
}

/// The allocations with these ids, in id order. A few are looked up one by one; many
/// (a job of 10,000 completions) are found in one walk over the range of ids they span,
/// beside the ids: a lookup each cost a 10,000-task array a third of its speed.
fn find<'a>(input: &Input<'a>, ids: &BTreeSet<String>) -> Vec<&'a Allocation> {
    const LOOKUPS: usize = 16;
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Vec::new();
    };
    if ids.len() <= LOOKUPS {
        return ids.iter().filter_map(|id| input.allocs.get(id)).collect();
    }
    let mut out = Vec::with_capacity(ids.len());
    let mut want = ids.iter().peekable();
    // One comparison per step: the wanted ids are a subset of the range's.
    'walk: for (id, a) in input.allocs.range::<String, _>(first..=last) {
        while let Some(w) = want.peek() {
            match w.as_str().cmp(id.as_str()) {
                std::cmp::Ordering::Less => {
                    want.next();
                }
                std::cmp::Ordering::Equal => {
                    out.push(a);
                    want.next();
                    continue 'walk;
                }
                std::cmp::Ordering::Greater => continue 'walk,
            }
        }
        break;
    }
    out
}

/// Live allocations on down nodes are lost: from here on they count as terminal, so
/// the same pass places their replacements. In id order.
pub(super) fn lost(input: &Input<'_>, groups: Option<&Groups<'_>>) -> Lost {
    let mut lost = Lost::default();
    let mut check = |a: &Allocation| {
        if !a.is_live() {
            return;
        }
        let gone = match input.down.get(&a.node) {
            None => false,
            Some(_) if a.on_node_loss == NodeLoss::Replace => true,
            Some(since) => {
                // Fenced: its node stops it when its lease runs out; replace only after that.
                let at = since + input.fence_after_ms + a.task.stop_grace.as_millis();
                let at = if crate::mutants::active("replacement-without-loss") {
                    *since
                } else {
                    at
                };
                if input.now < at {
                    lost.wake = Some(lost.wake.map_or(at, |w: u64| w.min(at)));
                }
                input.now >= at
            }
        };
        if gone {
            let mut l = a.clone();
            l.state = AllocState::Lost;
            l.updated_at = input.now;
            lost.copies.push(l);
        }
    };
    match groups {
        None => input.allocs.values().for_each(&mut check),
        Some(g) => g.iter().flat_map(|(_, v)| v.iter()).for_each(|a| check(a)),
    }
    if groups.is_some() {
        lost.copies.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    }
    lost
}

/// The workloads to visit, in reference order, and every live allocation not lost, in
/// id order.
pub(super) fn visits<'a: 'l, 'l>(
    input: &'a Input<'a>,
    groups: Option<Groups<'a>>,
    lost: &'l [Allocation],
) -> (Vec<Visit<'l>>, Vec<&'a Allocation>) {
    let lost_ids: BTreeSet<&str> = lost.iter().map(|a| a.id.as_str()).collect();
    let not_lost = |a: &&Allocation| lost_ids.is_empty() || !lost_ids.contains(a.id.as_str());
    match groups {
        None => full(input, lost, &not_lost),
        Some(groups) => {
            let mut live: Vec<&Allocation> = Vec::new();
            let mut visits: Vec<Visit<'l>> = groups
                .into_iter()
                .map(|(wref, mut allocs)| {
                    allocs.retain(not_lost);
                    live.extend(allocs.iter().filter(|a| a.is_live()));
                    Visit {
                        wref,
                        workload: input.workloads.get(wref),
                        allocs,
                        lost: false,
                    }
                })
                .collect();
            for a in lost {
                if let Ok(i) = visits.binary_search_by(|v| v.wref.cmp(&a.workload)) {
                    visits[i].allocs.push(a);
                    visits[i].lost = true;
                }
            }
            // Each workload's are in id order already: a stable sort merges those runs
            // (a 10,000-task array's pending allocations are one run, not re-sorted).
            live.sort_by(|a, b| a.id.cmp(&b.id));
            (visits, live)
        }
    }
}

/// Every workload, and every workload some allocation names.
fn full<'a: 'l, 'l>(
    input: &'a Input<'a>,
    lost: &'l [Allocation],
    not_lost: &dyn Fn(&&Allocation) -> bool,
) -> (Vec<Visit<'l>>, Vec<&'a Allocation>) {
    let mut by_workload: BTreeMap<&'l WorkloadRef, Vec<&'l Allocation>> = BTreeMap::new();
    let mut live: Vec<&'a Allocation> = Vec::new();
    // Allocation ids begin with their workload's name, so a workload's allocations
    // mostly come one after another: gather each run before looking its workload up.
    let mut run: Option<(&'l WorkloadRef, Vec<&'l Allocation>)> = None;
    for a in input.allocs.values().filter(not_lost) {
        if a.is_live() {
            live.push(a);
        }
        match &mut run {
            Some((w, v)) if **w == a.workload => v.push(a),
            _ => {
                if let Some((w, v)) = run.replace((&a.workload, vec![a])) {
                    by_workload.entry(w).or_default().extend(v);
                }
            }
        }
    }
    if let Some((w, v)) = run {
        by_workload.entry(w).or_default().extend(v);
    }
    let mut lost_refs = BTreeSet::new();
    for a in lost {
        by_workload.entry(&a.workload).or_default().push(a);
        lost_refs.insert(&a.workload);
    }
    // Walk both sorted maps side by side, not a lookup per workload (a pass over 10,000
    // jobs was mostly key comparisons).
    let mut visits = Vec::with_capacity(input.workloads.len());
    let mut ws = input.workloads.iter().peekable();
    let visit = |wref, workload, allocs| Visit {
        wref,
        workload,
        allocs,
        lost: lost_refs.contains(wref),
    };
    for (wref, allocs) in by_workload {
        while let Some((k, w)) = ws.next_if(|(k, _)| *k < wref) {
            visits.push(visit(k, Some(w), Vec::new()));
        }
        let w = ws.next_if(|(k, _)| *k == wref).map(|(_, w)| w);
        visits.push(visit(wref, w, allocs));
    }
    visits.extend(ws.map(|(k, w)| visit(k, Some(w), Vec::new())));
    (visits, live)
}

/// The shell's ids, never one an allocation has or this pass gave (random ids can
/// repeat: 10,000 allocations of 32 random bits collide with a chance near 1 %; the
/// store's "key absent" compare then failed the whole creation group).
pub(super) struct UniqueIds<'p> {
    inner: &'p mut dyn Ids,
    allocs: &'p BTreeMap<String, Allocation>,
    made: BTreeSet<String>,
}

impl<'p> UniqueIds<'p> {
    pub(super) fn new(inner: &'p mut dyn Ids, allocs: &'p BTreeMap<String, Allocation>) -> Self {
        UniqueIds {
            inner,
            allocs,
            made: BTreeSet::new(),
        }
    }
}

impl Ids for UniqueIds<'_> {
    fn next_id(&mut self, workload: &WorkloadRef) -> String {
        let mut id = self.inner.next_id(workload);
        let mut tries = 1u32;
        while self.allocs.contains_key(&id) || self.made.contains(&id) {
            id = if tries < 8 {
                self.inner.next_id(workload)
            } else {
                // An id source that keeps repeating: make it unique by a suffix.
                format!("{id}-{tries}")
            };
            tries += 1;
        }
        self.made.insert(id.clone());
        id
    }
}

/// What a pass found settled ([`crate::active`]): finished jobs, and workloads (or
/// deleted ones) with no allocation, unless an allocation is live, orphaned or lost.
pub(super) fn settled(
    visits: &[Visit<'_>],
    orphans: &[bool],
    finished: Vec<(usize, Option<u64>)>,
) -> Vec<(WorkloadRef, Option<u64>)> {
    let quiet = |i: usize| {
        let v = &visits[i];
        !v.lost && !orphans[i] && !v.allocs.iter().any(|a| a.is_live())
    };
    let mut out: Vec<(WorkloadRef, Option<u64>)> = finished
        .into_iter()
        .filter(|(i, _)| quiet(*i))
        .map(|(i, wake)| (visits[i].wref.clone(), wake))
        .collect();
    for (i, v) in visits.iter().enumerate() {
        let idle = v.allocs.is_empty() && v.workload.is_none_or(|w| !w.spec.kind().is_workload());
        if idle && quiet(i) {
            out.push((v.wref.clone(), None));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, test_alloc};

    /// An id source that repeats itself: `a-1`, `a-2`, `a-1`, `a-2`, …
    struct Repeating(u32);

    impl Ids for Repeating {
        fn next_id(&mut self, _: &WorkloadRef) -> String {
            self.0 += 1;
            format!("a-{}", 1 + self.0 % 2)
        }
    }

    #[test]
    fn an_id_an_allocation_has_or_the_pass_gave_is_never_given_again() {
        let w = WorkloadRef::new(Kind::Job, "a");
        let mut allocs = BTreeMap::new();
        allocs.insert(
            "a-2".to_string(),
            test_alloc("a-2", "job/a", AllocState::Running),
        );
        let mut source = Repeating(0);
        let mut ids = UniqueIds::new(&mut source, &allocs);
        // a-2 is taken by an allocation: the next one the source gives.
        assert_eq!(ids.next_id(&w), "a-1");
        // Both taken now: the source only repeats them, so a suffix makes one unique.
        let third = ids.next_id(&w);
        assert!(
            third.starts_with("a-") && third != "a-1" && third != "a-2",
            "{third}"
        );
        let fourth = ids.next_id(&w);
        assert!(
            fourth != third && fourth != "a-1" && fourth != "a-2",
            "{fourth}"
        );
    }
}
