//! Running an experiment (issue 24), as a pure state machine fed time, probe results
//! and what the agents said ([`Runner`]), as quinn-proto is fed datagrams: the server
//! only carries out its [`Order`]s and feeds it. Then the [`Report`]: the recorded
//! history, the checker's [`Verdict`] and a Markdown rendering.
//!
//! The run: **checking** (every probe must hold once before any fault: otherwise
//! nothing is done), **running** (the faults' clock starts when the steady state first
//! held; each fault starts and ends at its time, every end sent to its agent, which
//! also undoes it on its own at the same deadline), **settling** (after the last end,
//! until every probe holds again or [`SETTLE_MAX_MS`] passed, at least
//! [`SETTLE_MIN_MS`]), then **finished**. The guard, a fault its agent refused, an
//! admin's abort or a change of leader end it **aborted**: every fault still held is
//! undone at once.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::events::EventKind;
use crate::experiment::{Experiment, Fault, Record, Step, Verdict, check, service_ref, timeline};
use crate::model::{AllocState, Allocation, WorkloadRef};

/// How long the steady state may take to hold before anything is done.
pub const CHECK_MAX_MS: u64 = 60_000;
/// Settling lasts at least this (replacements after the last fault's end recorded).
pub const SETTLE_MIN_MS: u64 = 5_000;
/// … and at most this.
pub const SETTLE_MAX_MS: u64 = 120_000;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the steady state to hold once.
    Checking,
    /// Faults under way.
    Running,
    /// Every fault ended; waiting for the steady state to come back.
    Settling,
    /// Done.
    Finished,
    /// Stopped early; every held fault undone.
    Aborted,
}

impl Phase {
    /// Finished or aborted.
    pub fn ended(self) -> bool {
        matches!(self, Phase::Finished | Phase::Aborted)
    }

    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Checking => "checking",
            Phase::Running => "running",
            Phase::Settling => "settling",
            Phase::Finished => "finished",
            Phase::Aborted => "aborted",
        }
    }
}

/// What the server is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Carry out fault `fault` (its agent undoes it by itself after `lasts_ms`).
    Start {
        /// The fault's index.
        fault: usize,
        /// How long it lasts (0: instant).
        lasts_ms: u64,
    },
    /// Undo fault `fault`.
    Undo {
        /// The fault's index.
        fault: usize,
    },
}

/// One run.
#[derive(Debug, Clone)]
pub struct Runner {
    exp: Experiment,
    steps: Vec<Step>,
    next: usize,
    phase: Phase,
    created: u64,
    t0: Option<u64>,
    settle_from: u64,
    held: BTreeSet<usize>,
    /// Each probe's last result and when.
    last: BTreeMap<usize, (u64, bool)>,
    history: Vec<Record>,
    why: Option<String>,
    ended_at: Option<u64>,
    /// Services with an SLO: their 30-day error budget left when the run began and now.
    budgets: BTreeMap<String, (f64, f64)>,
}

impl Runner {
    /// A run of `exp` asked for at `now` (ms).
    pub fn new(exp: Experiment, now: u64) -> Runner {
        Runner {
            steps: timeline(&exp),
            exp,
            next: 0,
            phase: Phase::Checking,
            created: now,
            t0: None,
            settle_from: 0,
            held: BTreeSet::new(),
            last: BTreeMap::new(),
            history: Vec::new(),
            why: None,
            ended_at: None,
            budgets: BTreeMap::new(),
        }
    }

    /// A service's error budget left now (a share of its 30-day budget): the first
    /// figure is kept as where the run began, the last as where it ended.
    pub fn budget(&mut self, service: &str, left: f64) {
        if self.phase.ended() {
            return;
        }
        self.budgets
            .entry(service.to_string())
            .and_modify(|b| b.1 = left)
            .or_insert((left, left));
    }

    /// Where it is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The experiment.
    pub fn experiment(&self) -> &Experiment {
        &self.exp
    }

    /// Which probes are due at `now` (each at its `every`, 1 s by default).
    pub fn probes_due(&self, now: u64) -> Vec<usize> {
        if self.phase.ended() {
            return Vec::new();
        }
        (0..self.exp.steady_state.len())
            .filter(|i| {
                let every = self.exp.steady_state[*i]
                    .every
                    .map_or(1_000, |d| d.as_millis().max(100));
                self.last
                    .get(i)
                    .is_none_or(|(at, _)| now.saturating_sub(*at) >= every)
            })
            .collect()
    }

    /// A probe's result.
    pub fn probe(&mut self, now: u64, probe: usize, ok: bool, detail: String) {
        if self.phase.ended() || probe >= self.exp.steady_state.len() {
            return;
        }
        self.last.insert(probe, (now, ok));
        self.history.push(Record::Probe {
            at: now,
            probe,
            ok,
            detail,
        });
    }

    /// Something the cluster said happened (recorded while the run lasts).
    pub fn event(&mut self, e: crate::events::Event) {
        if !self.phase.ended() {
            self.history.push(Record::Event(e));
        }
    }

    fn all_hold(&self, since: u64) -> bool {
        (0..self.exp.steady_state.len()).all(|i| {
            self.last
                .get(&i)
                .is_some_and(|(at, ok)| *ok && *at >= since)
        })
    }

    /// Time passes: the faults due start or end.
    pub fn tick(&mut self, now: u64) -> Vec<Order> {
        let mut orders = Vec::new();
        if self.phase == Phase::Checking {
            if self.all_hold(self.created) {
                self.t0 = Some(now);
                self.phase = Phase::Running;
            } else if now.saturating_sub(self.created) >= CHECK_MAX_MS {
                self.end(
                    now,
                    Phase::Aborted,
                    format!(
                        "the steady state did not hold within {} s: nothing was done",
                        CHECK_MAX_MS / 1000
                    ),
                );
                return orders;
            }
        }
        if self.phase == Phase::Running {
            let t0 = self.t0.unwrap_or(now);
            while let Some(s) = self.steps.get(self.next)
                && t0 + s.at <= now
            {
                let s = s.clone();
                self.next += 1;
                if s.start {
                    let lasts_ms = s.deadline.saturating_sub(s.at);
                    if lasts_ms > 0 {
                        self.held.insert(s.fault);
                    }
                    self.history.push(Record::FaultStarted {
                        at: now,
                        fault: s.fault,
                    });
                    orders.push(Order::Start {
                        fault: s.fault,
                        lasts_ms,
                    });
                } else if self.held.remove(&s.fault) {
                    self.history.push(Record::FaultEnded {
                        at: now,
                        fault: s.fault,
                    });
                    orders.push(Order::Undo { fault: s.fault });
                }
            }
            if self.next >= self.steps.len() {
                self.phase = Phase::Settling;
                self.settle_from = now;
            }
        }
        if self.phase == Phase::Settling {
            let waited = now.saturating_sub(self.settle_from);
            if waited >= SETTLE_MAX_MS
                || (waited >= SETTLE_MIN_MS && self.all_hold(self.settle_from))
            {
                self.end(now, Phase::Finished, String::new());
            }
        }
        orders
    }

    /// The guard's service has `ready` replicas ready: below its count, the run ends.
    pub fn guard(&mut self, now: u64, ready: u32) -> Vec<Order> {
        let Some(g) = &self.exp.guard else {
            return Vec::new();
        };
        let rb = &g.abort_if.ready_below;
        if self.phase == Phase::Running && ready < rb.count {
            let why = format!(
                "guard: {} had {ready} ready, below {}",
                service_ref(&rb.service),
                rb.count
            );
            return self.abort(now, why);
        }
        Vec::new()
    }

    /// A fault's agent could not carry it out (or is not connected): the run ends.
    pub fn refused(&mut self, now: u64, fault: usize, why: &str) -> Vec<Order> {
        let what = self
            .exp
            .faults
            .get(fault)
            .map_or_else(String::new, describe);
        self.abort(now, format!("faults[{fault}] ({what}) failed: {why}"))
    }

    /// Ends the run now, undoing every fault held.
    pub fn abort(&mut self, now: u64, why: String) -> Vec<Order> {
        if self.phase.ended() {
            return Vec::new();
        }
        let orders: Vec<Order> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|fault| {
                self.history.push(Record::FaultEnded { at: now, fault });
                Order::Undo { fault }
            })
            .collect();
        self.end(now, Phase::Aborted, why);
        orders
    }

    fn end(&mut self, now: u64, phase: Phase, why: String) {
        self.phase = phase;
        self.ended_at = Some(now);
        self.why = (!why.is_empty()).then_some(why);
    }

    /// The report so far (with the checker's verdict once ended). `slots`: job
    /// allocations' indexes.
    pub fn report(&self, slots: &BTreeMap<String, u32>) -> Report {
        Report {
            name: self.exp.name.clone(),
            phase: self.phase,
            why: self.why.clone(),
            created: self.created,
            started: self.t0,
            ended: self.ended_at,
            verdict: self
                .phase
                .ended()
                .then(|| check(&self.exp, &self.history, slots)),
            experiment: self.exp.clone(),
            history: self.history.clone(),
            budgets: self
                .budgets
                .iter()
                .map(|(k, (a, b))| Budget {
                    service: k.clone(),
                    before: *a,
                    after: *b,
                })
                .collect(),
        }
    }
}

/// A fault in words: `power_off pi-2 for 60s`.
pub fn describe(f: &Fault) -> String {
    let what = if let Some(x) = &f.power_off {
        format!("power_off {}", x.node)
    } else if let Some(x) = &f.partition {
        format!("partition {} from {}", x.nodes.join(","), x.from.join(","))
    } else if let Some(x) = &f.packet_loss {
        format!("packet_loss {} {} %", x.node, x.percent)
    } else if let Some(x) = &f.latency {
        format!("latency {} {} ms", x.node, x.ms)
    } else if let Some(x) = &f.cpu_stress {
        format!("cpu_stress {} {} cores", x.node, x.cores)
    } else if let Some(x) = &f.memory_stress {
        format!("memory_stress {} {}", x.node, x.bytes)
    } else if let Some(x) = &f.kill {
        format!("kill an allocation of {}", x.allocation_of)
    } else {
        "nothing".to_string()
    };
    match f.lasts {
        Some(d) => format!("{what} for {}", secs(d.as_millis())),
        None => what,
    }
}

fn secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// Which allocation a `kill` takes: the running one of the workload with the lowest id
/// (a stable choice the report can name).
pub fn kill_target<'a>(
    allocs: impl IntoIterator<Item = &'a Allocation>,
    of: &WorkloadRef,
) -> Option<&'a Allocation> {
    allocs
        .into_iter()
        .filter(|a| &a.workload == of && a.state == AllocState::Running)
        .min_by(|a, b| a.id.cmp(&b.id))
}

/// A service's error budget across a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// The service.
    pub service: String,
    /// Share of its 30-day error budget left when the run began.
    pub before: f64,
    /// … when it ended.
    pub after: f64,
}

/// An experiment's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The experiment's name.
    pub name: String,
    /// Where the run is.
    pub phase: Phase,
    /// Why it was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// When it was asked for (ms since the epoch).
    pub created: u64,
    /// When the faults' clock started (the steady state first held).
    #[serde(default)]
    pub started: Option<u64>,
    /// When it ended.
    #[serde(default)]
    pub ended: Option<u64>,
    /// The checker's verdict, once ended.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// The experiment as run.
    pub experiment: Experiment,
    /// What happened, in order.
    pub history: Vec<Record>,
    /// Services with an SLO: their error budget before and after.
    #[serde(default)]
    pub budgets: Vec<Budget>,
}

/// Events the timeline shows: what the detector, the scheduler and the agents did.
fn shown(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Scheduled
            | EventKind::Started
            | EventKind::Exited
            | EventKind::Restarted
            | EventKind::Stopped
            | EventKind::Lost
            | EventKind::Blocked
            | EventKind::NodeReady
            | EventKind::NodeSuspect
            | EventKind::NodeDown
            | EventKind::LeaderChanged
    )
}

impl Report {
    /// The timeline's lines: `(ms from the start, what)`: faults, each probe's changes
    /// (its first result and every flip) and the cluster's events.
    pub fn timeline(&self) -> Vec<(i64, String)> {
        let zero = self.started.unwrap_or(self.created) as i64;
        let mut last: BTreeMap<usize, bool> = BTreeMap::new();
        let mut out = Vec::new();
        for r in &self.history {
            match r {
                Record::FaultStarted { at, fault } => out.push((
                    *at as i64 - zero,
                    format!("fault {fault} began: {}", self.fault_words(*fault)),
                )),
                Record::FaultEnded { at, fault } => out.push((
                    *at as i64 - zero,
                    format!("fault {fault} undone: {}", self.fault_words(*fault)),
                )),
                Record::Probe {
                    at,
                    probe,
                    ok,
                    detail,
                } => {
                    if last.insert(*probe, *ok) != Some(*ok) {
                        out.push((
                            *at as i64 - zero,
                            format!(
                                "probe {probe} {}: {detail}",
                                if *ok { "holds" } else { "FAILS" }
                            ),
                        ));
                    }
                }
                Record::Event(e) if shown(e.kind) => {
                    let on = e
                        .node
                        .as_deref()
                        .map(|n| format!(" on {n}"))
                        .unwrap_or_default();
                    out.push((
                        e.at as i64 - zero,
                        format!("{} {}{on}: {}", e.kind.as_str(), e.object, e.message),
                    ))
                }
                Record::Event(_) => {}
            }
        }
        out.sort_by_key(|(t, _)| *t);
        out
    }

    fn fault_words(&self, i: usize) -> String {
        self.experiment
            .faults
            .get(i)
            .map_or_else(|| "?".to_string(), describe)
    }

    /// Requests the HTTP probes made, and how many failed.
    pub fn requests(&self) -> (u32, u32) {
        let mut made = 0;
        let mut failed = 0;
        for r in &self.history {
            if let Record::Probe { probe, ok, .. } = r
                && self
                    .experiment
                    .steady_state
                    .get(*probe)
                    .is_some_and(|p| p.http.is_some())
            {
                made += 1;
                failed += u32::from(!ok);
            }
        }
        (made, failed)
    }

    /// The report in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!("# Experiment {}: {}\n\n", self.name, self.phase.as_str());
        if let Some(why) = &self.why {
            s.push_str(&format!("Aborted: {why}\n\n"));
        }
        if let Some(v) = &self.verdict {
            s.push_str(&format!(
                "**Verdict: the steady state {}.**\n\n",
                if v.steady && self.phase == Phase::Finished {
                    "held before the faults and came back after them"
                } else if v.steady {
                    "held before the faults and after, but the run was aborted"
                } else {
                    "did NOT hold"
                }
            ));
        }
        s.push_str(
            "## Faults\n\n| # | fault | at | detected | replaced |\n|---|---|---|---|---|\n",
        );
        for (i, f) in self.experiment.faults.iter().enumerate() {
            let fig = self
                .verdict
                .as_ref()
                .and_then(|v| v.faults.iter().find(|x| x.fault == i));
            let ms = |x: Option<u64>| x.map_or_else(|| "-".to_string(), |m| format!("{m} ms"));
            s.push_str(&format!(
                "| {i} | {} | {} | {} | {} |\n",
                describe(f),
                secs(f.at.as_millis()),
                ms(fig.and_then(|x| x.detected_ms)),
                ms(fig.and_then(|x| x.replaced_ms)),
            ));
        }
        s.push_str("\n## Steady state\n\n");
        for (i, p) in self.experiment.steady_state.iter().enumerate() {
            let what = match (&p.service, &p.http) {
                (Some(svc), _) => format!(
                    "{} ready at least {}",
                    service_ref(svc),
                    p.ready_at_least.unwrap_or(0)
                ),
                (_, Some(u)) => format!("GET {u} answers {}", p.expect_status.unwrap_or(200)),
                _ => "?".to_string(),
            };
            let (failed, total) = self
                .verdict
                .as_ref()
                .and_then(|v| v.probes.iter().find(|x| x.0 == i))
                .map_or((0, 0), |x| (x.1, x.2));
            s.push_str(&format!(
                "- probe {i}: {what}: failed {failed} of {total}\n"
            ));
        }
        let (made, failed) = self.requests();
        s.push_str(&format!("- requests failed: {failed} of {made}\n"));
        if let Some(v) = &self.verdict {
            s.push_str(&format!(
                "- job instances lost: {}; run twice at once: {}\n",
                v.jobs_lost,
                if v.jobs_twice.is_empty() {
                    "none".to_string()
                } else {
                    v.jobs_twice.join(", ")
                }
            ));
        }
        for b in &self.budgets {
            s.push_str(&format!(
                "- {}: error budget burned {:.2} % of its 30 days ({:.2} % left → {:.2} %)\n",
                b.service,
                (b.before - b.after) * 100.0,
                b.before * 100.0,
                b.after * 100.0
            ));
        }
        s.push_str("\n## Timeline\n\n");
        for (t, line) in self.timeline() {
            s.push_str(&format!(
                "- {:>8}  {line}\n",
                format!("{:+.1}s", t as f64 / 1000.0)
            ));
        }
        s
    }
}

#[cfg(test)]
#[path = "experiment_run_tests.rs"]
mod tests;
