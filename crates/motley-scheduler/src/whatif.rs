//! "What if we lose this node?" (`motley what-if`): the cluster as it is now, a change
//! (nodes lost, drained), then the real controllers ([`motley_core::reconcile`]) with
//! this crate's [`Scheduler`] run pass after pass in virtual time until nothing more
//! changes. Agents are taken to do at once what they are told (a placed allocation
//! runs, a stopped one stops); a lost node's allocations are lost when the node is
//! declared down, its fenced ones replaced only after the lease and margin, as the
//! server does. Nothing is stored: the answer is what the control plane would do.
//!
//! The verdict per workload compares running instances before and after:
//! unaffected, moved (all replaced elsewhere), degraded (fewer than desired, with the
//! scheduler's reason), down (none left). [`each_node`] asks it for every node.

use std::collections::{BTreeMap, BTreeSet};

use motley_core::model::{AllocState, Allocation, Desired, Kind, Node, Workload, WorkloadRef};
use motley_core::reconcile::{Ids, Input, reconcile};
use motley_core::writes::Group;
use serde::{Deserialize, Serialize};

use crate::{Config, Scheduler};

/// The cluster a question is asked of.
#[derive(Debug, Clone)]
pub struct State {
    /// Every workload.
    pub workloads: BTreeMap<WorkloadRef, Workload>,
    /// The workloads as the question's manifests leave them (`None`: as they are);
    /// verdicts compare against `workloads`.
    pub applied: Option<BTreeMap<WorkloadRef, Workload>>,
    /// Every node.
    pub nodes: BTreeMap<String, Node>,
    /// Nodes ready now.
    pub ready: BTreeSet<String>,
    /// Every allocation.
    pub allocs: BTreeMap<String, Allocation>,
    /// Now, ms since the epoch.
    pub now: u64,
    /// How long after a node is declared down its fenced allocations may be replaced.
    pub fence_after_ms: u64,
    /// The nodes' latest readings (temperatures count in scores), as the leader has them.
    pub readings: BTreeMap<String, motley_core::hw::Readings>,
}

/// The change asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Nodes that die (power off: declared down, their work lost).
    #[serde(default)]
    pub lose: Vec<String>,
    /// Nodes drained (cordoned, their work moved away one replica at a time).
    #[serde(default)]
    pub drain: Vec<String>,
}

/// What happens to one workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing of it ran on the nodes changed.
    Unaffected,
    /// Every instance it lost runs again elsewhere (or, changed by the question's
    /// manifests, all it asks for runs).
    Moved,
    /// Some instances run, fewer than desired: it loses redundancy (or throughput).
    Degraded,
    /// None runs any more.
    Down,
    /// Added by the question's manifests, and runs as asked.
    New,
}

/// One workload's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    /// The workload.
    pub workload: WorkloadRef,
    /// Instances running before.
    pub before: u32,
    /// Instances running after.
    pub after: u32,
    /// Instances it wants running (services: replicas; daemons: one per eligible node
    /// after the change; jobs: what ran before).
    pub desired: u32,
    /// Instances that were on the changed nodes.
    pub lost: u32,
    /// Where its instances run after (node names, sorted, repeated per instance).
    pub nodes_after: Vec<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why instances wait, as the scheduler says it (`0/3 nodes: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The answer to one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The change asked about.
    pub change: Change,
    /// Every workload with instances (affected first: down, degraded, moved).
    pub workloads: Vec<Effect>,
    /// Controller passes run until nothing changed.
    pub passes: u32,
    /// Virtual time the controllers took to settle, ms (lease and margin included
    /// when fenced work had to wait).
    pub settled_ms: u64,
}

impl Outcome {
    /// The workloads that end with no instance running: the changed nodes are a
    /// single point of failure for them.
    pub fn down(&self) -> impl Iterator<Item = &Effect> {
        self.workloads.iter().filter(|e| e.verdict == Verdict::Down)
    }
}

/// Refusals of the question itself.
pub fn check(state: &State, change: &Change) -> Result<(), String> {
    for n in change.lose.iter().chain(&change.drain) {
        if !state.nodes.contains_key(n) {
            let known: Vec<&str> = state.nodes.keys().map(String::as_str).take(20).collect();
            return Err(format!(
                "no node {n:?} (nodes: {}{})",
                known.join(", "),
                if state.nodes.len() > 20 { ", …" } else { "" }
            ));
        }
    }
    if let Some(n) = change.lose.iter().find(|n| change.drain.contains(n)) {
        return Err(format!(
            "node {n} is both lost and drained: ask one or the other"
        ));
    }
    Ok(())
}

struct Counter(u64);

impl Ids for Counter {
    fn next_id(&mut self, w: &WorkloadRef) -> String {
        self.0 += 1;
        format!("{}-whatif-{}", w.name, self.0)
    }
}

fn running(allocs: &BTreeMap<String, Allocation>) -> BTreeMap<&WorkloadRef, Vec<&Allocation>> {
    let mut by: BTreeMap<&WorkloadRef, Vec<&Allocation>> = BTreeMap::new();
    for a in allocs.values() {
        if a.desired == Desired::Run && matches!(a.state, AllocState::Running | AllocState::Pending)
        {
            by.entry(&a.workload).or_default().push(a);
        }
    }
    by
}

/// Most passes before giving up on settling (each pass is a virtual second).
const MAX_PASSES: u32 = 200;

/// Waits further away than this (a long backoff) are not waited for.
const WAKE_HORIZON_MS: u64 = 600_000;

/// Where the controllers come to rest after a change.
pub struct Settled<'a> {
    /// The workloads (changed only by volume bindings and reverts).
    pub workloads: std::borrow::Cow<'a, BTreeMap<WorkloadRef, Workload>>,
    /// Every allocation.
    pub allocs: BTreeMap<String, Allocation>,
    /// What could not be placed in the last pass, and why.
    pub blocked: BTreeMap<WorkloadRef, motley_core::reconcile::Blocked>,
    /// Passes run.
    pub passes: u32,
    /// Virtual time at rest.
    pub now: u64,
}

/// Applies a change and runs the controllers with this scheduler to a fixed point.
pub fn settle<'a>(state: &'a State, change: &Change, cfg: &Config) -> Result<Settled<'a>, String> {
    check(state, change)?;
    let mut now = state.now;
    // Copied only when changed: a node's facts are large, and `--each-node` runs this
    // once per node.
    let mut nodes = std::borrow::Cow::Borrowed(&state.nodes);
    let mut ready = state.ready.clone();
    let mut down = BTreeMap::new();
    for n in &change.lose {
        ready.remove(n);
        down.insert(n.clone(), now);
    }
    for n in &change.drain {
        if let Some(node) = nodes.to_mut().get_mut(n) {
            node.cordoned = true;
            node.draining = true;
        }
    }
    let mut workloads =
        std::borrow::Cow::Borrowed(state.applied.as_ref().unwrap_or(&state.workloads));
    let mut allocs = state.allocs.clone();
    let mut ids = Counter(0);
    let mut passes = 0;
    let mut blocked = BTreeMap::new();
    while passes < MAX_PASSES {
        passes += 1;
        let plan = reconcile(
            &Input {
                workloads: &workloads,
                nodes: &nodes,
                ready: &ready,
                down: &down,
                fence_after_ms: state.fence_after_ms,
                allocs: &allocs,
                readings: &state.readings,
                now,
                active: None,
            },
            &mut Scheduler::new(cfg.clone()),
            &mut ids,
        );
        blocked = plan.blocked.clone();
        let mut changed = !plan.is_empty();
        for (r, b) in &plan.bind {
            if let Some(w) = workloads.to_mut().get_mut(r) {
                w.binding = Some(b.clone());
            }
        }
        for w in &plan.revert {
            workloads.to_mut().insert(w.spec.reference(), w.clone());
        }
        commit(&plan, &mut allocs, now);
        // The agents of ready nodes carry out what they are told; a lost node's say
        // nothing.
        for a in allocs.values_mut() {
            if ready.contains(&a.node) && a.is_live() {
                changed |= obey(a, now);
            }
        }
        if changed {
            now += 1000;
        } else if let Some(at) = plan
            .wake_at
            .filter(|&at| at > now && at < now + WAKE_HORIZON_MS)
        {
            // Nothing moves until then (fenced work waits for the lease and margin, a
            // restart for its backoff): go straight there.
            now = at;
        } else {
            // The controllers chose nothing and the agents did nothing: a fixed point.
            break;
        }
    }
    Ok(Settled {
        workloads,
        allocs,
        blocked,
        passes,
        now,
    })
}

/// A live allocation's agent does at once what it is told: a stop stops it, a
/// placement starts it. Whether it changed.
pub(crate) fn obey(a: &mut Allocation, now: u64) -> bool {
    if a.desired == Desired::Stop {
        a.state = AllocState::Stopped;
    } else if a.state == AllocState::Pending {
        a.state = AllocState::Running;
        a.ready_at = Some(now);
    } else {
        return false;
    }
    a.updated_at = now;
    true
}

/// Commits a plan to `allocs` as the leader would: the records it makes for it
/// ([`motley_core::writes::groups`]).
pub(crate) fn commit(
    plan: &motley_core::reconcile::Plan,
    allocs: &mut BTreeMap<String, Allocation>,
    now: u64,
) {
    for g in motley_core::writes::groups(plan, |id| allocs.get(id), now) {
        match g {
            Group::Stop {
                records: changed, ..
            }
            | Group::Create {
                allocs: changed, ..
            } => {
                for a in changed {
                    allocs.insert(a.id.clone(), a);
                }
            }
            Group::Delete { ids } => {
                for id in ids {
                    allocs.remove(&id);
                }
            }
        }
    }
}

/// The verdicts of a change that leave work short: degraded or down, with the
/// scheduler's reason.
pub(crate) fn short(o: &Outcome) -> Vec<crate::capacity::Short> {
    o.workloads
        .iter()
        .filter(|e| matches!(e.verdict, Verdict::Degraded | Verdict::Down))
        .map(|e| crate::capacity::Short {
            workload: e.workload.clone(),
            running: e.after,
            wanted: e.desired,
            why: e.why.clone().unwrap_or_default(),
        })
        .collect()
}

/// Answers one change: the real controllers and scheduler, pass after pass.
pub fn run(state: &State, change: &Change, cfg: &Config) -> Result<Outcome, String> {
    let start = state.now;
    let Settled {
        workloads,
        allocs,
        blocked,
        passes,
        now,
    } = settle(state, change, cfg)?;
    let before = running(&state.allocs);
    let after = running(&allocs);
    let changed: BTreeSet<&String> = change.lose.iter().chain(&change.drain).collect();
    let mut out: Vec<Effect> = Vec::new();
    let refs: BTreeSet<&WorkloadRef> = before.keys().chain(after.keys()).copied().collect();
    for r in refs {
        let Some(w) = workloads.get(r) else { continue };
        let b = before.get(r).map_or(&[][..], Vec::as_slice);
        let a = after.get(r).map_or(&[][..], Vec::as_slice);
        let lost = b.iter().filter(|x| changed.contains(&x.node)).count() as u32;
        let desired = match (&w.spec, r.kind) {
            (motley_core::model::Spec::Service(s), _) => s.replicas,
            // One per eligible node: a lost node's copy is not owed any more.
            (_, Kind::Daemon) => (b.len() as u32).saturating_sub(lost).max(a.len() as u32),
            // What ran before.
            _ => b.len() as u32,
        };
        let after_n = a.len() as u32;
        // The same spec as before the question (not new, not changed by its manifests).
        let same = state
            .workloads
            .get(r)
            .is_some_and(|old| old.generation == w.generation);
        let no_worse = same && lost == 0 && after_n >= b.len() as u32;
        let verdict = if no_worse {
            // Even when it was short already: the change did not make it so.
            Verdict::Unaffected
        } else if after_n == 0 && desired > 0 {
            Verdict::Down
        } else if after_n < desired {
            Verdict::Degraded
        } else if !state.workloads.contains_key(r) {
            Verdict::New
        } else {
            Verdict::Moved
        };
        let mut nodes_after: Vec<String> = a.iter().map(|x| x.node.clone()).collect();
        nodes_after.sort();
        out.push(Effect {
            workload: r.clone(),
            before: b.len() as u32,
            after: after_n,
            desired,
            lost,
            nodes_after,
            why: blocked.get(r).map(|x| x.why.summary.clone()),
            verdict,
        });
    }
    let rank = |v: &Verdict| match v {
        Verdict::Down => 0,
        Verdict::Degraded => 1,
        Verdict::Moved => 2,
        Verdict::New => 3,
        Verdict::Unaffected => 4,
    };
    out.sort_by(|x, y| {
        rank(&x.verdict)
            .cmp(&rank(&y.verdict))
            .then(x.workload.cmp(&y.workload))
    });
    Ok(Outcome {
        change: change.clone(),
        workloads: out,
        passes,
        settled_ms: now - start,
    })
}

/// One node's loss, summarized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoss {
    /// The node.
    pub node: String,
    /// Workloads left with no instance: it is their single point of failure.
    pub down: Vec<WorkloadRef>,
    /// Workloads left with fewer instances than desired.
    pub degraded: Vec<WorkloadRef>,
    /// Workloads whose instances there all run again elsewhere.
    pub moved: Vec<WorkloadRef>,
}

/// Every ready node's loss, one at a time, on up to `threads` threads (each loss is
/// its own run on its own copy; the table is in node order whatever the threads).
pub fn each_node(state: &State, cfg: &Config, threads: usize) -> Vec<NodeLoss> {
    let nodes: Vec<&String> = state.ready.iter().collect();
    let per = nodes.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = nodes
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|n| one_loss(state, cfg, n))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn one_loss(state: &State, cfg: &Config, node: &str) -> Option<NodeLoss> {
    let change = Change {
        lose: vec![node.to_string()],
        drain: vec![],
    };
    let o = run(state, &change, cfg).ok()?;
    let pick = |v: Verdict| {
        o.workloads
            .iter()
            .filter(|e| e.verdict == v)
            .map(|e| e.workload.clone())
            .collect()
    };
    Some(NodeLoss {
        node: node.to_string(),
        down: pick(Verdict::Down),
        degraded: pick(Verdict::Degraded),
        moved: pick(Verdict::Moved),
    })
}
