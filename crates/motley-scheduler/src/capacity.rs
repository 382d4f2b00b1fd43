//! `motley capacity`: does this set of workloads fit these machines, with N of them
//! failed, what is left over, what does it draw, and what is the cheapest machine to
//! add when it does not fit. The machines come from a `kind: Inventory`; placing is
//! done by the real controllers and this scheduler ([`crate::whatif::settle`]), and
//! each failure is a what-if ([`crate::whatif::run`]) on the settled cluster.

use std::collections::BTreeMap;

use motley_core::inventory::Inventory;
use motley_core::model::{Desired, Kind, Workload, WorkloadRef};
use serde::{Deserialize, Serialize};

use crate::Config;
use crate::whatif::{Change, State, run, settle};

/// A workload that does not get all it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Short {
    /// The workload.
    pub workload: WorkloadRef,
    /// Instances running.
    pub running: u32,
    /// Instances it wants at once (replicas, a job's parallelism).
    pub wanted: u32,
    /// The scheduler's reason.
    pub why: String,
}

/// Resources of all nodes and what the placed work requests of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Headroom {
    /// CPU of all nodes, millicores.
    pub cpu: u64,
    /// CPU requested, millicores.
    pub cpu_used: u64,
    /// Memory of all nodes, bytes.
    pub memory: u64,
    /// Memory requested, bytes.
    pub memory_used: u64,
}

/// Power at the placed load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Power {
    /// Watts, every node with a `watts:` model.
    pub watts: f64,
    /// kWh in an average month (730.5 hours).
    pub kwh_month: f64,
    /// What that costs, when the inventory has `price_per_kwh`.
    pub cost_month: Option<f64>,
    /// Per model: (model, nodes, watts); an existing node is its own line, at the
    /// power it was measured to draw.
    pub models: Vec<(String, u32, f64)>,
    /// Models without `watts:` (not counted).
    pub unknown: Vec<String>,
}

/// A machine to buy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Addition {
    /// The model.
    pub model: String,
    /// How many more.
    pub count: u32,
    /// Their price, when the model has one.
    pub price: Option<f64>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The inventory's name.
    pub inventory: String,
    /// Nodes per model: (model, count).
    pub nodes: Vec<(String, u32)>,
    /// Node failures tolerated in the question.
    pub tolerate: u32,
    /// Everything fits, also after every combination of `tolerate` failures.
    pub fits: bool,
    /// What does not fit with every node up.
    pub short: Vec<Short>,
    /// The first failure combination that leaves work short, and what it leaves.
    pub failure: Option<(Vec<String>, Vec<Short>)>,
    /// Failure combinations checked.
    pub failures_checked: u32,
    /// With every node up.
    pub headroom: Headroom,
    /// Power at that load.
    pub power: Power,
    /// The cheapest addition that makes it fit (when it does not).
    pub addition: Option<Addition>,
}

/// Most failure combinations one question may ask for.
pub const MAX_COMBINATIONS: usize = 20_000;
/// Most machines of one model tried as an addition.
pub const MAX_ADDED: u32 = 4;

/// Machines that exist already (a live cluster's nodes), with the power each was
/// last measured to draw, where its hardware says.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    /// The nodes, by name.
    pub nodes: BTreeMap<String, motley_core::model::Node>,
    /// Watts measured now, by node (RAPL, a PMIC).
    pub watts: BTreeMap<String, f64>,
}

/// Answers for `inv` and `workloads`, tolerating `tolerate` node failures.
pub fn plan(
    inv: &Inventory,
    workloads: &BTreeMap<WorkloadRef, Workload>,
    tolerate: u32,
    cfg: &Config,
) -> Result<Report, String> {
    plan_on(&Existing::default(), inv, workloads, tolerate, cfg)
}

/// [`plan`] with `existing` machines beside the inventory's (which then may hold
/// only candidates to buy).
pub fn plan_on(
    existing: &Existing,
    inv: &Inventory,
    workloads: &BTreeMap<WorkloadRef, Workload>,
    tolerate: u32,
    cfg: &Config,
) -> Result<Report, String> {
    let counts: Vec<u32> = inv.models.iter().map(|m| m.count).collect();
    let base = evaluate(existing, inv, &counts, workloads, tolerate, cfg)?;
    let mut addition = None;
    if !base.fits {
        // Cheapest first: the price of the machines added (unpriced models last).
        let mut tries: Vec<(f64, usize, u32)> = Vec::new();
        for (i, m) in inv.models.iter().enumerate() {
            for n in 1..=MAX_ADDED {
                let cost = m.price.map_or(f64::INFINITY, |p| p * f64::from(n));
                tries.push((cost, i, n));
            }
        }
        tries.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)).then(a.1.cmp(&b.1)));
        for (cost, i, n) in tries {
            let mut c = counts.clone();
            c[i] += n;
            if evaluate(existing, inv, &c, workloads, tolerate, cfg)?.fits {
                addition = Some(Addition {
                    model: inv.models[i].model.clone(),
                    count: n,
                    price: cost.is_finite().then_some(cost),
                });
                break;
            }
        }
    }
    Ok(Report { addition, ..base })
}

fn evaluate(
    existing: &Existing,
    inv: &Inventory,
    counts: &[u32],
    workloads: &BTreeMap<WorkloadRef, Workload>,
    tolerate: u32,
    cfg: &Config,
) -> Result<Report, String> {
    let state = empty(nodes_of(existing, inv, counts)?, workloads);
    let settled = settle(&state, &Change::default(), cfg)?;
    let short = shortfalls(workloads, &settled.allocs, &settled.blocked);
    let mut headroom = Headroom::default();
    let mut cpu_on: BTreeMap<&str, u64> = BTreeMap::new();
    for n in state.nodes.values() {
        headroom.cpu += n.capacity.cpu.0;
        headroom.memory += n.capacity.memory.0;
    }
    for a in settled.allocs.values().filter(|a| a.is_live()) {
        let score = state.nodes.get(&a.node).and_then(|n| n.facts.cpu_score);
        let cpu = a.task.resources.cpu_on(score);
        headroom.cpu_used += cpu;
        headroom.memory_used += a.task.resources.memory_or_default().0;
        *cpu_on.entry(a.node.as_str()).or_default() += cpu;
    }
    let mut power = power(inv, counts, &state, &cpu_on);
    for name in existing.nodes.keys() {
        match existing.watts.get(name) {
            Some(&w) => {
                power.watts += w;
                power.models.push((name.clone(), 1, w));
            }
            None => power.unknown.push(name.clone()),
        }
    }
    power.kwh_month = power.watts * HOURS_A_MONTH / 1000.0;
    power.cost_month = inv.price_per_kwh.map(|k| k * power.kwh_month);
    let mut failure = None;
    let mut checked = 0;
    if short.is_empty() && tolerate > 0 {
        let at_rest = State {
            workloads: settled.workloads.clone().into_owned(),
            allocs: settled.allocs.clone(),
            now: settled.now,
            ..state.clone()
        };
        let names: Vec<&String> = at_rest.nodes.keys().collect();
        let combos = combinations(names.len(), tolerate as usize, MAX_COMBINATIONS)
            .ok_or_else(|| {
                format!(
                    "{} nodes taken {tolerate} at a time are more than {MAX_COMBINATIONS} failures to check: ask for fewer failures",
                    names.len()
                )
            })?;
        for combo in combos {
            checked += 1;
            let lose: Vec<String> = combo.iter().map(|&i| names[i].clone()).collect();
            let o = run(
                &at_rest,
                &Change {
                    lose: lose.clone(),
                    drain: vec![],
                },
                cfg,
            )?;
            let hurt = crate::whatif::short(&o);
            if !hurt.is_empty() {
                failure = Some((lose, hurt));
                break;
            }
        }
    }
    Ok(Report {
        inventory: inv.name.clone(),
        nodes: inv
            .models
            .iter()
            .zip(counts)
            .map(|(m, &n)| (m.model.clone(), n))
            .collect(),
        tolerate,
        fits: short.is_empty() && failure.is_none(),
        short,
        failure,
        failures_checked: checked,
        headroom,
        power,
        addition: None,
    })
}

/// `nodes`, every one ready, with `workloads` and nothing placed yet.
fn empty(
    nodes: BTreeMap<String, motley_core::model::Node>,
    workloads: &BTreeMap<WorkloadRef, Workload>,
) -> State {
    State {
        workloads: workloads.clone(),
        applied: None,
        ready: nodes.keys().cloned().collect(),
        nodes,
        allocs: BTreeMap::new(),
        now: 1_000_000,
        fence_after_ms: 7_000,
        readings: Default::default(),
    }
}

/// The existing machines and the inventory's, `counts` of each model.
fn nodes_of(
    existing: &Existing,
    inv: &Inventory,
    counts: &[u32],
) -> Result<BTreeMap<String, motley_core::model::Node>, String> {
    let mut nodes = existing.nodes.clone();
    for (m, &n) in inv.models.iter().zip(counts) {
        for i in 1..=n {
            let node = m.node(i);
            if nodes.contains_key(&node.name) {
                return Err(format!(
                    "the inventory's {} is also a node of the cluster: rename the model",
                    node.name
                ));
            }
            nodes.insert(node.name.clone(), node);
        }
    }
    Ok(nodes)
}

/// What running a machine only in its hours costs (`--schedule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    /// The machine.
    pub node: String,
    /// Its window, as given.
    pub window: String,
    /// Hours a day it runs.
    pub on_hours: f64,
    /// What is short while it is off (its work elsewhere, or nowhere).
    pub while_off: Vec<Short>,
    /// Jobs that only it can take: the mean and the longest wait in its queue, ms (a
    /// job submitted at a random time of day; just after the window closed).
    pub job_waits: Vec<(WorkloadRef, u64, u64)>,
    /// Services and daemons that do not all run while it is off, hours a day.
    pub services_short_hours: Vec<(WorkloadRef, f64)>,
}

/// For each machine given hours: what is short while it is off (a what-if of its loss
/// on the settled cluster), and what that costs in queue time and service hours.
pub fn schedules(
    existing: &Existing,
    inv: &Inventory,
    workloads: &BTreeMap<WorkloadRef, Workload>,
    hours: &[(String, String)],
    cfg: &Config,
) -> Result<Vec<Scheduled>, String> {
    let counts: Vec<u32> = inv.models.iter().map(|m| m.count).collect();
    let state = empty(nodes_of(existing, inv, &counts)?, workloads);
    let settled = settle(&state, &Change::default(), cfg)?;
    let at_rest = State {
        workloads: settled.workloads.clone().into_owned(),
        allocs: settled.allocs.clone(),
        now: settled.now,
        ..state.clone()
    };
    let mut out = Vec::new();
    for (node, text) in hours {
        let w = motley_core::hours::Window::parse(text).map_err(|e| format!("{node}: {e}"))?;
        if !at_rest.nodes.contains_key(node) {
            return Err(format!(
                "--schedule {node}: no such machine (nodes are named MODEL-N: {})",
                at_rest.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let o = run(
            &at_rest,
            &Change {
                lose: vec![node.clone()],
                drain: vec![],
            },
            cfg,
        )?;
        let while_off = crate::whatif::short(&o);
        let off_h = f64::from(w.off_minutes()) / 60.0;
        out.push(Scheduled {
            node: node.clone(),
            window: text.clone(),
            on_hours: f64::from(w.on_minutes()) / 60.0,
            job_waits: while_off
                .iter()
                .filter(|x| x.workload.kind == Kind::Job)
                .map(|x| (x.workload.clone(), w.mean_wait_ms(), w.worst_wait_ms()))
                .collect(),
            services_short_hours: while_off
                .iter()
                .filter(|x| x.workload.kind != Kind::Job)
                .map(|x| (x.workload.clone(), off_h))
                .collect(),
            while_off,
        });
    }
    Ok(out)
}

/// What each workload lacks with every node up: a service's replicas, a job's
/// parallelism (its instances at once), a daemon's copies where it may run.
fn shortfalls(
    workloads: &BTreeMap<WorkloadRef, Workload>,
    allocs: &BTreeMap<String, motley_core::model::Allocation>,
    blocked: &BTreeMap<WorkloadRef, motley_core::reconcile::Blocked>,
) -> Vec<Short> {
    let mut running: BTreeMap<&WorkloadRef, u32> = BTreeMap::new();
    for a in allocs.values() {
        if a.is_live() && a.desired == Desired::Run {
            *running.entry(&a.workload).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for (r, b) in blocked {
        if !workloads.contains_key(r) || !matches!(r.kind, Kind::Service | Kind::Job | Kind::Daemon)
        {
            continue;
        }
        let n = running.get(r).copied().unwrap_or(0);
        out.push(Short {
            workload: r.clone(),
            running: n,
            wanted: n + b.count,
            why: b.why.summary.clone(),
        });
    }
    out
}

fn power(inv: &Inventory, counts: &[u32], state: &State, cpu_on: &BTreeMap<&str, u64>) -> Power {
    let mut p = Power::default();
    for (m, &n) in inv.models.iter().zip(counts) {
        if n == 0 {
            continue;
        }
        let Some(w) = m.watts else {
            p.unknown.push(m.model.clone());
            continue;
        };
        let mut watts = 0.0;
        for i in 1..=n {
            let name = format!("{}-{i}", m.model);
            let cap = state
                .nodes
                .get(&name)
                .map_or(1, |x| x.capacity.cpu.0.max(1));
            let used = cpu_on.get(name.as_str()).copied().unwrap_or(0);
            watts += w.at(used as f64 / cap as f64);
        }
        p.watts += watts;
        p.models.push((m.model.clone(), n, watts));
    }
    p
}

/// Hours in an average month.
pub const HOURS_A_MONTH: f64 = 730.5;

/// Every way to choose `k` of `n` (indices, in order), or `None` when there are more
/// than `limit`.
fn combinations(n: usize, k: usize, limit: usize) -> Option<Vec<Vec<usize>>> {
    if k > n {
        return Some(Vec::new());
    }
    // n choose k, stopping as soon as it passes the limit.
    let mut count: u128 = 1;
    for i in 0..k {
        count = count * (n - i) as u128 / (i + 1) as u128;
        if count > limit as u128 {
            return None;
        }
    }
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        out.push(idx.clone());
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else {
            return Some(out);
        };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_are_all_and_bounded() {
        assert_eq!(
            combinations(4, 2, 100).expect("six"),
            [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
        );
        assert_eq!(combinations(3, 0, 10).expect("one"), [Vec::<usize>::new()]);
        assert!(combinations(2, 3, 10).expect("none").is_empty());
        assert!(combinations(100, 3, 20_000).is_none(), "161,700 > 20,000");
        let set: std::collections::BTreeSet<Vec<usize>> =
            combinations(7, 3, 100).expect("35").into_iter().collect();
        assert_eq!(set.len(), 35);
    }
}
