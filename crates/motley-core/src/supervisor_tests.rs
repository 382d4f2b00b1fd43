use super::*;
use crate::model::{Backoff, RestartMode};
use crate::quantity::Duration as Q;

fn policy(mode: RestartMode, max: Option<u32>) -> RestartPolicy {
    RestartPolicy {
        mode,
        max_restarts: max,
        backoff: Backoff {
            initial: Q(1_000),
            max: Q(8_000),
        },
    }
}

fn cfg() -> Config {
    Config {
        fenced: false,
        needs_secrets: false,
        time_limit_end: None,
        time_limit_text: String::new(),
        stop_grace_ms: 5_000,
        restart: policy(RestartMode::Always, None),
        drain_ms: 0,
    }
}

fn state_of(actions: &[Action]) -> Option<AllocState> {
    actions.iter().rev().find_map(|a| match a {
        Action::Report(r) => r.state,
        _ => None,
    })
}

fn reason_of(actions: &[Action]) -> Option<String> {
    actions.iter().rev().find_map(|a| match a {
        Action::Report(r) => r.reason.clone(),
        _ => None,
    })
}

#[test]
fn starts_runs_and_restarts_through_backoff() {
    let mut s = Supervisor::new(cfg(), 0);
    assert_eq!(s.step(Event::Tick, 0), vec![Action::Start]);
    let a = s.step(Event::Started { pid: 42 }, 10);
    assert_eq!(state_of(&a), Some(AllocState::Running));
    // It crashes: backoff, never "running" while it waits, with the exit and the delay.
    let a = s.step(Event::Exited(Exit::Code(3)), 500);
    assert_eq!(state_of(&a), Some(AllocState::Backoff));
    assert_eq!(
        reason_of(&a).as_deref(),
        Some("exited with code 3; restarting in 1000ms")
    );
    assert!(
        matches!(&a[0], Action::Report(r) if r.pid == Some(None) && r.exit_code == Some(Some(3)) && r.restarts == Some(1))
    );
    assert_eq!(s.deadline(), Some(1_500));
    assert!(
        s.step(Event::Tick, 1_499).is_empty(),
        "not before the delay"
    );
    assert_eq!(s.step(Event::Tick, 1_500), vec![Action::Start]);
    let a = s.step(Event::Started { pid: 43 }, 1_510);
    assert_eq!(reason_of(&a).as_deref(), Some("restarted (1)"));
    // The second crash waits twice as long.
    s.step(Event::Exited(Exit::Signal(9)), 2_000);
    assert_eq!(s.deadline(), Some(4_000));
}

#[test]
fn finishes_by_the_policy() {
    let mut c = cfg();
    c.restart = policy(RestartMode::OnFailure, Some(1));
    let mut s = Supervisor::new(c.clone(), 0);
    s.step(Event::Tick, 0);
    s.step(Event::Started { pid: 1 }, 0);
    let a = s.step(Event::Exited(Exit::Code(0)), 10);
    assert_eq!(state_of(&a), Some(AllocState::Complete));
    assert_eq!(a.last(), Some(&Action::Finish));
    assert!(s.is_done());
    // One restart allowed, then failed.
    let mut s = Supervisor::new(c, 0);
    s.step(Event::Tick, 0);
    s.step(Event::Started { pid: 1 }, 0);
    s.step(Event::Exited(Exit::Code(1)), 10);
    assert_eq!(s.step(Event::Tick, 1_010), vec![Action::Start]);
    s.step(Event::Started { pid: 2 }, 1_010);
    let a = s.step(Event::Exited(Exit::Code(1)), 1_020);
    assert_eq!(state_of(&a), Some(AllocState::Failed));
    assert!(s.is_done());
}

#[test]
fn a_start_that_fails_counts_as_exit_127() {
    let mut c = cfg();
    c.restart = policy(RestartMode::Never, None);
    let mut s = Supervisor::new(c, 0);
    s.step(Event::Tick, 0);
    let a = s.step(Event::StartFailed("no such program: nope".into()), 5);
    assert_eq!(state_of(&a), Some(AllocState::Failed));
    // One report, with the cause in its reason (a separate report of the cause would be
    // folded away by the next before it is sent).
    let reports: Vec<&Report> = a
        .iter()
        .filter_map(|x| match x {
            Action::Report(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "{a:?}");
    assert_eq!(reports[0].exit_code, Some(Some(127)));
    assert_eq!(
        reports[0].reason.as_deref(),
        Some("no such program: nope (exit 127)")
    );
}

#[test]
fn a_fenced_task_starts_only_with_a_lease_and_stops_when_it_runs_out() {
    let mut c = cfg();
    c.fenced = true;
    let mut s = Supervisor::new(c, 0);
    assert!(
        s.step(Event::Lease(false), 0).is_empty(),
        "no start without a lease, and nothing reported"
    );
    assert!(s.step(Event::Tick, 100).is_empty());
    assert_eq!(s.step(Event::Lease(true), 200), vec![Action::Start]);
    s.step(Event::Started { pid: 7 }, 210);
    let a = s.step(Event::Lease(false), 5_000);
    assert_eq!(a, vec![Action::Stop { grace_ms: 5_000 }]);
    // The lease coming back while it stops does not cancel the stop.
    assert!(s.step(Event::Lease(true), 5_010).is_empty());
    let a = s.step(Event::Stopped(Some(Exit::Signal(15))), 5_100);
    assert_eq!(state_of(&a), Some(AllocState::Stopped));
    assert!(reason_of(&a).is_some_and(|r| r.starts_with("fenced")));
    assert!(s.is_done());
}

#[test]
fn a_fenced_task_does_not_restart_without_a_lease() {
    let mut c = cfg();
    c.fenced = true;
    let mut s = Supervisor::new(c, 0);
    s.step(Event::Tick, 0);
    s.step(Event::Started { pid: 7 }, 0);
    s.step(Event::Exited(Exit::Code(1)), 100);
    s.step(Event::Lease(false), 200);
    assert!(
        s.step(Event::Tick, 5_000).is_empty(),
        "backoff over, no lease"
    );
    assert!(!s.has_process());
    assert_eq!(s.step(Event::Lease(true), 6_000), vec![Action::Start]);
}

#[test]
fn an_adopted_process_is_supervised_like_a_started_one() {
    let mut s = Supervisor::adopted(cfg(), 2, 1_000);
    assert!(s.has_process());
    let a = s.step(Event::Exited(Exit::Unknown), 2_000);
    assert_eq!(state_of(&a), Some(AllocState::Backoff));
    assert_eq!(s.restarts(), 3);
}

#[test]
fn an_exit_nobody_saw_restarts_a_job_without_using_a_retry() {
    // A job with no retries whose process ended while the agent was away (a power cut).
    let mut c = cfg();
    c.restart = policy(RestartMode::OnFailure, Some(0));
    let mut s = Supervisor::adopted(c.clone(), 0, 1_000);
    let a = s.step(Event::Exited(Exit::Unknown), 2_000);
    assert_eq!(state_of(&a), Some(AllocState::Backoff));
    assert_eq!(
        reason_of(&a).as_deref(),
        Some(
            "exited (status unknown: adopted after an agent restart); restarting in 1000ms (not counted as a retry)"
        )
    );
    // On record as a restart (a rerun is never hidden), but not against the retries.
    assert_eq!((s.restarts(), s.counted_restarts()), (1, 0));
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Report(r) if r.uncounted == Some(1)))
    );
    assert_eq!(s.step(Event::Tick, 3_000), vec![Action::Start]);
    // Its own failure still ends it.
    s.step(Event::Started { pid: 7 }, 3_000);
    let a = s.step(Event::Exited(Exit::Code(1)), 4_000);
    assert_eq!(state_of(&a), Some(AllocState::Failed));
    // After an agent restart the recorded count carries over.
    let mut c1 = c.clone();
    c1.restart = policy(RestartMode::OnFailure, Some(1));
    let mut s = Supervisor::adopted(c1, 3, 1_000).with_uncounted(3);
    let a = s.step(Event::Exited(Exit::Code(1)), 2_000);
    assert_eq!(state_of(&a), Some(AllocState::Backoff), "one retry left");
    assert_eq!(s.counted_restarts(), 1);
}

#[test]
fn secrets_are_waited_for_once_and_an_error_fails() {
    let mut c = cfg();
    c.needs_secrets = true;
    let mut s = Supervisor::new(c.clone(), 0);
    let a = s.step(Event::Tick, 0);
    assert_eq!(
        reason_of(&a).as_deref(),
        Some("waiting for its secrets from a server")
    );
    assert!(s.step(Event::Tick, 100).is_empty(), "reported once");
    assert_eq!(
        s.step(Event::Secrets(Secrets::Ready), 200),
        vec![Action::Start]
    );
    let mut s = Supervisor::new(c, 0);
    let a = s.step(Event::Secrets(Secrets::Error("key k missing".into())), 0);
    assert_eq!(state_of(&a), Some(AllocState::Failed));
    assert_eq!(reason_of(&a).as_deref(), Some("key k missing"));
    assert!(s.is_done());
}

#[test]
fn time_limits_count_from_creation() {
    let mut c = cfg();
    c.time_limit_end = Some(10_000);
    c.time_limit_text = "10s".into();
    let mut s = Supervisor::new(c.clone(), 0);
    s.step(Event::Tick, 0);
    s.step(Event::Started { pid: 1 }, 0);
    assert_eq!(s.deadline(), Some(10_000));
    assert!(s.step(Event::Tick, 9_999).is_empty());
    assert_eq!(
        s.step(Event::Tick, 10_000),
        vec![Action::Stop { grace_ms: 5_000 }]
    );
    let a = s.step(Event::Stopped(Some(Exit::Signal(15))), 10_100);
    assert_eq!(state_of(&a), Some(AllocState::Failed));
    assert_eq!(reason_of(&a).as_deref(), Some("time limit 10s exceeded"));
    // Already past it: not started at all.
    let mut s = Supervisor::new(c, 0);
    let a = s.step(Event::Tick, 20_000);
    assert!(!a.contains(&Action::Start));
    assert_eq!(state_of(&a), Some(AllocState::Failed));
}

#[test]
fn a_stop_request_wins_in_every_phase() {
    let stop = || Event::Desired(Desired::Stop, "deleted".into());
    // Waiting.
    let mut c = cfg();
    c.needs_secrets = true;
    let mut s = Supervisor::new(c, 0);
    s.step(Event::Tick, 0);
    let a = s.step(stop(), 1);
    assert_eq!(state_of(&a), Some(AllocState::Stopped));
    assert_eq!(a.last(), Some(&Action::Finish));
    // Starting: the stop follows the start.
    let mut s = Supervisor::new(cfg(), 0);
    s.step(Event::Tick, 0);
    assert!(s.step(stop(), 1).is_empty());
    let a = s.step(Event::Started { pid: 9 }, 2);
    assert_eq!(a.last(), Some(&Action::Stop { grace_ms: 5_000 }));
    let a = s.step(Event::Exited(Exit::Signal(15)), 3);
    assert_eq!(reason_of(&a).as_deref(), Some("deleted"));
    assert!(matches!(&a[0], Action::Report(r) if r.exit_code == Some(Some(-15))));
    // Backoff.
    let mut s = Supervisor::new(cfg(), 0);
    s.step(Event::Tick, 0);
    s.step(Event::Started { pid: 1 }, 0);
    s.step(Event::Exited(Exit::Code(1)), 10);
    let a = s.step(stop(), 20);
    assert_eq!(state_of(&a), Some(AllocState::Stopped));
    assert!(s.is_done());
    // Nothing happens after the end.
    assert!(s.step(Event::Tick, 100_000).is_empty());
    assert!(s.step(Event::Started { pid: 5 }, 100_001).is_empty());
}

proptest::proptest! {
    /// Under any sequence of events, a fenced supervisor never asks to start while it
    /// knows the lease has run out, never starts twice without an exit between, and
    /// reports Running only after a start.
    #[test]
    fn fenced_starts_only_with_a_lease(events in proptest::collection::vec(0u8..9, 0..60)) {
        let mut c = cfg();
        c.fenced = true;
        c.needs_secrets = true;
        let mut s = Supervisor::new(c, 0);
        let mut lease = true;
        let mut process = false;
        let mut starting = false;
        let mut now = 0;
        for e in events {
            now += 700;
            let ev = match e {
                0 => { lease = false; Event::Lease(false) }
                1 => { lease = true; Event::Lease(true) }
                2 => Event::Secrets(Secrets::Ready),
                3 if starting => Event::Started { pid: 1 },
                4 if starting => Event::StartFailed("x".into()),
                5 if process => Event::Exited(Exit::Code(1)),
                6 => Event::Desired(Desired::Stop, "stop".into()),
                7 if process => Event::Stopped(Some(Exit::Signal(15))),
                _ => Event::Tick,
            };
            match &ev {
                Event::Started { .. } => { starting = false; process = true; }
                Event::StartFailed(_) => starting = false,
                Event::Exited(_) | Event::Stopped(_) => process = false,
                _ => {}
            }
            for a in s.step(ev, now) {
                match a {
                    Action::Start => {
                        proptest::prop_assert!(lease, "start without a lease");
                        proptest::prop_assert!(!process && !starting, "a second copy");
                        starting = true;
                    }
                    Action::Report(r) if r.state == Some(AllocState::Running) => {
                        proptest::prop_assert!(process);
                    }
                    _ => {}
                }
            }
            if process && !lease {
                // The supervisor has asked to stop (or is stopping): it has no running
                // phase left in which the lease is out.
                let running = matches!(s.phase, Phase::Running { .. });
                proptest::prop_assert!(!running, "runs on without a lease");
            }
        }
    }
}

#[test]
fn an_endpoint_drains_before_it_stops_unless_its_lease_is_gone() {
    let mut c = cfg();
    c.drain_ms = 1_000;
    let running = |c: &Config| {
        let mut s = Supervisor::new(c.clone(), 0);
        // A fenced one starts only once told it holds a lease.
        s.step(Event::Lease(true), 0);
        s.step(Event::Tick, 0);
        s.step(Event::Started { pid: 7 }, 10);
        s
    };
    // Asked to stop: it runs on for the drain (no stop, no report), then stops.
    let mut s = running(&c);
    assert!(
        s.step(Event::Desired(Desired::Stop, "scaled down".into()), 100)
            .is_empty()
    );
    assert!(s.has_process());
    assert_eq!(s.deadline(), Some(1_100));
    assert!(
        s.step(Event::Tick, 1_099).is_empty(),
        "not before the drain ends"
    );
    assert_eq!(
        s.step(Event::Tick, 1_100),
        vec![Action::Stop { grace_ms: 5_000 }]
    );
    let a = s.step(Event::Stopped(Some(Exit::Signal(15))), 1_200);
    assert_eq!(state_of(&a), Some(AllocState::Stopped));
    assert_eq!(reason_of(&a).as_deref(), Some("scaled down"));
    // Asked to run again while draining: it runs on, and is never stopped.
    let mut s = running(&c);
    s.step(Event::Desired(Desired::Stop, "scaled down".into()), 100);
    assert!(
        s.step(Event::Desired(Desired::Run, String::new()), 500)
            .is_empty()
    );
    assert!(s.step(Event::Tick, 5_000).is_empty());
    assert_eq!(s.deadline(), None);
    // It exits by itself while draining: stopped, as asked, not restarted.
    let mut s = running(&c);
    s.step(Event::Desired(Desired::Stop, "deleted".into()), 100);
    let a = s.step(Event::Exited(Exit::Code(0)), 300);
    assert_eq!(state_of(&a), Some(AllocState::Stopped));
    assert_eq!(a.last(), Some(&Action::Finish));
    // Fenced: the lease runs out while draining: stopped at once.
    c.fenced = true;
    let mut s = running(&c);
    s.step(Event::Desired(Desired::Stop, "deleted".into()), 100);
    assert_eq!(
        s.step(Event::Lease(false), 200),
        vec![Action::Stop { grace_ms: 5_000 }]
    );
    // Stop asked together with a lost lease (the lease first): no drain either.
    let mut s = running(&c);
    assert_eq!(
        s.step(Event::Lease(false), 50),
        vec![Action::Stop { grace_ms: 5_000 }]
    );
    let a = s.step(Event::Desired(Desired::Stop, "deleted".into()), 60);
    assert!(a.is_empty(), "the stop is under way already: {a:?}");
    assert_eq!(s.deadline(), None);
    // Without a drain (no service port) a stop is at once.
    let mut s = running(&cfg());
    assert_eq!(
        s.step(Event::Desired(Desired::Stop, "deleted".into()), 100),
        vec![Action::Stop { grace_ms: 5_000 }]
    );
}

#[test]
fn an_unseen_exit_of_run_to_completion_work_waits_for_the_control_plane() {
    use crate::model::{Backoff, RestartMode};
    let policy = |mode| RestartPolicy {
        mode,
        max_restarts: None,
        backoff: Backoff::default(),
    };
    assert_eq!(
        unseen_exit_wait(&policy(RestartMode::Always), 5000),
        Some(5000)
    );
    assert_eq!(
        unseen_exit_wait(&policy(RestartMode::OnFailure), 5000),
        None
    );
    assert_eq!(unseen_exit_wait(&policy(RestartMode::Never), 5000), None);
}

/// The agent gives a supervisor its inputs in one batch, the wish to run before the
/// lease: a fresh fenced supervisor holds no lease until told, so it never starts on
/// the first event and stops on the second (an agent whose lease had run out did).
#[test]
fn a_fresh_fenced_supervisor_starts_only_once_told_it_holds_a_lease() {
    let mut c = cfg();
    c.fenced = true;
    let mut s = Supervisor::new(c.clone(), 0);
    assert!(
        s.step(Event::Desired(Desired::Run, String::new()), 0)
            .is_empty()
    );
    assert!(s.step(Event::Lease(false), 0).is_empty());
    assert!(s.step(Event::Tick, 0).is_empty());
    assert_eq!(s.step(Event::Lease(true), 100), vec![Action::Start]);
    // Not fenced: the lease is not asked about.
    let mut free = Supervisor::new(cfg(), 0);
    assert_eq!(
        free.step(Event::Desired(Desired::Run, String::new()), 0),
        vec![Action::Start]
    );
    // Adopted while running: it runs on until told the lease is gone.
    let mut adopted = Supervisor::adopted(c, 0, 0);
    assert!(
        adopted
            .step(Event::Desired(Desired::Run, String::new()), 0)
            .is_empty()
    );
    assert_eq!(
        adopted.step(Event::Lease(false), 10),
        vec![Action::Stop { grace_ms: 5_000 }]
    );
}

/// A failed check restarts the replica through a stop, and the restart's one report
/// names the check, not the SIGTERM that ended it (the check's own report is folded
/// away when both go in one batch: CI saw only "killed by signal 15; restarting").
#[test]
fn a_failed_check_restarts_with_the_check_as_its_reason() {
    let mut s = Supervisor::new(cfg(), 0);
    s.step(Event::Tick, 0);
    s.step(Event::Started { pid: 42 }, 10);
    let why = "unhealthy: exited with 1 (2 checks in a row)".to_string();
    assert_eq!(
        s.step(Event::Unhealthy(why.clone()), 1_000),
        vec![Action::Stop { grace_ms: 5_000 }]
    );
    assert!(s.has_process(), "still stopping");
    // A second verdict while it stops asks for nothing more.
    assert!(s.step(Event::Unhealthy(why.clone()), 1_100).is_empty());
    let a = s.step(Event::Stopped(Some(Exit::Signal(15))), 1_200);
    assert_eq!(state_of(&a), Some(AllocState::Backoff));
    assert_eq!(
        reason_of(&a).as_deref(),
        Some("unhealthy: exited with 1 (2 checks in a row); restarting in 1000ms")
    );
    assert!(
        matches!(&a[0], Action::Report(r) if r.exit_code == Some(Some(-15)) && r.restarts == Some(1))
    );
    assert_eq!(s.step(Event::Tick, 2_200), vec![Action::Start]);
    // Only a running replica is restarted for its check: not one waiting to start.
    let mut waiting = Supervisor::new(cfg(), 0);
    assert!(waiting.step(Event::Unhealthy(why.clone()), 0) == vec![Action::Start]);
    assert!(waiting.step(Event::Unhealthy(why), 1).is_empty());
}

/// Asked to stop while a failed check's stop is under way: it ends stopped, and does
/// not start again.
#[test]
fn a_stop_during_a_checks_restart_ends_it() {
    let mut s = Supervisor::new(cfg(), 0);
    s.step(Event::Tick, 0);
    s.step(Event::Started { pid: 42 }, 10);
    s.step(
        Event::Unhealthy("unhealthy: x (2 checks in a row)".into()),
        1_000,
    );
    assert!(
        s.step(Event::Desired(Desired::Stop, "deleted".into()), 1_050)
            .is_empty()
    );
    let a = s.step(Event::Stopped(Some(Exit::Signal(15))), 1_100);
    assert_eq!(state_of(&a), Some(AllocState::Stopped));
    assert_eq!(reason_of(&a).as_deref(), Some("deleted"));
    assert_eq!(a.last(), Some(&Action::Finish));
}
