//! The examples a newcomer applies: `motley up -f examples/`.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::*;

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The shipped examples, copied, with the web service's ports (`808` + index) moved
/// to a free pair (`<prefix>0`, `<prefix>1`), so that runs side by side, or a `motley up
/// -f examples/` left running, do not collide. Everything else is as shipped.
fn examples_on_free_ports() -> (tempfile::TempDir, String) {
    let prefix = (2000u16..6500)
        .find(|p| (0..2).all(|i| std::net::TcpListener::bind(("127.0.0.1", p * 10 + i)).is_ok()))
        .expect("two free ports");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rewritten = 0;
    for e in std::fs::read_dir(repo_root().join("examples")).expect("examples/") {
        let path = e.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("example");
        let moved = text.replace(
            "\"808${MOTLEY_INDEX}\"",
            &format!("\"{prefix}${{MOTLEY_INDEX}}\""),
        );
        rewritten += usize::from(moved != text);
        std::fs::write(dir.path().join(path.file_name().expect("name")), moved).expect("copy");
    }
    assert_eq!(
        rewritten, 1,
        "web.yaml's port is where this test expects it"
    );
    (dir, prefix.to_string())
}

#[test]
fn examples_run_idle_quietly_restart_and_delete_cleanly() {
    let (examples, prefix) = examples_on_free_ports();
    let mut c = Cluster::up(&["-f", examples.path().to_str().expect("path")]);

    // Two web replicas as real processes, with the right argv and environment.
    let web = wait_for("2 running web replicas", Duration::from_secs(30), || {
        let r = c.running("service/web");
        (r.len() == 2).then_some(r)
    });
    for a in &web {
        let pid = a["pid"].as_u64().expect("pid") as u32;
        let index = a["index"].as_u64().expect("index");
        // python3 may be a wrapper (pyenv) that execs the interpreter: wait for the exec.
        let want = [
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &format!("{prefix}{index}"),
        ];
        // A generous deadline: under the whole suite on two cores a start can be slow.
        // If it never comes, say whether the process is gone (and what replaced it).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let argv = loop {
            let argv = cmdline(pid);
            if argv.len() == 6 && argv[0].ends_with("python3") {
                break argv;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "replica {index} (pid {pid}, alive: {}) never showed python3's argv (last: {argv:?}); allocations now: {:?}",
                    pid_alive(pid),
                    c.allocs()
                        .iter()
                        .map(|a| (
                            a["id"].clone(),
                            a["state"].clone(),
                            a["pid"].clone(),
                            a["reasons"].clone()
                        ))
                        .collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(argv[1..], want, "argv {argv:?}");
        let env = environ(pid);
        assert!(
            env.contains(&"GREETING=hello from motley".to_string()),
            "env {env:?}"
        );
        assert!(
            env.contains(&format!("MOTLEY_INDEX={index}")),
            "env {env:?}"
        );
        assert!(
            env.contains(&format!(
                "MOTLEY_ALLOC_ID={}",
                a["id"].as_str().expect("id")
            )),
            "env {env:?}"
        );
        let page = wait_for("the web replica to answer", Duration::from_secs(20), || {
            http_get(format!("{prefix}{index}").parse().expect("port"))
        });
        assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    }

    // The job array completes all ten indices; the daemon runs on the node.
    wait_for("render to complete", Duration::from_secs(60), || {
        let jobs = c.json(&["get", "jobs"]);
        (jobs[0]["status"]["complete"] == 10 && jobs[0]["status"]["phase"] == "complete")
            .then_some(())
    });
    let render: Vec<_> = c
        .allocs()
        .into_iter()
        .filter(|a| a["workload"] == "job/render")
        .collect();
    let mut indices: Vec<u64> = render
        .iter()
        .filter(|a| a["state"] == "complete")
        .filter_map(|a| a["index"].as_u64())
        .collect();
    indices.sort();
    assert_eq!(indices, (0..10).collect::<Vec<_>>());
    let four = render.iter().find(|a| a["index"] == 4).expect("index 4");
    let log = c.ok(&["logs", four["id"].as_str().expect("id")]);
    assert_eq!(log, "rendering frame 4\nframe 4 done\n");
    let hb = c.running("daemon/heartbeat");
    assert_eq!(hb.len(), 1);
    assert_eq!(hb[0]["node"], "node1");

    // The volume example binds to this machine's data disk when its media is durable
    // (here a VM's virtual disk), and the file it writes outlives its allocation; on
    // flash or an unknown disk it waits, saying why.
    let facts: serde_json::Value = serde_json::from_slice(
        &std::process::Command::new(motley_bin())
            .args([
                "facts",
                "--data-dir",
                c.data_dir().to_str().expect("path"),
                "-o",
                "json",
            ])
            .output()
            .expect("motley facts")
            .stdout,
    )
    .expect("facts json");
    let media = facts["hardware"]["data_disk"]["media"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    if ["nvme", "ssd", "hdd", "virtual"].contains(&media.as_str()) {
        wait_for("the notes service running", Duration::from_secs(30), || {
            c.running("service/notes").into_iter().next()
        });
        let vol = c.json(&["get", "volume", "notes"]);
        let vol = if vol.is_array() { vol[0].clone() } else { vol };
        assert_eq!(vol["workload"]["binding"]["node"], "node1", "{vol}");
        assert_eq!(vol["workload"]["binding"]["media"], media.as_str(), "{vol}");
        let log = c.data_dir().join("volumes/notes/starts.log");
        let lines = wait_for("the notes file", Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.lines().count() == 1)
        });
        assert_eq!(lines.lines().count(), 1);
        c.ok(&["delete", "service/notes"]);
        wait_for("notes allocations removed", Duration::from_secs(30), || {
            (!c.allocs().iter().any(|a| a["workload"] == "service/notes")).then_some(())
        });
        assert!(log.is_file(), "the volume's data outlives the allocation");
    } else {
        let why = wait_for("notes explained", Duration::from_secs(30), || {
            let v = c.json(&["get", "service", "notes"]);
            let v = if v.is_array() { v[0].clone() } else { v };
            v["blocked"]["why"]["summary"].as_str().map(String::from)
        });
        assert!(why.contains("no durable disk for volume notes"), "{why}");
    }

    // Persist only on change: with everything settled, nothing is written for 30 s.
    std::thread::sleep(Duration::from_secs(2));
    let pid = c.pid();
    let before = write_bytes(pid);
    // The meter works here: the applies above were committed to this data directory
    // and counted (write_bytes counts block I/O: on tmpfs it would read 0 however much
    // was written, and the check below would pass vacuously).
    assert!(
        before > 0,
        "write_bytes saw none of the applies' writes: is the data dir on tmpfs?"
    );
    std::thread::sleep(Duration::from_secs(30));
    let after = write_bytes(pid);
    assert_eq!(
        after - before,
        0,
        "motley up wrote {} bytes while idle",
        after - before
    );

    // SIGKILL one replica: the same allocation restarts it, and counts the restart.
    let victim = &web[0];
    let id = victim["id"].as_str().expect("id").to_string();
    let old_pid = victim["pid"].as_u64().expect("pid") as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let again = wait_for(
        "the replica to be restarted",
        Duration::from_secs(30),
        || {
            c.running("service/web")
                .into_iter()
                .find(|a| a["id"] == id.as_str() && a["pid"].as_u64() != Some(old_pid as u64))
        },
    );
    assert!(
        again["restarts"].as_u64().expect("restarts") >= 1,
        "{again}"
    );
    assert!(!pid_alive(old_pid));
    let new_pids: Vec<u32> = c
        .running("service/web")
        .iter()
        .filter_map(|a| a["pid"].as_u64())
        .map(|p| p as u32)
        .collect();

    // Delete: every task process and its process group is gone.
    c.ok(&["delete", "service/web"]);
    wait_for(
        "web allocations to be removed",
        Duration::from_secs(30),
        || (!c.allocs().iter().any(|a| a["workload"] == "service/web")).then_some(()),
    );
    for p in new_pids {
        assert!(!pid_alive(p), "pid {p} survived the delete");
        assert!(
            group_members(p).is_empty(),
            "process group {p} survived the delete"
        );
    }

    // Stopping motley up stops the daemon too: no orphans.
    let hb_pid = hb[0]["pid"].as_u64().expect("pid") as u32;
    assert_eq!(c.stop(), Some(0));
    assert!(!pid_alive(hb_pid), "the daemon outlived motley up");
    assert!(group_members(hb_pid).is_empty());
}

/// `motley capacity` through the binary: an inventory and workloads from files, no
/// cluster; exit 0 when it fits, 3 when a failure leaves work short (with the
/// addition named), 1 for a bad field (with its place).
#[test]
fn capacity_answers_from_files_without_a_cluster() {
    let dir = test_dir();
    let inv = dir.path().join("inv.yaml");
    std::fs::write(
        &inv,
        "kind: Inventory\nname: lab\nmodels:\n  - { model: pi, count: 2, arch: arm64, cpus: 4, memory: 4Gi, price: 60, watts: { idle: 3, loaded: 8 } }\n  - { model: box, count: 0, arch: arm64, cpus: 4, memory: 4Gi, labels: { vault: \"yes\" }, price: 90 }\n",
    )
    .expect("write");
    let work = dir.path().join("work.yaml");
    std::fs::write(
        &work,
        "kind: Service\nname: web\nreplicas: 2\ntask: { command: [srv], resources: { cpu: 1, memory: 1Gi } }\n",
    )
    .expect("write");
    let run = |args: &[&str]| {
        std::process::Command::new(motley_bin())
            .args(args)
            .env("HOME", dir.path())
            .env_remove("MOTLEY_CONFIG")
            .output()
            .expect("run motley")
    };
    let (i, w) = (inv.display().to_string(), work.display().to_string());
    let out = run(&["capacity", "-f", &i, "-f", &w, "--tolerate", "1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fits, also with any 1 node(s) failed (2 combinations checked)"),
        "{text}"
    );
    // 2 × (3 + 5 × 1/4) = 8.5 W.
    assert!(text.contains("power at this load: 8.5 W"), "{text}");
    // pi-2 on only at night: web's second replica fits pi-1 while it is off.
    let out = run(&[
        "capacity",
        "-f",
        &i,
        "-f",
        &w,
        "--schedule",
        "pi-2: 22:00-06:00",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pi-2 on 22:00-06:00 (8.0 h a day): nothing waits for it"),
        "{text}"
    );
    let out = run(&[
        "capacity",
        "-f",
        &i,
        "-f",
        &w,
        "--schedule",
        "pi-2 at night",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected \"NODE: HH:MM-HH:MM\""),
        "{out:?}"
    );
    // A service that only the (unowned) labelled box may run: short with every node up.
    std::fs::write(
        &work,
        "kind: Service\nname: vault\nplacement: { require: vault = yes }\ntask: { command: [v] }\n",
    )
    .expect("write");
    let out = run(&["capacity", "-f", &i, "-f", &w, "-o", "json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["fits"], false, "{r}");
    assert_eq!(r["short"][0]["workload"], "service/vault", "{r}");
    assert_eq!(r["addition"]["model"], "box", "{r}");
    assert_eq!(r["addition"]["count"], 1, "{r}");
    // A bad field: refused at its place, nothing computed.
    std::fs::write(&inv, "kind: Inventory\nname: lab\nmodels:\n  - { model: pi, arch: arm64, cpus: 4, memory: 4Gi, wats: 3 }\n").expect("write");
    let out = run(&["capacity", "-f", &i, "-f", &w]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inv.yaml:4:") && err.contains("wats"), "{err}");
}

/// `motley experiment run` (issue 24) on one node: `--dry-run` checks the experiment
/// against the live cluster and prints its timeline; an unknown node is refused at its
/// line and column; a real run kills a replica, adds latency and a CPU stress, and its
/// report (Markdown and JSON) shows the kill repaired, the steady state held, and the
/// stress process gone.
#[test]
fn an_experiment_checks_against_the_cluster_runs_and_reports() {
    let c = Cluster::up(&[]);
    assert!(c
        .apply_yaml(
            "web.yaml",
            "kind: Service\nname: web\nreplicas: 2\ntask:\n  command: [sleep, '3600']\n  resources: { cpu: 10m, memory: 8Mi }\n",
        )
        .status
        .success());
    let dir = test_dir();
    let file = dir.path().join("e.yaml");
    std::fs::write(
        &file,
        "kind: Experiment\nname: lose-node1\nsteady_state:\n  - { service: web, ready_at_least: 2 }\nfaults:\n  - { at: 10s, power_off: { node: node1 }, for: 60s }\n  - { at: 75s, kill: { allocation_of: service/web } }\n",
    )
    .expect("write");
    let f = file.display().to_string();
    let out = c.ok(&["experiment", "run", "-f", &f, "--dry-run"]);
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("faults[")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0].starts_with("10.0s")
            && rows[0].contains("power_off")
            && rows[0].contains("at 70 s at the latest"),
        "{out}"
    );
    assert!(
        rows[1].starts_with("70.0s") && rows[1].contains("undo"),
        "{out}"
    );
    assert!(
        rows[2].starts_with("75.0s") && rows[2].contains("an allocation of service/web"),
        "{out}"
    );
    // Carried out: a kill, latency on the agent's connection, one core kept busy.
    std::fs::write(
        &file,
        "kind: Experiment\nname: kill-one\nsteady_state:\n  - { service: web, ready_at_least: 2 }\nfaults:\n  - { at: 1s, kill: { allocation_of: service/web } }\n  - { at: 1s, latency: { node: node1, ms: 50 }, for: 2s }\n  - { at: 1s, cpu_stress: { node: node1, cores: 1 }, for: 2s }\nguard: { abort_if: { ready_below: { service: web, count: 1 } } }\n",
    )
    .expect("write");
    let ran = c.cli(&["experiment", "run", "-f", &f]);
    let md = String::from_utf8_lossy(&ran.stdout).to_string();
    assert_eq!(ran.status.code(), Some(0), "{ran:?}");
    for want in [
        "# Experiment kill-one: finished",
        "**Verdict: the steady state held before the faults and came back after them.**",
        "fault 0 began: kill an allocation of service/web",
        "fault 2 undone: cpu_stress node1 1 cores for 2s",
    ] {
        assert!(md.contains(want), "{want:?} not in\n{md}");
    }
    let json = c.ok(&["experiment", "report", "kill-one", "-o", "json"]);
    let r: serde_json::Value = serde_json::from_str(&json).expect("the report as JSON");
    assert_eq!(r["phase"], "finished", "{r}");
    assert_eq!(r["verdict"]["steady"], true, "{r}");
    let kill = &r["verdict"]["faults"][0];
    assert_eq!(kill["fault"], 0, "{r}");
    assert!(
        kill["replaced_ms"].as_u64().is_some(),
        "the kill was not repaired: {r}"
    );
    let list = c.ok(&["experiment", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("kill-one") && l.contains("finished") && l.contains("held")),
        "{list}"
    );
    // The stress ended with its fault (no process of it is left: its arguments are
    // cores, bytes and milliseconds, 1 0 2000, which no other test uses).
    let stress_left = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| c.ends_with(b"chaos-stress\x001\x000\x002000\x00"));
    assert!(!stress_left, "a chaos-stress process outlived its fault");

    // Latency slows the node's service proxy too, and only while it lasts.
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("mkdir");
    std::fs::write(www.join("index.html"), "hi\n").expect("write");
    assert!(c
        .apply_yaml(
            "echo.yaml",
            &format!(
                "kind: Service\nname: echo\ntask:\n  command: [python3, -m, http.server, --bind, 127.0.0.1, --directory, \"{}\", \"${{MOTLEY_PORT_HTTP}}\"]\n  stop_grace: 1s\nports:\n  - {{ name: http, service_port: 8091 }}\n",
                www.display()
            ),
        )
        .status
        .success());
    let vip = wait_for("echo in rotation", Duration::from_secs(60), || {
        let text = c.ok(&["describe", "service", "echo"]);
        let serving = text
            .lines()
            .any(|l| l.starts_with("  echo-") && l.trim_end().ends_with("yes"));
        let vip = text
            .lines()
            .find_map(|l| l.strip_prefix("Address:     echo.motley ("))
            .and_then(|r| r.split(')').next())
            .map(str::to_string);
        vip.filter(|_| serving)
    });
    // One request to echo through the proxy: the body.
    let get = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(format!("{vip}:8091"))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    };
    let timed_get = || -> Duration {
        let t = std::time::Instant::now();
        let body = get().expect("a request to echo through the proxy");
        assert!(body.contains("hi"), "{body}");
        t.elapsed()
    };
    // In rotation once its process runs (it has no check), python may not listen yet:
    // the experiment's first probe would be refused (seen once, on a loaded machine).
    wait_for(
        "echo to answer through the proxy",
        Duration::from_secs(30),
        || get().ok().filter(|body| body.contains("hi")).map(|_| ()),
    );
    std::fs::write(
        &file,
        "kind: Experiment\nname: slow\nsteady_state:\n  - { http: \"http://echo.motley:8091/\", expect_status: 200, every: 500ms }\nfaults:\n  - { at: 0s, latency: { node: node1, ms: 400 }, for: 8s }\n",
    )
    .expect("write");
    c.ok(&["experiment", "run", "-f", &f, "--detach"]);
    wait_for("the latency held", Duration::from_secs(20), || {
        let r: serde_json::Value =
            serde_json::from_str(&c.ok(&["experiment", "report", "slow", "-o", "json"])).ok()?;
        (r["phase"] == "running")
            .then_some(())
            .filter(|_| r["history"].to_string().contains("fault_started"))
    });
    // The agent has had the order for a moment (the fault lasts 8 s).
    std::thread::sleep(Duration::from_secs(1));
    let slow = timed_get();
    assert!(
        slow >= Duration::from_millis(800),
        "400 ms each way, took {slow:?}"
    );
    wait_for("the experiment to end", Duration::from_secs(60), || {
        let r: serde_json::Value =
            serde_json::from_str(&c.ok(&["experiment", "report", "slow", "-o", "json"])).ok()?;
        (r["phase"] == "finished").then_some(())
    });
    // The HTTP probe reached `echo.motley` from the server (through the catalog: the
    // server has no node proxy of its own), every time.
    let r: serde_json::Value =
        serde_json::from_str(&c.ok(&["experiment", "report", "slow", "-o", "json"]))
            .expect("the report as JSON");
    let probes: Vec<bool> = r["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| h["record"] == "probe")
        .map(|h| h["ok"] == true)
        .collect();
    assert!(probes.len() >= 10 && probes.iter().all(|ok| *ok), "{r}");
    assert_eq!(r["verdict"]["steady"], true, "{r}");
    let quick = timed_get();
    assert!(
        quick < Duration::from_millis(400),
        "the latency outlived its fault: {quick:?}"
    );
    std::fs::write(
        &file,
        "kind: Experiment\nname: lose-node1\nfaults:\n  - { at: 10s, power_off: { node: pi-9 }, for: 60s }\n",
    )
    .expect("write");
    let bad = c.cli(&["experiment", "run", "-f", &f, "--dry-run"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("e.yaml:4:") && err.contains("no node \"pi-9\" in the cluster"),
        "{err}"
    );
}
