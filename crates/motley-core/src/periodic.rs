//! Periodic jobs: when a Job with a `schedule` starts a run, and what becomes of the
//! runs before it. Pure: the reconcile pass calls [`decide`] with the job, its runs and
//! the time, and plans what it says.
//!
//! A run is a Job of its own, named after the time it was due (`NAME-<unix seconds>`)
//! and created only if absent, in a transaction fenced by the leader's term: two
//! servers, or one server twice, cannot start two runs for one due time. What the
//! schedule last did is read back from the runs themselves (the newest scheduled run is
//! always kept), so an idle periodic job writes nothing between runs.

use crate::cron::{Cron, zone};
use crate::model::{Concurrency, JobSpec, Missed, WorkloadRef};

/// A run that could not start within this long of its due time was missed (the
/// control plane was down): `missed` decides. A leader change takes seconds, so a run
/// due during one still starts, late, and counts as on time.
pub const LATE_AFTER_MS: u64 = 60_000;
/// Finished runs kept when the job does not say (Kubernetes keeps 3 successful).
pub const DEFAULT_HISTORY: u32 = 3;
/// The most finished runs a job may keep.
pub const MAX_HISTORY: u32 = 100;
/// How many due times one decision walks through at most (a schedule every second
/// after a long outage is searched in widening windows first, so this is not reached
/// in practice).
const MAX_SCAN: usize = 10_000;

/// One run of the job, as the pass sees it.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// Its Job.
    pub job: &'a WorkloadRef,
    /// When it was due (ms); when started by hand, when that was.
    pub due: u64,
    /// Started by hand.
    pub manual: bool,
    /// When it finished (its last allocation ended); `None` while it runs or waits.
    pub ended_at: Option<u64>,
}

/// What the pass does for a periodic job now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Start a run for this due time (ms).
    pub start: Option<u64>,
    /// The run starts later than [`LATE_AFTER_MS`] after it was due (`missed: run_once`).
    pub late: bool,
    /// Runs to stop and delete: the running ones `concurrency: replace` replaces.
    pub replace: Vec<WorkloadRef>,
    /// Finished runs beyond the history limit, to delete.
    pub forget: Vec<WorkloadRef>,
    /// Why a due run does not start.
    pub skipped: Option<String>,
    /// When the schedule next fires after now (ms): the pass visits the job again then.
    pub next: Option<u64>,
}

/// The schedule and zone of `job`, if it is periodic.
pub fn schedule_of(job: &JobSpec) -> Option<Result<(Cron, jiff::tz::TimeZone), String>> {
    let expr = job.schedule.as_deref()?;
    Some(Cron::parse(expr).and_then(|c| Ok((c, zone(job.time_zone.as_deref())?))))
}

/// The latest time in `(after, now]` the schedule fires (walking at most [`MAX_SCAN`]
/// of its times).
fn latest_due(cron: &Cron, tz: &jiff::tz::TimeZone, after: u64, now: u64) -> Option<u64> {
    let first = cron.next_after(after, tz).filter(|t| *t <= now)?;
    // Widening windows back from now, so that a schedule every second after a day
    // down is not walked second by second from the start.
    let mut window = LATE_AFTER_MS;
    let mut latest = first;
    loop {
        let start = now.saturating_sub(window);
        if start <= after {
            break;
        }
        if let Some(t) = cron.next_after(start, tz).filter(|t| *t <= now) {
            latest = t;
            break;
        }
        window = window.saturating_mul(10);
    }
    for _ in 1..MAX_SCAN {
        match cron.next_after(latest, tz) {
            Some(t) if t <= now => latest = t,
            _ => break,
        }
    }
    Some(latest)
}

/// Decides for periodic job `job` (created at `created_at`, ms) with its `runs`, at
/// `now`. An error is a schedule or zone this server cannot read.
pub fn decide(
    job: &JobSpec,
    created_at: u64,
    runs: &[Run<'_>],
    now: u64,
) -> Result<Decision, String> {
    let Some(parsed) = schedule_of(job) else {
        return Ok(Decision::default());
    };
    let (cron, tz) = parsed?;
    let mut d = Decision {
        next: cron.next_after(now, &tz),
        ..Decision::default()
    };
    if job.suspend {
        d.skipped = Some("suspended: no run starts while suspend is true".into());
        return Ok(d);
    }
    // What the schedule last did: the newest scheduled run (never forgotten below).
    let last = runs
        .iter()
        .filter(|r| !r.manual)
        .map(|r| r.due)
        .max()
        .unwrap_or(created_at);
    if let Some(due) = latest_due(&cron, &tz, last, now) {
        let late = now.saturating_sub(due) > LATE_AFTER_MS;
        // A run counts as running at `due` if it had started by then and had not
        // ended (forbid skips the due run even once that run has since ended).
        let running_at_due = runs
            .iter()
            .any(|r| r.due < due && r.ended_at.is_none_or(|e| e > due));
        if late && job.missed == Missed::Skip {
            d.skipped = Some(format!(
                "the run due at {} was missed (missed: skip)",
                at(due)
            ));
        } else if job.concurrency == Concurrency::Forbid && running_at_due {
            d.skipped = Some(format!(
                "the run due at {} was skipped: an earlier run was still running (concurrency: forbid)",
                at(due)
            ));
        } else {
            d.start = Some(due);
            d.late = late;
            if job.concurrency == Concurrency::Replace {
                d.replace = runs
                    .iter()
                    .filter(|r| r.ended_at.is_none())
                    .map(|r| r.job.clone())
                    .collect();
            }
        }
    }
    // History, when a run starts (then, and only then, a pass visits the job whether
    // or not anything else changed: deciding at any other time would make a pass over
    // what is not settled plan otherwise than a full pass): the newest finished runs
    // are kept, and the newest scheduled run always.
    if d.start.is_none() {
        return Ok(d);
    }
    let keep = job.history.unwrap_or(DEFAULT_HISTORY) as usize;
    let newest_scheduled = runs.iter().filter(|r| !r.manual).map(|r| r.due).max();
    let mut finished: Vec<&Run<'_>> = runs.iter().filter(|r| r.ended_at.is_some()).collect();
    finished.sort_by(|a, b| (b.due, b.job).cmp(&(a.due, a.job)));
    d.forget = finished
        .into_iter()
        .skip(keep)
        .filter(|r| r.manual || Some(r.due) != newest_scheduled)
        .filter(|r| !d.replace.contains(r.job))
        .map(|r| r.job.clone())
        .collect();
    Ok(d)
}

/// The periodic job `w` is a run of, if it is one. A change of a run or of its
/// allocations is a change of its periodic job too (whether a run has ended decides
/// what the job does next): whoever tells [`crate::active::Active`] of changes touches
/// this one as well.
pub fn job_of_run(w: &crate::model::Workload) -> Option<WorkloadRef> {
    let of = w.run_of.as_ref()?;
    Some(w.spec.reference().sibling(crate::model::Kind::Job, &of.job))
}

/// The name of the run due at `due` (ms) of job `name`; a run by hand adds `run-`.
pub fn run_name(name: &str, due: u64, manual: bool) -> String {
    if manual {
        format!("{name}-run-{}", due / 1000)
    } else {
        format!("{name}-{}", due / 1000)
    }
}

/// The longest name a periodic job may have: its runs' names add up to 15 characters
/// (`-run-` and ten digits) and must stay within 63.
pub const MAX_NAME: usize = 63 - 15;

/// A run of `job` (a periodic Job) due at `due`: the same job without its schedule.
pub fn run_spec(job: &JobSpec, due: u64, manual: bool) -> JobSpec {
    JobSpec {
        name: run_name(&job.name, due, manual),
        schedule: None,
        time_zone: None,
        concurrency: Concurrency::default(),
        missed: Missed::default(),
        history: None,
        suspend: false,
        ..job.clone()
    }
}

/// A time as UTC text, for reasons and listings.
pub fn at(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
        .map_or_else(
            || format!("{ms} ms"),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

#[cfg(test)]
#[path = "periodic_tests.rs"]
mod tests;
