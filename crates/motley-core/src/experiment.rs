//! `kind: Experiment` (issue 24): a steady state, a schedule of faults, a guard — and
//! the pure parts of running one: checking it (each error at its field, contradictory
//! faults refused), its timeline of fault starts and ends (each with the deadline an
//! agent enforces on its own, the dead-man switch), and the checker that turns a
//! recorded history into the report's figures and verdict, as Jepsen's checkers do.
//! Carrying faults out is the agents' (not built yet: docs/lab.md).

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::{Event, EventKind};
use crate::manifest::{ManifestError, Other};
use crate::model::WorkloadRef;
use crate::quantity::{Bytes, Duration};

/// The `kind: Experiment` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum ExperimentKind {
    /// `Experiment`
    #[default]
    Experiment,
}

/// An experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// `Experiment`.
    pub kind: ExperimentKind,
    /// Its name (reports are kept by it).
    pub name: String,
    /// What must hold before, during and after.
    #[serde(default)]
    pub steady_state: Vec<Probe>,
    /// The faults, each at its time from the start.
    pub faults: Vec<Fault>,
    /// When to stop early.
    #[serde(default)]
    pub guard: Option<Guard>,
}

/// One steady-state probe: a service's ready replicas, or an HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// A service (`web`, `dev/service/web`)…
    #[serde(default)]
    pub service: Option<String>,
    /// … with at least this many replicas ready.
    #[serde(default)]
    pub ready_at_least: Option<u32>,
    /// Or a URL…
    #[serde(default)]
    pub http: Option<String>,
    /// … answering this status.
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// How often (default 1s).
    #[serde(default)]
    pub every: Option<Duration>,
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnNode {
    /// The node.
    pub node: String,
}

/// Nodes cut off from others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// These nodes…
    pub nodes: Vec<String>,
    /// … cannot reach these (`server`: the control plane).
    pub from: Vec<String>,
}

/// Packets dropped on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Loss {
    /// The node.
    pub node: String,
    /// Percent dropped (1–100).
    pub percent: u8,
}

/// Latency added on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// The node.
    pub node: String,
    /// Milliseconds added each way.
    pub ms: u32,
}

/// CPUs kept busy on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuStress {
    /// The node.
    pub node: String,
    /// How many cores.
    pub cores: u32,
}

/// Memory held on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryStress {
    /// The node.
    pub node: String,
    /// How much.
    pub bytes: Bytes,
}

/// An allocation killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    /// One allocation of this workload (`service/db`).
    pub allocation_of: String,
}

/// One fault: when, for how long, and exactly one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// From the experiment's start.
    pub at: Duration,
    /// How long it lasts (every fault but `kill`).
    #[serde(default, rename = "for")]
    pub lasts: Option<Duration>,
    /// The node's agent stops its tasks and goes silent.
    #[serde(default)]
    pub power_off: Option<OnNode>,
    /// Nodes cannot reach others.
    #[serde(default)]
    pub partition: Option<Partition>,
    /// Packets dropped.
    #[serde(default)]
    pub packet_loss: Option<Loss>,
    /// Latency added.
    #[serde(default)]
    pub latency: Option<Latency>,
    /// CPUs kept busy.
    #[serde(default)]
    pub cpu_stress: Option<CpuStress>,
    /// Memory held.
    #[serde(default)]
    pub memory_stress: Option<MemoryStress>,
    /// An allocation killed (SIGKILL).
    #[serde(default)]
    pub kill: Option<Kill>,
}

/// Stop early when …
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// … this holds.
    pub abort_if: AbortIf,
}

/// The abort condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortIf {
    /// A service has fewer ready replicas than `count`.
    pub ready_below: ReadyBelow,
}

/// A service's ready replicas below a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadyBelow {
    /// The service.
    pub service: String,
    /// The count.
    pub count: u32,
}

/// What a fault does, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `power_off`.
    PowerOff,
    /// `partition`.
    Partition,
    /// `packet_loss`.
    PacketLoss,
    /// `latency`.
    Latency,
    /// `cpu_stress`.
    CpuStress,
    /// `memory_stress`.
    MemoryStress,
    /// `kill`.
    Kill,
}

impl Action {
    /// The field's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::PowerOff => "power_off",
            Action::Partition => "partition",
            Action::PacketLoss => "packet_loss",
            Action::Latency => "latency",
            Action::CpuStress => "cpu_stress",
            Action::MemoryStress => "memory_stress",
            Action::Kill => "kill",
        }
    }
}

impl Fault {
    /// The actions given (exactly one is valid).
    pub fn actions(&self) -> Vec<Action> {
        let mut a = Vec::new();
        let mut put = |on: bool, x: Action| {
            if on {
                a.push(x);
            }
        };
        put(self.power_off.is_some(), Action::PowerOff);
        put(self.partition.is_some(), Action::Partition);
        put(self.packet_loss.is_some(), Action::PacketLoss);
        put(self.latency.is_some(), Action::Latency);
        put(self.cpu_stress.is_some(), Action::CpuStress);
        put(self.memory_stress.is_some(), Action::MemoryStress);
        put(self.kill.is_some(), Action::Kill);
        a
    }

    /// The nodes it acts on (a kill's node is known only when it runs).
    pub fn nodes(&self) -> Vec<&str> {
        let mut n: Vec<&str> = Vec::new();
        if let Some(x) = &self.power_off {
            n.push(&x.node);
        }
        if let Some(x) = &self.partition {
            n.extend(x.nodes.iter().map(String::as_str));
        }
        if let Some(x) = &self.packet_loss {
            n.push(&x.node);
        }
        if let Some(x) = &self.latency {
            n.push(&x.node);
        }
        if let Some(x) = &self.cpu_stress {
            n.push(&x.node);
        }
        if let Some(x) = &self.memory_stress {
            n.push(&x.node);
        }
        n
    }

    /// When it ends (`at + for`; a kill is instant).
    pub fn ends(&self) -> u64 {
        self.at.as_millis() + self.lasts.map_or(0, |d| d.as_millis())
    }
}

/// What the cluster has, for checking an experiment against it.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Node names.
    pub nodes: BTreeSet<String>,
    /// Workloads.
    pub workloads: BTreeSet<WorkloadRef>,
}

/// Longest an experiment may last (its last fault's end).
pub const MAX_SPAN_MS: u64 = 24 * 3600 * 1000;

/// Checks an experiment: one action per fault, `for` where it belongs, sane numbers,
/// no two faults on one node that contradict each other while both hold, and (with
/// `known`) nodes and workloads that exist. Each error at its field.
pub fn validate(doc: &Other<Experiment>, known: Option<&Known>) -> Vec<ManifestError> {
    let e = &doc.value;
    let mut errors = Vec::new();
    if let Err(m) = crate::model::validate_name(&e.name) {
        errors.push(doc.error_at("name", m));
    }
    if e.faults.is_empty() {
        errors.push(doc.error_at("faults", "an experiment needs at least one fault"));
    }
    for (i, f) in e.faults.iter().enumerate() {
        let at = |x: &str| format!("faults[{i}].{x}");
        let actions = f.actions();
        match actions.as_slice() {
            [] => errors.push(doc.error_at(
                &format!("faults[{i}]"),
                "a fault needs one of power_off, partition, packet_loss, latency, cpu_stress, memory_stress, kill",
            )),
            [Action::Kill] if f.lasts.is_some() => {
                errors.push(doc.error_at(&at("for"), "a kill is instant: no `for`"))
            }
            [Action::Kill] => {}
            [_] if f.lasts.is_none_or(|d| d.as_millis() == 0) => errors.push(doc.error_at(
                &format!("faults[{i}]"),
                "how long it lasts: `for` (it is undone then, even if the agent loses the server)",
            )),
            [_] => {}
            many => errors.push(doc.error_at(
                &format!("faults[{i}]"),
                format!(
                    "one action per fault, not {}",
                    many.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" and ")
                ),
            )),
        }
        if f.ends() > MAX_SPAN_MS {
            errors.push(doc.error_at(&at("for"), "an experiment ends within 24 h"));
        }
        if let Some(l) = &f.packet_loss
            && !(1..=100).contains(&l.percent)
        {
            errors.push(doc.error_at(&at("packet_loss.percent"), "1 to 100"));
        }
        if f.latency
            .as_ref()
            .is_some_and(|l| l.ms == 0 || l.ms > 60_000)
        {
            errors.push(doc.error_at(&at("latency.ms"), "1 to 60000"));
        }
        if f.cpu_stress.as_ref().is_some_and(|c| c.cores == 0) {
            errors.push(doc.error_at(&at("cpu_stress.cores"), "at least one core"));
        }
        if f.memory_stress.as_ref().is_some_and(|m| m.bytes.0 == 0) {
            errors.push(doc.error_at(&at("memory_stress.bytes"), "some memory"));
        }
        if let Some(p) = &f.partition {
            if p.nodes.is_empty() || p.from.is_empty() {
                errors
                    .push(doc.error_at(&at("partition"), "nodes and from: who cannot reach whom"));
            }
            if let Some(n) = p.nodes.iter().find(|n| p.from.contains(n)) {
                errors.push(doc.error_at(
                    &at("partition.from"),
                    format!("{n} cannot be cut off from itself"),
                ));
            }
        }
        if let Some(k) = &f.kill
            && WorkloadRef::parse(&k.allocation_of).is_none()
        {
            errors.push(doc.error_at(&at("kill.allocation_of"), "KIND/NAME, as `service/db`"));
        }
        if let Some(known) = known {
            for n in f.nodes() {
                if !known.nodes.contains(n) {
                    errors.push(doc.error_at(
                        &format!("faults[{i}]"),
                        format!("no node {n:?} in the cluster"),
                    ));
                }
            }
            if let Some(p) = &f.partition {
                for n in p.from.iter().filter(|n| n.as_str() != "server") {
                    if !known.nodes.contains(n) {
                        errors.push(doc.error_at(
                            &at("partition.from"),
                            format!("no node {n:?} in the cluster (or `server`)"),
                        ));
                    }
                }
            }
            if let Some(k) = &f.kill
                && let Some(r) = WorkloadRef::parse(&k.allocation_of)
                && !known.workloads.contains(&r)
            {
                errors.push(
                    doc.error_at(&at("kill.allocation_of"), format!("no {r} in the cluster")),
                );
            }
        }
    }
    contradictions(doc, &mut errors);
    for (i, p) in e.steady_state.iter().enumerate() {
        let at = format!("steady_state[{i}]");
        match (&p.service, &p.http) {
            (Some(_), None) if p.ready_at_least.is_some() && p.expect_status.is_none() => {}
            (None, Some(u)) if p.ready_at_least.is_none() => {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    errors.push(doc.error_at(&format!("{at}.http"), "an http:// or https:// URL"));
                }
            }
            _ => errors.push(doc.error_at(
                &at,
                "a probe is { service, ready_at_least } or { http, expect_status, every }",
            )),
        }
        if let (Some(s), Some(known)) = (&p.service, known)
            && !known.workloads.contains(&service_ref(s))
        {
            errors.push(doc.error_at(
                &format!("{at}.service"),
                format!("no service {s} in the cluster"),
            ));
        }
    }
    if let (Some(g), Some(known)) = (&e.guard, known)
        && !known
            .workloads
            .contains(&service_ref(&g.abort_if.ready_below.service))
    {
        errors.push(doc.error_at(
            "guard.abort_if.ready_below.service",
            "no such service in the cluster",
        ));
    }
    errors
}

/// Reads the one experiment of a file (`name` for errors): parsed (each error at its
/// line, column and field) and checked with `known` when given. Nothing else belongs
/// in its file.
pub fn from_text(
    name: &str,
    text: &str,
    known: Option<&Known>,
) -> Result<Other<Experiment>, Vec<ManifestError>> {
    let (mut docs, rest) = crate::manifest::take_kind::<Experiment>(
        &[crate::manifest::Source { name, text }],
        "Experiment",
    )?;
    let whole = |message: String| ManifestError {
        file: name.to_string(),
        line: 0,
        column: 0,
        field: String::new(),
        message,
    };
    if docs.len() != 1 {
        return Err(vec![whole(format!(
            "one `kind: Experiment` per file ({} found)",
            docs.len()
        ))]);
    }
    let meaningful = |l: &str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    };
    if rest.iter().any(|t| t.lines().any(meaningful)) {
        return Err(vec![whole(
            "only the experiment belongs in its file".to_string(),
        )]);
    }
    let doc = docs.remove(0);
    let errors = validate(&doc, known);
    if errors.is_empty() {
        Ok(doc)
    } else {
        Err(errors)
    }
}

/// `web` is `service/web`; `dev/service/web` as written.
pub fn service_ref(s: &str) -> WorkloadRef {
    WorkloadRef::parse(s)
        .unwrap_or_else(|| WorkloadRef::new(crate::model::Kind::Service, s.to_string()))
}

/// Faults on one node that cannot both hold: anything while it is powered off, and
/// two of the same action at once.
fn contradictions(doc: &Other<Experiment>, errors: &mut Vec<ManifestError>) {
    let faults = &doc.value.faults;
    for (i, a) in faults.iter().enumerate() {
        for (j, b) in faults.iter().enumerate().skip(i + 1) {
            let overlap = a.at.as_millis() < b.ends().max(b.at.as_millis() + 1)
                && b.at.as_millis() < a.ends().max(a.at.as_millis() + 1);
            if !overlap {
                continue;
            }
            let (aa, ba) = (a.actions(), b.actions());
            for n in a.nodes() {
                if !b.nodes().contains(&n) {
                    continue;
                }
                let off = aa.contains(&Action::PowerOff) || ba.contains(&Action::PowerOff);
                let same = !aa.is_empty() && aa.first() == ba.first();
                if off || same {
                    errors.push(doc.error_at(
                        &format!("faults[{j}]"),
                        format!(
                            "contradicts faults[{i}]: both act on {n} between {} and {} s{}",
                            b.at.as_millis().max(a.at.as_millis()) / 1000,
                            a.ends().min(b.ends()).div_ceil(1000),
                            if off { " while it is powered off" } else { "" }
                        ),
                    ));
                }
            }
        }
    }
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// From the start, ms.
    pub at: u64,
    /// The fault's index.
    pub fault: usize,
    /// Starts (with the deadline its agent undoes it by, on its own) or ends.
    pub start: bool,
    /// The agent's own deadline: the fault's end (0 for an end or a kill).
    pub deadline: u64,
}

/// The schedule: every start and end in time order (ends first at the same time, so a
/// fault that follows another on the same node never overlaps it).
pub fn timeline(e: &Experiment) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, f) in e.faults.iter().enumerate() {
        let kill = f.kill.is_some();
        steps.push(Step {
            at: f.at.as_millis(),
            fault: i,
            start: true,
            deadline: if kill { 0 } else { f.ends() },
        });
        if !kill {
            steps.push(Step {
                at: f.ends(),
                fault: i,
                start: false,
                deadline: 0,
            });
        }
    }
    steps.sort_by_key(|s| (s.at, s.start, s.fault));
    steps
}

/// One record of a run's history: a fault carried out, a probe's result, an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// A fault began (ms since the epoch).
    FaultStarted {
        /// When.
        at: u64,
        /// Which.
        fault: usize,
    },
    /// A fault was undone.
    FaultEnded {
        /// When.
        at: u64,
        /// Which.
        fault: usize,
    },
    /// A probe's result.
    Probe {
        /// When.
        at: u64,
        /// Which probe.
        probe: usize,
        /// Held.
        ok: bool,
        /// What it saw.
        detail: String,
    },
    /// What the cluster said happened.
    Event(Event),
}

/// Per fault: how long the control plane took to notice and to replace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultFigures {
    /// The fault.
    pub fault: usize,
    /// Its node(s) declared suspect or down this long after it began, ms.
    pub detected_ms: Option<u64>,
    /// The first replacement started (on another node) this long after it began, ms.
    pub replaced_ms: Option<u64>,
}

/// The checker's verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Per fault.
    pub faults: Vec<FaultFigures>,
    /// Probe results that failed, per probe: (probe, failed, total).
    pub probes: Vec<(usize, u32, u32)>,
    /// Job instances lost (allocations of jobs marked lost).
    pub jobs_lost: u32,
    /// Job instances that ran twice at once (two `started` of one job index with no
    /// end of the first between).
    pub jobs_twice: Vec<String>,
    /// The steady state held before the first fault and after the last one ended.
    pub steady: bool,
}

/// Checks a recorded history of `e`'s run; `slots` gives each allocation's index
/// (a job's completion index), which events do not carry.
pub fn check(e: &Experiment, history: &[Record], slots: &BTreeMap<String, u32>) -> Verdict {
    let began: BTreeMap<usize, u64> = history
        .iter()
        .filter_map(|r| match r {
            Record::FaultStarted { at, fault } => Some((*fault, *at)),
            _ => None,
        })
        .collect();
    let events: Vec<&Event> = history
        .iter()
        .filter_map(|r| match r {
            Record::Event(ev) => Some(ev),
            _ => None,
        })
        .collect();
    let mut faults = Vec::new();
    for (i, f) in e.faults.iter().enumerate() {
        let Some(&t0) = began.get(&i) else { continue };
        let nodes: Vec<&str> = f.nodes();
        let detected = events
            .iter()
            .filter(|ev| ev.at >= t0)
            .filter(|ev| matches!(ev.kind, EventKind::NodeSuspect | EventKind::NodeDown))
            .find(|ev| ev.node.as_deref().is_some_and(|n| nodes.contains(&n)))
            .map(|ev| ev.at - t0);
        // A replacement: an allocation of a workload that lost one on the fault's
        // nodes started elsewhere after the loss; for a kill, the killed workload
        // started again (in place or not).
        let lost: Vec<(&str, u64)> = events
            .iter()
            .filter(|ev| ev.at >= t0 && ev.kind == EventKind::Lost)
            .filter(|ev| ev.node.as_deref().is_some_and(|n| nodes.contains(&n)))
            .map(|ev| (ev.object.as_str(), ev.at))
            .collect();
        let killed = f
            .kill
            .as_ref()
            .and_then(|k| WorkloadRef::parse(&k.allocation_of));
        let replaced = events
            .iter()
            .filter(|ev| ev.at >= t0 && ev.kind == EventKind::Started)
            .find(|ev| match &killed {
                Some(r) => WorkloadRef::parse(&ev.object).as_ref() == Some(r),
                None => {
                    ev.node.as_deref().is_some_and(|n| !nodes.contains(&n))
                        && lost.iter().any(|(o, at)| *o == ev.object && ev.at >= *at)
                }
            })
            .map(|ev| ev.at - t0);
        faults.push(FaultFigures {
            fault: i,
            detected_ms: detected,
            replaced_ms: replaced,
        });
    }
    let mut probes: BTreeMap<usize, (u32, u32)> = BTreeMap::new();
    for r in history {
        if let Record::Probe { probe, ok, .. } = r {
            let p = probes.entry(*probe).or_default();
            p.1 += 1;
            if !ok {
                p.0 += 1;
            }
        }
    }
    let first = began.values().min().copied().unwrap_or(u64::MAX);
    let last_end = history
        .iter()
        .filter_map(|r| match r {
            Record::FaultEnded { at, .. } => Some(*at),
            _ => None,
        })
        .max()
        .unwrap_or(first);
    // Before: the last result of each probe before the first fault (a run starts its
    // faults once every probe held); after: the last once every fault ended.
    let mut before: BTreeMap<usize, bool> = BTreeMap::new();
    let mut after: BTreeMap<usize, bool> = BTreeMap::new();
    for r in history {
        if let Record::Probe { at, probe, ok, .. } = r {
            if *at < first {
                before.insert(*probe, *ok);
            }
            if *at >= last_end {
                after.insert(*probe, *ok);
            }
        }
    }
    let steady = before.values().all(|ok| *ok) && after.values().all(|ok| *ok);
    // Job instances: lost ones, and two running copies of one index.
    let jobs_lost = events
        .iter()
        .filter(|ev| ev.kind == EventKind::Lost && ev.object.starts_with("job/"))
        .count() as u32;
    let mut running: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut twice = Vec::new();
    for ev in &events {
        let Some(alloc) = &ev.alloc else { continue };
        if !ev.object.contains("job/") {
            continue;
        }
        let Some(index) = slots.get(alloc) else {
            continue;
        };
        let slot = format!("{}#{index}", ev.object);
        match ev.kind {
            EventKind::Started => {
                let set = running.entry(slot.clone()).or_default();
                set.insert(alloc.clone());
                if set.len() > 1 {
                    twice.push(slot);
                }
            }
            EventKind::Exited | EventKind::Stopped | EventKind::Lost => {
                for set in running.values_mut() {
                    set.remove(alloc);
                }
            }
            _ => {}
        }
    }
    Verdict {
        faults,
        probes: probes.into_iter().map(|(p, (f, t))| (p, f, t)).collect(),
        jobs_lost,
        jobs_twice: twice,
        steady,
    }
}

#[cfg(test)]
#[path = "experiment_tests.rs"]
mod tests;
