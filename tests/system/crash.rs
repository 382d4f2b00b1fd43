//! Crash safety: `kill -9` of `motley up` while a client applies objects.

use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;

/// Objects the client tries to apply (in pairs).
const OBJECTS: usize = 200;
const PAIRS: usize = OBJECTS / 2;

fn manifest(i: usize, tag: u16) -> String {
    // A pair per request: both must exist or neither.
    format!(
        "kind: Service\nname: s{i}\ntask:\n  command: [sleep, \"{tag}{i:04}\"]\n  resources: {{ cpu: 1m, memory: 1Mi }}\n---\nkind: Job\nname: j{i}\ntask:\n  command: [\"true\"]\n  resources: {{ cpu: 1m, memory: 1Mi }}\n"
    )
}

fn processes_with_arg(arg: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() {
            let argv = cmdline(pid);
            if argv.len() == 2 && argv[0] == "sleep" && argv[1] == arg && pid_alive(pid) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn kill9_during_applies_loses_nothing_acknowledged() {
    let mut c = Cluster::up(&[]);
    let tag = c.port;
    let (tx, rx) = mpsc::channel::<usize>();
    let config = c.config();
    let dir = c.dir.path().to_path_buf();
    let applier = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..PAIRS {
            let path = dir.join(format!("pair{i}.yaml"));
            std::fs::write(&path, manifest(i, tag)).expect("write");
            let out = std::process::Command::new(motley_bin())
                .arg("--config")
                .arg(&config)
                .args(["apply", "-f"])
                .arg(&path)
                .output()
                .expect("run apply");
            if out.status.success() {
                acked.push(i);
                let _ = tx.send(acked.len());
            } else if acked.len() > 10 {
                // The server is gone: every later apply fails the same way.
                break;
            }
        }
        acked
    });
    // Kill in the middle of the stream of applies.
    while let Ok(n) = rx.recv_timeout(Duration::from_secs(60)) {
        if n >= PAIRS / 2 {
            break;
        }
    }
    let before_kill: Vec<serde_json::Value> = c.allocs();
    c.kill9();
    let acked = applier.join().expect("applier");
    assert!(
        acked.len() >= PAIRS / 2,
        "only {} applies acknowledged",
        acked.len()
    );

    // Tasks keep running while motley is down; on restart they are adopted.
    let running_before: Vec<(String, u64)> = before_kill
        .iter()
        .filter(|a| {
            a["state"] == "running"
                && a["workload"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("service/"))
        })
        .filter_map(|a| Some((a["id"].as_str()?.to_string(), a["pid"].as_u64()?)))
        .collect();
    c.start(&[]);
    let services = c.json(&["get", "services"]);
    let jobs = c.json(&["get", "jobs"]);
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["workload"]["spec"]["name"].as_str().map(String::from))
            .collect()
    };
    let (svc, job) = (names(&services), names(&jobs));
    for i in &acked {
        assert!(
            svc.contains(&format!("s{i}")),
            "acknowledged service s{i} lost"
        );
        assert!(job.contains(&format!("j{i}")), "acknowledged job j{i} lost");
    }
    for i in 0..PAIRS {
        assert_eq!(
            svc.contains(&format!("s{i}")),
            job.contains(&format!("j{i}")),
            "pair {i} half-applied"
        );
    }
    // Services come back: exactly one process per service, adopted ones with their old pid.
    let n = svc.len();
    wait_for(
        "every service to run one replica",
        Duration::from_secs(90),
        || {
            let running = c
                .allocs()
                .iter()
                .filter(|a| a["state"] == "running" && a["pid"].as_u64().is_some())
                .count();
            (running == n).then_some(())
        },
    );
    for name in &svc {
        let i: usize = name[1..].parse().expect("index");
        let arg = format!("{tag}{i:04}");
        assert_eq!(
            processes_with_arg(&arg),
            1,
            "service {name} must run exactly once"
        );
    }
    let after = c.allocs();
    assert!(!running_before.is_empty(), "nothing ran before the crash");
    for (id, pid) in running_before {
        // Every allocation that ran is still there (a replacement would have a new id)
        // and runs the same process.
        let Some(a) = after.iter().find(|a| a["id"] == id.as_str()) else {
            panic!("allocation {id} (pid {pid}) is gone: replaced instead of adopted");
        };
        assert_eq!(
            a["pid"].as_u64(),
            Some(pid),
            "allocation {id} was restarted instead of adopted"
        );
    }
    assert_eq!(c.stop(), Some(0));
    for name in &svc {
        let i: usize = name[1..].parse().expect("index");
        assert_eq!(
            processes_with_arg(&format!("{tag}{i:04}")),
            0,
            "service {name} outlived motley up"
        );
    }
}

/// An agent killed after starting a task but before writing it down (its allocation not
/// yet in `state.json`) finds the process again by its allocation id when a server
/// assigns the allocation again: adopted with its pid, not started a second time. A
/// process left from an allocation the cluster does not give this node is stopped.
#[test]
fn a_task_started_but_not_written_down_is_adopted_and_a_stray_is_stopped() {
    let mut c = Cluster::up(&[]);
    let arg = format!("{}7777", c.port);
    let yaml = format!(
        "kind: Service\nname: solo\ntask:\n  command: [sleep, \"{arg}\"]\n  resources: {{ cpu: 1m, memory: 1Mi }}\n"
    );
    assert!(c.apply_yaml("solo.yaml", &yaml).status.success());
    let a = wait_for("solo to run", Duration::from_secs(30), || {
        c.running("service/solo").into_iter().next()
    });
    let id = a["id"].as_str().expect("id").to_string();
    let pid = a["pid"].as_u64().expect("pid");
    // The agent writes its file lazily: wait until it names the allocation, then take
    // the allocation out, as if the agent had died before writing it.
    let agent_dir = c.data_dir().join("agent");
    let state_path = agent_dir.join("state.json");
    wait_for(
        "the state file to name solo",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&state_path).ok()?;
            text.contains(&id).then_some(())
        },
    );
    c.kill9();
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("read state"))
            .expect("state is JSON");
    let removed = state["allocs"].as_object_mut().expect("allocs").remove(&id);
    assert!(removed.is_some(), "{id} was in the state file");
    std::fs::write(&state_path, serde_json::to_vec(&state).expect("encode")).expect("write");
    // A process this agent started for an allocation the cluster never gave it.
    let ghost_dir = agent_dir.join("allocs").join("ghost-1");
    std::fs::create_dir_all(&ghost_dir).expect("ghost dir");
    let mut ghost = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg("1000")
            .env("MOTLEY_ALLOC_ID", "ghost-1")
            .env("MOTLEY_ALLOC_DIR", &ghost_dir)
            .process_group(0)
            .spawn()
            .expect("spawn the stray")
    };
    // Another agent's process on the same machine: left alone.
    let mut foreign = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg("1000")
            .env("MOTLEY_ALLOC_ID", "foreign-1")
            .env(
                "MOTLEY_ALLOC_DIR",
                "/var/lib/motley-other/agent/allocs/foreign-1",
            )
            .process_group(0)
            .spawn()
            .expect("spawn the foreign task")
    };

    c.start(&[]);
    wait_for("the stray to be stopped", Duration::from_secs(30), || {
        ghost.try_wait().ok().flatten()
    });
    let a = wait_for(
        "solo to be reported running",
        Duration::from_secs(30),
        || c.running("service/solo").into_iter().next(),
    );
    assert_eq!(a["id"], id.as_str(), "the same allocation");
    assert_eq!(a["pid"].as_u64(), Some(pid), "adopted, not restarted");
    assert_eq!(processes_with_arg(&arg), 1, "solo runs exactly once");
    assert!(!ghost_dir.exists(), "the stray's directory is removed");
    let log = std::fs::read_to_string(&c.stderr_log).unwrap_or_default();
    assert!(
        log.contains(&format!(
            "found {id} (pid {pid}) running, not in the state file"
        )),
        "{log}"
    );
    assert!(
        foreign.try_wait().ok().flatten().is_none(),
        "another agent's task was stopped"
    );
    let _ = foreign.kill();
    let _ = foreign.wait();
    assert_eq!(c.stop(), Some(0));
    assert_eq!(processes_with_arg(&arg), 0, "solo outlived motley up");
}

/// The user tasks run as (`nobody` for a root agent), from /proc.
fn uid_of(pid: u32) -> Option<u32> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[test]
fn a_fenced_task_lives_as_long_as_its_agent_and_dies_with_it() {
    let mut c = Cluster::up(&[]);
    let yaml = "kind: Service\nname: fenced\non_node_loss: fence\ntask:\n  command: [sleep, \"600\"]\n---\nkind: Service\nname: free\ntask:\n  command: [sleep, \"600\"]\n";
    assert!(c.apply_yaml("f.yaml", yaml).status.success());
    let pid_of = |c: &mut Cluster, w: &str| {
        c.running(w)
            .first()
            .and_then(|a| a["pid"].as_u64())
            .map(|p| p as u32)
    };
    let fenced = wait_for("the fenced task running", Duration::from_secs(30), || {
        pid_of(&mut c, "service/fenced")
    });
    let free = wait_for("the free task running", Duration::from_secs(30), || {
        pid_of(&mut c, "service/free")
    });
    if nix::unistd::geteuid().is_root() {
        assert_ne!(uid_of(fenced), Some(0), "a root agent runs tasks as nobody");
    }
    // Idle blocking threads end after 10 s: a parent-death signal tied to the thread
    // that started the task would have killed it by now.
    std::thread::sleep(Duration::from_secs(15));
    assert!(pid_alive(fenced), "the fenced task still runs");
    let now = c.running("service/fenced");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0]["pid"].as_u64(), Some(fenced as u64), "same process");
    assert_eq!(now[0]["restarts"], 0, "never restarted: {now:?}");
    // kill -9 of the agent: the fenced task dies with it (nobody is left to stop it
    // when its lease runs out); the other one runs on, to be adopted.
    c.kill9();
    wait_for("the fenced task gone", Duration::from_secs(10), || {
        (!pid_alive(fenced)).then_some(())
    });
    assert!(pid_alive(free), "an unfenced task outlives its agent");
    kill_tasks_under(c.dir.path());
}
