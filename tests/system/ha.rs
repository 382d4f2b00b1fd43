//! A highly available control plane: three real etcd members (Debian's etcd-server) on
//! loopback, several `motley server` processes on them, real agents. Leader kills, a
//! thousand applies through repeated leader kills, and etcd members lost and restored.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use motley_core::api::{ManifestFile, ManifestSet, ObjectResults};
use motley_store::etcd::testing::{EtcdCluster, free_port};
use serde_json::Value;

use crate::common::*;

struct Server {
    url: String,
    port: u16,
    data: PathBuf,
    proc: Option<Proc>,
}

struct Plane {
    dir: tempfile::TempDir,
    etcd: EtcdCluster,
    lease: &'static str,
    servers: Vec<Server>,
    agents: Vec<Proc>,
}

impl Plane {
    fn start(servers: usize, lease: &'static str) -> Plane {
        let dir = test_dir();
        let etcd_dir = dir.path().join("etcd");
        std::fs::create_dir_all(&etcd_dir).expect("etcd dir");
        let etcd = EtcdCluster::start(&etcd_dir, 3);
        let mut p = Plane {
            etcd,
            lease,
            servers: Vec::new(),
            agents: Vec::new(),
            dir,
        };
        for i in 0..servers {
            let port = free_port();
            p.servers.push(Server {
                url: format!("https://127.0.0.1:{port}"),
                port,
                data: p.dir.path().join(format!("s{i}")),
                proc: None,
            });
            p.start_server(i);
        }
        p
    }

    fn start_server(&mut self, i: usize) {
        let s = &self.servers[i];
        let data = s.data.display().to_string();
        let listen = format!("127.0.0.1:{}", s.port);
        let name = format!("s{i}");
        let url = self.etcd.url();
        // Every server seals and opens secrets with the same key, as an operator who
        // copied secrets.key to each would have it.
        let key = self.dir.path().join("secrets.key").display().to_string();
        let log = self.dir.path().join(format!(
            "s{i}-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ));
        let args = [
            "server",
            "--data-dir",
            &data,
            "--listen",
            &listen,
            "--datastore",
            &url,
            "--leader-lease",
            self.lease,
            "--name",
            &name,
            "--secrets-key",
            &key,
        ];
        let proc = Proc::spawn(&args, log).unwrap_or_else(|e| panic!("server s{i}: {e}"));
        self.servers[i].proc = Some(proc);
    }

    /// kill -9 server `i`.
    fn kill_server(&mut self, i: usize) {
        if let Some(mut p) = self.servers[i].proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    fn start_agent(&mut self, name: &str) {
        let token = std::fs::read_to_string(self.servers[0].data.join("server/join-token"))
            .expect("join token");
        let dir = self.dir.path().join(name).display().to_string();
        let args = [
            "agent",
            "--server",
            &self.servers[0].url,
            "--token",
            token.trim(),
            "--data-dir",
            &dir,
            "--name",
            name,
        ];
        let log = self.dir.path().join(format!("{name}.log"));
        self.agents
            .push(Proc::spawn(&args, log).unwrap_or_else(|e| panic!("agent {name}: {e}")));
    }

    /// The first server's `client.yaml` (it lists every server once they registered).
    fn config(&self) -> String {
        self.servers[0]
            .data
            .join("client.yaml")
            .display()
            .to_string()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        cli_with(&self.config(), args)
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let out = self.cli(args);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// (index of the leading server, number of registered servers), as the API says.
    fn leader(&self) -> Option<(usize, usize)> {
        let servers = self.json(&["get", "servers", "-o", "json"])?;
        let list = servers.as_array()?;
        let leaders: Vec<&Value> = list.iter().filter(|s| s["leader"] == true).collect();
        if leaders.len() != 1 {
            return None;
        }
        let url = leaders[0]["url"].as_str()?;
        let i = self.servers.iter().position(|s| s.url == url)?;
        self.servers[i].proc.as_ref()?;
        Some((i, list.len()))
    }

    fn apply(&self, name: &str, yaml: &str) -> std::process::Output {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write manifest");
        self.cli(&["apply", "-f", path.to_str().expect("path")])
    }

    /// Pids of the running instances of a workload.
    fn running(&self, workload: &str) -> Vec<u64> {
        let Some(allocs) = self.json(&["get", "allocs", "-o", "json"]) else {
            return Vec::new();
        };
        allocs
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|a| {
                        a["workload"] == format!("service/{workload}").as_str()
                            && a["state"] == "running"
                    })
                    .filter_map(|a| a["pid"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// When a test fails, the tail of every server's and agent's log goes to the test's
/// output before the directory is removed: a failure in CI explains itself.
impl Drop for Plane {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for p in logs {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| format!("(unreadable: {e})"));
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("---- {} (last {} lines)", p.display(), tail.len());
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn service(name: &str, replicas: u32) -> String {
    format!(
        "kind: Service\nname: {name}\nreplicas: {replicas}\ntask:\n  command: [sleep, \"100000\"]\n  resources:\n    cpu: 10m\n    memory: 8Mi\n"
    )
}

#[test]
fn a_killed_leader_is_replaced_and_no_acknowledged_apply_is_lost() {
    let mut p = Plane::start(3, "2s");
    p.start_agent("a0");
    p.start_agent("a1");

    // Three servers, one leader; the first server's client config and the agents (told
    // of the first server only) learn all three.
    let (leader, n) = wait_for("one leader of three", Duration::from_secs(30), || {
        p.leader().filter(|(_, n)| *n == 3)
    });
    assert_eq!(n, 3);
    let urls: BTreeSet<String> = p.servers.iter().map(|s| s.url.clone()).collect();
    wait_for(
        "client.yaml lists every server",
        Duration::from_secs(10),
        || {
            let cfg = motley_net::ClientConfig::load(std::path::Path::new(&p.config())).ok()?;
            (cfg.servers.iter().cloned().collect::<BTreeSet<_>>() == urls).then_some(())
        },
    );
    for a in ["a0", "a1"] {
        wait_for(
            "the agent knows every server",
            Duration::from_secs(10),
            || {
                let text =
                    std::fs::read_to_string(p.dir.path().join(a).join("agent/servers")).ok()?;
                let known: BTreeSet<String> = text.lines().map(str::to_string).collect();
                (known == urls).then_some(())
            },
        );
    }
    // Each server's own /metrics says whether it leads; exactly one does.
    let cfg = motley_net::ClientConfig::load(std::path::Path::new(&p.config())).expect("config");
    let leading: Vec<usize> = (0..3)
        .filter(|i| {
            let one = motley_net::ClientConfig {
                servers: vec![p.servers[*i].url.clone()],
                ..cfg.clone()
            };
            let client = motley_cli::client::Client::new(&one).expect("client");
            let text = rt()
                .block_on(client.get_bytes("/metrics"))
                .expect("metrics");
            String::from_utf8_lossy(&text)
                .lines()
                .any(|l| l == "motley_leader 1")
        })
        .collect();
    assert_eq!(leading, vec![leader]);
    let out = p.cli(&["get", "servers"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("LEADER") && table.lines().count() == 4,
        "{table}"
    );

    let out = p.apply("steady", &service("steady", 2));
    assert!(out.status.success(), "{out:?}");
    let steady = wait_for("steady runs", Duration::from_secs(30), || {
        let pids = p.running("steady");
        (pids.len() == 2).then_some(pids)
    });

    // A secret sealed by this leader is opened by the next ones.
    let password = format!("pw-{}", motley_net::new_id());
    let out = p.apply(
        "db",
        &format!("kind: Secret\nname: db\ndata:\n  password: {password}\n"),
    );
    assert!(out.status.success(), "{out:?}");

    // Kill -9 the leader three times: another leads, and a service applied right after
    // the kill runs, with its secret.
    let mut leader = leader;
    for round in 0..3 {
        let killed = Instant::now();
        p.kill_server(leader);
        let name = format!("after-{round}");
        let out = p.apply(
            &name,
            &format!(
                "{}  secrets: [{{ secret: db, key: password, env: DB_PASSWORD }}]\n",
                service(&name, 1)
            ),
        );
        assert!(
            out.status.success(),
            "apply after killing the leader: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (next, _) = wait_for("a new leader", Duration::from_secs(30), || {
            p.leader().filter(|(i, _)| *i != leader)
        });
        let led = killed.elapsed();
        let pid = wait_for("the new service runs", Duration::from_secs(30), || {
            let pids = p.running(&name);
            (pids.len() == 1).then(|| pids[0])
        });
        assert!(
            environ(pid as u32).contains(&format!("DB_PASSWORD={password}")),
            "round {round}: the task lacks its secret"
        );
        // The new leader says so in its events (answered by the leader).
        wait_for("a leader-changed event", Duration::from_secs(10), || {
            let list = p.json(&["events", "-o", "json"])?;
            list.as_array()?
                .iter()
                .any(|e| e["kind"] == "leader-changed")
                .then_some(())
        });
        eprintln!(
            "round {round}: killed s{leader}; s{next} leads after {led:?}; {name} running after {:?}",
            killed.elapsed()
        );
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "{:?}",
            killed.elapsed()
        );
        p.start_server(leader);
        leader = next;
    }
    // A leader stopped with SIGTERM revokes its lease: another leads before the 2 s
    // lease could have run out (had it only expired, no other server could lead
    // sooner). The handover time itself is a benchmark figure (bench/ha.py).
    let stopping = Instant::now();
    if let Some(mut proc) = p.servers[leader].proc.take() {
        proc.terminate();
    }
    let (next, _) = wait_for("a leader after SIGTERM", Duration::from_secs(30), || {
        p.leader().filter(|(i, _)| *i != leader)
    });
    let took = stopping.elapsed();
    eprintln!("SIGTERM to s{leader}: s{next} leads after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "{took:?}: no faster than the lease's expiry, so it was not revoked"
    );
    p.start_server(leader);

    // The steady service never moved: same processes, still alive.
    let now = p.running("steady");
    assert_eq!(
        now.iter().collect::<BTreeSet<_>>(),
        steady.iter().collect::<BTreeSet<_>>()
    );
    for pid in &steady {
        assert!(pid_alive(*pid as u32), "steady task {pid} died");
    }

    // A thousand distinct applies through the CLI's client (failing over across the
    // servers) while the leader is killed three more times.
    let cfg = motley_net::ClientConfig::load(std::path::Path::new(&p.config())).expect("config");
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    // The leader is killed after apply 150, 450 and 750; the applier waits 50 applies
    // later for each kill, so that every kill falls inside the run (applies are fast
    // enough to finish during one failover otherwise).
    const KILL_AT: [usize; 3] = [150, 450, 750];
    let kills = Arc::new(AtomicUsize::new(0));
    let applier = {
        let (acked, done, finished) = (acked.clone(), done.clone(), finished.clone());
        let kills = kills.clone();
        std::thread::spawn(move || {
            let rt = rt();
            let client = motley_cli::client::Client::new(&cfg).expect("client");
            let mut failed = Vec::new();
            for i in 0..1000 {
                if let Some(k) = KILL_AT.iter().position(|at| i == at + 50) {
                    let waited = std::time::Instant::now();
                    while kills.load(Ordering::SeqCst) <= k {
                        assert!(
                            waited.elapsed() < Duration::from_secs(120),
                            "kill {k} never came"
                        );
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                let name = format!("v{i:04}");
                let set = ManifestSet {
                    files: vec![ManifestFile {
                        name: format!("{name}.yaml"),
                        content: format!("kind: Volume\nname: {name}\nsize: 1Mi\n"),
                    }],
                    dry_run: false,
                    inputs: Vec::new(),
                };
                let r = rt.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        client.post::<_, ObjectResults>("/v1/apply", &set),
                    )
                    .await
                });
                match r {
                    Ok(Ok(_)) => acked.lock().expect("lock").push(name),
                    Ok(Err(e)) => failed.push(format!("{name}: {e:#}")),
                    Err(_) => panic!("apply of {name} hung for 30 s"),
                }
                done.store(i + 1, Ordering::SeqCst);
            }
            finished.store(true, Ordering::SeqCst);
            failed
        })
    };
    // Where the applies stood at each kill: every kill must fall inside the run.
    let mut at_kill = Vec::new();
    for at in KILL_AT {
        wait_for("applies progress", Duration::from_secs(120), || {
            (done.load(Ordering::SeqCst) >= at || finished.load(Ordering::SeqCst)).then_some(())
        });
        let (l, _) = wait_for("a leader", Duration::from_secs(30), || p.leader());
        at_kill.push(done.load(Ordering::SeqCst));
        p.kill_server(l);
        kills.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1500));
        p.start_server(l);
    }
    let failed = applier.join().expect("applier");
    let acked = acked.lock().expect("lock").clone();
    eprintln!(
        "{} applies acknowledged, {} failed cleanly: {:?}",
        acked.len(),
        failed.len(),
        failed.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(acked.len() + failed.len(), 1000);
    assert!(
        at_kill.iter().all(|n| *n < 1000),
        "a kill came after the last apply: {at_kill:?}"
    );
    // Not vacuous: a control plane that refused everything would lose nothing. Each
    // kill may fail the one apply in flight (its answer lost with the server).
    assert!(
        acked.len() >= 900,
        "only {} of 1000 applies acknowledged",
        acked.len()
    );
    let stored: BTreeSet<String> = wait_for("volumes listed", Duration::from_secs(30), || {
        p.json(&["get", "volumes", "-o", "json"])
    })
    .as_array()
    .expect("array")
    .iter()
    .filter_map(|v| v["workload"]["spec"]["name"].as_str().map(str::to_string))
    .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged but missing: {lost:?}");
}

#[test]
fn losing_etcd_members_one_is_unnoticed_two_is_unavailable_and_recovery_is_automatic() {
    let mut p = Plane::start(2, "3s");
    p.start_agent("e0");
    let (leader, _) = wait_for("a leader", Duration::from_secs(30), || {
        p.leader().filter(|(_, n)| *n == 2)
    });
    let out = p.apply("steady", &service("steady", 1));
    assert!(out.status.success(), "{out:?}");
    let steady = wait_for("steady runs", Duration::from_secs(30), || {
        let pids = p.running("steady");
        (pids.len() == 1).then(|| pids[0])
    });

    // One member down (the one every server talks to first): nothing is noticed.
    p.etcd.kill(0);
    let started = Instant::now();
    let out = p.apply("one-down", &service("one-down", 1));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("one-down runs", Duration::from_secs(30), || {
        (p.running("one-down").len() == 1).then_some(())
    });
    eprintln!(
        "one etcd member down: applied and running in {:?}",
        started.elapsed()
    );
    assert_eq!(
        p.leader().map(|(l, _)| l),
        Some(leader),
        "the leader changed"
    );

    // Two down: no quorum. The API says so promptly, the task keeps running.
    p.etcd.kill(1);
    let started = Instant::now();
    let out = p.apply("two-down", &service("two-down", 1));
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("two etcd members down: apply answered in {took:?}: {err}");
    assert!(!out.status.success());
    assert!(err.contains("datastore unavailable"), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    std::thread::sleep(Duration::from_secs(8));
    assert!(pid_alive(steady as u32), "the task died without quorum");

    // Both back: the cluster recovers by itself.
    p.etcd.start_member(0);
    p.etcd.start_member(1);
    let started = Instant::now();
    wait_for("applies succeed again", Duration::from_secs(60), || {
        p.apply("recovered", &service("recovered", 1))
            .status
            .success()
            .then_some(())
    });
    wait_for("recovered runs", Duration::from_secs(60), || {
        (p.running("recovered").len() == 1).then_some(())
    });
    eprintln!(
        "recovered: new service running {:?} after restart",
        started.elapsed()
    );
    // Read once the API answers with the allocation again (right after a recovery a
    // call can still fail, which reads as "nothing running").
    let now = wait_for("steady listed", Duration::from_secs(10), || {
        let pids = p.running("steady");
        (!pids.is_empty()).then_some(pids)
    });
    assert_eq!(now, vec![steady], "the task was restarted");
    assert!(pid_alive(steady as u32));

    // The leader and the node's agent die together. The new leader has heard no
    // heartbeat from the node: it gives it a full grace period (15 s from when it
    // began to lead) before declaring it down, then does.
    let (leader, _) = wait_for("a leader", Duration::from_secs(30), || p.leader());
    let _ = p.agents[0].child.kill();
    let _ = p.agents[0].child.wait();
    p.kill_server(leader);
    let died = Instant::now();
    wait_for("a new leader", Duration::from_secs(30), || {
        p.leader().filter(|(i, _)| *i != leader)
    });
    let state = |p: &Plane| -> String {
        p.json(&["get", "nodes", "e0", "-o", "json"])
            .and_then(|v| v[0]["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    while died.elapsed() < Duration::from_secs(10) {
        let s = state(&p);
        assert!(
            s == "suspect" || s.is_empty(),
            "node e0 is {s} during the grace period"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for(
        "e0 declared down after the grace",
        Duration::from_secs(30),
        || (state(&p) == "down").then_some(()),
    );
    eprintln!(
        "e0 declared down {:?} after the leader died",
        died.elapsed()
    );
    assert!(died.elapsed() > Duration::from_secs(15));
    // Its task kept running all along (killing an agent leaves its tasks).
    assert!(pid_alive(steady as u32));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(steady as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_server_started_before_etcd_waits_for_it_and_serves_once_it_is_up() {
    let dir = test_dir();
    let etcd_dir = dir.path().join("etcd");
    std::fs::create_dir_all(&etcd_dir).expect("etcd dir");
    let mut etcd = EtcdCluster::planned(&etcd_dir, 3);
    let url = etcd.url();
    let port = free_port();
    let data = dir.path().join("s0").display().to_string();
    let log = dir.path().join("s0.log");
    // At boot the two start in any order: the server first.
    let server = {
        let (url, data, log) = (url.clone(), data.clone(), log.clone());
        std::thread::spawn(move || {
            Proc::spawn(
                &[
                    "server",
                    "--data-dir",
                    &data,
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--datastore",
                    &url,
                ],
                log,
            )
        })
    };
    // It waits, and says for what (its first tries are 0.5, 1 and 2 s apart).
    let said = wait_for(
        "the server to say it waits",
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("waiting for the datastore").then_some(text)
        },
    );
    assert!(said.contains(&url), "{said}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!server.is_finished(), "the server gave up: {said}");
    etcd.start_all();
    let mut server = server
        .join()
        .expect("thread")
        .unwrap_or_else(|e| panic!("the server did not become ready once etcd was up: {e}"));
    let config = format!("{data}/client.yaml");
    let out = cli_with(&config, &["get", "servers", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let servers: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(servers.as_array().map(Vec::len), Some(1), "{servers}");
    server.terminate();
}

/// A periodic job through leader kills (issue 26): a run every two seconds, three
/// servers on etcd, the leader killed twice. Every due time runs at most once (a new
/// leader reads where the schedule stands from the runs in the store), and runs go on
/// after each kill.
#[test]
fn a_periodic_job_runs_each_due_time_at_most_once_across_leader_kills() {
    let mut p = Plane::start(3, "2s");
    p.start_agent("a0");
    let (mut leader, _) = wait_for("one leader of three", Duration::from_secs(30), || {
        p.leader().filter(|(_, n)| *n == 3)
    });
    let trace = trace_file(p.dir.path(), "trace");
    let yaml = format!(
        "kind: Job\nname: tick\nschedule: \"*/2 * * * * *\"\nhistory: 2\ntask:\n  command: [\"/bin/sh\", \"-c\", \"echo $MOTLEY_WORKLOAD >> {t}\"]\n  resources: {{ cpu: 10m, memory: 8Mi }}\n",
        t = trace.display()
    );
    let out = p.apply("tick", &yaml);
    assert!(out.status.success(), "{out:?}");
    // The due times (unix seconds) the runs recorded, in the order they ran.
    let dues = || -> Vec<u64> {
        std::fs::read_to_string(&trace)
            .expect("trace")
            .lines()
            .map(|l| {
                l.trim()
                    .strip_prefix("tick-")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("not a run of tick: {l:?}"))
            })
            .collect()
    };
    wait_for("three runs", Duration::from_secs(60), || {
        (dues().len() >= 3).then_some(())
    });
    for round in 0..2 {
        let before = dues().len();
        p.kill_server(leader);
        let (next, _) = wait_for("a new leader", Duration::from_secs(30), || {
            p.leader().filter(|(i, _)| *i != leader)
        });
        wait_for("runs after the kill", Duration::from_secs(60), || {
            (dues().len() >= before + 3).then_some(())
        });
        eprintln!(
            "round {round}: killed s{leader}, s{next} leads; dues {:?}",
            dues()
        );
        p.start_server(leader);
        leader = next;
    }
    let seen = dues();
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a due time ran twice: {seen:?}");
    assert!(seen.iter().all(|d| d % 2 == 0), "{seen:?}");
}
