//! The pass's part of periodic jobs ([`crate::periodic`] decides): start the run that is
//! due, replace earlier runs or forget them beyond the history. A run is kept (never
//! collected by a TTL) whatever becomes of its job: deleting a periodic job deletes its
//! runs with it (the server's delete), and a pass decides the same of a run whether or
//! not it visits its job (a pass over what is not settled plans what a full pass does).

use super::*;
use crate::model::JobSpec;
use crate::periodic::{self, Run};

/// The runs of periodic job `parent` among `workloads`: the Jobs in its namespace whose
/// `run_of` names it (found by their names, which begin with the job's and `-`).
pub fn runs_in<'a>(
    workloads: &'a BTreeMap<WorkloadRef, Workload>,
    parent: &WorkloadRef,
) -> impl Iterator<Item = (&'a WorkloadRef, &'a Workload, &'a crate::model::RunOf)> {
    let prefix = format!("{}-", parent.name);
    let from = WorkloadRef {
        kind: crate::model::Kind::Job,
        name: prefix.clone(),
        namespace: String::new(),
    };
    let (job, ns) = (parent.name.clone(), parent.namespace.clone());
    workloads
        .range(from..)
        .take_while(move |(r, _)| r.kind == crate::model::Kind::Job && r.name.starts_with(&prefix))
        .filter(move |(r, _)| r.namespace == ns)
        .filter_map(move |(r, w)| Some((r, w, w.run_of.as_ref().filter(|o| o.job == job)?)))
}

/// The runs of periodic job `w`, with when each finished (from its allocations, whose
/// ids begin with the run's name).
pub(super) fn runs_of<'a>(
    workloads: &'a BTreeMap<WorkloadRef, Workload>,
    allocs: &BTreeMap<String, Allocation>,
    now: u64,
    w: &Workload,
) -> Vec<Run<'a>> {
    runs_in(workloads, &w.spec.reference())
        .map(|(r, child, of)| Run {
            job: r,
            due: of.due,
            manual: of.manual,
            ended_at: ended_at(allocs, now, r, child),
        })
        .collect()
}

/// When run `r` finished: every index complete or one failed past its retries, and no
/// allocation live ([`crate::collect::fate`]'s rule); `None` while it runs or waits.
fn ended_at(
    allocs: &BTreeMap<String, Allocation>,
    now: u64,
    r: &WorkloadRef,
    child: &Workload,
) -> Option<u64> {
    let Spec::Job(j) = &child.spec else {
        return None;
    };
    let prefix = format!("{}-", r.name);
    let mine: Vec<&Allocation> = allocs
        .range::<str, _>((
            std::ops::Bound::Included(prefix.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(id, _)| id.starts_with(&prefix))
        .map(|(_, a)| a)
        .filter(|a| a.workload == *r && a.workload_uid == child.uid)
        .collect();
    match crate::collect::fate(j, true, &mine, now) {
        crate::collect::Fate::Running => None,
        _ => Some(
            mine.iter()
                .map(|a| a.updated_at)
                .max()
                .unwrap_or(child.created_at),
        ),
    }
}

impl Pass<'_, '_> {
    /// Periodic job `w`: plans its due run and what becomes of earlier ones. Returns
    /// when it must be visited again (its next due time), as a finished job does, once
    /// nothing is left to do; `None` (visit it again) while a run is being started.
    pub(super) fn periodic(&mut self, w: &Workload, j: &JobSpec) -> Option<Option<u64>> {
        let runs = runs_of(self.input.workloads, self.input.allocs, self.input.now, w);
        let d = match periodic::decide(j, w.created_at, &runs, self.input.now) {
            Ok(d) => d,
            // A zone this server's system does not know (checked where it was applied):
            // nothing starts; visited again when something changes.
            Err(_) => return Some(None),
        };
        for r in &d.replace {
            let why = format!(
                "replaced by a newer run of {} (concurrency: replace)",
                w.spec.reference()
            );
            self.plan.drop_runs.push((r.clone(), why));
        }
        for r in &d.forget {
            let why = format!("beyond the history of {}", w.spec.reference());
            self.plan.drop_runs.push((r.clone(), why));
        }
        if let Some(next) = d.next {
            self.plan.wake(next);
        }
        let acts = d.start.is_some() || !d.replace.is_empty() || !d.forget.is_empty();
        if let Some(due) = d.start {
            self.plan.runs.push(run(w, j, due, false, self.input.now));
        }
        // Settled only once what it decides is done: a plan whose commit fails (the
        // leader changed, the store was out) leaves it to be decided again.
        (!acts).then_some(d.next)
    }
}

/// The run of periodic job `w` due at `due` (or started by hand then), as a new Job.
pub fn run(w: &Workload, j: &JobSpec, due: u64, manual: bool, now: u64) -> Workload {
    let spec = periodic::run_spec(j, due, manual);
    let uid = format!(
        "{}-{}{}",
        w.uid,
        if manual { "run-" } else { "" },
        due / 1000
    );
    let mut run = Workload::created(Spec::Job(spec), uid, now);
    run.run_of = Some(crate::model::RunOf {
        job: j.name.clone(),
        due,
        manual,
    });
    run
}

/// What `get jobs` and `describe` show of periodic job `w` at `now`; `None` if it is
/// not periodic.
pub fn view(
    w: &Workload,
    workloads: &BTreeMap<WorkloadRef, Workload>,
    allocs: &BTreeMap<String, Allocation>,
    now: u64,
) -> Option<crate::api::PeriodicView> {
    let Spec::Job(j) = &w.spec else { return None };
    let schedule = j.schedule.clone()?;
    let runs = runs_of(workloads, allocs, now, w);
    let decided = periodic::decide(j, w.created_at, &runs, now);
    let newest = runs.iter().max_by_key(|r| r.due);
    Some(crate::api::PeriodicView {
        schedule,
        time_zone: j.time_zone.clone().unwrap_or_else(|| "UTC".into()),
        next_run: decided.as_ref().ok().and_then(|d| d.next),
        last_run: newest.map(|r| r.job.name.clone()),
        last_due: newest.map(|r| r.due),
        last_late_by: newest
            .filter(|r| !r.manual)
            .and_then(|r| workloads.get(r.job))
            .zip(newest)
            .map(|(child, r)| child.created_at.saturating_sub(r.due))
            .filter(|late| *late > periodic::LATE_AFTER_MS),
        active: runs.iter().filter(|r| r.ended_at.is_none()).count() as u32,
        runs: runs.len() as u32,
        note: match decided {
            Ok(d) => d.skipped,
            Err(e) => Some(e),
        },
    })
}
