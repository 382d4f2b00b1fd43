//! Jobs, restarts, shutdown, logs, auth and metrics against a real cluster.

use std::time::Duration;

use crate::common::*;

#[test]
fn job_array_runs_each_index_once_never_above_parallelism() {
    let mut c = Cluster::up(&[]);
    let trace = c.trace_file("trace");
    let yaml = format!(
        "kind: Job\nname: batch\ncompletions: 10\nparallelism: 3\ntask:\n  command: [\"/bin/sh\", \"-c\", \"echo start $MOTLEY_INDEX $(date +%s%N) >> {t}; sleep 1; echo end $MOTLEY_INDEX $(date +%s%N) >> {t}\"]\n  resources: {{ cpu: 10m, memory: 8Mi }}\n",
        t = trace.display()
    );
    let out = c.apply_yaml("job.yaml", &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the job to complete", Duration::from_secs(60), || {
        let j = c.json(&["get", "jobs", "batch"]);
        (j[0]["status"]["phase"] == "complete").then_some(())
    });
    // Ended and known ended by the server: the agent's state file lets them go, so its
    // writes do not grow with every job the node ever ran.
    let state = c.data_dir().join("agent/state.json");
    wait_for(
        "settled allocations leave state.json",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&state).ok()?;
            (!text.contains("job/batch")).then_some(())
        },
    );
    let text = std::fs::read_to_string(&trace).expect("trace");
    let mut events: Vec<(u128, i32, String)> = Vec::new();
    let mut starts = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 3, "{line}");
        let t: u128 = f[2].parse().expect("time");
        events.push((t, if f[0] == "start" { 1 } else { -1 }, f[1].to_string()));
        if f[0] == "start" {
            starts.push(f[1].parse::<u32>().expect("index"));
        }
    }
    starts.sort();
    assert_eq!(
        starts,
        (0..10).collect::<Vec<_>>(),
        "each index exactly once"
    );
    events.sort();
    let (mut cur, mut max) = (0, 0);
    for (_, d, _) in &events {
        cur += d;
        max = max.max(cur);
    }
    assert!(max <= 3, "{max} instances ran at once");
    assert!(max >= 2, "parallelism was never used ({max})");
    let allocs = c.allocs();
    assert_eq!(
        allocs.iter().filter(|a| a["state"] == "complete").count(),
        10
    );
}

#[test]
fn a_finished_job_is_collected_with_its_allocations_after_its_ttl() {
    let mut c = Cluster::up(&[]);
    let yaml = "kind: Job\nname: brief\ncompletions: 3\nparallelism: 3\nttl_after_finished: 3s\ntask:\n  command: [\"true\"]\n  resources: { cpu: 10m, memory: 8Mi }\n---\nkind: Job\nname: kept\nttl_after_finished: 1h\ntask:\n  command: [\"true\"]\n  resources: { cpu: 10m, memory: 8Mi }\n---\nkind: Job\nname: failing\nretries: 0\nttl_after_finished: 3s\ntask:\n  command: [\"false\"]\n  resources: { cpu: 10m, memory: 8Mi }\n";
    assert!(c.apply_yaml("ttl.yaml", yaml).status.success());
    for (name, phase) in [
        ("brief", "complete"),
        ("kept", "complete"),
        ("failing", "failed"),
    ] {
        wait_for(
            &format!("{name} to be {phase}"),
            Duration::from_secs(30),
            || {
                let j = c.json(&["get", "jobs", name]);
                (j[0]["status"]["phase"] == phase).then_some(())
            },
        );
    }
    let finished = std::time::Instant::now();
    // Finished ones of each kind are collected, allocations too; the one with an hour
    // left stays, with its allocation.
    wait_for(
        "brief and failing to be collected",
        Duration::from_secs(30),
        || {
            let names: Vec<String> = c
                .json(&["get", "jobs"])
                .as_array()
                .expect("a list of jobs")
                .iter()
                .map(|j| {
                    j["workload"]["spec"]["name"]
                        .as_str()
                        .expect("a name")
                        .to_string()
                })
                .collect();
            let allocs = c.allocs();
            let left = |w: &str| allocs.iter().filter(|a| a["workload"] == w).count();
            (names == ["kept"] && left("job/brief") == 0 && left("job/failing") == 0).then_some(())
        },
    );
    assert!(
        finished.elapsed() >= Duration::from_secs(2),
        "collected after its ttl, not at once ({:?})",
        finished.elapsed()
    );
    let kept: Vec<serde_json::Value> = c
        .allocs()
        .into_iter()
        .filter(|a| a["workload"] == "job/kept")
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["state"], "complete");
}

#[test]
fn failing_job_is_retried_then_fails_and_never_policy_is_final() {
    let mut c = Cluster::up(&[]);
    let yaml = "kind: Job\nname: doomed\nretries: 2\nbackoff: { initial: 100ms, max: 200ms }\ntask:\n  command: [\"/bin/sh\", \"-c\", \"echo trying; exit 3\"]\n---\nkind: Service\nname: once\nrestart: { policy: never }\ntask:\n  command: [\"/bin/sh\", \"-c\", \"exit 0\"]\n";
    assert!(c.apply_yaml("j.yaml", yaml).status.success());
    let failed = wait_for("the job to fail", Duration::from_secs(30), || {
        c.allocs()
            .into_iter()
            .find(|a| a["workload"] == "job/doomed" && a["state"] == "failed")
    });
    assert_eq!(failed["restarts"], 2, "{failed}");
    assert_eq!(failed["exit_code"], 3, "{failed}");
    let log = c.ok(&["logs", failed["id"].as_str().expect("id")]);
    assert_eq!(log, "trying\ntrying\ntrying\n");
    let job = c.json(&["get", "jobs", "doomed"]);
    assert_eq!(job[0]["status"]["phase"], "failed");
    // A job past its time limit is stopped and fails (Slurm's TIMEOUT), retries or not.
    let slow = "kind: Job\nname: slow\ntime_limit: 1s\nretries: 5\ntask:\n  command: [sleep, \"600\"]\n  stop_grace: 1s\n";
    assert!(c.apply_yaml("slow.yaml", slow).status.success());
    let pid = wait_for("the slow job running", Duration::from_secs(20), || {
        c.allocs()
            .into_iter()
            .find(|a| a["workload"] == "job/slow" && a["state"] == "running")
            .and_then(|a| a["pid"].as_u64())
    });
    let timed_out = wait_for("the slow job to time out", Duration::from_secs(20), || {
        c.allocs()
            .into_iter()
            .find(|a| a["workload"] == "job/slow" && a["state"] == "failed")
    });
    assert!(
        timed_out["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x
                .as_str()
                .is_some_and(|x| x.contains("time limit 1s exceeded")))),
        "{timed_out}"
    );
    assert_eq!(
        timed_out["restarts"], 0,
        "a timeout is not retried: {timed_out}"
    );
    assert!(!pid_alive(pid as u32), "the task was stopped");
    assert_eq!(
        c.json(&["get", "jobs", "slow"])[0]["status"]["phase"],
        "failed"
    );
    // A service replica that ends is replaced by a new allocation (after a backoff).
    wait_for(
        "a replacement of the ended replica",
        Duration::from_secs(30),
        || {
            let n = c
                .allocs()
                .iter()
                .filter(|a| a["workload"] == "service/once")
                .count();
            (n >= 2).then_some(())
        },
    );
}

#[test]
fn a_crash_looping_task_shows_backoff_with_its_last_exit_never_running_without_a_pid() {
    let mut c = Cluster::up(&[]);
    let yaml = "kind: Service\nname: loop\nrestart: { backoff: { initial: 3s, max: 3s } }\ntask:\n  command: [\"/bin/sh\", \"-c\", \"exit 7\"]\n";
    assert!(c.apply_yaml("loop.yaml", yaml).status.success());
    let mut seen_backoff = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Sample until it has been seen in backoff after at least two restarts: every
    // sample that says "running" must name a pid.
    while std::time::Instant::now() < deadline {
        let a = c
            .allocs()
            .into_iter()
            .find(|a| a["workload"] == "service/loop");
        if let Some(a) = a {
            if a["state"] == "running" {
                assert!(a["pid"].as_u64().is_some(), "running without a pid: {a}");
            }
            if a["state"] == "backoff" && a["restarts"].as_u64().is_some_and(|r| r >= 2) {
                seen_backoff = Some(a);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = seen_backoff.expect("the crash loop shown as backoff within 30 s");
    assert_eq!(a["exit_code"], 7, "{a}");
    assert!(a["pid"].is_null(), "no pid while it waits: {a}");
    let reasons = a["reasons"].to_string();
    assert!(
        reasons.contains("exited with code 7; restarting in 3000ms"),
        "{a}"
    );
    // The service is not counted as running while it loops.
    let svc = c.json(&["get", "services", "loop"]);
    assert_eq!(svc[0]["status"]["running"], 0, "{svc}");
}

#[test]
fn tasks_start_from_a_data_directory_others_cannot_enter() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: tasks then run as nobody, who cannot enter a 0700 directory"
    );
    let mut c = Cluster::up_in_private_dir(&[]);
    let yaml = "kind: Service\nname: private\ntask:\n  command: [sleep, \"600\"]\n";
    assert!(c.apply_yaml("p.yaml", yaml).status.success());
    let a = wait_for(
        "the task running with a pid",
        Duration::from_secs(30),
        || c.running("service/private").into_iter().next(),
    );
    let pid = a["pid"].as_u64().expect("pid") as u32;
    let dir = environ(pid)
        .into_iter()
        .find_map(|v| v.strip_prefix("MOTLEY_ALLOC_DIR=").map(str::to_string))
        .expect("MOTLEY_ALLOC_DIR");
    assert!(dir.starts_with("/run/motley/tasks-"), "{dir}");
    // Not a crash loop: the same process, never restarted, a few seconds on.
    std::thread::sleep(Duration::from_secs(3));
    let now = c.running("service/private");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0]["pid"].as_u64(), Some(pid as u64));
    assert_eq!(now[0]["restarts"], 0, "{now:?}");
    let log = std::fs::read_to_string(&c.stderr_log).expect("motley up's log");
    assert!(
        log.contains("their directories are in /run/motley/tasks-"),
        "{log}"
    );
    c.stop();
    assert!(!pid_alive(pid), "stopped with motley up");
    if let Some(root) = std::path::Path::new(&dir).parent() {
        let _ = std::fs::remove_dir_all(root);
    }
}

#[test]
fn sigterm_stops_every_task_and_its_children() {
    let mut c = Cluster::up(&[]);
    let yaml = "kind: Service\nname: forker\nreplicas: 2\ntask:\n  command: [\"/bin/sh\", \"-c\", \"sleep 1000 & sleep 1000 & wait\"]\n  resources: { cpu: 10m, memory: 8Mi }\n  stop_grace: 2s\n";
    assert!(c.apply_yaml("f.yaml", yaml).status.success());
    let running = wait_for("2 forkers", Duration::from_secs(30), || {
        let r = c.running("service/forker");
        (r.len() == 2).then_some(r)
    });
    let pgids: Vec<u32> = running
        .iter()
        .filter_map(|a| a["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    wait_for("the children to start", Duration::from_secs(10), || {
        pgids
            .iter()
            .all(|g| group_members(*g).len() >= 3)
            .then_some(())
    });
    assert_eq!(c.stop(), Some(0), "motley up exits cleanly on SIGTERM");
    for g in pgids {
        assert!(
            group_members(g).is_empty(),
            "process group {g} outlived motley up: {:?}",
            group_members(g)
        );
    }
}

#[test]
fn many_short_tasks_at_once_are_reported_together_and_all_complete() {
    // 300 trivial tasks at once: their starts and ends reach the server in bursts,
    // which it commits several to a transaction (Shared::apply_reports).
    let mut c = Cluster::up(&[]);
    let yaml = "kind: Job\nname: burst\ncompletions: 300\nparallelism: 300\nretries: 0\ntask:\n  command: [\"/bin/true\"]\n  resources: { cpu: 1m, memory: 1Mi }\n  logs: memory\n";
    assert!(c.apply_yaml("burst.yaml", yaml).status.success());
    wait_for("the burst to complete", Duration::from_secs(120), || {
        let j = c.json(&["get", "jobs", "burst"]);
        assert_ne!(j[0]["status"]["phase"], "failed", "{j}");
        (j[0]["status"]["phase"] == "complete").then_some(())
    });
    let allocs: Vec<_> = c
        .allocs()
        .into_iter()
        .filter(|a| a["workload"] == "job/burst")
        .collect();
    if allocs.len() != 300 {
        let mut by_index: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        for a in &allocs {
            by_index
                .entry(a["index"].as_u64().unwrap_or(u64::MAX))
                .or_default()
                .push(format!(
                    "{} {} exit {} reason {}",
                    a["id"], a["state"], a["exit_code"], a["reason"]
                ));
        }
        let doubled: Vec<_> = by_index
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .take(5)
            .collect();
        panic!(
            "{} allocations, not 300; indexes with more than one: {doubled:#?}\nlog: {}",
            allocs.len(),
            std::fs::read_to_string(&c.stderr_log).unwrap_or_default()
        );
    }
    let mut indexes: Vec<u64> = allocs
        .iter()
        .map(|a| {
            assert_eq!(a["state"], "complete", "{a}");
            assert_eq!(a["exit_code"], 0, "{a}");
            a["index"].as_u64().expect("index")
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, (0..300).collect::<Vec<_>>(), "each index once");
    let (http, url, token) = c.http();
    let text = rt().block_on(async {
        let m = http
            .get(format!("{url}/metrics"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        m.text().await.expect("metrics text")
    });
    let batched: f64 = text
        .lines()
        .find(|l| l.starts_with("motley_agent_reports_total{how=\"batched\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(batched > 0.0, "no reports were batched:\n{text}");
}

#[test]
fn logs_follow_streams_until_the_task_ends() {
    let mut c = Cluster::up(&[]);
    let yaml = "kind: Job\nname: talker\ntask:\n  command: [\"/bin/sh\", \"-c\", \"for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done\"]\n";
    assert!(c.apply_yaml("t.yaml", yaml).status.success());
    let a = wait_for("talker to start", Duration::from_secs(30), || {
        c.allocs()
            .into_iter()
            .find(|a| a["workload"] == "job/talker" && a["state"] == "running")
    });
    let out = c.ok(&["logs", "-f", a["id"].as_str().expect("id")]);
    assert_eq!(out, "line 1\nline 2\nline 3\nline 4\nline 5\n");
    let tail = c.ok(&["logs", "--tail", "2", a["id"].as_str().expect("id")]);
    assert_eq!(tail, "line 4\nline 5\n");
    let missing = c.cli(&["logs", "no-such-alloc"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn auth_body_limits_and_metrics() {
    let c = Cluster::up(&[]);
    let (http, url, token) = c.http();
    let node_token =
        std::fs::read_to_string(c.data_dir().join("agent/credential")).expect("node credential");
    let rt = rt();
    rt.block_on(async {
        let status = |r: reqwest::Response| r.status().as_u16();
        let none = http.get(format!("{url}/v1/nodes")).send().await.expect("send");
        assert_eq!(status(none), 401);
        let wrong = http.get(format!("{url}/v1/nodes")).bearer_auth("0123456789abcdef").send().await.expect("send");
        assert_eq!(status(wrong), 401);
        let node = http.get(format!("{url}/v1/nodes")).bearer_auth(node_token.trim()).send().await.expect("send");
        assert_eq!(status(node), 403, "a node credential cannot read the cluster");
        let good = http.get(format!("{url}/v1/nodes")).bearer_auth(&token).send().await.expect("send");
        assert_eq!(status(good), 200);
        // An oversized body is refused from its declared length, before any of it is read.
        let answer = raw_request(&c, &format!(
            "POST /v1/apply HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            5 << 20
        ))
        .await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let r = http.post(format!("{url}/v1/apply")).header("content-type", "application/json").body("{}").send().await.expect("send");
        assert_eq!(status(r), 401, "no token: 401");
        // Plain HTTP on the HTTPS port gets nowhere.
        let plain = reqwest::Client::new().get(url.replace("https://", "http://") + "/v1/nodes").send().await;
        assert!(plain.is_err() || !plain.expect("response").status().is_success());

        let m = http.get(format!("{url}/metrics")).bearer_auth(&token).send().await.expect("send");
        assert_eq!(m.status().as_u16(), 200);
        let text = m.text().await.expect("metrics text");
        for name in ["motley_allocations", "motley_api_requests_total", "motley_api_request_duration_seconds", "motley_reconcile_duration_seconds", "motley_agent_tasks"] {
            assert!(text.contains(name), "{name} missing from /metrics");
        }
        let path = c.dir.path().join("metrics.txt");
        std::fs::write(&path, &text).expect("write metrics");
        let check = std::process::Command::new("promtool")
            .arg("check")
            .arg("metrics")
            .stdin(std::fs::File::open(&path).expect("open"))
            .output()
            .expect("promtool (Debian package prometheus) must be installed");
        assert!(check.status.success(), "promtool: {}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    });
}

/// Sends raw bytes over TLS and returns what the server answers before closing (or 5 s).
async fn raw_request(c: &Cluster, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = motley_net::ClientConfig::load(&c.config()).expect("config");
    let tls = std::sync::Arc::new(motley_net::client_tls(&cfg.ca).expect("tls"));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", c.port))
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("tls");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn offline_commands_work_without_a_cluster() {
    let run = |args: &[&str]| {
        std::process::Command::new(motley_bin())
            .args(args)
            .env("HOME", "/nonexistent")
            .env_remove("MOTLEY_CONFIG")
            .current_dir(repo_root())
            .output()
            .expect("run motley")
    };
    let v = run(&["validate", "-f", "examples/"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    // web, render, heartbeat, and the notes volume with its service.
    assert_eq!(String::from_utf8_lossy(&v.stdout).lines().count(), 5);
    let schema = run(&["schema"]);
    let s: serde_json::Value = serde_json::from_slice(&schema.stdout).expect("schema is JSON");
    let s = s.to_string();
    for field in [
        "replicas",
        "completions",
        "max_skew",
        "cpu_units",
        "time_limit",
        "durable",
        // The lab's files: an inventory's and an experiment's fields.
        "price_per_kwh",
        "power_off",
        "steady_state",
    ] {
        assert!(s.contains(field), "the schema lacks {field}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let c = run(&["completion", shell]);
        assert!(
            c.status.success() && !c.stdout.is_empty(),
            "completion {shell}"
        );
    }
    assert_eq!(run(&["get"]).status.code(), Some(2), "usage errors exit 2");
    assert_eq!(
        run(&["get", "services"]).status.code(),
        Some(1),
        "no config exits 1"
    );
    let version = run(&["version"]);
    assert!(String::from_utf8_lossy(&version.stdout).contains("client: motley"));
}

#[test]
fn default_data_dir_writes_the_users_config_and_describe_delete_work() {
    // `motley up` without --data-dir: data under $XDG_DATA_HOME, client config under
    // $XDG_CONFIG_HOME, and the CLI finds the cluster without --config.
    let home = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let env = |cmd: &mut std::process::Command| {
        cmd.env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env_remove("MOTLEY_CONFIG")
            .current_dir(repo_root());
    };
    let mut up = std::process::Command::new(motley_bin());
    up.args([
        "up",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--name",
        "solo",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    env(&mut up);
    let mut child = up.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let ready = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l == "ready")
    });
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(motley_bin());
        c.args(args);
        env(&mut c);
        c.output().expect("run")
    };
    let stop = |child: &mut std::process::Child| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    };
    if !ready.join().unwrap_or(false) {
        stop(&mut child);
        panic!("motley up did not become ready");
    }
    assert!(home.path().join("data/motley/server/store.redb").exists());
    assert!(home.path().join("config/motley/config.yaml").exists());
    let nodes = run(&["get", "nodes"]);
    let text = String::from_utf8_lossy(&nodes.stdout).to_string();
    let manifest = home.path().join("m.yaml");
    // Three quarters of this machine's CPUs per replica: one fits, the second does not.
    let cpus: u64 = String::from_utf8_lossy(
        &std::process::Command::new("nproc")
            .arg("--all")
            .output()
            .expect("nproc")
            .stdout,
    )
    .trim()
    .parse()
    .expect("nproc prints a number");
    let (total, want) = (cpus * 1000, cpus * 750);
    std::fs::write(&manifest, format!("kind: Service\nname: big\nreplicas: 2\ntask:\n  command: [sleep, \"1000\"]\n  resources: {{ cpu: {want}m }}\n")).expect("write");
    let applied = run(&["apply", "-f", manifest.to_str().expect("path")]);
    let describe = wait_for("a replica waiting for cpu", Duration::from_secs(20), || {
        let out = run(&["describe", "service", "big"]);
        let d = String::from_utf8_lossy(&out.stdout).to_string();
        d.contains("insufficient cpu").then_some(d)
    });
    let deleted = run(&["delete", "-f", manifest.to_str().expect("path")]);
    let gone = run(&["get", "services", "big"]);
    stop(&mut child);
    assert!(nodes.status.success() && text.contains("solo"), "{text}");
    assert!(applied.status.success());
    assert!(
        describe
            .contains("Waiting:     1 instance(s) cannot be placed: 0/1 nodes: 1 insufficient cpu"),
        "{describe}"
    );
    assert!(
        describe.contains(&format!(
            "solo: insufficient cpu ({} free < {} requested)",
            motley_core::quantity::MilliCpu(total - want),
            motley_core::quantity::MilliCpu(want)
        )),
        "{describe}"
    );
    assert_eq!(
        String::from_utf8_lossy(&deleted.stdout),
        "service/big deleted\n"
    );
    assert_eq!(
        gone.status.code(),
        Some(1),
        "a deleted service is not found"
    );
}

#[test]
fn facts_of_this_machine_agree_with_nproc_and_meminfo() {
    let out = std::process::Command::new(motley_bin())
        .args(["facts", "-o", "json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let f = &report["hardware"];
    let nproc = std::process::Command::new("nproc")
        .arg("--all")
        .output()
        .expect("nproc");
    let nproc: u64 = String::from_utf8_lossy(&nproc.stdout)
        .trim()
        .parse()
        .expect("number");
    assert_eq!(f["cpu"]["logical"].as_u64(), Some(nproc));
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    assert_eq!(f["memory"].as_u64(), Some(kb * 1024));
    let arch = if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        ""
    };
    if !arch.is_empty() {
        assert_eq!(f["arch"], arch);
    }
    let table = std::process::Command::new(motley_bin())
        .args(["facts"])
        .output()
        .expect("run");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains(&format!("{nproc} logical")) && table.contains("data dir"),
        "{table}"
    );
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("Uid line")
}

#[test]
fn tasks_run_unprivileged_unless_root_is_asked_for_and_allowed() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("user lookup")
        .expect("a nobody user")
        .uid
        .as_raw();
    let mut c = Cluster::up(&[]);
    let out = c.apply_yaml(
        "plain.yaml",
        "kind: Service\nname: plain\ntask:\n  command: [sleep, '3600']\n  resources: { cpu: 10m, memory: 8Mi }\n---\n\
         kind: Service\nname: admin\ntask:\n  command: [sleep, '3600']\n  root: true\n  resources: { cpu: 10m, memory: 8Mi }\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = wait_for("plain running", Duration::from_secs(20), || {
        c.running("service/plain")
            .first()
            .and_then(|a| a["pid"].as_u64())
    }) as u32;
    assert_eq!(uid_of(pid), nobody, "an ordinary task runs as nobody");
    let dir = environ(pid)
        .into_iter()
        .find_map(|kv| kv.strip_prefix("MOTLEY_ALLOC_DIR=").map(str::to_string))
        .expect("MOTLEY_ALLOC_DIR");
    let meta = std::fs::metadata(&dir).expect("alloc dir");
    assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{dir}");
    assert_eq!(meta.uid(), nobody, "{dir} belongs to the task's user");
    // The agent's directories let the task through but list nothing.
    let allocs = std::path::Path::new(&dir).parent().expect("allocs dir");
    assert_eq!(
        std::fs::metadata(allocs)
            .expect("allocs")
            .permissions()
            .mode()
            & 0o777,
        0o711
    );

    // Root asked for, not allowed: it waits, and says why.
    let why = wait_for("admin blocked", Duration::from_secs(20), || {
        let v = c.json(&["get", "service", "admin"]);
        v[0]["blocked"]["why"]["summary"]
            .as_str()
            .map(str::to_string)
    });
    assert!(why.contains("does not run tasks as root"), "{why}");
    assert!(c.running("service/admin").is_empty());

    // Allowed: it runs as root; the other still as nobody.
    c.stop();
    c.start(&["--allow-root-tasks"]);
    let pid = wait_for("admin running", Duration::from_secs(20), || {
        c.running("service/admin")
            .first()
            .and_then(|a| a["pid"].as_u64())
    }) as u32;
    assert_eq!(uid_of(pid), 0);
    let pid = wait_for("plain running", Duration::from_secs(20), || {
        c.running("service/plain")
            .first()
            .and_then(|a| a["pid"].as_u64())
    }) as u32;
    assert_eq!(uid_of(pid), nobody);
}
