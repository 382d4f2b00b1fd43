//! The scheduler: feasibility ▸ score ▸ select, with a reason for every refusal.
//!
//! Sans-IO like the core: no runtime, no IO, no clock. [`Scheduler`] implements
//! [`motley_core::reconcile::Placer`]. One pass (a reconcile) goes:
//!
//! 1. [`Placer::begin`] builds a [`state::NodeState`] per node from the live
//!    allocations: O(nodes + allocations), once per pass.
//! 2. The first request of a workload builds its [`Profile`]: the nodes that pass its
//!    *static* filters (ready, cordon, `require` selector, taints, GPU models, volume
//!    media, topology labels) and each one's static score (`prefer` weights, health,
//!    untolerated prefer-no-schedule taints). Later requests of the workload reuse it.
//! 3. Each request walks the profile's nodes from a rotating cursor, applies the
//!    *dynamic* filters (free CPU, memory, disk, GPUs, host ports, volume space, max
//!    skew, required (anti-)affinity, the queue head's reservation), scores the nodes
//!    that pass and stops once it has scored a sample ([`sample_size`], adaptive like
//!    kube-scheduler's percentage of nodes to score). Ties break on a seeded hash.
//! 4. If nothing fits, a service or daemon may preempt job allocations of lower
//!    priority (the smallest set, on the node where that set is smallest); otherwise the
//!    request is explained node by node ([`explain`]).
//!
//! No step loops over nodes × allocations.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capacity;
pub mod explain;
mod filters;
pub mod replay;
pub mod state;
pub mod whatif;

use std::collections::BTreeSet;

use motley_core::hw::{TaintEffect, tolerated};
use motley_core::model::{AllocVolume, Node, Spec, VolumeBinding};
use motley_core::quantity::{Bytes, MilliCpu};
use motley_core::reconcile::{
    Cluster, NodeLabels, Placed, Placer, Request, Strategy, Unplaced, VolumeUse,
};
use motley_core::selector::Selector;
use rustc_hash::FxHashMap;

pub use explain::summarize;
use filters::*;
use state::{NodeState, Workloads, live_alloc};

/// Tuning of a [`Scheduler`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed for tie-breaking: the same state and seed give the same placements.
    pub seed: u64,
    /// Score every feasible node up to this many (default 100).
    pub min_sample: usize,
    /// Percentage of feasible nodes to score beyond that; `None` is adaptive:
    /// 50 % minus one per 125 nodes, at least 1 % (kube-scheduler's rule with a 1 %
    /// floor instead of 5 %: see `docs/ARCHITECTURE.md`).
    pub percentage: Option<u32>,
    /// Most nodes listed one by one in an explanation (the summary counts all).
    pub max_explained: usize,
    /// Refuse a request equal to one refused since the last placement without looking
    /// again (default true; off only to test that it changes no decision).
    pub remember_refusals: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            min_sample: 100,
            percentage: None,
            max_explained: 200,
            remember_refusals: true,
        }
    }
}

/// How many feasible nodes to score out of `n`.
pub fn sample_size(n: usize, cfg: &Config) -> usize {
    if n <= cfg.min_sample {
        return n;
    }
    let pct = match cfg.percentage {
        Some(p) => p.clamp(1, 100) as usize,
        None => 50usize.saturating_sub(n / 125).max(1),
    };
    (n * pct / 100).max(cfg.min_sample).min(n)
}

/// The nodes that pass a class of static filters: (node, static score, untolerated
/// prefer-no-schedule taints), shared by every workload of the class.
type Feasible = std::rc::Rc<Vec<(u32, i32, u8)>>;

/// Where the queue head's reservation would go: (rank key, node, shadow time).
type ReserveChoice = ((bool, u64, u64), u32, Option<u64>);

/// What the scheduler keeps per workload during a pass.
#[derive(Debug)]
pub struct Profile {
    /// Interned workload id.
    wid: u32,
    /// Parsed `require`.
    require: Option<Selector>,
    /// Nodes passing the static filters, with their static score and how many
    /// untolerated prefer-no-schedule taints they have (shared within a class).
    feasible: Feasible,
    /// Where the next walk starts.
    cursor: usize,
    /// Per `spread` rule: the domain of each node and the instances per domain.
    spreads: Vec<SpreadState>,
}

/// Each node's domain (an index into the domain names, `NO_DOMAIN` when it lacks the
/// key) for one topology key over one class's feasible nodes, and how many domains.
type Domains = std::rc::Rc<(Vec<u32>, usize)>;

/// A node without the topology key.
const NO_DOMAIN: u32 = u32::MAX;

#[derive(Debug)]
struct SpreadState {
    max_skew: u32,
    domains: Domains,
    counts: Vec<u32>,
    /// The smallest count, kept up to date (read for every sampled node).
    min: u32,
}

impl SpreadState {
    fn domain(&self, i: u32) -> Option<usize> {
        match self.domains.0.get(i as usize) {
            Some(&d) if d != NO_DOMAIN => Some(d as usize),
            _ => None,
        }
    }
    fn change(&mut self, i: u32, add: bool) {
        if let Some(d) = self.domain(i) {
            let c = &mut self.counts[d];
            *c = if add { *c + 1 } else { c.saturating_sub(1) };
            self.min = self.counts.iter().copied().min().unwrap_or(0);
        }
    }
}

/// The queue head's hold on one node.
#[derive(Debug, Clone)]
struct Reservation {
    node: u32,
    /// When enough will have ended there for the head to fit; `None`: not known.
    shadow: Option<u64>,
    holder: String,
}

/// The heterogeneity-aware scheduler.
#[derive(Debug, Default)]
pub struct Scheduler<'a> {
    cfg: Config,
    nodes: Vec<NodeState<'a>>,
    index: FxHashMap<&'a str, u32>,
    workloads: Workloads,
    profiles: FxHashMap<u32, Profile>,
    classes: FxHashMap<String, Feasible>,
    domains: FxHashMap<String, Domains>,
    reservation: Option<Reservation>,
    now: u64,
    /// Refusals since the last placement, by what decides them ([`Scheduler::refusal_key`]):
    /// with nothing placed since (room only shrinks within a pass for requests that do
    /// not preempt), an equal request is refused the same way, without a profile or an
    /// explanation of its own (a queue of 8,000 equal jobs was a profile and an
    /// explanation each, every pass).
    refused: FxHashMap<String, Unplaced>,
}

impl<'a> Scheduler<'a> {
    /// A scheduler with this tuning.
    pub fn new(cfg: Config) -> Scheduler<'a> {
        Scheduler {
            cfg,
            ..Scheduler::default()
        }
    }

    /// The nodes as accounted now.
    pub fn nodes(&self) -> &[NodeState<'a>] {
        &self.nodes
    }

    /// The nodes passing `req`'s static filters, with static scores.
    fn static_pass(
        &self,
        req: &Request<'_>,
        require: Option<&Selector>,
        prefer: &[(Selector, i32)],
    ) -> Vec<(u32, i32, u8)> {
        let mut feasible = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if static_fail(n, req, require, false).is_some() {
                continue;
            }
            let labels = NodeLabels(n.node);
            let pref: i32 = prefer
                .iter()
                .filter(|(s, _)| s.matches(&labels))
                .map(|(_, w)| *w)
                .sum();
            let avoid = n
                .node
                .taints
                .iter()
                .filter(|t| {
                    t.effect == TaintEffect::PreferNoSchedule && !tolerated(req.tolerations, t)
                })
                .count()
                .min(255) as u8;
            feasible.push((i as u32, pref - n.health, avoid));
        }
        feasible
    }

    /// The domain of every node for topology `key`, over a class's feasible nodes.
    fn domains_of(&self, feasible: &[(u32, i32, u8)], key: &str) -> (Vec<u32>, usize) {
        let mut names: FxHashMap<std::borrow::Cow<'a, str>, u32> = FxHashMap::default();
        let mut of = vec![NO_DOMAIN; self.nodes.len()];
        for &(i, _, _) in feasible {
            let node: &'a Node = self.nodes[i as usize].node;
            if let Some(v) = node.label(key) {
                let next = names.len() as u32;
                of[i as usize] = *names.entry(v).or_insert(next);
            }
        }
        (of, names.len())
    }

    /// Builds (or returns) the profile of the request's workload.
    fn profile(&mut self, req: &Request<'_>) -> u32 {
        let wid = self.workloads.id(req.wref);
        if self.profiles.contains_key(&wid) {
            return wid;
        }
        let w = req.workload;
        let placement = w.spec.placement();
        let require = placement
            .require
            .as_deref()
            .and_then(|s| Selector::parse(s).ok());
        let prefer: Vec<(Selector, i32)> = placement
            .prefer
            .iter()
            .filter_map(|p| Selector::parse(&p.selector).ok().map(|s| (s, p.weight)))
            .collect();
        // Workloads with the same constraints share one static pass over the nodes
        // (an equivalence class, as Nomad's computed node classes): a thousand
        // workloads with a handful of distinct placements cost a handful of passes.
        let class = static_class(req);
        let feasible = match self.classes.get(&class) {
            Some(f) => std::rc::Rc::clone(f),
            None => {
                let f = std::rc::Rc::new(self.static_pass(req, require.as_ref(), &prefer));
                self.classes.insert(class.clone(), std::rc::Rc::clone(&f));
                f
            }
        };
        let mut spreads = Vec::new();
        for sp in &placement.spread {
            let dkey = format!("{class}|{}", sp.key);
            let domains = match self.domains.get(&dkey) {
                Some(d) => std::rc::Rc::clone(d),
                None => {
                    let d = std::rc::Rc::new(self.domains_of(&feasible, &sp.key));
                    self.domains.insert(dkey, std::rc::Rc::clone(&d));
                    d
                }
            };
            let mut counts = vec![0; domains.1];
            if let Some(on) = self.workloads.on_node.get(wid as usize) {
                for (&n, &c) in on {
                    if let Some(&d) = domains.0.get(n as usize)
                        && d != NO_DOMAIN
                    {
                        counts[d as usize] += c;
                    }
                }
            }
            let min = counts.iter().copied().min().unwrap_or(0);
            spreads.push(SpreadState {
                max_skew: sp.max_skew,
                domains,
                counts,
                min,
            });
        }
        // Start each workload's walk somewhere else, so equal workloads do not all
        // probe the same nodes first.
        let cursor = if feasible.is_empty() {
            0
        } else {
            (mix(self.cfg.seed ^ u64::from(wid)) % feasible.len() as u64) as usize
        };
        self.profiles.insert(
            wid,
            Profile {
                wid,
                require,
                feasible,
                cursor,
                spreads,
            },
        );
        wid
    }

    /// Why node `i` cannot take `req` now beyond the static filters, as text.
    fn dynamic_reason(&self, prof: &Profile, req: &Request<'_>, i: u32) -> Option<String> {
        self.dynamic_fail(prof, req, i)
            .map(|f| f.text(&req.workload.spec.placement().spread))
    }

    /// The first dynamic filter node `i` fails for `req`, or `None`. Allocates nothing:
    /// this runs for every sampled node of every placement.
    fn dynamic_fail<'x>(
        &self,
        prof: &Profile,
        req: &'x Request<'_>,
        i: u32,
    ) -> Option<DynFail<'x>> {
        resource_fail(&self.nodes[i as usize], req).or_else(|| self.rule_fail(prof, req, i))
    }

    /// The rules that stopping other work cannot satisfy: max skew, required
    /// (anti-)affinity and the queue head's reservation.
    fn rule_fail<'x>(&self, prof: &Profile, req: &'x Request<'_>, i: u32) -> Option<DynFail<'x>> {
        for (k, sp) in prof.spreads.iter().enumerate() {
            if let Some(d) = sp.domain(i)
                && sp.counts[d] + 1 > sp.min + sp.max_skew
            {
                return Some(DynFail::Skew(k));
            }
        }
        let placement = req.workload.spec.placement();
        for a in placement.affinity.iter().filter(|a| a.required) {
            if !self.present(&a.workload, a.topology.as_deref(), i) {
                return Some(DynFail::Affinity(&a.workload));
            }
        }
        for a in placement.anti_affinity.iter().filter(|a| a.required) {
            if self.present(&a.workload, a.topology.as_deref(), i) {
                return Some(DynFail::AntiAffinity(&a.workload));
            }
        }
        if req.backfill
            && let Some(r) = &self.reservation
            && r.node == i
            && !matches!((req.ends_at, r.shadow), (Some(e), Some(s)) if e <= s)
        {
            return Some(DynFail::Reserved(r.holder.clone()));
        }
        None
    }

    /// Whether `target` has an instance on node `i`, or in its topology domain.
    fn present(
        &self,
        target: &motley_core::model::WorkloadRef,
        topo: Option<&str>,
        i: u32,
    ) -> bool {
        let Some(t) = self.workloads.get(target) else {
            return false;
        };
        match topo {
            None => self.workloads.count(t, i) > 0,
            Some(key) => {
                let Some(mine) = self.nodes[i as usize].node.label(key) else {
                    return false;
                };
                self.workloads.on_node[t as usize].keys().any(|&n| {
                    self.nodes[n as usize].node.label(key).as_deref() == Some(mine.as_ref())
                })
            }
        }
    }

    /// The score of node `i` for `req` (higher is better), from its static part.
    fn score(&self, prof: &Profile, req: &Request<'_>, i: u32, static_score: i32) -> i64 {
        let n = &self.nodes[i as usize];
        let res = &req.workload.spec.task().resources;
        // Per-mille load after placing, by multiplication with per-node scales (the
        // divisions were the most expensive part of scoring a node).
        let cpu = n.cpu_permille(n.cpu_used + res.cpu_on(n.cpu_score()));
        let mem = n.mem_permille(n.mem_used + res.memory_or_default().0);
        let load = ((cpu + mem) / 2) as i64; // 0..1000
        let mut s = i64::from(static_score) * 10;
        match req.strategy {
            Strategy::Spread => {
                let same = i64::from(self.workloads.count(prof.wid, i));
                s += (1000 - load) - 2000 * same
            }
            Strategy::BinPack => s += load,
        }
        let placement = req.workload.spec.placement();
        for a in placement.affinity.iter().filter(|a| !a.required) {
            if self.present(&a.workload, a.topology.as_deref(), i) {
                s += 500;
            }
        }
        for a in placement.anti_affinity.iter().filter(|a| !a.required) {
            if self.present(&a.workload, a.topology.as_deref(), i) {
                s -= 500;
            }
        }
        for sp in &prof.spreads {
            if let Some(d) = sp.domain(i) {
                s -= 200 * i64::from(sp.counts[d] - sp.min);
            }
        }
        s
    }

    /// Accounts `req` on node `i`: resources, GPUs, ports, volumes, counts.
    fn commit(&mut self, wid: u32, req: &Request<'_>, i: u32) -> Placed {
        let n = &mut self.nodes[i as usize];
        let res = &req.workload.spec.task().resources;
        let mut gpus = Vec::new();
        if let Some(g) = &res.gpu {
            for (k, s) in n.gpus.iter().enumerate() {
                if gpus.len() as u32 >= g.count {
                    break;
                }
                if !s.used && gpu_matches(s, g) {
                    gpus.push(k);
                }
            }
        }
        let mut volumes = Vec::new();
        let mut bind = Vec::new();
        for v in &req.volumes {
            match (&v.binding, v.spec) {
                (Some(b), _) => volumes.push(AllocVolume {
                    name: v.name.to_string(),
                    mount: b.mount.clone(),
                }),
                (None, Some(spec)) => {
                    let best = n
                        .mounts
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| {
                            spec.class.allows(m.media)
                                && m.size.saturating_sub(m.reserved) >= spec.size.0
                        })
                        .max_by_key(|(_, m)| (media_rank(m.media), m.data, m.size - m.reserved))
                        .map(|(k, _)| k);
                    if let Some(k) = best {
                        let m = &mut n.mounts[k];
                        m.reserved += spec.size.0;
                        volumes.push(AllocVolume {
                            name: v.name.to_string(),
                            mount: m.path.clone(),
                        });
                        bind.push((
                            v.name.to_string(),
                            VolumeBinding {
                                node: n.node.name.clone(),
                                mount: m.path.clone(),
                                media: m.media,
                                disk: m.disk.clone(),
                                bound_at: self.now,
                            },
                        ));
                    }
                }
                (None, None) => {}
            }
        }
        let spec = &req.workload.spec;
        let la = state::LiveAlloc {
            priority: spec.priority(),
            preemptible: spec.kind() == motley_core::model::Kind::Job,
            gpus: gpus.clone(),
            ends_at: req.ends_at,
            ..state::LiveAlloc::of_task(String::new(), wid, spec.task(), n)
        };
        let gpu_names = gpus.iter().map(|&k| n.gpus[k].name.clone()).collect();
        n.add(la);
        self.workloads.add(wid, i);
        if let Some(p) = self.profiles.get_mut(&wid) {
            for sp in &mut p.spreads {
                sp.change(i, true);
            }
        }
        Placed {
            node: self.nodes[i as usize].node.name.clone(),
            gpus: gpu_names,
            volumes,
            bind,
            preempted: Vec::new(),
        }
    }

    /// The single node a request is pinned to (a daemon's node, a bound volume's node).
    fn pinned(&self, req: &Request<'_>) -> Option<Result<u32, String>> {
        let mut pin: Option<&str> = req.only_node;
        for v in &req.volumes {
            if let Some(b) = &v.binding {
                match pin {
                    Some(p) if p != b.node => {
                        return Some(Err(format!(
                            "volume {} is bound to node {}, not {p}",
                            v.name, b.node
                        )));
                    }
                    _ => pin = Some(&b.node),
                }
            }
        }
        let p = pin?;
        Some(
            self.index
                .get(p)
                .copied()
                .ok_or_else(|| format!("node {p} does not exist")),
        )
    }

    /// Every node's reason, for an explanation.
    fn explain(&self, prof: &Profile, req: &Request<'_>, only: Option<u32>) -> Unplaced {
        let mut reasons = Vec::new();
        let mut total = 0;
        let in_profile: BTreeSet<u32> = prof.feasible.iter().map(|f| f.0).collect();
        for (i, n) in self.nodes.iter().enumerate() {
            let i = i as u32;
            if only.is_some_and(|o| o != i) {
                continue;
            }
            total += 1;
            let why = if in_profile.contains(&i) {
                self.dynamic_reason(prof, req, i)
            } else {
                static_reason(n, req, prof.require.as_ref(), only.is_some())
                    .or_else(|| self.dynamic_reason(prof, req, i))
            };
            reasons.push((
                n.node.name.clone(),
                why.unwrap_or_else(|| "not chosen".into()),
            ));
        }
        let summary = summarize(total, &reasons);
        reasons.truncate(self.cfg.max_explained);
        Unplaced {
            summary,
            nodes: reasons,
        }
    }

    /// Tries to make room on one node by stopping lower-priority job allocations.
    fn preempt(&mut self, prof_wid: u32, req: &Request<'_>, only: Option<u32>) -> Option<Placed> {
        let prio = req.workload.spec.priority();
        let nodes: Vec<u32> = match only {
            Some(i) => vec![i],
            None => self
                .profiles
                .get(&prof_wid)?
                .feasible
                .iter()
                .map(|f| f.0)
                .collect(),
        };
        let prof = self.profiles.get(&prof_wid)?;
        let mut best: Option<(usize, i32, u64, u64, u32, Vec<String>)> = None;
        for i in nodes {
            let n = &self.nodes[i as usize];
            if static_fail(n, req, prof.require.as_ref(), only.is_some()).is_some()
                || self.rule_fail(prof, req, i).is_some()
            {
                continue;
            }
            let mut cands: Vec<&state::LiveAlloc> = n
                .allocs
                .iter()
                .filter(|a| a.preemptible && a.priority < prio)
                .collect();
            if cands.is_empty() {
                continue;
            }
            // Lowest priority first; among equals the largest, so fewer are needed.
            cands.sort_by_key(|a| (a.priority, std::cmp::Reverse(a.cpu + a.memory / (1 << 20))));
            let mut trial = n.clone();
            let mut victims: Vec<&state::LiveAlloc> = Vec::new();
            // Skew, affinity and the reservation were checked above (rule_fail); what
            // stopping victims changes is the node's resources.
            let fits = |t: &NodeState<'_>| resource_fail(t, req).is_none();
            let mut ok = fits(&trial);
            for c in &cands {
                if ok {
                    break;
                }
                trial.remove(&c.id);
                victims.push(c);
                ok = fits(&trial);
            }
            if !ok {
                continue;
            }
            // Put back any victim the others already make room without.
            let mut k = victims.len();
            while k > 0 {
                k -= 1;
                let v = victims[k];
                let mut t2 = trial.clone();
                t2.add(v.clone());
                if fits(&t2) {
                    trial = t2;
                    victims.remove(k);
                }
            }
            let key = (
                victims.len(),
                victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
                victims.iter().map(|v| v.cpu).sum::<u64>(),
                mix(self.cfg.seed ^ (u64::from(i) << 32) ^ u64::from(prof_wid)),
                i,
                victims.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
            );
            if best
                .as_ref()
                .is_none_or(|b| (key.0, key.1, key.2, key.3) < (b.0, b.1, b.2, b.3))
            {
                best = Some(key);
            }
        }
        let (_, _, _, _, i, ids) = best?;
        let mut preempted = Vec::new();
        for id in ids {
            if let Some(la) = self.nodes[i as usize].remove(&id) {
                self.workloads.remove(la.workload, i);
                let Some(r) = self.workloads.reference(la.workload).cloned() else {
                    continue;
                };
                if let Some(p) = self.profiles.get_mut(&la.workload) {
                    for sp in &mut p.spreads {
                        sp.change(i, false);
                    }
                }
                preempted.push((id, r));
            }
        }
        let mut placed = self.commit(prof_wid, req, i);
        placed.preempted = preempted;
        Some(placed)
    }
}

/// A 64-bit mixer (splitmix64's finalizer): seeded, stable tie-breaking.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<'a> Placer<'a> for Scheduler<'a> {
    fn begin(&mut self, cluster: Cluster<'a>) {
        self.nodes = cluster
            .nodes
            .values()
            .map(|n| {
                NodeState::new(
                    n,
                    cluster.ready.contains(&n.name),
                    cluster.readings.get(&n.name),
                )
            })
            .collect();
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node.name.as_str(), i as u32))
            .collect();
        self.workloads = Workloads::default();
        self.profiles.clear();
        self.classes.clear();
        self.domains.clear();
        self.reservation = None;
        self.refused.clear();
        self.now = cluster.now;
        for a in &cluster.live {
            let Some(&i) = self.index.get(a.node.as_str()) else {
                continue;
            };
            let wid = self.workloads.id(&a.workload);
            let la = live_alloc(
                a,
                wid,
                &self.nodes[i as usize],
                cluster.workloads.get(&a.workload),
            );
            self.nodes[i as usize].add(la);
            if a.desired == motley_core::model::Desired::Run {
                self.workloads.add(wid, i);
            }
        }
        // Space already promised to bound volumes.
        for w in cluster.workloads.values() {
            if let (Spec::Volume(v), Some(b)) = (&w.spec, &w.binding)
                && let Some(&i) = self.index.get(b.node.as_str())
                && let Some(m) = self.nodes[i as usize]
                    .mounts
                    .iter_mut()
                    .find(|m| m.path == b.mount)
            {
                m.reserved += v.size.0;
            }
        }
    }

    fn place(&mut self, req: &Request<'_>) -> Result<Placed, Unplaced> {
        let refusal = self
            .cfg
            .remember_refusals
            .then(|| self.refusal_key(req))
            .flatten();
        if let Some(why) = refusal.as_ref().and_then(|k| self.refused.get(k)) {
            let why = why.clone();
            // Numbered as if profiled, so that later workloads' tie-breaks do not move.
            self.workloads.id(req.wref);
            return Err(why);
        }
        let placed = self.place_profiled(req);
        match (&placed, refusal) {
            (Ok(_), _) => self.refused.clear(),
            (Err(why), Some(k)) => {
                self.refused.insert(k, why.clone());
            }
            (Err(_), None) => {}
        }
        placed
    }

    fn reserve(&mut self, req: &Request<'_>) {
        let wid = self.profile(req);
        let prof = &self.profiles[&wid];
        let res = &req.workload.spec.task().resources;
        let mut best: Option<ReserveChoice> = None;
        for &(i, _, _) in prof.feasible.iter() {
            let n = &self.nodes[i as usize];
            let need_cpu = res.cpu_on(n.cpu_score());
            let need_mem = res.memory_or_default().0;
            // Only a node where it fits once work there ends: volumes, ports and
            // capacity it can never have do not free up.
            if need_cpu > n.node.capacity.cpu.0
                || need_mem > n.node.capacity.memory.0
                || res.disk.is_some_and(|d| d.0 > n.node.capacity.disk.0)
                || volume_short(n, &req.volumes).is_some()
            {
                continue;
            }
            let (mut cpu, mut mem) = (n.cpu_free(), n.mem_free());
            let deficit = need_cpu.saturating_sub(cpu) * 1000 / n.node.capacity.cpu.0.max(1)
                + need_mem.saturating_sub(mem) * 1000 / n.node.capacity.memory.0.max(1);
            let mut ends: Vec<(Option<u64>, u64, u64)> = n
                .allocs
                .iter()
                .map(|a| (a.ends_at, a.cpu, a.memory))
                .collect();
            ends.sort_by_key(|e| e.0.unwrap_or(u64::MAX));
            let mut shadow = None;
            for (end, c, m) in ends {
                if cpu >= need_cpu && mem >= need_mem {
                    break;
                }
                cpu += c;
                mem += m;
                shadow = end;
                if end.is_none() {
                    break;
                }
            }
            let fits_then = cpu >= need_cpu && mem >= need_mem;
            let shadow = if fits_then { shadow } else { None };
            let key = (shadow.is_none(), shadow.unwrap_or(u64::MAX), deficit);
            if best.as_ref().is_none_or(|b| key < b.0) {
                best = Some((key, i, shadow));
            }
        }
        self.reservation = best.map(|(_, node, shadow)| Reservation {
            node,
            shadow,
            holder: req.wref.to_string(),
        });
    }
}

impl Scheduler<'_> {
    /// What decides whether a request is refused, and how it is explained, when nothing
    /// about it depends on its own workload's instances: `None` for requests that may
    /// preempt, are pinned to a node, use volumes, spread or have affinities.
    fn refusal_key(&self, req: &Request<'_>) -> Option<String> {
        let p = req.workload.spec.placement();
        if req.preempt
            || req.only_node.is_some()
            || !req.volumes.is_empty()
            || !p.spread.is_empty()
            || !p.affinity.is_empty()
            || !p.anti_affinity.is_empty()
        {
            return None;
        }
        let task = req.workload.spec.task();
        Some(format!(
            "{}|{:?}|{:?}|{}|{:?}|{}",
            filters::static_class(req),
            task.resources,
            task.ports,
            req.backfill,
            req.ends_at,
            // Taken once a pass, after which every job is a backfill anyway.
            self.reservation.is_some()
        ))
    }

    fn place_profiled(&mut self, req: &Request<'_>) -> Result<Placed, Unplaced> {
        let wid = self.profile(req);
        let only = match self.pinned(req) {
            Some(Ok(i)) => Some(i),
            Some(Err(why)) => {
                return Err(Unplaced {
                    summary: format!("0/1 nodes: {why}"),
                    nodes: Vec::new(),
                });
            }
            None => None,
        };
        let mut best: Option<((u8, i64, u64), u32)> = None;
        {
            let prof = &self.profiles[&wid];
            let tie_seed = self.cfg.seed ^ (u64::from(wid) << 40) ^ u64::from(req.index);
            let mut consider = |i: u32, static_score: i32, avoid: u8| {
                if self.dynamic_fail(prof, req, i).is_some() {
                    return false;
                }
                let s = self.score(prof, req, i, static_score);
                // The seeded tie-break hash is computed only on a tie.
                let better = match &best {
                    None => true,
                    Some(((ba, bs, _), bi)) => match (avoid, -s).cmp(&(*ba, *bs)) {
                        std::cmp::Ordering::Less => true,
                        std::cmp::Ordering::Greater => false,
                        std::cmp::Ordering::Equal => {
                            mix(tie_seed ^ u64::from(i)) < mix(tie_seed ^ u64::from(*bi))
                        }
                    },
                };
                if better {
                    best = Some(((avoid, -s, 0), i));
                }
                true
            };
            match only {
                Some(i) => {
                    let n = &self.nodes[i as usize];
                    if static_fail(n, req, prof.require.as_ref(), true).is_none() {
                        let pos = prof.feasible.iter().find(|f| f.0 == i);
                        let (ss, avoid) = pos.map_or((-n.health, 0), |f| (f.1, f.2));
                        consider(i, ss, avoid);
                    }
                }
                None => {
                    let total = prof.feasible.len();
                    let want = sample_size(total, &self.cfg);
                    let mut found = 0;
                    let mut k = 0;
                    while k < total && found < want {
                        let (i, ss, avoid) = prof.feasible[(prof.cursor + k) % total];
                        if consider(i, ss, avoid) {
                            found += 1;
                        }
                        k += 1;
                    }
                    if total > 0 {
                        let next = (prof.cursor + k) % total;
                        if let Some(p) = self.profiles.get_mut(&wid) {
                            p.cursor = next;
                        }
                    }
                }
            }
        }
        if let Some((_, i)) = best {
            return Ok(self.commit(wid, req, i));
        }
        if req.preempt
            && let Some(p) = self.preempt(wid, req, only)
        {
            return Ok(p);
        }
        Err(self.explain(&self.profiles[&wid], req, only))
    }
}
