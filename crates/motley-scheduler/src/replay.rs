//! `motley what-if --trace HISTORY` (issue 24): a recorded history of jobs and
//! services (`motley events -o json`) replayed against a changed cluster in virtual
//! time, through the real controllers and this crate's scheduler, faster than real
//! time. Each workload arrives when the history says it was applied; each job instance
//! runs as long as its instances ran in the history; the answer is, per workload, how
//! long it waited for its first start and when it finished, against the history.
//!
//! The replay starts from the changed cluster's nodes with nothing placed: the
//! cluster's services that the history does not name run throughout (they take their
//! room from the start); the history's workloads take their specs from the cluster
//! (a workload the cluster no longer has is named and left out).

use std::collections::{BTreeMap, BTreeSet};

use motley_core::events::{Event, EventKind};
use motley_core::model::{AllocState, Allocation, Desired, Kind, Workload, WorkloadRef};
use motley_core::reconcile::{Ids, Input, reconcile, status};
use serde::{Deserialize, Serialize};

use crate::whatif::{Change, State, check};
use crate::{Config, Scheduler};

/// How long a job instance runs when the history shows none ending.
pub const DEFAULT_RUNTIME_MS: u64 = 1_000;
/// Most passes a replay runs.
const MAX_PASSES: u32 = 200_000;

/// A workload's arrival, as the history tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    /// The workload.
    pub workload: WorkloadRef,
    /// When it was applied (ms since the epoch).
    pub at: u64,
    /// How long each instance ran (the longest seen), for a job.
    pub runtime_ms: u64,
    /// How long it waited for its first start in the history.
    pub waited_ms: Option<u64>,
    /// When its last instance ended in the history (a job's).
    pub done_at: Option<u64>,
}

/// Reads arrivals from a history: every workload applied (created, or a new
/// generation) that is a job or a service, with what its instances did after.
pub fn arrivals(events: &[Event]) -> Vec<Arrival> {
    let mut out: Vec<Arrival> = Vec::new();
    let mut started: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events {
        let Some(r) = WorkloadRef::parse(&e.object) else {
            continue;
        };
        if !matches!(r.kind, Kind::Job | Kind::Service) {
            continue;
        }
        match e.kind {
            EventKind::Applied => out.push(Arrival {
                workload: r,
                at: e.at,
                runtime_ms: DEFAULT_RUNTIME_MS,
                waited_ms: None,
                done_at: None,
            }),
            EventKind::Started => {
                if let Some(id) = e.alloc.as_deref() {
                    started.insert(id, e.at);
                }
                if let Some(a) = out
                    .iter_mut()
                    .rev()
                    .find(|a| a.workload == r && e.at >= a.at)
                    && a.waited_ms.is_none()
                {
                    a.waited_ms = Some(e.at - a.at);
                }
            }
            EventKind::Exited | EventKind::Stopped | EventKind::Lost => {
                let ran = e
                    .alloc
                    .as_deref()
                    .and_then(|id| started.get(id))
                    .map(|s| e.at.saturating_sub(*s));
                if let Some(a) = out
                    .iter_mut()
                    .rev()
                    .find(|a| a.workload == r && e.at >= a.at)
                {
                    if let Some(ran) = ran
                        && (a.runtime_ms == DEFAULT_RUNTIME_MS || ran > a.runtime_ms)
                    {
                        a.runtime_ms = ran.max(1);
                    }
                    if r.kind == Kind::Job {
                        a.done_at = Some(e.at);
                    }
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|a| a.at);
    out
}

/// One workload replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// The workload.
    pub workload: WorkloadRef,
    /// Arrived, ms after the history's first arrival.
    pub arrived_ms: u64,
    /// Waited for its first start, in the history.
    pub waited_ms: Option<u64>,
    /// … and in the replay (`None`: never started).
    pub waits_ms: Option<u64>,
    /// Finished (a job), ms after arriving, in the history.
    pub took_ms: Option<u64>,
    /// … and in the replay.
    pub takes_ms: Option<u64>,
    /// Why it did not start or finish in the replay (the scheduler's reason), if so.
    pub why: Option<String>,
}

impl Replayed {
    /// How much later it finished (a job) or started (a service) than in the history.
    pub fn delay_ms(&self) -> Option<i64> {
        match (self.took_ms, self.takes_ms) {
            (Some(a), Some(b)) => Some(b as i64 - a as i64),
            _ => match (self.waited_ms, self.waits_ms) {
                (Some(a), Some(b)) => Some(b as i64 - a as i64),
                _ => None,
            },
        }
    }
}

/// The replay's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// Per workload of the history, in arrival order.
    pub workloads: Vec<Replayed>,
    /// Workloads the history names that the cluster does not have.
    pub missing: Vec<WorkloadRef>,
    /// Virtual time replayed, ms.
    pub span_ms: u64,
    /// Controller passes run.
    pub passes: u32,
    /// What happened, in virtual time (ms after the first arrival): arrivals, starts,
    /// ends.
    pub timeline: Vec<(u64, String)>,
}

struct Counter(u64);

impl Ids for Counter {
    fn next_id(&mut self, w: &WorkloadRef) -> String {
        self.0 += 1;
        format!("{}-replay-{}", w.name, self.0)
    }
}

/// Replays `arrivals` on `state`'s nodes as `change` leaves them.
pub fn replay(
    state: &State,
    change: &Change,
    arrivals: &[Arrival],
    cfg: &Config,
) -> Result<Replay, String> {
    check(state, change)?;
    let mut nodes = state.nodes.clone();
    let mut ready = state.ready.clone();
    for n in &change.lose {
        ready.remove(n);
    }
    for n in &change.drain {
        if let Some(node) = nodes.get_mut(n) {
            node.cordoned = true;
        }
    }
    let named: BTreeSet<&WorkloadRef> = arrivals.iter().map(|a| &a.workload).collect();
    // The cluster's other services run throughout.
    let mut workloads: BTreeMap<WorkloadRef, Workload> = state
        .workloads
        .iter()
        .filter(|(r, _)| !named.contains(r) && r.kind != Kind::Job)
        .map(|(r, w)| (r.clone(), w.clone()))
        .collect();
    let missing: Vec<WorkloadRef> = named
        .iter()
        .filter(|r| !state.workloads.contains_key(**r))
        .map(|r| (*r).clone())
        .collect();
    let t0 = arrivals.first().map_or(state.now, |a| a.at);
    let mut now = t0;
    let mut allocs: BTreeMap<String, Allocation> = BTreeMap::new();
    let runtime: BTreeMap<&WorkloadRef, u64> = arrivals
        .iter()
        .map(|a| (&a.workload, a.runtime_ms))
        .collect();
    let mut arrived: BTreeMap<WorkloadRef, u64> = BTreeMap::new();
    let mut first_start: BTreeMap<WorkloadRef, u64> = BTreeMap::new();
    let mut finished: BTreeMap<WorkloadRef, u64> = BTreeMap::new();
    let mut timeline = Vec::new();
    let mut next = 0usize;
    let mut ids = Counter(0);
    let mut passes = 0;
    let mut blocked = BTreeMap::new();
    let down = BTreeMap::new();
    while passes < MAX_PASSES {
        passes += 1;
        while let Some(a) = arrivals.get(next).filter(|a| a.at <= now) {
            next += 1;
            if let Some(w) = state.workloads.get(&a.workload) {
                workloads.insert(a.workload.clone(), w.clone());
                arrived.insert(a.workload.clone(), now);
                timeline.push((now - t0, format!("{} arrives", a.workload)));
            }
        }
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
        crate::whatif::commit(&plan, &mut allocs, now);
        // The agents: start what is placed, stop what is stopped, end job instances
        // that ran their time.
        let mut next_end: Option<u64> = None;
        for a in allocs.values_mut() {
            if !ready.contains(&a.node) || !a.is_live() {
                continue;
            }
            let starting = a.state == AllocState::Pending && a.desired != Desired::Stop;
            if crate::whatif::obey(a, now) {
                changed = true;
                if starting
                    && !first_start.contains_key(&a.workload)
                    && arrived.contains_key(&a.workload)
                {
                    first_start.insert(a.workload.clone(), now);
                    timeline.push((now - t0, format!("{} starts on {}", a.workload, a.node)));
                }
            } else if a.state == AllocState::Running && a.workload.kind == Kind::Job {
                let ends = a.updated_at
                    + runtime
                        .get(&a.workload)
                        .copied()
                        .unwrap_or(DEFAULT_RUNTIME_MS);
                if ends <= now {
                    a.state = AllocState::Complete;
                    a.exit_code = Some(0);
                    a.updated_at = now;
                    changed = true;
                } else {
                    next_end = Some(next_end.map_or(ends, |n: u64| n.min(ends)));
                }
            }
        }
        // Jobs done: said, then taken out of the world with their allocations (nothing
        // more happens to them), so a long history does not slow every later pass.
        let mut by: BTreeMap<&WorkloadRef, Vec<&Allocation>> = BTreeMap::new();
        for a in allocs.values() {
            if a.workload.kind == Kind::Job {
                by.entry(&a.workload).or_default().push(a);
            }
        }
        let mut done = Vec::new();
        for (r, mine) in by {
            let Some(w) = workloads.get(r) else { continue };
            if finished.contains_key(r) || !arrived.contains_key(r) {
                continue;
            }
            let st = status(w, &mine, 0);
            if st.desired > 0 && st.complete >= st.desired {
                done.push(r.clone());
            }
        }
        for r in done {
            timeline.push((now - t0, format!("{r} finishes")));
            finished.insert(r.clone(), now);
            workloads.remove(&r);
            allocs.retain(|_, a| a.workload != r);
        }
        let jobs_left = workloads
            .keys()
            .any(|r| r.kind == Kind::Job && !finished.contains_key(r));
        let next_arrival = arrivals.get(next).map(|a| a.at);
        now = if changed {
            now + 1000
        } else {
            match [next_arrival, next_end, plan.wake_at.filter(|&w| w > now)]
                .into_iter()
                .flatten()
                .min()
            {
                Some(t) => t.max(now + 1),
                None => break,
            }
        };
        if next_arrival.is_none() && !jobs_left && !changed && next_end.is_none() {
            break;
        }
    }
    let out = arrivals
        .iter()
        .filter(|a| state.workloads.contains_key(&a.workload))
        .map(|a| {
            let at = arrived.get(&a.workload).copied().unwrap_or(a.at);
            let waits = first_start.get(&a.workload).map(|s| s - at);
            let takes = finished.get(&a.workload).map(|f| f - at);
            let why = (waits.is_none() || (a.workload.kind == Kind::Job && takes.is_none()))
                .then(|| blocked.get(&a.workload).map(|b| b.why.summary.clone()))
                .flatten();
            Replayed {
                workload: a.workload.clone(),
                arrived_ms: a.at - t0,
                waited_ms: a.waited_ms,
                waits_ms: waits,
                took_ms: a.done_at.map(|d| d.saturating_sub(a.at)),
                takes_ms: takes,
                why,
            }
        })
        .collect();
    Ok(Replay {
        workloads: out,
        missing,
        span_ms: now.saturating_sub(t0),
        passes,
        timeline,
    })
}
