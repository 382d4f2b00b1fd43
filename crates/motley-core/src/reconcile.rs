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
use std::sync::Arc;

use crate::model::{
    AllocState, Allocation, Desired, Node, NodeLoss, Spec, Task, Workload, WorkloadRef,
};
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

/// Labels view of a node for selectors (facts, labels, short names of discovered labels).
pub struct NodeLabels<'a>(pub &'a Node);

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

/// A volume a request uses, with its binding (made earlier, or earlier in this pass).
#[derive(Debug, Clone)]
pub struct VolumeUse<'a> {
    /// The volume's name.
    pub name: &'a str,
    /// Its spec; `None` when no such volume exists.
    pub spec: Option<&'a crate::model::VolumeSpec>,
    /// Where it is bound, if it is.
    pub binding: Option<crate::model::VolumeBinding>,
}

/// One placement to make.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// For whom.
    pub workload: &'a Workload,
    /// Its reference.
    pub wref: &'a WorkloadRef,
    /// Replica slot or completion index.
    pub index: u32,
    /// Spread or bin-pack.
    pub strategy: Strategy,
    /// Only this node (daemons).
    pub only_node: Option<&'a str>,
    /// Taints it tolerates.
    pub tolerations: &'a [crate::hw::Toleration],
    /// Its volumes.
    pub volumes: Vec<VolumeUse<'a>>,
    /// May stop job allocations of lower priority to fit (services and daemons).
    pub preempt: bool,
    /// Subject to the queue head's reservation (a job, once a job ahead is blocked).
    pub backfill: bool,
    /// When it is expected to end at the latest (`now + time_limit`), for backfill.
    pub ends_at: Option<u64>,
}

impl<'r> Request<'r> {
    /// The request for instance `index` of `w` at time `now`: its kind's default
    /// strategy (spread for services and daemons, bin-pack for jobs) unless its placement
    /// names one, what it tolerates (daemons: every condition taint), preemption for
    /// services and daemons, backfill rules for jobs, and the job's expected end. No
    /// volumes and no pinned node: the reconciler adds those.
    pub fn new(w: &'r Workload, wref: &'r WorkloadRef, index: u32, now: u64) -> Request<'r> {
        let kind = w.spec.kind();
        let tolerations: &[crate::hw::Toleration] = if kind == crate::model::Kind::Daemon {
            &TOLERATE_ALL
        } else {
            &w.spec.placement().tolerations
        };
        let strategy = match (w.spec.placement().strategy, kind) {
            (Some(crate::model::StrategyName::Spread), _) => Strategy::Spread,
            (Some(crate::model::StrategyName::Binpack), _) => Strategy::BinPack,
            (None, crate::model::Kind::Job) => Strategy::BinPack,
            (None, _) => Strategy::Spread,
        };
        let ends_at = match &w.spec {
            Spec::Job(j) => j.time_limit.map(|t| now + t.as_millis()),
            _ => None,
        };
        Request {
            workload: w,
            wref,
            index,
            strategy,
            only_node: None,
            tolerations,
            volumes: Vec::new(),
            preempt: kind != crate::model::Kind::Job,
            backfill: kind == crate::model::Kind::Job,
            ends_at,
        }
    }
}

/// Where a request was placed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placed {
    /// The node.
    pub node: String,
    /// GPUs assigned (device names).
    pub gpus: Vec<String>,
    /// The request's volumes and their mounts on the node.
    pub volumes: Vec<crate::model::AllocVolume>,
    /// Volumes bound by this placement: (name, binding).
    pub bind: Vec<(String, crate::model::VolumeBinding)>,
    /// Allocations stopped to make room: (id, their workload).
    pub preempted: Vec<(String, WorkloadRef)>,
}

/// What a placer is told at the start of a pass.
pub struct Cluster<'a> {
    /// All nodes.
    pub nodes: &'a BTreeMap<String, Node>,
    /// Ready nodes.
    pub ready: &'a BTreeSet<String>,
    /// All workloads (for the priority of live allocations).
    pub workloads: &'a BTreeMap<WorkloadRef, Workload>,
    /// Allocations that hold resources now (live, and not lost this pass).
    pub live: Vec<&'a Allocation>,
    /// Latest readings per node (temperatures), for health headroom; may be empty.
    pub readings: &'a BTreeMap<String, crate::hw::Readings>,
    /// Now, ms since the epoch.
    pub now: u64,
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

/// Chooses nodes for requests, keeping account of what it placed. Implemented by the
/// scheduler crate.
pub trait Placer<'a> {
    /// Starts a pass: what exists and what is in use.
    fn begin(&mut self, cluster: Cluster<'a>);
    /// Places one request and accounts for it (and for anything it preempts), or says
    /// why no node fits.
    fn place(&mut self, req: &Request<'_>) -> Result<Placed, Unplaced>;
    /// The request is the head of the job queue and cannot run: hold the node where it
    /// will fit first, so later (`backfill`) requests do not delay it.
    fn reserve(&mut self, req: &Request<'_>);
}

/// Makes allocation ids (each begins with its workload's name and `-`: a periodic job
/// finds its runs' allocations by it). The shell supplies random ones; simulations use
/// counters.
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
    /// Latest readings per node (temperatures), for health headroom; may be empty.
    pub readings: &'a BTreeMap<String, crate::hw::Readings>,
    /// Current time, ms since the epoch.
    pub now: u64,
    /// Visit only the workloads not settled ([`crate::active`]); `None`: every one.
    pub active: Option<&'a crate::active::Active>,
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
    /// Volumes bound by this plan: (volume, binding).
    pub bind: Vec<(WorkloadRef, crate::model::VolumeBinding)>,
    /// The job queue: jobs with instances waiting to run, in the order they will run.
    pub queue: Vec<WorkloadRef>,
    /// Run again at this time (a backoff expires), if anything waits.
    pub wake_at: Option<u64>,
    /// Services whose update failed at its deadline with `auto_revert`: the records to
    /// store (the last good spec as a new generation; [`crate::rollout::reverted`]).
    pub revert: Vec<Workload>,
    /// Finished jobs past their `ttl_after_finished`, to delete ([`crate::collect`]).
    pub collect: Vec<WorkloadRef>,
    /// Runs of periodic jobs to start, each a new Job ([`crate::periodic`]).
    pub runs: Vec<Workload>,
    /// Runs of periodic jobs to delete (replaced, beyond the history): why.
    pub drop_runs: Vec<(WorkloadRef, String)>,
    /// Services and daemons whose Config stamps lag their Configs, restamped as a new
    /// generation (they roll), with the Configs' references ([`crate::config::restamped`]).
    pub restamp: Vec<(Workload, Vec<WorkloadRef>)>,
    /// Workloads found settled, with when each must be visited again (only when the pass
    /// ran over [`Input::active`], for [`crate::active::Active::settle`]).
    pub settled: Vec<(WorkloadRef, Option<u64>)>,
}

impl Plan {
    /// True when the plan changes nothing in the store.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.bind.is_empty()
            && self.stop.is_empty()
            && self.delete.is_empty()
            && self.lost.is_empty()
            && self.revert.is_empty()
            && self.collect.is_empty()
            && self.runs.is_empty()
            && self.drop_runs.is_empty()
            && self.restamp.is_empty()
    }
    fn wake(&mut self, at: u64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// How many terminal allocations of one service slot or daemon node are kept.
pub const KEEP_TERMINAL_PER_SLOT: usize = 3;

struct Pass<'a, 'p> {
    input: &'a Input<'a>,
    placer: &'p mut dyn Placer<'a>,
    ids: &'p mut dyn Ids,
    /// Bindings made earlier in this pass.
    bound: BTreeMap<WorkloadRef, crate::model::VolumeBinding>,
    /// A job blocked at the head of the queue holds a reservation.
    head_blocked: bool,
    /// The task of the workload (uid, generation) last given a new allocation: its new
    /// allocations share one copy.
    task: Option<(String, u64, Arc<Task>)>,
    /// Services with a ready replica, gathered once a pass when a service waits on
    /// others (`depends_on`).
    ready: BTreeSet<WorkloadRef>,
    plan: Plan,
}

/// Runs every controller once: over every workload, or (with [`Input::active`]) over
/// those not settled, with the same plan.
pub fn reconcile<'a>(input: &'a Input<'a>, placer: &mut dyn Placer<'a>, ids: &mut dyn Ids) -> Plan {
    let mut ids = gather::UniqueIds::new(ids, input.allocs);
    let groups = gather::groups(input);
    let lost = gather::lost(input, groups.as_ref());
    let (visits, live) = gather::visits(input, groups, &lost.copies);
    placer.begin(Cluster {
        nodes: input.nodes,
        ready: input.ready,
        workloads: input.workloads,
        live,
        readings: input.readings,
        now: input.now,
    });
    let mut pass = Pass {
        input,
        placer,
        ids: &mut ids,
        bound: BTreeMap::new(),
        head_blocked: false,
        task: None,
        ready: BTreeSet::new(),
        plan: Plan {
            lost: if crate::mutants::active("replacement-without-loss") {
                Vec::new()
            } else {
                lost.copies
                    .iter()
                    .map(|a| (a.id.clone(), format!("node {} is down", a.node)))
                    .collect()
            },
            wake_at: lost.wake,
            ..Plan::default()
        },
    };
    if let Some(at) = input.active.and_then(|a| a.next_wake(input.now)) {
        pass.plan.wake(at);
    }

    // Each workload's allocations of its current uid. Allocations whose workload is gone
    // (or was re-created): stop, then forget.
    let mut mine_of: Vec<Vec<&Allocation>> = Vec::with_capacity(visits.len());
    let mut orphans: Vec<bool> = Vec::with_capacity(visits.len());
    for v in &visits {
        let mut mine = Vec::new();
        let mut orphaned = false;
        for a in &v.allocs {
            if let Some(w) = v.workload
                && w.uid == a.workload_uid
            {
                mine.push(*a);
                continue;
            }
            orphaned = true;
            if a.is_live() {
                if a.desired == Desired::Run {
                    pass.plan
                        .stop
                        .push((a.id.clone(), format!("{} was deleted", v.wref)));
                }
            } else {
                pass.plan.delete.push(a.id.clone());
            }
        }
        mine_of.push(mine);
        orphans.push(orphaned);
    }

    // Which services have a ready replica, for those that wait on others: every live
    // allocation's workload is visited (active.rs), so the visits hold them all.
    let waits = |v: &gather::Visit<'_>| matches!(v.workload.map(|w| &w.spec), Some(Spec::Service(s)) if !s.depends_on.is_empty());
    if visits.iter().any(waits) {
        pass.ready = visits
            .iter()
            .filter(|v| {
                v.allocs
                    .iter()
                    .any(|a| a.is_live() && a.desired == Desired::Run && a.ready_at.is_some())
            })
            .map(|v| v.wref.clone())
            .collect();
    }

    // Services and daemons first (higher priority first), then jobs by priority and
    // submit time: the queue. Volumes are not workloads.
    let mut order: Vec<(usize, &Workload)> = visits
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.workload.map(|w| (i, w)))
        .filter(|(_, w)| w.spec.kind().is_workload())
        .collect();
    order.sort_by_key(|(_, w)| {
        let job = w.spec.kind() == crate::model::Kind::Job;
        (
            job,
            -i64::from(w.spec.priority()),
            job.then_some(w.created_at),
        )
    });
    // A job found finished: (index, when it must be visited again).
    let mut finished: Vec<(usize, Option<u64>)> = Vec::new();
    for (i, w) in order {
        let mine = std::mem::take(&mut mine_of[i]);
        match &w.spec {
            Spec::Service(s) => {
                pass.restamp(w);
                pass.service(w, s.replicas, &mine)
            }
            Spec::Job(_) => {
                if let Some(wake) = pass.job(w, &mine) {
                    finished.push((i, wake));
                }
            }
            Spec::Daemon(_) => {
                pass.restamp(w);
                pass.daemon(w, &mine)
            }
            Spec::Volume(_)
            | Spec::Secret(_)
            | Spec::Source(_)
            | Spec::Namespace(_)
            | Spec::Config(_) => {}
        }
    }
    if input.active.is_some() {
        pass.plan.settled = gather::settled(&visits, &orphans, finished);
    }
    pass.plan
}

#[path = "reconcile_gather.rs"]
mod gather;

/// True when an allocation runs another task or restart policy than its workload now asks
/// for. Other changes (replicas, labels) do not replace running instances.
/// Whether `a` runs another spec than `w`'s current one (a rolling update replaces it).
pub fn is_outdated(w: &Workload, a: &Allocation) -> bool {
    *a.task != *w.spec.run_task() || a.restart != w.spec.restart_policy()
}

#[path = "reconcile_periodic.rs"]
mod periodic_runs;
#[path = "reconcile_roll.rs"]
mod roll;
pub use periodic_runs::{run as periodic_run, runs_in as periodic_runs_in, view as periodic_view};

fn selector_of(w: &Workload) -> Option<Selector> {
    w.spec
        .placement()
        .require
        .as_deref()
        .and_then(|s| Selector::parse(s).ok())
}

impl<'a> Pass<'a, '_> {
    /// `w`'s task, one copy for every allocation this pass gives the same generation.
    fn task_of(&mut self, w: &Workload) -> Arc<Task> {
        if let Some((uid, generation, task)) = &self.task
            && *uid == w.uid
            && *generation == w.generation
        {
            return task.clone();
        }
        let task = Arc::new(w.spec.run_task().into_owned());
        self.task = Some((w.uid.clone(), w.generation, task.clone()));
        task
    }

    fn new_alloc(&mut self, w: &Workload, index: u32, placed: Placed) -> Allocation {
        let node = placed.node;
        let mut reasons = vec![format!("placed on {node}")];
        if !placed.preempted.is_empty() {
            reasons.push(format!(
                "preempted {} allocation(s) of lower priority",
                placed.preempted.len()
            ));
        }
        Allocation {
            id: self.ids.next_id(&w.spec.reference()),
            workload: w.spec.reference(),
            workload_uid: w.uid.clone(),
            generation: w.generation,
            index,
            node,
            task: self.task_of(w),
            restart: w.spec.restart_policy(),
            on_node_loss: w.spec.on_node_loss(),
            desired: Desired::Run,
            state: AllocState::Pending,
            pid: None,
            exit_code: None,
            restarts: 0,
            reasons,
            time_limit: match &w.spec {
                Spec::Job(j) => j.time_limit,
                _ => None,
            },
            gpus: placed.gpus,
            volumes: placed.volumes,
            created_at: self.input.now,
            updated_at: self.input.now,
            progress: None,
            check: match &w.spec {
                Spec::Service(s) => s.check.clone().map(Box::new),
                _ => None,
            },
            health: None,
            ports: BTreeMap::new(),
            ready_at: None,
        }
    }

    /// The request for one instance of `w`, with its volumes as bound now.
    fn request<'r>(
        &self,
        w: &'r Workload,
        wref: &'r WorkloadRef,
        index: u32,
        only: Option<&'r str>,
    ) -> Request<'r>
    where
        'a: 'r,
    {
        let mut req = Request::new(w, wref, index, self.input.now);
        req.only_node = only;
        req.backfill = req.backfill && self.head_blocked;
        req.volumes = w
            .spec
            .task()
            .volumes
            .iter()
            .map(|name| {
                let vref = wref.sibling(crate::model::Kind::Volume, name);
                let vol = self.input.workloads.get(&vref);
                VolumeUse {
                    name,
                    spec: vol.and_then(|v| match &v.spec {
                        Spec::Volume(s) => Some(s),
                        _ => None,
                    }),
                    binding: self
                        .bound
                        .get(&vref)
                        .cloned()
                        .or_else(|| vol.and_then(|v| v.binding.clone())),
                }
            })
            .collect();
        req
    }

    /// Places one instance; on success records the allocation, bindings and preemptions.
    fn place(&mut self, w: &Workload, index: u32, only: Option<&str>) -> bool {
        let wref = w.spec.reference();
        let req = self.request(w, &wref, index, only);
        match self.placer.place(&req) {
            Ok(mut placed) => {
                for (id, _) in &placed.preempted {
                    self.plan.stop.push((
                        id.clone(),
                        format!("preempted by {wref} (priority {})", w.spec.priority()),
                    ));
                }
                for (name, b) in std::mem::take(&mut placed.bind) {
                    let vref = wref.sibling(crate::model::Kind::Volume, &name);
                    self.bound.insert(vref.clone(), b.clone());
                    self.plan.bind.push((vref, b));
                }
                let a = self.new_alloc(w, index, placed);
                self.plan.create.push(a);
                true
            }
            Err(why) => {
                if w.spec.kind() == crate::model::Kind::Job && !self.head_blocked {
                    // The first job that cannot run heads the queue: hold room for it.
                    self.placer.reserve(&req);
                    self.head_blocked = true;
                }
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

    fn service(&mut self, w: &Workload, replicas: u32, mine: &[&Allocation]) {
        let mut live_by_slot: BTreeMap<u32, Vec<&Allocation>> = BTreeMap::new();
        let mut terminal_by_slot: BTreeMap<u32, Vec<&Allocation>> = BTreeMap::new();
        // Fenced: never two copies, so a slot whose copy is still stopping (asked to stop,
        // not yet seen stopped or lost) gets no new one until it is (found by the
        // simulator: scaled down and up again while its node was unreachable).
        let fenced = w.spec.on_node_loss() == NodeLoss::Fence;
        let mut stopping: BTreeSet<u32> = BTreeSet::new();
        let mut outdated: Vec<&Allocation> = Vec::new();
        for a in mine {
            if a.is_live() && a.desired == Desired::Run {
                if is_outdated(w, a) {
                    if a.state == AllocState::Running {
                        // Serving: replaced in turn (below).
                        outdated.push(a);
                    } else {
                        self.stop(a, format!("replaced by generation {}", w.generation));
                        stopping.insert(a.index);
                    }
                    continue;
                }
                live_by_slot.entry(a.index).or_default().push(a);
            } else if a.is_live() {
                stopping.insert(a.index);
            } else {
                terminal_by_slot.entry(a.index).or_default().push(a);
            }
        }
        if !outdated.is_empty() {
            self.roll(
                w,
                replicas,
                mine,
                outdated,
                &mut live_by_slot,
                &mut stopping,
            );
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
                        stopping.insert(a.index);
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
                stopping.insert(slot);
            }
        }
        if fenced {
            for slot in stopping {
                // Held until the old copy's stop is reported (or its node is declared
                // lost after the fence time): each report starts a new pass.
                live_by_slot.entry(slot).or_default();
            }
        }
        let missing = (0..replicas)
            .filter(|s| !live_by_slot.contains_key(s))
            .count() as u32;
        if missing > 0
            && let Some(why) = self.waiting_for(w)
        {
            self.plan.blocked.insert(
                w.spec.reference(),
                Blocked {
                    count: missing,
                    why: Unplaced {
                        summary: why,
                        nodes: Vec::new(),
                    },
                },
            );
            return;
        }
        for slot in 0..replicas {
            if !live_by_slot.contains_key(&slot) && !self.place(w, slot, None) {
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

    /// A changed Config whose users the apply could not rewrite (one from a server
    /// whose cache had not seen them yet) rolls them here.
    fn restamp(&mut self, w: &Workload) {
        if let Some(next) = crate::config::restamped(w, self.input.workloads, self.input.now) {
            let configs = crate::config::referenced(&w.spec).into_iter().collect();
            self.plan.restamp.push((next, configs));
        }
    }

    /// The first of service `w`'s `depends_on` with no ready replica, said as why its
    /// replicas wait; `None` when every one has one (or it names none).
    fn waiting_for(&self, w: &Workload) -> Option<String> {
        let Spec::Service(s) = &w.spec else {
            return None;
        };
        let me = w.spec.reference();
        s.depends_on.iter().find_map(|d| {
            let dep = me.sibling(crate::model::Kind::Service, d);
            (!self.ready.contains(&dep))
                .then(|| format!("waiting for service {d} to have a ready replica (depends_on)"))
        })
    }

    /// Runs job `w`; when it is finished, returns when it must be visited again (its TTL
    /// runs out; never for a job its source declares).
    fn job(&mut self, w: &Workload, mine: &[&Allocation]) -> Option<Option<u64>> {
        let Spec::Job(j) = &w.spec else { return None };
        if j.schedule.is_some() {
            return self.periodic(w, j);
        }
        // A periodic job's run is kept by its history, not a TTL.
        let run = w.run_of.is_some() && !crate::mutants::active("runs-collected-by-ttl");
        let kept = w.source.is_some() || run;
        match crate::collect::fate(j, kept, mine, self.input.now) {
            crate::collect::Fate::Running => {}
            crate::collect::Fate::Declared => return Some(None),
            crate::collect::Fate::KeptUntil(at) => {
                self.plan.wake(at);
                return Some(Some(at));
            }
            crate::collect::Fate::Collect => {
                self.plan.collect.push(w.spec.reference());
                return None;
            }
        }

        // Which indexes are done or under way (one flag per index: a pass over a job of
        // 10,000 completions stays a few microseconds).
        const DONE: u8 = 1;
        const LIVE: u8 = 2;
        let mut taken = vec![0u8; j.completions as usize];
        let mut failed: Option<u32> = None;
        let mut live = 0u32;
        let fenced = w.spec.on_node_loss() == NodeLoss::Fence;
        for a in mine {
            // Fenced: an instance still stopping holds its index (never two copies).
            if fenced
                && a.is_live()
                && let Some(t) = taken.get_mut(a.index as usize)
            {
                *t |= if a.desired == Desired::Run { 0 } else { LIVE };
            }
            match a.state {
                AllocState::Complete => {
                    if let Some(t) = taken.get_mut(a.index as usize) {
                        *t |= DONE;
                    }
                }
                AllocState::Failed => {
                    failed = Some(failed.map_or(a.index, |f| f.min(a.index)));
                }
                AllocState::Pending | AllocState::Running | AllocState::Backoff
                    if a.desired == Desired::Run =>
                {
                    let node = self.input.nodes.get(&a.node);
                    if node.is_some_and(|n| n.draining) {
                        // Batch work on a draining node is stopped and runs again elsewhere
                        // (a fenced instance once its stop is seen).
                        self.stop(a, format!("draining node {}", a.node));
                        if fenced && let Some(t) = taken.get_mut(a.index as usize) {
                            *t |= LIVE;
                        }
                    } else if let Some(t) = node.and_then(|n| evicting_taint(w, n)) {
                        self.stop(a, format!("evicted: node {} is tainted {}", a.node, t.key));
                        if fenced && let Some(t) = taken.get_mut(a.index as usize) {
                            *t |= LIVE;
                        }
                    } else {
                        if let Some(t) = taken.get_mut(a.index as usize)
                            && *t & LIVE == 0
                        {
                            *t |= LIVE;
                            live += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(first) = failed {
            for a in mine {
                self.stop(a, format!("job failed: instance {first} failed"));
            }
            return None;
        }
        let mut open = taken.iter().filter(|t| **t == 0).count() as u32;
        let unplaced = taken.iter().enumerate().filter(|(_, t)| **t == 0);
        for (running, (index, _)) in (live..).zip(unplaced) {
            if running >= j.parallelism {
                break;
            }
            open -= 1;
            if !self.place(w, index as u32, None) {
                self.plan.queue.push(w.spec.reference());
                let room = j.parallelism.saturating_sub(running + 1);
                if let Some(b) = self.plan.blocked.get_mut(&w.spec.reference()) {
                    b.count += open.min(room);
                }
                break;
            }
        }
        // Planted bug: a job still running is reported settled, so nothing visits it
        // again until it changes (a job waiting for room others free would wait forever).
        crate::mutants::active("settle-unfinished").then_some(None)
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
            self.place(w, 0, Some(name));
        }
        // History on nodes that no longer exist.
        for allocs in terminal_by_node.values() {
            self.plan.delete.extend(allocs.iter().map(|a| a.id.clone()));
        }
    }
}

#[path = "reconcile_status.rs"]
mod status_of;
pub use status_of::{WorkloadStatus, status};
