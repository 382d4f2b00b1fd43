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
    for (id, pid) in running_before {
        if let Some(a) = after.iter().find(|a| a["id"] == id.as_str()) {
            assert_eq!(
                a["pid"].as_u64(),
                Some(pid),
                "allocation {id} was restarted instead of adopted"
            );
        }
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
