use super::*;
use crate::model::{Kind, Spec};

const MIN: u64 = 60_000;
/// 2026-12-06 10:00:00 UTC.
const T0: u64 = 1_796_551_200_000;

fn job(extra: &str) -> JobSpec {
    let yaml = format!(
        "kind: Job\nname: backup\nschedule: \"*/5 * * * *\"\n{extra}task:\n  command: [\"true\"]\n"
    );
    match crate::manifest::parse_set(&[crate::manifest::Source {
        name: "j.yaml",
        text: &yaml,
    }]) {
        Ok(mut d) => match d.remove(0).spec {
            Spec::Job(j) => j,
            other => panic!("not a job: {other:?}"),
        },
        Err(e) => panic!("{e:?}"),
    }
}

fn r(name: &str) -> WorkloadRef {
    WorkloadRef::new(Kind::Job, name)
}

#[test]
fn a_due_run_starts_once_and_then_waits_for_the_next() {
    let j = job("");
    // Created at 10:01; at 10:05:00.2 the 10:05 run is due.
    let d = decide(&j, T0 + MIN, &[], T0 + 5 * MIN + 200).expect("decides");
    assert_eq!(d.start, Some(T0 + 5 * MIN));
    assert!(!d.late);
    assert_eq!(d.next, Some(T0 + 10 * MIN));
    // Once the run exists, nothing more until 10:10.
    let name = r(&run_name("backup", T0 + 5 * MIN, false));
    let runs = [Run {
        job: &name,
        due: T0 + 5 * MIN,
        manual: false,
        ended_at: None,
    }];
    let d = decide(&j, T0 + MIN, &runs, T0 + 7 * MIN).expect("decides");
    assert_eq!(d.start, None);
    assert_eq!(d.skipped, None);
    // Before the first due time: nothing.
    let d = decide(&j, T0 + MIN, &[], T0 + 4 * MIN).expect("decides");
    assert_eq!((d.start, d.next), (None, Some(T0 + 5 * MIN)));
}

#[test]
fn after_downtime_run_once_runs_the_latest_missed_one_late_and_skip_runs_none() {
    let name = r(&run_name("backup", T0, false));
    let runs = [Run {
        job: &name,
        due: T0,
        manual: false,
        ended_at: Some(T0 + 1000),
    }];
    // Down from 10:01 to 10:33: 10:05 … 10:30 were missed.
    let now = T0 + 33 * MIN;
    let d = decide(&job(""), 0, &runs, now).expect("decides");
    assert_eq!(d.start, Some(T0 + 30 * MIN), "the latest, once");
    assert!(d.late);
    let d = decide(&job("missed: skip\n"), 0, &runs, now).expect("decides");
    assert_eq!(d.start, None);
    assert!(
        d.skipped.as_deref().is_some_and(|s| s.contains("missed")),
        "{d:?}"
    );
    // Within a minute of the due time it is not missed (a leader change).
    let d = decide(&job("missed: skip\n"), 0, &runs, T0 + 30 * MIN + 20_000).expect("decides");
    assert_eq!(d.start, Some(T0 + 30 * MIN));
    assert!(!d.late);
}

#[test]
fn concurrency_forbid_skips_allow_overlaps_replace_stops_the_running_one() {
    let name = r(&run_name("backup", T0, false));
    let running = [Run {
        job: &name,
        due: T0,
        manual: false,
        ended_at: None,
    }];
    let now = T0 + 5 * MIN + 100;
    let d = decide(&job("concurrency: forbid\n"), 0, &running, now).expect("decides");
    assert_eq!(d.start, None);
    assert!(
        d.skipped.as_deref().is_some_and(|s| s.contains("forbid")),
        "{d:?}"
    );
    // It stays skipped once the earlier run has ended after the due time.
    let ended_late = [Run {
        ended_at: Some(T0 + 5 * MIN + 50),
        ..running[0].clone()
    }];
    let d = decide(&job("concurrency: forbid\n"), 0, &ended_late, now + 1000).expect("decides");
    assert_eq!(d.start, None);
    // An earlier run that ended before the due time does not stop it.
    let ended = [Run {
        ended_at: Some(T0 + MIN),
        ..running[0].clone()
    }];
    let d = decide(&job("concurrency: forbid\n"), 0, &ended, now).expect("decides");
    assert_eq!(d.start, Some(T0 + 5 * MIN));
    let d = decide(&job(""), 0, &running, now).expect("decides");
    assert_eq!((d.start, d.replace.len()), (Some(T0 + 5 * MIN), 0));
    let d = decide(&job("concurrency: replace\n"), 0, &running, now).expect("decides");
    assert_eq!(d.start, Some(T0 + 5 * MIN));
    assert_eq!(d.replace, vec![name.clone()]);
}

#[test]
fn history_keeps_the_newest_finished_runs_and_always_the_newest_scheduled_one() {
    let names: Vec<WorkloadRef> = (0..6)
        .map(|i| r(&run_name("backup", T0 + i * 5 * MIN, false)))
        .collect();
    let manual = r(&run_name("backup", T0 + 26 * MIN, true));
    let mut runs: Vec<Run<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Run {
            job: n,
            due: T0 + i as u64 * 5 * MIN,
            manual: false,
            ended_at: Some(T0 + i as u64 * 5 * MIN + 1000),
        })
        .collect();
    // The newest scheduled run (10:25) still runs; a manual run at 10:26 has finished.
    runs[5].ended_at = None;
    runs.push(Run {
        job: &manual,
        due: T0 + 26 * MIN,
        manual: true,
        ended_at: Some(T0 + 27 * MIN),
    });
    // Between due times nothing is forgotten (only a starting run cleans up).
    let d = decide(&job("history: 2\n"), 0, &runs, T0 + 28 * MIN).expect("decides");
    assert_eq!((d.start, d.forget.len()), (None, 0));
    let d = decide(&job("history: 2\n"), 0, &runs, T0 + 30 * MIN).expect("decides");
    assert_eq!(d.start, Some(T0 + 30 * MIN));
    // Finished, newest first: manual 10:26, 10:20, 10:15, 10:10, 10:05, 10:00; two kept.
    assert_eq!(
        d.forget,
        vec![
            names[3].clone(),
            names[2].clone(),
            names[1].clone(),
            names[0].clone()
        ]
    );
    // With every run finished and history 1, the newest scheduled run is kept even
    // though a manual run is newer.
    runs[5].ended_at = Some(T0 + 25 * MIN + 1000);
    let d = decide(&job("history: 1\n"), 0, &runs, T0 + 30 * MIN).expect("decides");
    assert!(!d.forget.contains(&names[5]), "{:?}", d.forget);
    assert!(!d.forget.contains(&manual), "{:?}", d.forget);
    assert_eq!(d.forget.len(), 5);
}

#[test]
fn a_run_is_the_job_without_its_schedule_named_for_its_due_time() {
    let j = job("time_zone: Europe/Berlin\nconcurrency: forbid\nhistory: 5\n");
    let run = run_spec(&j, T0 + 5 * MIN, false);
    assert_eq!(run.name, "backup-1796551500");
    assert_eq!(
        (run.schedule, run.time_zone, run.history),
        (None, None, None)
    );
    assert_eq!(run.concurrency, Concurrency::Allow);
    assert_eq!(run.task, j.task);
    assert_eq!(run_spec(&j, T0, true).name, "backup-run-1796551200");
}

#[test]
fn a_schedule_every_second_after_a_day_down_is_decided_quickly() {
    let j = job("");
    let j = JobSpec {
        schedule: Some("* * * * * *".into()),
        ..j
    };
    let started = std::time::Instant::now();
    let d = decide(&j, T0, &[], T0 + 24 * 3600 * 1000 + 500).expect("decides");
    assert_eq!(d.start, Some(T0 + 24 * 3600 * 1000));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_suspended_job_starts_nothing_and_its_missed_run_follows_missed_once_resumed() {
    let j = job("suspend: true\n");
    // Due at T0 + 5 min; suspended: nothing starts, and it says why.
    let d = decide(&j, T0, &[], T0 + 5 * MIN).expect("decides");
    assert_eq!(d.start, None);
    assert!(
        d.skipped
            .as_deref()
            .is_some_and(|s| s.contains("suspended")),
        "{d:?}"
    );
    assert_eq!(d.next, Some(T0 + 10 * MIN));
    // Resumed 2 minutes after a due time: run_once starts it, late; skip does not.
    let resumed = JobSpec {
        suspend: false,
        ..j.clone()
    };
    let d = decide(&resumed, T0, &[], T0 + 12 * MIN).expect("decides");
    assert_eq!((d.start, d.late), (Some(T0 + 10 * MIN), true));
    let skip = JobSpec {
        missed: crate::model::Missed::Skip,
        ..resumed
    };
    assert_eq!(
        decide(&skip, T0, &[], T0 + 12 * MIN)
            .expect("decides")
            .start,
        None
    );
}
