//! What a git source's sync does to the cluster (issue 21), decided from what the
//! commit declares and what is stored, with no IO: which objects it applies, which it
//! prunes, which it must not touch, which drifted, and when it refuses to act.
//!
//! The rules, in one place:
//!
//! - **Ownership.** Every object a source applied records that source (its
//!   inventory). A source never changes or prunes an object another source owns: the
//!   sync is refused, naming both. An object made by hand with a declared name is
//!   taken over (reported as such) and pruned later only by that source.
//! - **Prune** (only with `prune: true`): objects this source owns that the commit no
//!   longer declares are deleted; objects made by hand never are.
//! - **Nothing deleted by accident.** A commit that declares nothing while the source
//!   owns objects (an emptied or vanished path, a wrong `path:`) is refused unless
//!   the sync is confirmed (`allow_empty`), with or without prune.
//! - **Drift.** An owned object whose stored spec differs from the commit's, when the
//!   source's commit did not change since it last applied, was changed by hand: it is
//!   reported, and put back unless the source says `drift: report`.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{AllocState, Allocation, DriftPolicy, Spec, Workload, WorkloadRef};

/// A commit id as people read it: its first 12 digits.
pub fn short_commit(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

/// Who applied a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// By hand (`motley apply`, the API).
    Hand,
    /// By this source.
    Source(String),
}

/// A stored object as a sync sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Its spec.
    pub spec: Spec,
    /// Who applied it.
    pub owner: Owner,
}

/// A sync's inputs besides the objects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// Delete owned objects the commit no longer declares.
    pub prune: bool,
    /// Confirmed: a commit declaring nothing may delete everything the source owns.
    pub allow_empty: bool,
    /// What to do with drift.
    pub drift: DriftPolicy,
    /// The commit is the one the source last applied (so a difference is drift, not
    /// a change in git).
    pub same_commit: bool,
}

/// Why a sync does nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The commit declares nothing, and the source owns objects.
    #[error(
        "the commit declares no object while this source applied {owned}; nothing was changed (confirm with `motley source sync --allow-empty`)"
    )]
    WouldEmpty {
        /// How many objects the source owns.
        owned: usize,
    },
    /// The commit declares objects another source owns.
    #[error("{} belongs to source {owner}; nothing was changed", object)]
    Claimed {
        /// The object.
        object: WorkloadRef,
        /// The source that owns it.
        owner: String,
    },
}

/// What a sync does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncPlan {
    /// Objects to create or update (their specs differ from what is stored), in
    /// reference order.
    pub apply: Vec<WorkloadRef>,
    /// Of `apply`, those made by hand that the source takes over.
    pub adopt: Vec<WorkloadRef>,
    /// Owned objects to delete.
    pub prune: Vec<WorkloadRef>,
    /// Owned objects changed by hand since the source applied them.
    pub drift: Vec<WorkloadRef>,
    /// Objects the commit declares whose stored spec is the same: left alone.
    pub unchanged: usize,
}

impl SyncPlan {
    /// True when the sync changes nothing.
    pub fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.prune.is_empty()
    }
}

/// Plans source `source`'s sync of `declared` (the commit's objects) against `stored`.
pub fn plan(
    source: &str,
    declared: &BTreeMap<WorkloadRef, Spec>,
    stored: &BTreeMap<WorkloadRef, Stored>,
    opts: &Options,
) -> Result<SyncPlan, Refusal> {
    let owns = |s: &Stored| s.owner == Owner::Source(source.to_string());
    let owned: BTreeSet<&WorkloadRef> = stored
        .iter()
        .filter(|(_, s)| owns(s))
        .map(|(r, _)| r)
        .collect();
    if declared.is_empty() && !owned.is_empty() && !opts.allow_empty {
        return Err(Refusal::WouldEmpty { owned: owned.len() });
    }
    let mut out = SyncPlan::default();
    for (r, spec) in declared {
        match stored.get(r) {
            None => out.apply.push(r.clone()),
            Some(Stored {
                owner: Owner::Source(other),
                ..
            }) if other != source => {
                return Err(Refusal::Claimed {
                    object: r.clone(),
                    owner: other.clone(),
                });
            }
            Some(s) if s.spec == *spec => {
                if s.owner == Owner::Hand {
                    // Same spec, made by hand: the source takes it over (a write of
                    // its owner only).
                    out.apply.push(r.clone());
                    out.adopt.push(r.clone());
                } else {
                    out.unchanged += 1;
                }
            }
            Some(s) => {
                let drifted = owns(s) && opts.same_commit;
                if drifted {
                    out.drift.push(r.clone());
                }
                if !(drifted && opts.drift == DriftPolicy::Report) {
                    out.apply.push(r.clone());
                }
                if s.owner == Owner::Hand {
                    out.adopt.push(r.clone());
                }
            }
        }
    }
    if opts.prune {
        out.prune = owned
            .into_iter()
            .filter(|r| !declared.contains_key(*r))
            .cloned()
            .collect();
    }
    Ok(out)
}

/// Where a source's health gate stands after an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every object it changed is healthy.
    Pass,
    /// Still waiting, and for what.
    Wait(String),
    /// An object failed, or the timeout passed: go back to the last healthy commit.
    Fail(String),
}

/// Judges a health gate: `changed` are the workloads a sync created or changed at
/// `since` (ms); services must finish their rollouts, daemons run everywhere they
/// are placed, and jobs must get a first instance running (or done); a failed rollout,
/// an instance that failed for good, or `timeout_ms` passing fails the gate.
pub fn gate<'a>(
    changed: &[WorkloadRef],
    workloads: &BTreeMap<WorkloadRef, Workload>,
    allocs: impl Iterator<Item = &'a Allocation> + Clone,
    since: u64,
    timeout_ms: u64,
    now: u64,
) -> Gate {
    let mut waiting = Vec::new();
    for r in changed {
        let Some(w) = workloads.get(r) else {
            continue; // deleted since: nothing to wait for
        };
        let mine = allocs
            .clone()
            .filter(|a| a.workload == *r && a.workload_uid == w.uid);
        match &w.spec {
            Spec::Service(_) => {
                let Some(st) = crate::rollout::status(w, mine, now) else {
                    continue;
                };
                match st.state {
                    crate::rollout::State::Complete => {}
                    crate::rollout::State::Failed => {
                        return Gate::Fail(format!("{r}: {}", st.reason));
                    }
                    _ => waiting.push(format!("{r}: {}", st.reason)),
                }
            }
            Spec::Job(_) => {
                let mut started = false;
                for a in mine {
                    match a.state {
                        AllocState::Running | AllocState::Complete => started = true,
                        AllocState::Failed => {
                            return Gate::Fail(format!(
                                "{r}: instance {} failed{}",
                                a.index,
                                a.reasons
                                    .last()
                                    .map(|x| format!(" ({x})"))
                                    .unwrap_or_default()
                            ));
                        }
                        _ => {}
                    }
                }
                if !started {
                    waiting.push(format!("{r}: no instance has started"));
                }
            }
            Spec::Daemon(_) => {
                let live: Vec<&Allocation> = mine.filter(|a| a.is_live()).collect();
                let ready = live
                    .iter()
                    .filter(|a| a.state == AllocState::Running && a.ready_at.is_some())
                    .count();
                if ready < live.len() {
                    waiting.push(format!("{r}: {ready} of {} running", live.len()));
                }
            }
            Spec::Volume(_)
            | Spec::Secret(_)
            | Spec::Source(_)
            | Spec::Namespace(_)
            | Spec::Config(_) => {}
        }
    }
    if waiting.is_empty() {
        Gate::Pass
    } else if now >= since.saturating_add(timeout_ms) {
        Gate::Fail(format!(
            "not healthy within {}: {}",
            crate::quantity::Duration(timeout_ms),
            waiting.join("; ")
        ))
    } else {
        Gate::Wait(waiting.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use proptest::prelude::*;

    fn r(name: &str) -> WorkloadRef {
        WorkloadRef::new(Kind::Service, name)
    }

    fn spec(name: &str, replicas: u32) -> Spec {
        let yaml =
            format!("kind: Service\nname: {name}\nreplicas: {replicas}\ntask:\n  command: [x]\n");
        serde_saphyr::from_str(&yaml).unwrap()
    }

    fn stored(name: &str, replicas: u32, owner: Option<&str>) -> (WorkloadRef, Stored) {
        (
            r(name),
            Stored {
                spec: spec(name, replicas),
                owner: owner.map_or(Owner::Hand, |o| Owner::Source(o.into())),
            },
        )
    }

    fn declared(items: &[(&str, u32)]) -> BTreeMap<WorkloadRef, Spec> {
        items.iter().map(|(n, k)| (r(n), spec(n, *k))).collect()
    }

    #[test]
    fn creates_changes_leaves_alone_and_prunes_only_its_own() {
        let st: BTreeMap<_, _> = [
            stored("same", 1, Some("home")),
            stored("changed", 1, Some("home")),
            stored("gone", 1, Some("home")),
            stored("by-hand", 1, None),
            stored("theirs", 1, Some("lab")),
        ]
        .into();
        let d = declared(&[("same", 1), ("changed", 2), ("new", 1)]);
        let opts = Options {
            prune: true,
            ..Options::default()
        };
        let p = plan("home", &d, &st, &opts).unwrap();
        assert_eq!(p.apply, [r("changed"), r("new")]);
        assert_eq!(p.prune, [r("gone")], "never by-hand or another source's");
        assert_eq!(p.unchanged, 1);
        assert!(p.adopt.is_empty() && p.drift.is_empty());
        // Without prune nothing is deleted.
        let p = plan("home", &d, &st, &Options::default()).unwrap();
        assert!(p.prune.is_empty());
    }

    #[test]
    fn an_empty_commit_is_refused_unless_confirmed() {
        let st: BTreeMap<_, _> =
            [stored("a", 1, Some("home")), stored("b", 1, Some("home"))].into();
        for prune in [false, true] {
            let opts = Options {
                prune,
                ..Options::default()
            };
            assert_eq!(
                plan("home", &BTreeMap::new(), &st, &opts),
                Err(Refusal::WouldEmpty { owned: 2 })
            );
        }
        let opts = Options {
            prune: true,
            allow_empty: true,
            ..Options::default()
        };
        let p = plan("home", &BTreeMap::new(), &st, &opts).unwrap();
        assert_eq!(p.prune, [r("a"), r("b")]);
        // A source that owns nothing may declare nothing.
        let mine_none: BTreeMap<_, _> = [stored("x", 1, None)].into();
        assert!(
            plan("home", &BTreeMap::new(), &mine_none, &Options::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn another_sources_object_refuses_the_whole_sync() {
        let st: BTreeMap<_, _> = [
            stored("web", 1, Some("lab")),
            stored("old", 1, Some("home")),
        ]
        .into();
        let d = declared(&[("web", 2), ("db", 1)]);
        let opts = Options {
            prune: true,
            ..Options::default()
        };
        let e = plan("home", &d, &st, &opts).unwrap_err();
        assert_eq!(
            e,
            Refusal::Claimed {
                object: r("web"),
                owner: "lab".into()
            }
        );
        assert!(
            e.to_string().contains("service/web belongs to source lab"),
            "{e}"
        );
    }

    #[test]
    fn hand_made_objects_are_taken_over() {
        let st: BTreeMap<_, _> = [stored("web", 1, None), stored("db", 1, None)].into();
        let d = declared(&[("web", 1), ("db", 3)]);
        let p = plan("home", &d, &st, &Options::default()).unwrap();
        assert_eq!(p.adopt, [r("db"), r("web")]);
        assert_eq!(p.apply, [r("db"), r("web")]);
        assert!(p.drift.is_empty(), "a hand-made object is not drift");
    }

    #[test]
    fn drift_is_reported_and_reverted_unless_only_reported() {
        // The same commit as last time; a replica count changed by hand.
        let st: BTreeMap<_, _> = [stored("web", 5, Some("home"))].into();
        let d = declared(&[("web", 2)]);
        let mut opts = Options {
            same_commit: true,
            ..Options::default()
        };
        let p = plan("home", &d, &st, &opts).unwrap();
        assert_eq!(
            (p.drift.as_slice(), p.apply.as_slice()),
            ([r("web")].as_slice(), [r("web")].as_slice())
        );
        opts.drift = DriftPolicy::Report;
        let p = plan("home", &d, &st, &opts).unwrap();
        assert_eq!(p.drift, [r("web")]);
        assert!(p.apply.is_empty(), "reported, not put back");
        // A new commit that changes it is a change, not drift.
        opts.same_commit = false;
        let p = plan("home", &d, &st, &opts).unwrap();
        assert!(p.drift.is_empty());
        assert_eq!(p.apply, [r("web")]);
    }

    fn workload(spec: Spec) -> Workload {
        Workload {
            spec,
            generation: 1,
            uid: "u".into(),
            created_at: 0,
            updated_at: 0,
            binding: None,
            image_platforms: Vec::new(),
            history: Vec::new(),
            rollout: None,
            source: Some("home".into()),
            run_of: None,
        }
    }

    #[test]
    fn the_gate_waits_for_rollouts_and_first_instances_and_fails_at_its_timeout() {
        use crate::model::test_alloc;
        let job: Spec =
            serde_saphyr::from_str("kind: Job\nname: j\ntask:\n  command: [x]\n").unwrap();
        let ws: BTreeMap<_, _> = [
            (r("web"), workload(spec("web", 1))),
            (job.reference(), workload(job.clone())),
        ]
        .into();
        let changed = [r("web"), job.reference()];
        let mut web = test_alloc("a1", "service/web", AllocState::Running);
        web.task = ws[&r("web")].spec.run_task().into_owned().into();
        web.restart = ws[&r("web")].spec.restart_policy();
        let mut j = test_alloc("a2", "job/j", AllocState::Pending);
        let g = |allocs: &[&Allocation], now| {
            gate(&changed, &ws, allocs.iter().copied(), 0, 60_000, now)
        };
        // Not ready yet, the job not started: waiting, then failed at the timeout.
        assert!(matches!(g(&[&web, &j], 1_000), Gate::Wait(_)));
        match g(&[&web, &j], 60_000) {
            Gate::Fail(m) => assert!(
                m.contains("not healthy within 1m") && m.contains("job/j"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        web.ready_at = Some(1_000);
        j.state = AllocState::Running;
        assert_eq!(g(&[&web, &j], 20_000), Gate::Pass);
        // A job instance that failed for good fails the gate at once.
        j.state = AllocState::Failed;
        j.reasons = vec!["exit 3".into()];
        match g(&[&web, &j], 20_000) {
            Gate::Fail(m) => assert!(m.contains("job/j: instance 0 failed (exit 3)"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        /// Over any stored and declared objects: nothing another source owns or made
        /// by hand is ever pruned, another source's object is never applied (the sync
        /// is refused), prune touches nothing declared, and without prune (or with an
        /// empty commit unconfirmed) nothing is deleted.
        #[test]
        fn a_sync_never_deletes_what_is_not_its_own(
            objects in proptest::collection::btree_map(0u8..12, (0u8..3, 0u32..3), 0..12),
            wanted in proptest::collection::btree_map(0u8..12, 0u32..3, 0..12),
            prune in any::<bool>(),
            allow_empty in any::<bool>(),
            same_commit in any::<bool>(),
        ) {
            let owners = [None, Some("home"), Some("lab")];
            let st: BTreeMap<_, _> = objects
                .iter()
                .map(|(n, (o, k))| stored(&format!("s{n}"), *k, owners[*o as usize]))
                .collect();
            let d: BTreeMap<_, _> = wanted
                .iter()
                .map(|(n, k)| (r(&format!("s{n}")), spec(&format!("s{n}"), *k)))
                .collect();
            let opts = Options { prune, allow_empty, same_commit, ..Options::default() };
            match plan("home", &d, &st, &opts) {
                Ok(p) => {
                    for x in &p.prune {
                        prop_assert!(prune);
                        prop_assert!(!d.contains_key(x));
                        prop_assert_eq!(&st[x].owner, &Owner::Source("home".into()));
                    }
                    for x in &p.apply {
                        prop_assert!(d.contains_key(x));
                        prop_assert!(st.get(x).is_none_or(|s| s.owner != Owner::Source("lab".into())));
                    }
                    if d.is_empty() && !allow_empty {
                        prop_assert!(p.prune.is_empty());
                    }
                }
                Err(Refusal::Claimed { object, owner }) => {
                    prop_assert_eq!(owner.as_str(), "lab");
                    prop_assert!(d.contains_key(&object));
                }
                Err(Refusal::WouldEmpty { owned }) => {
                    prop_assert!(d.is_empty() && !allow_empty && owned > 0);
                }
            }
        }
    }
}
