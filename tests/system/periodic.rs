//! Periodic jobs against a real cluster: a run per due time, runs by hand, the
//! history limit, `get`/`describe`, and deleting a job with its runs.

use std::time::Duration;

use crate::common::*;

/// The runs of `job` the trace recorded, in order: the seconds in `NAME-<secs>`
/// (scheduled) and the names of the runs by hand.
fn traced(trace: &std::path::Path, job: &str) -> (Vec<u64>, Vec<String>) {
    let text = std::fs::read_to_string(trace).expect("trace");
    let (mut scheduled, mut manual) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let name = line.trim();
        let rest = name
            .strip_prefix(&format!("{job}-"))
            .unwrap_or_else(|| panic!("not a run of {job}: {line:?}"));
        match rest.strip_prefix("run-") {
            Some(_) => manual.push(name.to_string()),
            None => scheduled.push(rest.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))),
        }
    }
    (scheduled, manual)
}

/// Names of the jobs the cluster holds.
fn job_names(c: &Cluster) -> Vec<String> {
    c.json(&["get", "jobs"])
        .as_array()
        .expect("a list of jobs")
        .iter()
        .map(|j| {
            j["workload"]["spec"]["name"]
                .as_str()
                .expect("a name")
                .to_string()
        })
        .collect()
}

#[test]
fn a_periodic_job_runs_once_per_due_time_by_hand_too_and_goes_with_its_runs() {
    let c = Cluster::up(&[]);
    let trace = c.trace_file("trace");
    let yaml = format!(
        "kind: Job\nname: tick\nschedule: \"*/2 * * * * *\"\nhistory: 2\ntask:\n  command: [\"/bin/sh\", \"-c\", \"echo $MOTLEY_WORKLOAD >> {t}\"]\n  resources: {{ cpu: 10m, memory: 8Mi }}\n",
        t = trace.display()
    );
    let out = c.apply_yaml("tick.yaml", &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A run every two seconds, each due time once.
    let (scheduled, _) = wait_for("five runs", Duration::from_secs(60), || {
        let (s, m) = traced(&trace, "tick");
        (s.len() >= 5).then_some((s, m))
    });
    assert!(scheduled.iter().all(|s| s % 2 == 0), "{scheduled:?}");
    assert!(
        scheduled.windows(2).all(|w| w[0] < w[1]),
        "each due time once, in order: {scheduled:?}"
    );

    // The job itself never runs; it shows its schedule and its runs.
    let j = c.json(&["get", "jobs", "tick"]);
    assert_eq!(j[0]["status"]["phase"], "scheduled", "{j}");
    let p = &j[0]["periodic"];
    assert_eq!(p["schedule"], "*/2 * * * * *", "{p}");
    assert_eq!(p["time_zone"], "UTC", "{p}");
    let (next, last) = (
        p["next_run"].as_u64().expect("a next run"),
        p["last_due"].as_u64().expect("a last run"),
    );
    assert!(next > last && (next - last) % 2000 == 0, "{p}");
    let table = c.ok(&["get", "jobs"]);
    assert!(
        table.contains("SCHEDULE") && table.contains("*/2 * * * * *"),
        "{table}"
    );
    let described = c.ok(&["describe", "job", "tick"]);
    assert!(
        described.contains("Schedule:    */2 * * * * * (UTC)"),
        "{described}"
    );
    assert!(described.contains("Last run:    tick-"), "{described}");

    // History 2: finished runs beyond the two newest are deleted as new ones start.
    wait_for(
        "the history to be kept to 2",
        Duration::from_secs(30),
        || {
            let runs = job_names(&c)
                .into_iter()
                .filter(|n| n.starts_with("tick-"))
                .count();
            let (s, _) = traced(&trace, "tick");
            (s.len() >= 7 && runs <= 3).then_some(())
        },
    );

    // By hand: a run now, beside the schedule.
    let out = c.ok(&["job", "run", "tick"]);
    assert!(out.contains("job/tick-run-"), "{out}");
    wait_for("the run by hand to run", Duration::from_secs(30), || {
        let (_, m) = traced(&trace, "tick");
        (m.len() == 1).then_some(())
    });
    // Only a periodic job is run by hand.
    assert!(
        c.apply_yaml(
            "once.yaml",
            "kind: Job\nname: once\ntask:\n  command: [\"true\"]\n  resources: { cpu: 10m, memory: 8Mi }\n"
        )
        .status
        .success()
    );
    let out = c.cli(&["job", "run", "once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not periodic"),
        "{err}"
    );

    // Deleting the job deletes its runs, and nothing runs after.
    c.ok(&["delete", "job", "tick"]);
    let names = job_names(&c);
    assert!(!names.iter().any(|n| n.starts_with("tick")), "{names:?}");
    let (before, _) = traced(&trace, "tick");
    std::thread::sleep(Duration::from_secs(5));
    let (after, _) = traced(&trace, "tick");
    // A run that had already started may still write its line.
    assert!(after.len() <= before.len() + 1, "{before:?} then {after:?}");
    let (scheduled, _) = traced(&trace, "tick");
    let mut unique = scheduled.clone();
    unique.dedup();
    assert_eq!(unique, scheduled, "no due time ran twice");
}
