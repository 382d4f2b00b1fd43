//! Events (issue 23) on a real `motley up`: what an apply, a crash loop, a preemption,
//! a blocked service, a cordon and a delete leave in `motley events`, its `-w` stream,
//! and `describe`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn events(c: &Cluster, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["events"];
    a.extend(args);
    match c.json(&a) {
        Value::Array(list) => list,
        other => panic!("motley events -o json: not a list: {other}"),
    }
}

/// Waits until an event of `kind` about `object` whose message contains `says` is kept.
fn wait_event(c: &Cluster, kind: &str, object: &str, says: &str) -> Value {
    wait_for(
        &format!("a {kind} event of {object} saying {says:?}"),
        Duration::from_secs(30),
        || {
            events(c, &["--for", object]).into_iter().find(|e| {
                e["kind"] == kind && e["message"].as_str().is_some_and(|m| m.contains(says))
            })
        },
    )
}

#[test]
fn events_tell_what_happened_and_why_and_stream_as_it_happens() {
    let c = Cluster::up(&[]);
    // A watcher started first sees what follows arrive, one JSON line each.
    let mut watch = Command::new(motley_bin())
        .arg("--config")
        .arg(c.config())
        .args(["events", "-w", "-o", "json"])
        .env_remove("MOTLEY_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("motley events -w");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // A job that fails twice: scheduled, exited with its code, restarted, failed.
    let out = c.apply_yaml(
        "crash.yaml",
        "kind: Job\nname: crash\nretries: 1\nbackoff: { initial: 100ms, max: 100ms }\ntask:\n  command: [sh, -c, 'exit 3']\n  resources: { cpu: 10m, memory: 8Mi }\n",
    );
    assert!(out.status.success(), "{:?}", out);
    wait_event(&c, "applied", "job/crash", "created");
    let scheduled = wait_event(&c, "scheduled", "job/crash", "placed on node1");
    let alloc = scheduled["alloc"].as_str().expect("alloc").to_string();
    wait_event(&c, "exited", "job/crash", "exited with code 3");
    wait_event(&c, "restarted", "job/crash", "restart 1");
    // The stream saw the scheduling, as a JSON line.
    let seen = wait_for(
        "the watcher to see job/crash scheduled",
        Duration::from_secs(30),
        || {
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                let e: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
                if e["kind"] == "scheduled" && e["object"] == "job/crash" {
                    return Some(e);
                }
            }
            None
        },
    );
    assert_eq!(seen["alloc"].as_str(), Some(alloc.as_str()));

    // Work of low priority holds most of the node's CPU; a service of high priority
    // that needs it preempts it; one of normal priority waits, with the reasons.
    let cpus = c.json(&["get", "nodes"])[0]["node"]["capacity"]["cpu"]
        .as_str()
        .map(str::to_string)
        .expect("node cpu");
    let millis: u64 = match cpus.strip_suffix('m') {
        Some(m) => m.parse().expect("millicores"),
        None => cpus.parse::<u64>().expect("cores") * 1000,
    };
    let big = format!("{}m", millis * 6 / 10);
    let hog = format!(
        "kind: Job\nname: hog\npriority: low\ntask:\n  command: [sleep, '3600']\n  resources: {{ cpu: {big}, memory: 8Mi }}\n"
    );
    assert!(c.apply_yaml("hog.yaml", &hog).status.success());
    wait_event(&c, "started", "job/hog", "pid ");
    let vip = format!(
        "kind: Service\nname: vip\npriority: high\ntask:\n  command: [sleep, '3600']\n  resources: {{ cpu: {big}, memory: 8Mi }}\n"
    );
    assert!(c.apply_yaml("vip.yaml", &vip).status.success());
    wait_event(&c, "preempted", "job/hog", "preempted by service/vip");
    wait_event(&c, "started", "service/vip", "pid ");
    let late = vip.replace("name: vip\npriority: high", "name: late");
    assert!(c.apply_yaml("late.yaml", &late).status.success());
    wait_event(&c, "blocked", "service/late", "insufficient cpu");

    // The node: cordoned and uncordoned.
    c.ok(&["cordon", "node1"]);
    wait_event(&c, "cordoned", "node/node1", "no new work");
    c.ok(&["uncordon", "node1"]);
    wait_event(&c, "uncordoned", "node/node1", "work again");

    // Deleting: stopping, stopped, deleted.
    c.ok(&["delete", "service/vip"]);
    wait_event(&c, "deleted", "service/vip", "deleted");
    wait_event(&c, "stopped", "service/vip", "");

    // --since and --for narrow; describe ends with the object's events.
    assert!(events(&c, &["--since", "1h"]).len() >= 10);
    assert!(
        events(&c, &["--for", &format!("alloc/{alloc}")])
            .iter()
            .all(|e| e["alloc"] == alloc.as_str())
    );
    let describe = c.ok(&["describe", "service", "late"]);
    assert!(
        describe.contains("Events:")
            && describe.contains("blocked")
            && describe.contains("insufficient cpu"),
        "{describe}"
    );
    let table = c.ok(&["events", "--for", "job/crash"]);
    assert!(
        table.starts_with("AGE") && table.contains("exited with code 3"),
        "{table}"
    );
    // Nothing here is written anywhere: an idle cluster's events are memory only.
    let _ = watch.kill();
    let _ = watch.wait();
}

/// `--events-forward URL`: the leader POSTs new events as JSON lines to a collector
/// (here a bare HTTP listener in this test), and again after the collector refused one.
#[test]
fn events_are_forwarded_to_a_collector_as_json_lines() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        // The first post is refused (503): the forwarder must send it again.
        let mut first = true;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let mut len = 0usize;
            let mut ndjson = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                ndjson |= l.starts_with("content-type: application/x-ndjson");
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let status = if first {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = conn.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
            if !first && ndjson {
                let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
            }
            first = false;
        }
    });
    let c = Cluster::up(&["--events-forward", &url]);
    assert!(c
        .apply_yaml(
            "once.yaml",
            "kind: Job\nname: once\ntask:\n  command: [/bin/true]\n  resources: { cpu: 10m, memory: 8Mi }\n",
        )
        .status
        .success());
    let mut seen: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !seen
        .iter()
        .any(|e| e["kind"] == "exited" && e["object"] == "job/once")
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let body = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no forwarded post with job/once's exit; got {seen:?}"));
        for line in body.lines() {
            seen.push(serde_json::from_str(line).expect("each line an event"));
        }
    }
    // In order, each once, from the first event on (the refused post was sent again).
    let seqs: Vec<u64> = seen.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(
        seen.iter()
            .any(|e| e["kind"] == "applied" && e["object"] == "job/once"),
        "{seen:?}"
    );
}
