//! The restart state machine an agent's supervisor follows after a task exits.
//!
//! Pure: the supervisor passes how the task ended and how often it has been
//! restarted, and gets back either a delay before the next start or the
//! allocation's final state.

use crate::model::{AllocState, Backoff, RestartMode, RestartPolicy};

/// How a task process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Ended while adopted from an earlier agent; its status is unknown.
    Unknown,
    /// Killed by the kernel for going over its memory limit (SIGKILL, with the
    /// cgroup's `oom_kill` count risen).
    OutOfMemory,
}

impl Exit {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
    /// The exit code as stored on an allocation: the code, or minus the signal.
    pub fn as_code(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            Exit::Signal(s) => Some(-s),
            Exit::OutOfMemory => Some(-9),
            Exit::Unknown => None,
        }
    }
    /// Human description, for reasons.
    pub fn describe(self) -> String {
        match self {
            Exit::Code(c) => format!("exited with code {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
            Exit::Unknown => "exited (status unknown: adopted after an agent restart)".into(),
            Exit::OutOfMemory => {
                "killed by the kernel: out of memory (over its memory limit)".into()
            }
        }
    }
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start again after this many milliseconds.
    Restart {
        /// Delay in ms.
        delay_ms: u64,
        /// Whether this restart counts against `max_restarts` (a job's `retries`). An
        /// exit nobody saw (the node lost power, the agent was away) is not the task's
        /// failure and does not count.
        counted: bool,
    },
    /// Do not restart; the allocation ends in this state.
    Finish(AllocState),
}

/// A run at least this long resets the backoff to its initial delay.
pub const STABLE_RUN_MS: u64 = 60_000;

/// The delay before restart number `restarts + 1`: `initial × 2^restarts`, capped at `max`.
pub fn backoff_delay(b: &Backoff, restarts: u32) -> u64 {
    let initial = b.initial.as_millis();
    let shifted = initial.saturating_mul(1u64.checked_shl(restarts.min(40)).unwrap_or(u64::MAX));
    shifted.min(b.max.as_millis().max(initial))
}

/// Decides what follows an exit, given the policy, how many counted restarts happened
/// so far and how long this run lasted.
///
/// An exit whose status is unknown (the task ended while its agent was away: a power
/// cut, an agent restart) restarts under `always` and `on-failure` without counting
/// against `max_restarts`: the task did not fail, its node did, and as in Slurm's
/// requeue after a node failure or Nomad's replacement of a lost allocation, node
/// trouble does not use up a job's retries (the simulator's seeds 1017058, 1035999,
/// 1075507, 1085606 and 1092969 failed jobs after repeated power cuts). Under `never`
/// it ends `failed`: nothing shows the run completed.
pub fn decide(policy: &RestartPolicy, restarts: u32, exit: Exit, ran_for_ms: u64) -> Decision {
    let final_state = if exit.success() {
        AllocState::Complete
    } else {
        AllocState::Failed
    };
    let wants = match policy.mode {
        RestartMode::Always => true,
        RestartMode::OnFailure => !exit.success(),
        RestartMode::Never => false,
    };
    let counted = exit != Exit::Unknown;
    if !wants || (counted && policy.max_restarts.is_some_and(|m| restarts >= m)) {
        return Decision::Finish(final_state);
    }
    let n = if ran_for_ms >= STABLE_RUN_MS {
        0
    } else {
        restarts
    };
    Decision::Restart {
        delay_ms: backoff_delay(&policy.backoff, n),
        counted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::Duration;

    fn policy(mode: RestartMode, max: Option<u32>) -> RestartPolicy {
        RestartPolicy {
            mode,
            max_restarts: max,
            backoff: Backoff {
                initial: Duration(100),
                max: Duration(1_000),
            },
        }
    }

    #[test]
    fn modes() {
        let always = policy(RestartMode::Always, None);
        assert_eq!(
            decide(&always, 0, Exit::Code(0), 5),
            Decision::Restart {
                delay_ms: 100,
                counted: true
            }
        );
        assert_eq!(
            decide(&always, 3, Exit::Signal(9), 5),
            Decision::Restart {
                delay_ms: 800,
                counted: true
            }
        );
        assert_eq!(
            decide(&always, 30, Exit::Code(1), 5),
            Decision::Restart {
                delay_ms: 1_000,
                counted: true
            }
        );
        assert_eq!(
            decide(&always, 30, Exit::Code(1), STABLE_RUN_MS),
            Decision::Restart {
                delay_ms: 100,
                counted: true
            }
        );
        let on_failure = policy(RestartMode::OnFailure, Some(2));
        assert_eq!(
            decide(&on_failure, 0, Exit::Code(0), 5),
            Decision::Finish(AllocState::Complete)
        );
        assert_eq!(
            decide(&on_failure, 1, Exit::Code(3), 5),
            Decision::Restart {
                delay_ms: 200,
                counted: true
            }
        );
        assert_eq!(
            decide(&on_failure, 2, Exit::Code(3), 5),
            Decision::Finish(AllocState::Failed)
        );
        let never = policy(RestartMode::Never, None);
        assert_eq!(
            decide(&never, 0, Exit::Code(2), 5),
            Decision::Finish(AllocState::Failed)
        );
        assert_eq!(
            decide(&never, 0, Exit::Unknown, 5),
            Decision::Finish(AllocState::Failed)
        );
    }

    #[test]
    fn an_unseen_exit_does_not_use_up_retries() {
        // A job with no retries left restarts after a power cut, uncounted ...
        let job = policy(RestartMode::OnFailure, Some(0));
        assert_eq!(
            decide(&job, 0, Exit::Unknown, 5),
            Decision::Restart {
                delay_ms: 100,
                counted: false
            }
        );
        assert_eq!(
            decide(&job, 7, Exit::Unknown, 5),
            Decision::Restart {
                delay_ms: 1_000,
                counted: false
            }
        );
        // ... but its own failure still ends it.
        assert_eq!(
            decide(&job, 0, Exit::Code(1), 5),
            Decision::Finish(AllocState::Failed)
        );
    }
}
