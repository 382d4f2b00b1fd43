//! Finished jobs are kept for their `ttl_after_finished` (default
//! [`DEFAULT_TTL_AFTER_FINISHED`], as Kubernetes' `ttlSecondsAfterFinished`), then
//! collected: the controller deletes the Job, and its allocations go with it. A cluster
//! that runs a job a minute for a year keeps a day of them, not half a million, and
//! every reconcile pass and listing stays the size of what matters.
//!
//! A job a git source declares is never collected: the next sync would find it missing
//! and apply it again, running it again (Argo CD's advice for Kubernetes is the same:
//! no TTL on synced jobs). It goes when the commit stops declaring it (with `prune`).

use crate::model::{AllocState, Allocation, JobSpec};
use crate::quantity::Duration;

/// How long a finished job is kept when its spec does not say.
pub const DEFAULT_TTL_AFTER_FINISHED: Duration = Duration(24 * 3600 * 1000);

/// What becomes of a job whose allocations are `mine`, at `now` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Not finished: nothing to decide.
    Running,
    /// Finished; kept until this time (ms).
    KeptUntil(u64),
    /// Finished; kept while its source declares it.
    Declared,
    /// Finished longer than its TTL ago: delete it.
    Collect,
}

/// The job is finished when it failed (an instance failed past its retries) or every
/// index completed, and no allocation is still live; it finished when its last
/// allocation ended.
/// `from_source`: a git source applied it.
pub fn fate(job: &JobSpec, from_source: bool, mine: &[&Allocation], now: u64) -> Fate {
    if mine.is_empty() || mine.iter().any(|a| a.is_live()) {
        return Fate::Running;
    }
    let failed = mine.iter().any(|a| a.state == AllocState::Failed);
    if !failed {
        let mut done = vec![false; job.completions as usize];
        for a in mine.iter().filter(|a| a.state == AllocState::Complete) {
            if let Some(d) = done.get_mut(a.index as usize) {
                *d = true;
            }
        }
        if !done.iter().all(|d| *d) {
            return Fate::Running;
        }
    }
    if from_source {
        return Fate::Declared;
    }
    let ended = mine.iter().map(|a| a.updated_at).max().unwrap_or(0);
    let ttl = job.ttl_after_finished.unwrap_or(DEFAULT_TTL_AFTER_FINISHED);
    let until = ended.saturating_add(ttl.as_millis());
    if now >= until {
        Fate::Collect
    } else {
        Fate::KeptUntil(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Spec, test_alloc};

    fn job(completions: u32, ttl: Option<&str>) -> JobSpec {
        let ttl = ttl
            .map(|t| format!("ttl_after_finished: {t}\n"))
            .unwrap_or_default();
        let text = format!(
            "kind: Job\nname: j\ncompletions: {completions}\n{ttl}task:\n  command: [\"true\"]\n  resources: {{ cpu: 1, memory: 8Mi }}\n"
        );
        match serde_saphyr::from_str::<Spec>(&text) {
            Ok(Spec::Job(j)) => j,
            other => panic!("not a job: {other:?}"),
        }
    }

    fn ended(id: &str, index: u32, state: AllocState, at: u64) -> Allocation {
        let mut a = test_alloc(id, "job/j", state);
        a.index = index;
        a.updated_at = at;
        a
    }

    #[test]
    fn a_finished_job_is_kept_for_its_ttl_then_collected() {
        let j = job(2, Some("10s"));
        let one = ended("j-1", 0, AllocState::Complete, 1_000);
        let two = ended("j-2", 1, AllocState::Complete, 5_000);
        let running = ended("j-3", 1, AllocState::Running, 5_000);
        assert_eq!(
            fate(&j, false, &[&one], 99_000),
            Fate::Running,
            "index 1 not done"
        );
        assert_eq!(fate(&j, false, &[&one, &running], 99_000), Fate::Running);
        assert_eq!(
            fate(&j, false, &[&one, &two], 6_000),
            Fate::KeptUntil(15_000)
        );
        assert_eq!(fate(&j, false, &[&one, &two], 15_000), Fate::Collect);
        // A failed job is finished too, from its last end.
        let failed = ended("j-4", 1, AllocState::Failed, 7_000);
        assert_eq!(
            fate(&j, false, &[&one, &failed], 8_000),
            Fate::KeptUntil(17_000)
        );
    }

    #[test]
    fn the_default_ttl_is_a_day() {
        let j = job(1, None);
        let done = ended("j-1", 0, AllocState::Complete, 1_000);
        assert_eq!(
            fate(&j, false, &[&done], 2_000),
            Fate::KeptUntil(1_000 + 86_400_000)
        );
        let zero = job(1, Some("0s"));
        assert_eq!(fate(&zero, false, &[&done], 1_000), Fate::Collect);
        assert_eq!(fate(&zero, true, &[&done], 1_000), Fate::Declared);
    }
}
