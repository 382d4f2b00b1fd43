//! Periodic jobs in the simulator (issue 26): in half the seeds the operator applies a
//! job that runs every few seconds, through the faults and after, with a concurrency
//! and missed-run policy the seed draws. The checker counts every run the store ever
//! created by (job, due time): two for one due time is a double run, whatever the
//! faults (a leader change, a lagging watch, a power cut of the store). Its choices come
//! from a generator of their own, so the rest of each seed's draws are the same.

use std::time::Duration;

use motley_core::model::{Spec, Workload};
use tokio::time::Instant;

use crate::rng::Rng;
use crate::run::SeedReport;
use crate::world::World;

/// When to apply it (half the seeds), during the fault phase.
pub fn when(rng: &Rng, start: Instant, faults_end: Instant) -> Option<Instant> {
    rng.chance(0.5)
        .then(|| start + rng.between(Duration::from_secs(1), Duration::from_secs(15)))
        .filter(|at| *at < faults_end)
}

/// The periodic job: `(name, yaml, value)` as the operator's changes are. Its runs'
/// `ttl_after_finished` of 0 s must not collect them (the history keeps them: the
/// mutant `runs-collected-by-ttl`).
pub fn job(rng: &Rng) -> (String, String, u32) {
    let concurrency = *rng
        .pick(&["allow", "forbid", "replace"])
        .unwrap_or(&"allow");
    let missed = *rng.pick(&["run_once", "skip"]).unwrap_or(&"run_once");
    let completions = 1 + rng.below(2) as u32;
    (
        "job/tick".into(),
        format!(
            "kind: Job\nname: tick\nschedule: \"*/4 * * * * *\"\nconcurrency: {concurrency}\nmissed: {missed}\nhistory: 2\nttl_after_finished: 0s\ncompletions: {completions}\nparallelism: 2\ntask: {{ command: [\"sim\", \"tick\"], resources: {{ cpu: 100m, memory: 16Mi }} }}\n"
        ),
        completions,
    )
}

/// Not held to "every job complete" at convergence: a periodic job (it runs only
/// through its runs), and a run due in the last 15 s (new ones keep coming).
pub fn exempt(w: &Workload) -> bool {
    let periodic = matches!(&w.spec, Spec::Job(j) if j.schedule.is_some());
    let recent = w
        .run_of
        .as_ref()
        .is_some_and(|o| motley_rt::now_ms().saturating_sub(o.due) < 15_000);
    periodic || recent
}

/// Never two runs for one due time.
pub fn check_runs(world: &World, report: &mut SeedReport) {
    let started = world.store.runs_started();
    report.periodic_runs += started.values().map(|n| u64::from(*n)).sum::<u64>();
    for ((job, due), n) in started {
        if n > 1 {
            report.violations.push(format!(
                "{job}: the run due at {} started {n} times",
                motley_core::periodic::at(due)
            ));
        }
    }
}
