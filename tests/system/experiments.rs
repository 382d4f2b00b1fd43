//! Experiments carried out (issue 24) on a server and four agents, each in its own
//! network namespace: power-off, a partition from the server, packet loss and a kill
//! run on schedule; every fault is undone (by its agent's own deadline where the
//! server cannot reach it, and at an agent's restart when it was killed mid-fault);
//! the report's detection and replacement times match what the test saw by itself.

use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
use crate::netns::Lab;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether the fault table exists in a host's namespace.
fn fault_table(lab: &Lab, host: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.by_name(host).ns,
            "nft",
            "list",
            "table",
            "inet",
            "motley_chaos",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn write(lab: &Lab, name: &str, text: &str) -> String {
    let p = lab.dir.path().join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// The report as JSON; a failed command or non-JSON output fails the test.
fn report(lab: &Lab, name: &str) -> serde_json::Value {
    let out = lab.cli(&["experiment", "report", name, "-o", "json"]);
    assert!(out.status.success(), "experiment report: {out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("experiment report printed no JSON ({e}): {out:?}"))
}

fn ended(r: &serde_json::Value) -> bool {
    r["phase"] == "finished" || r["phase"] == "aborted"
}

/// When the history says fault `i` began (ms since the epoch).
fn began(r: &serde_json::Value, i: u64) -> u64 {
    r["history"]
        .as_array()
        .and_then(|h| {
            h.iter()
                .find(|x| x["record"] == "fault_started" && x["fault"] == i)
        })
        .and_then(|x| x["at"].as_u64())
        .unwrap_or_else(|| panic!("fault {i} never began: {r}"))
}

/// What the test saw by itself: when n2 first was not ready, when a replacement first
/// ran on n1 or n4, whether n3's and n4's rules tables ever existed.
type Seen = (Option<u64>, Option<u64>, bool, bool);

fn node_ready(lab: &Lab, name: &str) -> bool {
    lab.node_state(name) == "ready"
}

#[test]
fn an_experiment_runs_its_faults_undoes_every_one_and_reports_what_happened() {
    let mut lab = Lab::new();
    lab.server();
    let server_started = std::time::Instant::now();
    for n in ["n1", "n2", "n3", "n4"] {
        lab.agent(n);
    }
    let marker = format!("78{}", free_port());
    lab.apply(&format!(
        "kind: Service\nname: web\nreplicas: 4\nslo: {{ availability: 99% }}\ntask:\n  command: [sleep, \"{marker}\"]\n  resources: {{ cpu: 10m, memory: 8Mi }}\n  stop_grace: 1s\n---\nkind: Service\nname: db\nreplicas: 1\ntask:\n  command: [sleep, \"{marker}1\"]\n  resources: {{ cpu: 10m, memory: 8Mi }}\n  stop_grace: 1s\n"
    ));
    wait_for("web and db running", Duration::from_secs(30), || {
        let running = lab
            .allocs()
            .iter()
            .filter(|a| a["state"] == "running")
            .count();
        (running == 5).then_some(())
    });
    // Bad input first: a viewer cannot run one; an unknown node is refused at its line.
    let bad = write(
        &lab,
        "bad.yaml",
        "kind: Experiment\nname: bad\nfaults:\n  - { at: 1s, power_off: { node: n9 }, for: 5s }\n",
    );
    let out = lab.cli(&["experiment", "run", "-f", &bad]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err.contains("bad.yaml:4:") && err.contains("no node \"n9\" in the cluster"),
        "{err}"
    );

    let exp = write(
        &lab,
        "lab.yaml",
        "kind: Experiment\nname: lab\nsteady_state:\n  - { service: web, ready_at_least: 4 }\nfaults:\n  - { at: 0s, kill: { allocation_of: service/db } }\n  - { at: 1s, power_off: { node: n2 }, for: 12s }\n  - { at: 1s, partition: { nodes: [n3], from: [server] }, for: 12s }\n  - { at: 1s, packet_loss: { node: n4, percent: 10 }, for: 6s }\nguard: { abort_if: { ready_below: { service: web, count: 1 } } }\n",
    );
    // A server declares no disconnected node down in its first 15 s (its agents are
    // still reconnecting: `FailureConfig::startup_grace_ms`): the experiment runs on a
    // cluster past that, as a lab's would.
    std::thread::sleep(Duration::from_secs(16).saturating_sub(server_started.elapsed()));
    let out = lab.cli(&["experiment", "run", "-f", &exp, "--detach"]);
    assert!(out.status.success(), "{out:?}");
    // Watch on our own: when n2 stops being ready, when a web process appears on n1
    // or n4 beyond those there at the start, whether the fault rules show up.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Arc::new(Mutex::new((None, None, false, false)));
    let before: usize = ["n1", "n4"]
        .iter()
        .map(|n| Lab::count(&lab.by_name(n).ns, &marker))
        .sum();
    std::thread::scope(|scope| {
        let (lab_ref, stop2, seen2, marker2) = (&lab, stop.clone(), seen.clone(), &marker);
        scope.spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let now = now_ms();
                let n: usize = ["n1", "n4"]
                    .iter()
                    .map(|h| Lab::count(&lab_ref.by_name(h).ns, marker2))
                    .sum();
                let (t3, t4) = (fault_table(lab_ref, "n3"), fault_table(lab_ref, "n4"));
                let mut s = seen2.lock().expect("lock");
                if n > before && s.1.is_none() {
                    s.1 = Some(now);
                }
                s.2 |= t3;
                s.3 |= t4;
                drop(s);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let t = now_ms();
                let ready = node_ready(&lab, "n2");
                let mut s = seen.lock().expect("lock");
                if !ready && s.0.is_none() {
                    s.0 = Some(t);
                }
                drop(s);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let r = wait_for("the experiment to end", Duration::from_secs(180), || {
            let r = report(&lab, "lab");
            ended(&r).then_some(r)
        });
        stop.store(true, Ordering::Relaxed);
        assert_eq!(r["phase"], "finished", "{}: {r}", r["why"]);
        assert_eq!(r["verdict"]["steady"], true, "{r}");
        let (down_seen, replaced_seen, t3, t4) = *seen.lock().expect("lock");
        assert!(
            t3 && t4,
            "the partition and the loss used no nftables rules ({t3}, {t4}): {r}\n{}",
            lab.log("n3")
        );
        // The report's figures against the test's own observations.
        let off = began(&r, 1);
        let figures = &r["verdict"]["faults"][1];
        let Some(detected) = figures["detected_ms"].as_u64() else {
            panic!("n2's loss not detected: {r}")
        };
        let Some(replaced) = figures["replaced_ms"].as_u64() else {
            panic!(
                "n2's replica not replaced: {r}\n{}",
                lab.log("srv")
                    .lines()
                    .filter(|l| l.contains("node ")
                        || l.contains("listening")
                        || l.contains("lead"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        let down_seen = down_seen.expect("the test never saw n2 not ready");
        let replaced_seen = replaced_seen.expect("the test never saw a replacement");
        let near = |a: u64, b: u64, what: &str| {
            assert!(
                a.abs_diff(b) <= 1_500,
                "{what}: the report says {a}, the test saw {b} (ms since the epoch)"
            );
        };
        near(off + detected, down_seen, "n2 detected");
        near(off + replaced, replaced_seen, "the first replacement");
        // web has an SLO: the report says what the run cost its error budget.
        let budget = r["budgets"]
            .as_array()
            .and_then(|b| b.iter().find(|x| x["service"] == "service/web"))
            .unwrap_or_else(|| panic!("no error budget for web: {r}"));
        let (before, after) = (
            budget["before"].as_f64().expect("before"),
            budget["after"].as_f64().expect("after"),
        );
        assert!(after <= before, "{budget}");
        // The kill was repaired (db running again).
        assert!(
            r["verdict"]["faults"][0]["replaced_ms"].as_u64().is_some(),
            "{r}"
        );
        let md =
            String::from_utf8_lossy(&lab.cli(&["experiment", "report", "lab"]).stdout).to_string();
        eprintln!("{md}");
        assert!(md.contains("| 1 | power_off n2 for 12s |"), "{md}");
        assert!(md.contains("node-down node/n2"), "{md}");
    });
    // Every fault undone: n2 came back by its own deadline (no server could reach it),
    // n3's rules went at its deadline (the server's undo was dropped with the rest).
    wait_for("n2, n3 and n4 ready again", Duration::from_secs(60), || {
        ["n2", "n3", "n4"]
            .iter()
            .all(|n| node_ready(&lab, n))
            .then_some(())
    });
    assert!(!fault_table(&lab, "n3") && !fault_table(&lab, "n4"));

    // An agent killed mid-fault undoes it when it starts again; the run is aborted.
    let long = write(
        &lab,
        "long.yaml",
        "kind: Experiment\nname: long\nfaults:\n  - { at: 0s, partition: { nodes: [n3], from: [server] }, for: 120s }\n",
    );
    let out = lab.cli(&["experiment", "run", "-f", &long, "--detach"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("n3's fault rules", Duration::from_secs(20), || {
        fault_table(&lab, "n3").then_some(())
    });
    lab.stop_proc("n3", true);
    assert!(fault_table(&lab, "n3"), "the rules outlive a killed agent");
    lab.restart_agent("n3");
    assert!(
        !fault_table(&lab, "n3"),
        "the restarted agent left the rules"
    );
    wait_for(
        "n3 ready after its restart",
        Duration::from_secs(60),
        || node_ready(&lab, "n3").then_some(()),
    );
    let out = lab.cli(&["experiment", "abort", "long"]);
    assert!(out.status.success(), "{out:?}");
    let r = wait_for("the aborted run", Duration::from_secs(20), || {
        let r = report(&lab, "long");
        ended(&r).then_some(r)
    });
    assert_eq!(r["phase"], "aborted", "{r}");
    assert!(
        r["why"].as_str().is_some_and(|w| w.contains("aborted by")),
        "{r}"
    );
    let out = lab.cli(&["experiment", "list", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list as JSON");
    let names: Vec<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["long", "lab"], "{rows}");
}
