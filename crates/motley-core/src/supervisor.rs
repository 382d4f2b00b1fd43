//! The allocation supervisor: what an agent does with one allocation, as a state machine
//! fed events and time (`step(event, now) -> actions`), with no IO.
//!
//! The agent (and the simulator) drive it: they deliver what happened (the server's
//! desired state, whether the node holds its lease, whether the secrets arrived, that a
//! start succeeded or failed, that the process exited or was stopped) and carry out the
//! [`Action`]s it returns (start the task, stop it with a grace period, report a change,
//! end). [`Supervisor::deadline`] says when it next wants a [`Event::Tick`].
//!
//! The rules, in one place:
//!
//! - **Fencing.** A fenced allocation (`on_node_loss: fence`) starts or restarts only
//!   while the node holds its lease, and a running one is stopped as soon as the lease
//!   is seen to have run out: after that the server may place a replacement.
//! - **Secrets.** An allocation with secrets waits until a server delivers them (they
//!   live in memory only); a delivery error fails it.
//! - **Time limits** count from the allocation's creation; a job past its limit is
//!   stopped and fails, and one already past it is not started.
//! - **Restarts** follow [`crate::restart::decide`]; between an exit and the next start
//!   the allocation is in [`AllocState::Backoff`] with the last exit and the delay, never
//!   `running`. A start that fails (no such program, a directory that cannot be made)
//!   counts as exit code 127.
//! - **Liveness.** A replica that was healthy and fails its check (the driver says so
//!   with [`Event::Unhealthy`]) is stopped and restarted like an exit, and the restart's
//!   report names the check, not the signal that stopped it: reports of an allocation
//!   are folded into one before they are sent, so the check's own report can be gone
//!   before the server sees it.
//! - **Stop** on request ends in `stopped` with the reason given. A running replica
//!   that serves a service's name (a chosen port) is first left running for
//!   [`crate::catalog::DRAIN_MS`], the time every node's proxy needs to hear it left
//!   the catalog, so no connection meets a closed port; a fenced one whose lease ran
//!   out is stopped at once, and a replica asked to run again meanwhile runs on.

use crate::model::{AllocState, Allocation, Desired, NodeLoss, RestartPolicy};
use crate::restart::{self, Decision, Exit};

/// Why a fenced task is stopped when its lease runs out.
const FENCED: &str = "fenced: no contact with the control plane for the lease";

/// What the supervisor needs to know of its allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `on_node_loss: fence`.
    pub fenced: bool,
    /// The task has secrets to wait for.
    pub needs_secrets: bool,
    /// When a time limit runs out (ms since the epoch), if there is one.
    pub time_limit_end: Option<u64>,
    /// The time limit as written, for reasons.
    pub time_limit_text: String,
    /// SIGTERM to SIGKILL.
    pub stop_grace_ms: u64,
    /// The restart policy.
    pub restart: RestartPolicy,
    /// How long a running replica keeps running after a stop is asked (it is an
    /// endpoint of a service's name: proxies must hear it left first); 0: none.
    pub drain_ms: u64,
}

impl Config {
    /// The supervisor's view of an allocation.
    pub fn of(a: &Allocation) -> Config {
        Config {
            fenced: a.on_node_loss == NodeLoss::Fence,
            needs_secrets: a.task.uses_secrets(),
            time_limit_end: a
                .time_limit
                .map(|t| a.created_at.saturating_add(t.as_millis())),
            time_limit_text: a.time_limit.map(|t| t.to_string()).unwrap_or_default(),
            stop_grace_ms: a.task.stop_grace.as_millis(),
            restart: a.restart,
            // Service ports (chosen by the agent: `ports`, or still 0 in the task) make
            // it an endpoint the catalog lists.
            drain_ms: if !a.ports.is_empty() || a.task.ports.iter().any(|p| p.port == 0) {
                crate::catalog::DRAIN_MS
            } else {
                0
            },
        }
    }
}

/// The secrets an allocation waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secrets {
    /// Not delivered (yet).
    Absent,
    /// Delivered and opened.
    Ready,
    /// Delivered with an error (a missing key, a value that does not open).
    Error(String),
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The server's desired state, with the reason for a stop.
    Desired(Desired, String),
    /// Whether the node holds its lease (heard from a server within the lease).
    Lease(bool),
    /// The state of the allocation's secrets.
    Secrets(Secrets),
    /// The process was started.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// Starting failed.
    StartFailed(String),
    /// The process ended by itself.
    Exited(Exit),
    /// A requested stop finished, with how the process ended (`None`: nothing ran).
    Stopped(Option<Exit>),
    /// The running replica was healthy and now fails its check, for this reason
    /// ("unhealthy: GET /ok answered 404 (2 checks in a row)"): restart it.
    Unhealthy(String),
    /// Time passed (the deadline was reached, or the driver just looks again).
    Tick,
}

/// A change to the allocation's report. `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// New state.
    pub state: Option<AllocState>,
    /// New pid (`Some(None)` clears it).
    pub pid: Option<Option<u32>>,
    /// New exit code.
    pub exit_code: Option<Option<i32>>,
    /// Restarts so far.
    pub restarts: Option<u32>,
    /// Of those, restarts after exits nobody saw (not counted against the retries).
    pub uncounted: Option<u32>,
    /// Why.
    pub reason: Option<String>,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the task (then deliver `Started` or `StartFailed`).
    Start,
    /// Stop the running task: SIGTERM, this grace, SIGKILL (then deliver `Stopped`).
    Stop {
        /// Grace in ms.
        grace_ms: u64,
    },
    /// Record and send this change.
    Report(Report),
    /// The supervisor is finished: nothing runs and nothing will.
    Finish,
}

/// Where the supervisor is.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Not running; starts when allowed (lease, secrets).
    Waiting,
    /// A start is under way.
    Starting,
    /// The task runs since this time.
    Running { since: u64 },
    /// Asked to stop, it runs on until `until` while proxies hear it left the catalog.
    Draining { since: u64, until: u64 },
    /// Restarts at this time.
    Backoff { until: u64 },
    /// A stop is under way; the allocation then ends in this state with this reason.
    Stopping { end: AllocState, reason: String },
    /// A stop is under way for a failed check (running since `since`); what follows is
    /// decided as for an exit, for this reason.
    Restarting { since: u64, why: String },
    /// Finished.
    Done,
}

/// One allocation's supervisor.
#[derive(Debug, Clone)]
pub struct Supervisor {
    cfg: Config,
    phase: Phase,
    restarts: u32,
    /// Of `restarts`, those after exits nobody saw ([`restart::decide`]'s `counted`).
    uncounted: u32,
    desired: Desired,
    stop_reason: String,
    lease: bool,
    secrets: Secrets,
    /// The last reason reported while waiting, so a wait is reported once.
    waiting_for: Option<&'static str>,
}

impl Supervisor {
    /// A supervisor for an allocation that has not run on this agent yet (or whose
    /// process is gone), after `restarts` restarts.
    pub fn new(cfg: Config, restarts: u32) -> Supervisor {
        Supervisor {
            cfg,
            phase: Phase::Waiting,
            restarts,
            uncounted: 0,
            desired: Desired::Run,
            stop_reason: String::new(),
            // No lease until told one ([`Event::Lease`]): a fenced task must not start
            // on the event that comes before the lease's in the same batch (an agent
            // whose lease had run out started one and stopped it at once).
            lease: false,
            secrets: Secrets::Absent,
            waiting_for: None,
        }
    }

    /// A supervisor for a process adopted from an earlier agent, running now. It keeps
    /// running until told the lease is gone, which the first batch of events says.
    pub fn adopted(cfg: Config, restarts: u32, now: u64) -> Supervisor {
        Supervisor {
            phase: Phase::Running { since: now },
            lease: true,
            ..Supervisor::new(cfg, restarts)
        }
    }

    /// Of the restarts so far, `n` followed exits nobody saw (as recorded locally).
    pub fn with_uncounted(mut self, n: u32) -> Supervisor {
        self.uncounted = n.min(self.restarts);
        self
    }

    /// True once nothing runs and nothing will.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// True while a process runs or is being started or stopped.
    pub fn has_process(&self) -> bool {
        matches!(
            self.phase,
            Phase::Starting
                | Phase::Running { .. }
                | Phase::Draining { .. }
                | Phase::Stopping { .. }
                | Phase::Restarting { .. }
        )
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Restarts so far that count against `max_restarts`.
    pub fn counted_restarts(&self) -> u32 {
        self.restarts - self.uncounted
    }

    /// When the supervisor wants a [`Event::Tick`] (ms since the epoch): the end of a
    /// backoff, or a time limit while running; `None` when only events move it.
    pub fn deadline(&self) -> Option<u64> {
        match self.phase {
            Phase::Backoff { until } | Phase::Draining { until, .. } => Some(until),
            Phase::Running { .. } => self.cfg.time_limit_end,
            _ => None,
        }
    }

    /// True while it waits for something only polling shows (the lease, the secrets).
    pub fn waiting(&self) -> bool {
        self.phase == Phase::Waiting
    }

    /// Feeds one event at `now` (ms since the epoch); returns what to do, in order.
    pub fn step(&mut self, event: Event, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Desired(d, why) => {
                if d == Desired::Stop && self.desired != Desired::Stop {
                    self.stop_reason = why;
                }
                self.desired = d;
            }
            Event::Lease(ok) => {
                self.lease = ok || crate::mutants::active("fenced-start-ignores-lease")
            }
            Event::Secrets(s) => self.secrets = s,
            Event::Started { pid } => {
                if self.phase == Phase::Starting {
                    self.phase = Phase::Running { since: now };
                    let note = if self.restarts == 0 {
                        "started".to_string()
                    } else {
                        format!("restarted ({})", self.restarts)
                    };
                    out.push(Action::Report(Report {
                        state: Some(AllocState::Running),
                        pid: Some(Some(pid)),
                        restarts: Some(self.restarts),
                        reason: Some(note),
                        ..Report::default()
                    }));
                }
            }
            Event::StartFailed(why) => {
                if self.phase == Phase::Starting {
                    // One report that names the cause: reports of an allocation are
                    // folded into one before they are sent, so a separate report of the
                    // cause would be replaced by the exit's before the server saw it.
                    self.phase = Phase::Running { since: now };
                    let what = format!("{why} (exit 127)");
                    self.exited(Exit::Code(127), Some(what), now, &mut out);
                }
            }
            Event::Exited(exit) => match &self.phase {
                Phase::Running { .. } => self.exited(exit, None, now, &mut out),
                // It ended while draining: the stop it was asked for, done.
                Phase::Draining { .. } => {
                    self.phase = Phase::Stopping {
                        end: AllocState::Stopped,
                        reason: self.stop_reason(),
                    };
                    self.stopped(Some(exit), &mut out);
                }
                Phase::Stopping { .. } => self.stopped(Some(exit), &mut out),
                Phase::Restarting { .. } => self.restart_unhealthy(Some(exit), now, &mut out),
                _ => {}
            },
            Event::Stopped(exit) => match self.phase {
                Phase::Stopping { .. } => self.stopped(exit, &mut out),
                Phase::Restarting { .. } => self.restart_unhealthy(exit, now, &mut out),
                _ => {}
            },
            Event::Unhealthy(why) => {
                if let Phase::Running { since } = self.phase {
                    self.phase = Phase::Restarting { since, why };
                    out.push(Action::Stop {
                        grace_ms: self.cfg.stop_grace_ms,
                    });
                }
            }
            Event::Tick => {}
        }
        self.advance(now, &mut out);
        out
    }

    /// After an exit of a running task: restart after a backoff, or finish. `what`
    /// says what happened when the exit alone does not (a start that failed).
    fn exited(&mut self, exit: Exit, what: Option<String>, now: u64, out: &mut Vec<Action>) {
        let what = what.unwrap_or_else(|| exit.describe());
        let ran_for = match self.phase {
            Phase::Running { since } => now.saturating_sub(since),
            _ => 0,
        };
        match restart::decide(&self.cfg.restart, self.counted_restarts(), exit, ran_for) {
            Decision::Restart { delay_ms, counted } => {
                // Every restart is on record (`restarts`: a rerun is never hidden); those
                // after an exit nobody saw do not use up the retries.
                self.restarts += 1;
                if !counted {
                    self.uncounted += 1;
                }
                self.phase = Phase::Backoff {
                    until: now.saturating_add(delay_ms),
                };
                self.waiting_for = None;
                out.push(Action::Report(Report {
                    state: Some(AllocState::Backoff),
                    pid: Some(None),
                    exit_code: Some(exit.as_code()),
                    restarts: Some(self.restarts),
                    uncounted: (!counted).then_some(self.uncounted),
                    reason: Some(format!(
                        "{}; restarting in {delay_ms}ms{}",
                        what,
                        if counted {
                            ""
                        } else {
                            " (not counted as a retry)"
                        }
                    )),
                }));
            }
            Decision::Finish(state) => self.finish(
                Report {
                    state: Some(state),
                    pid: Some(None),
                    exit_code: Some(exit.as_code()),
                    reason: Some(what),
                    ..Report::default()
                },
                out,
            ),
        }
    }

    /// The stop for a failed check finished: restart (or finish) as after an exit,
    /// for the check's reason.
    fn restart_unhealthy(&mut self, exit: Option<Exit>, now: u64, out: &mut Vec<Action>) {
        let Phase::Restarting { since, why } =
            std::mem::replace(&mut self.phase, Phase::Running { since: 0 })
        else {
            return;
        };
        self.phase = Phase::Running { since };
        self.exited(exit.unwrap_or(Exit::Unknown), Some(why), now, out);
    }

    /// A requested stop finished.
    fn stopped(&mut self, exit: Option<Exit>, out: &mut Vec<Action>) {
        let Phase::Stopping { end, reason } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return;
        };
        let code = exit.and_then(Exit::as_code);
        self.finish(
            Report {
                state: Some(end),
                pid: Some(None),
                exit_code: code.map(Some),
                reason: Some(reason),
                ..Report::default()
            },
            out,
        );
    }

    /// Ends without a process: in `state`, for `reason`.
    fn end(&mut self, state: AllocState, reason: String, out: &mut Vec<Action>) {
        self.finish(
            Report {
                state: Some(state),
                pid: Some(None),
                reason: Some(reason),
                ..Report::default()
            },
            out,
        );
    }

    fn finish(&mut self, report: Report, out: &mut Vec<Action>) {
        self.phase = Phase::Done;
        out.push(Action::Report(report));
        out.push(Action::Finish);
    }

    fn stop(&mut self, end: AllocState, reason: String, out: &mut Vec<Action>) {
        self.phase = Phase::Stopping { end, reason };
        out.push(Action::Stop {
            grace_ms: self.cfg.stop_grace_ms,
        });
    }

    fn stop_reason(&self) -> String {
        if self.stop_reason.is_empty() {
            "stopped on request".into()
        } else {
            self.stop_reason.clone()
        }
    }

    fn over_time(&self, now: u64) -> bool {
        self.cfg.time_limit_end.is_some_and(|end| now >= end)
    }

    fn time_limit_reason(&self) -> String {
        format!("time limit {} exceeded", self.cfg.time_limit_text)
    }

    /// Applies the rules to the current phase and inputs.
    fn advance(&mut self, now: u64, out: &mut Vec<Action>) {
        match self.phase.clone() {
            Phase::Draining { since, until } => {
                if self.cfg.fenced && !self.lease {
                    self.stop(AllocState::Stopped, FENCED.into(), out);
                } else if self.desired == Desired::Run {
                    self.phase = Phase::Running { since };
                    self.advance(now, out);
                } else if now >= until {
                    let why = self.stop_reason();
                    self.stop(AllocState::Stopped, why, out);
                }
            }
            Phase::Done | Phase::Stopping { .. } | Phase::Restarting { .. } | Phase::Starting => {}
            Phase::Running { since } => {
                let lease_lost = self.cfg.fenced && !self.lease;
                if self.desired == Desired::Stop && self.cfg.drain_ms > 0 && !lease_lost {
                    self.phase = Phase::Draining {
                        since,
                        until: now.saturating_add(self.cfg.drain_ms),
                    };
                } else if self.desired == Desired::Stop {
                    let why = self.stop_reason();
                    self.stop(AllocState::Stopped, why, out);
                } else if lease_lost {
                    self.stop(AllocState::Stopped, FENCED.into(), out);
                } else if self.over_time(now) {
                    let why = self.time_limit_reason();
                    self.stop(AllocState::Failed, why, out);
                }
            }
            Phase::Waiting | Phase::Backoff { .. } => {
                if self.desired == Desired::Stop {
                    let why = self.stop_reason();
                    self.end(AllocState::Stopped, why, out);
                    return;
                }
                if let Phase::Backoff { until } = self.phase
                    && now < until
                {
                    return;
                }
                self.phase = Phase::Waiting;
                if self.over_time(now) {
                    let why = self.time_limit_reason();
                    self.end(AllocState::Failed, why, out);
                    return;
                }
                if self.cfg.fenced && !self.lease {
                    // Silent: reporting would need the control plane it cannot reach.
                    self.waiting_for = Some("lease");
                    return;
                }
                if self.cfg.needs_secrets {
                    match self.secrets.clone() {
                        Secrets::Absent => {
                            if self.waiting_for != Some("secrets") {
                                self.waiting_for = Some("secrets");
                                out.push(Action::Report(Report {
                                    reason: Some("waiting for its secrets from a server".into()),
                                    ..Report::default()
                                }));
                            }
                            return;
                        }
                        Secrets::Error(why) => {
                            self.end(AllocState::Failed, why, out);
                            return;
                        }
                        Secrets::Ready => {}
                    }
                }
                self.waiting_for = None;
                self.phase = Phase::Starting;
                out.push(Action::Start);
            }
        }
    }
}

/// How long (ms) a supervisor whose task ended while its agent was away (an exit
/// nobody saw) waits to hear the control plane before it decides; `None`: until it
/// hears. Only the server may know that the run already counted (its report got through
/// before the agent died). A task restarted whatever its exit (`always`: services,
/// daemons) waits at most a lease, so that it does not stay down while the control
/// plane is out of reach. A task that runs to completion (jobs) waits until it hears:
/// running it again on a guess can run a completed instance twice (the simulator's
/// seeds 1007253, 1010547 and 1070937: the server was paused longer than a lease).
pub fn unseen_exit_wait(policy: &RestartPolicy, lease_ms: u64) -> Option<u64> {
    (policy.mode == crate::model::RestartMode::Always).then_some(lease_ms)
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
