//! Controllers: compare desired workloads with existing allocations and
//! return a [`Plan`] of allocations to create, stop and delete.
//!
//! * Services keep `replicas` live allocations, one per slot `0..replicas`;
//!   a replica that ends is replaced after a backoff.
//! * Jobs run completion indices `0..completions`, at most `parallelism` at
//!   once, lowest index first; a permanently failed index fails the job.
//! * Daemons keep one live allocation on every ready node matching their
//!   placement.
//!
//! Placement is delegated to a [`Placer`] (the scheduler crate implements it),
//! so this module stays independent of scoring policy.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{AllocState, Allocation, Desired, Node, NodeLoss, Spec, Workload, WorkloadRef};
use crate::restart::backoff_delay;
use crate::selector::{Labels, Selector};

/// How a placer should choose among feasible nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Prefer the least loaded node (services, daemons).
    Spread,
    /// Prefer the most loaded node that fits (jobs).
    BinPack,
}

/// A node as a placer sees it: its record, whether it is ready, what is in use.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The node.
    pub node: &'a Node,
    /// Connected and healthy.
    pub ready: bool,
    /// Millicores requested by live allocations.
    pub used_cpu: u64,
    /// Bytes requested by live allocations.
    pub used_memory: u64,
    /// Live allocations on it.
    pub count: u32,
    /// Live allocations on it of the workload being placed (spreading replicas over
    /// nodes comes before balancing load).
    pub same: u32,
}

/// Labels view of a node for selectors.
struct NodeLabels<'a>(&'a Node);

impl Labels for NodeLabels<'_> {
    fn get(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0.label(key)
    }
}

/// True when `node` matches `selector` (facts and labels).
pub fn node_matches(node: &Node, selector: &Selector) -> bool {
    selector.matches(&NodeLabels(node))
}

/// The first requirement of `selector` that `node` fails, as text.
pub fn node_mismatch(node: &Node, selector: &Selector) -> Option<String> {
    selector
        .first_mismatch(&NodeLabels(node))
        .map(|r| r.to_string())
}

/// One placement to make.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// For whom.
    pub workload: &'a WorkloadRef,
    /// Millicores.
    pub cpu: u64,
    /// Bytes.
    pub memory: u64,
    /// Required selector.
    pub selector: Option<&'a Selector>,
    /// Spread or bin-pack.
    pub strategy: Strategy,
    /// Only this node (daemons).
    pub only_node: Option<&'a str>,
    /// Taints it tolerates.
    pub tolerations: &'a [crate::hw::Toleration],
}

/// What daemons tolerate: every condition taint, as Kubernetes' DaemonSets do (a node
/// agent's helper must run on a hot or undervolted node too).
pub static TOLERATE_ALL: [crate::hw::Toleration; 1] = [crate::hw::Toleration {
    key: String::new(),
    effect: None,
}];

/// The first evict taint of `node` that a workload does not tolerate.
pub fn evicting_taint<'n>(w: &Workload, node: &'n Node) -> Option<&'n crate::hw::Taint> {
    if w.spec.kind() == crate::model::Kind::Daemon {
        return None;
    }
    node.taints.iter().find(|t| {
        t.effect == crate::hw::TaintEffect::Evict
            && !crate::hw::tolerated(&w.spec.placement().tolerations, t)
    })
}

/// Why a request could not be placed: a summary counted by reason and the reason per node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unplaced {
    /// `0/3 nodes: 2 insufficient memory, 1 not ready`.
    pub summary: String,
    /// `(node, reason)` for every node considered.
    pub nodes: Vec<(String, String)>,
}

/// Chooses a node for a request. Implemented by the scheduler crate.
pub trait Placer {
    /// Returns the index into `candidates` of the chosen node, or why none fits.
    fn place(&mut self, req: &Request<'_>, candidates: &[Candidate<'_>])
    -> Result<usize, Unplaced>;
}

/// Makes allocation ids. The shell supplies random ones; simulations use counters.
pub trait Ids {
    /// A new unique id for an allocation of `workload`.
    fn next_id(&mut self, workload: &WorkloadRef) -> String;
}

/// The input of one reconcile pass.
pub struct Input<'a> {
    /// All workloads.
    pub workloads: &'a BTreeMap<WorkloadRef, Workload>,
    /// All nodes.
    pub nodes: &'a BTreeMap<String, Node>,
    /// Nodes that are ready (heartbeating): new work may be placed there.
    pub ready: &'a BTreeSet<String>,
    /// Nodes declared down, with when: their live allocations are lost and replaced
    /// (fenced ones only after `fence_after_ms` more).
    pub down: &'a BTreeMap<String, u64>,
    /// How long after a node is declared down its fenced allocations may be replaced:
    /// the agents' lease plus a margin.
    pub fence_after_ms: u64,
    /// All allocations.
    pub allocs: &'a BTreeMap<String, Allocation>,
    /// Current time, ms since the epoch.
    pub now: u64,
}

/// Unplaced demand of one workload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Blocked {
    /// How many instances could not be placed.
    pub count: u32,
    /// Why (from the first failed placement).
    pub why: Unplaced,
}

/// What one reconcile pass decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// New allocations.
    pub create: Vec<Allocation>,
    /// Allocations to stop: (id, reason).
    pub stop: Vec<(String, String)>,
    /// Terminal allocations to forget.
    pub delete: Vec<String>,
    /// Live allocations on down nodes, now lost: (id, reason).
    pub lost: Vec<(String, String)>,
    /// Demand that could not be placed, per workload.
    pub blocked: BTreeMap<WorkloadRef, Blocked>,
    /// Run again at this time (a backoff expires), if anything waits.
    pub wake_at: Option<u64>,
}

impl Plan {
    /// True when the plan changes nothing in the store.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.stop.is_empty()
            && self.delete.is_empty()
            && self.lost.is_empty()
    }
    fn wake(&mut self, at: u64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// How many terminal allocations of one service slot or daemon node are kept.
pub const KEEP_TERMINAL_PER_SLOT: usize = 3;

struct Pass<'a, 'p> {
    input: &'a Input<'a>,
    placer: &'p mut dyn Placer,
    ids: &'p mut dyn Ids,
    candidates: Vec<Candidate<'a>>,
    by_name: BTreeMap<&'a str, usize>,
    plan: Plan,
}

/// Runs every controller once.
pub fn reconcile(input: &Input<'_>, placer: &mut dyn Placer, ids: &mut dyn Ids) -> Plan {
    let mut candidates: Vec<Candidate<'_>> = input
        .nodes
        .values()
        .map(|n| Candidate {
            node: n,
            ready: input.ready.contains(&n.name),
            used_cpu: 0,
            used_memory: 0,
            count: 0,
            same: 0,
        })
        .collect();
    let by_name: BTreeMap<&str, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.node.name.as_str(), i))
        .collect();
    // Live allocations on down nodes are lost: from here on they count as terminal, so
    // this same pass places their replacements.
    let mut lost_reasons = Vec::new();
    let mut fence_wake = None;
    let lost_copies: Vec<Allocation> = input
        .allocs
        .values()
        .filter(|a| a.is_live())
        .filter(|a| match input.down.get(&a.node) {
            None => false,
            Some(_) if a.on_node_loss == NodeLoss::Replace => true,
            Some(since) => {
                // Fenced: its node stops it when its lease runs out; replace only after that.
                let at = since + input.fence_after_ms + a.task.stop_grace.as_millis();
                if input.now < at {
                    fence_wake = Some(fence_wake.map_or(at, |w: u64| w.min(at)));
                }
                input.now >= at
            }
        })
        .map(|a| {
            lost_reasons.push((a.id.clone(), format!("node {} is down", a.node)));
            let mut l = a.clone();
            l.state = AllocState::Lost;
            l.updated_at = input.now;
            l
        })
        .collect();
    let lost_ids: BTreeSet<&str> = lost_copies.iter().map(|a| a.id.as_str()).collect();
    let mut by_workload: BTreeMap<&WorkloadRef, Vec<&Allocation>> = BTreeMap::new();
    for a in lost_copies.iter().chain(
        input
            .allocs
            .values()
            .filter(|a| !lost_ids.contains(a.id.as_str())),
    ) {
        if a.is_live()
            && let Some(&i) = by_name.get(a.node.as_str())
        {
            let c = &mut candidates[i];
            c.used_cpu += a.task.resources.cpu_or_default().0;
            c.used_memory += a.task.resources.memory_or_default().0;
            c.count += 1;
        }
        by_workload.entry(&a.workload).or_default().push(a);
    }
    let mut pass = Pass {
        input,
        placer,
        ids,
        candidates,
        by_name,
        plan: Plan {
            lost: lost_reasons,
            wake_at: fence_wake,
            ..Plan::default()
        },
    };

    // Allocations whose workload is gone (or was re-created): stop, then forget.
    for (wref, allocs) in &by_workload {
        let current = input.workloads.get(*wref);
        for a in allocs {
            if current.is_some_and(|w| w.uid == a.workload_uid) {
                continue;
            }
            if a.is_live() {
                if a.desired == Desired::Run {
                    pass.plan
                        .stop
                        .push((a.id.clone(), format!("{wref} was deleted")));
                }
            } else {
                pass.plan.delete.push(a.id.clone());
            }
        }
    }

    // Services and daemons first, then jobs by priority and age: a queue.
    let mut order: Vec<&Workload> = input.workloads.values().collect();
    order.sort_by_key(|w| match &w.spec {
        Spec::Job(j) => (1, -(j.priority as i64), w.created_at),
        _ => (0, 0, 0),
    });
    for w in order {
        let empty = Vec::new();
        let mine: Vec<&Allocation> = by_workload
            .get(&w.spec.reference())
            .unwrap_or(&empty)
            .iter()
            .copied()
            .filter(|a| a.workload_uid == w.uid)
            .collect();
        match &w.spec {
            Spec::Service(s) => pass.service(w, s.replicas, &mine),
            Spec::Job(_) => pass.job(w, &mine),
            Spec::Daemon(_) => pass.daemon(w, &mine),
        }
    }
    pass.plan
}

/// True when an allocation runs another task or restart policy than its workload now asks
/// for. Other changes (replicas, labels) do not replace running instances.
fn is_outdated(w: &Workload, a: &Allocation) -> bool {
    a.task != *w.spec.task() || a.restart != w.spec.restart_policy()
}

fn selector_of(w: &Workload) -> Option<Selector> {
    w.spec
        .placement()
        .require
        .as_deref()
        .and_then(|s| Selector::parse(s).ok())
}

impl<'a> Pass<'a, '_> {
    fn new_alloc(&mut self, w: &Workload, index: u32, node: &str) -> Allocation {
        Allocation {
            id: self.ids.next_id(&w.spec.reference()),
            workload: w.spec.reference(),
            workload_uid: w.uid.clone(),
            generation: w.generation,
            index,
            node: node.to_string(),
            task: w.spec.task().clone(),
            restart: w.spec.restart_policy(),
            on_node_loss: w.spec.on_node_loss(),
            desired: Desired::Run,
            state: AllocState::Pending,
            pid: None,
            exit_code: None,
            restarts: 0,
            reasons: vec![format!("placed on {node}")],
            created_at: self.input.now,
            updated_at: self.input.now,
        }
    }

    /// Places one instance; on success records the allocation and its usage.
    fn place(&mut self, w: &Workload, index: u32, strategy: Strategy, only: Option<&str>) -> bool {
        let wref = w.spec.reference();
        let sel = selector_of(w);
        let res = &w.spec.task().resources;
        let tolerations: &[crate::hw::Toleration] = if w.spec.kind() == crate::model::Kind::Daemon {
            &TOLERATE_ALL
        } else {
            &w.spec.placement().tolerations
        };
        let req = Request {
            workload: &wref,
            cpu: res.cpu_or_default().0,
            memory: res.memory_or_default().0,
            selector: sel.as_ref(),
            strategy,
            only_node: only,
            tolerations,
        };
        match self.placer.place(&req, &self.candidates) {
            Ok(i) => {
                let c = &mut self.candidates[i];
                c.used_cpu += req.cpu;
                c.used_memory += req.memory;
                c.count += 1;
                c.same += 1;
                let node = c.node.name.clone();
                let a = self.new_alloc(w, index, &node);
                self.plan.create.push(a);
                true
            }
            Err(why) => {
                let b = self
                    .plan
                    .blocked
                    .entry(wref.clone())
                    .or_insert(Blocked { count: 0, why });
                b.count += 1;
                false
            }
        }
    }

    fn stop(&mut self, a: &Allocation, reason: String) {
        if a.desired == Desired::Run && a.is_live() {
            self.plan.stop.push((a.id.clone(), reason));
        }
    }

    /// Keeps the newest terminal allocations of a group, deletes the rest, and returns
    /// the time before which the group must not be started again (backoff).
    fn terminal_history(&mut self, w: &Workload, mut terminal: Vec<&Allocation>) -> Option<u64> {
        terminal.sort_by_key(|a| std::cmp::Reverse((a.updated_at, a.created_at)));
        for old in terminal.iter().skip(KEEP_TERMINAL_PER_SLOT) {
            self.plan.delete.push(old.id.clone());
        }
        let last = terminal.first()?;
        if matches!(last.state, AllocState::Stopped | AllocState::Lost) {
            return None;
        }
        let failures = terminal
            .iter()
            .take_while(|a| matches!(a.state, AllocState::Failed | AllocState::Complete))
            .count() as u32;
        let delay = backoff_delay(&w.spec.restart_policy().backoff, failures.saturating_sub(1));
        Some(last.updated_at + delay)
    }

    /// Sets every candidate's count of `mine` (the workload about to be placed).
    fn count_same(&mut self, mine: &[&Allocation]) {
        for c in &mut self.candidates {
            c.same = 0;
        }
        for a in mine {
            if a.is_live()
                && a.desired == Desired::Run
                && let Some(&i) = self.by_name.get(a.node.as_str())
            {
                self.candidates[i].same += 1;
            }
        }
    }

    fn service(&mut self, w: &Workload, replicas: u32, mine: &[&Allocation]) {
        self.count_same(mine);
        let mut live_by_slot: BTreeMap<u32, Vec<&Allocation>> = BTreeMap::new();
        let mut terminal_by_slot: BTreeMap<u32, Vec<&Allocation>> = BTreeMap::new();
        for a in mine {
            if a.is_live() && a.desired == Desired::Run {
                if is_outdated(w, a) {
                    self.stop(a, format!("replaced by generation {}", w.generation));
                    continue;
                }
                live_by_slot.entry(a.index).or_default().push(a);
            } else if !a.is_live() {
                terminal_by_slot.entry(a.index).or_default().push(a);
            }
        }
        // Evict taints: move away now, without waiting for the other replicas.
        for allocs in live_by_slot.values_mut() {
            allocs.retain(|a| {
                let taint = self
                    .input
                    .nodes
                    .get(&a.node)
                    .and_then(|n| evicting_taint(w, n));
                match taint {
                    Some(t) => {
                        self.plan.stop.push((
                            a.id.clone(),
                            format!("evicted: node {} is tainted {}", a.node, t.key),
                        ));
                        false
                    }
                    None => true,
                }
            });
        }
        live_by_slot.retain(|_, v| !v.is_empty());
        for (slot, allocs) in &live_by_slot {
            for (i, a) in allocs.iter().enumerate() {
                if *slot >= replicas {
                    self.stop(a, format!("scaled down to {replicas}"));
                } else if i > 0 {
                    self.stop(a, "duplicate replica".into());
                }
            }
        }
        let slots: BTreeSet<u32> = terminal_by_slot.keys().copied().collect();
        for slot in slots {
            let hist = terminal_by_slot.remove(&slot).unwrap_or_default();
            let hold = if slot < replicas {
                self.terminal_history(w, hist)
            } else {
                // A slot beyond the replica count: forget its history entirely.
                self.plan.delete.extend(hist.iter().map(|a| a.id.clone()));
                None
            };
            if slot < replicas
                && !live_by_slot.contains_key(&slot)
                && let Some(at) = hold
                && at > self.input.now
            {
                self.plan.wake(at);
                live_by_slot.insert(slot, Vec::new()); // held back: do not place yet
            }
        }
        // Drain: move one replica off a draining node, and only while every other replica
        // runs, so at most one replica of the service is ever down.
        let all_running = (0..replicas).all(|s| {
            live_by_slot
                .get(&s)
                .is_some_and(|v| v.iter().any(|a| a.state == AllocState::Running))
        });
        if all_running {
            let draining = live_by_slot.iter().find_map(|(slot, v)| {
                v.iter()
                    .find(|a| self.input.nodes.get(&a.node).is_some_and(|n| n.draining))
                    .map(|a| (*slot, (*a).clone()))
            });
            if let Some((slot, a)) = draining {
                self.stop(&a, format!("draining node {}", a.node));
                live_by_slot.remove(&slot);
            }
        }
        for slot in 0..replicas {
            if !live_by_slot.contains_key(&slot) && !self.place(w, slot, Strategy::Spread, None) {
                // Count every remaining missing replica as blocked without retrying.
                let missing = (slot + 1..replicas)
                    .filter(|s| !live_by_slot.contains_key(s))
                    .count() as u32;
                if let Some(b) = self.plan.blocked.get_mut(&w.spec.reference()) {
                    b.count += missing;
                }
                break;
            }
        }
    }

    fn job(&mut self, w: &Workload, mine: &[&Allocation]) {
        let Spec::Job(j) = &w.spec else { return };
        let mut complete = BTreeSet::new();
        let mut failed = BTreeSet::new();
        let mut live = BTreeSet::new();
        for a in mine {
            match a.state {
                AllocState::Complete => {
                    complete.insert(a.index);
                }
                AllocState::Failed => {
                    failed.insert(a.index);
                }
                AllocState::Pending | AllocState::Running if a.desired == Desired::Run => {
                    let node = self.input.nodes.get(&a.node);
                    if node.is_some_and(|n| n.draining) {
                        // Batch work on a draining node is stopped and runs again elsewhere.
                        self.stop(a, format!("draining node {}", a.node));
                    } else if let Some(t) = node.and_then(|n| evicting_taint(w, n)) {
                        self.stop(a, format!("evicted: node {} is tainted {}", a.node, t.key));
                    } else {
                        live.insert(a.index);
                    }
                }
                _ => {}
            }
        }
        if !failed.is_empty() {
            for a in mine {
                self.stop(
                    a,
                    format!(
                        "job failed: instance {} failed",
                        failed.first().copied().unwrap_or(0)
                    ),
                );
            }
            return;
        }
        let mut running = live.len() as u32;
        let mut index = 0u32;
        while running < j.parallelism && index < j.completions {
            if !complete.contains(&index) && !live.contains(&index) {
                if !self.place(w, index, Strategy::BinPack, None) {
                    let waiting = (index + 1..j.completions)
                        .filter(|i| !complete.contains(i) && !live.contains(i))
                        .count() as u32;
                    let room = j.parallelism.saturating_sub(running + 1);
                    if let Some(b) = self.plan.blocked.get_mut(&w.spec.reference()) {
                        b.count += waiting.min(room);
                    }
                    break;
                }
                running += 1;
            }
            index += 1;
        }
    }

    fn daemon(&mut self, w: &Workload, mine: &[&Allocation]) {
        let sel = selector_of(w);
        let mut live_by_node: BTreeMap<&str, Vec<&Allocation>> = BTreeMap::new();
        let mut terminal_by_node: BTreeMap<&str, Vec<&Allocation>> = BTreeMap::new();
        for a in mine {
            let eligible = self
                .input
                .nodes
                .get(&a.node)
                .is_some_and(|n| sel.as_ref().is_none_or(|s| node_matches(n, s)));
            if a.is_live() && a.desired == Desired::Run {
                if !eligible {
                    self.stop(a, format!("node {} no longer matches", a.node));
                } else if is_outdated(w, a) {
                    self.stop(a, format!("replaced by generation {}", w.generation));
                } else {
                    live_by_node.entry(&a.node).or_default().push(a);
                }
            } else if !a.is_live() {
                terminal_by_node.entry(&a.node).or_default().push(a);
            }
        }
        for allocs in live_by_node.values() {
            for a in allocs.iter().skip(1) {
                self.stop(a, "duplicate daemon copy".into());
            }
        }
        let nodes: Vec<(&'a str, bool)> = self
            .input
            .nodes
            .values()
            .map(|n| {
                let ok = self.input.ready.contains(&n.name)
                    && sel.as_ref().is_none_or(|s| node_matches(n, s));
                (n.name.as_str(), ok)
            })
            .collect();
        for (name, eligible) in nodes {
            let hist = terminal_by_node.remove(name).unwrap_or_default();
            let hold = self.terminal_history(w, hist);
            if !eligible || live_by_node.contains_key(name) {
                continue;
            }
            if let Some(at) = hold
                && at > self.input.now
            {
                self.plan.wake(at);
                continue;
            }
            if self.by_name.contains_key(name) {
                self.place(w, 0, Strategy::Spread, Some(name));
            }
        }
        // History on nodes that no longer exist.
        for allocs in terminal_by_node.values() {
            self.plan.delete.extend(allocs.iter().map(|a| a.id.clone()));
        }
    }
}

/// A workload's status, derived from its allocations (never stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadStatus {
    /// Instances wanted now (replicas, remaining parallel job slots, matching nodes).
    pub desired: u32,
    /// Running.
    pub running: u32,
    /// Placed, not yet running.
    pub pending: u32,
    /// Completed (jobs: distinct indices).
    pub complete: u32,
    /// Failed allocations.
    pub failed: u32,
    /// Total restarts in place of live allocations.
    pub restarts: u32,
    /// `running`, `pending`, `complete`, `failed`, `degraded`, `queued`.
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
            }
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
    }
    st
}
