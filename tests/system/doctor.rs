//! `motley doctor` on this machine, against a real cluster.

use std::process::Command;

use serde_json::Value;

use crate::common::*;

fn doctor(c: &Cluster, args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(motley_bin())
        .arg("--config")
        .arg(c.config())
        .args(["doctor", "-o", "json"])
        .args(args)
        .output()
        .expect("run motley doctor");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor -o json: {e}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn finding<'a>(v: &'a Value, check: &str, says: &str) -> &'a Value {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["check"] == check && f["message"].as_str().is_some_and(|m| m.contains(says)))
        .unwrap_or_else(|| panic!("no {check} finding saying {says:?} in {v:#}"))
}

#[test]
fn doctor_checks_servers_ports_and_the_data_directory() {
    let c = Cluster::up(&[]);
    let data = tempfile::tempdir().expect("tempdir");
    let data = data.path().to_str().expect("utf-8").to_string();
    // A healthy run: the cluster's server answers, the port is free.
    let free = format!("127.0.0.1:{}", free_port());
    let (code, v) = doctor(
        &c,
        &[
            "--data-dir",
            &data,
            "--listen",
            &free,
            "--containerd",
            "/nonexistent.sock",
        ],
    );
    let server = finding(&v, "server", "answers");
    assert_eq!(server["level"], "ok", "{v:#}");
    assert_eq!(finding(&v, "port", "is free")["level"], "ok");
    assert_eq!(finding(&v, "data-dir", &data)["level"], "ok");
    let containerd = finding(&v, "containerd", "not reachable");
    assert_eq!(containerd["level"], "warn");
    assert!(
        containerd["fix"]
            .as_str()
            .is_some_and(|f| f.contains("containerd"))
    );
    assert!(
        matches!(
            finding(&v, "cgroups", "")["level"].as_str(),
            Some("ok" | "fail")
        ),
        "{v:#}"
    );
    // Warnings alone exit 0 (this machine's clock may be unknown, containerd absent).
    let fails: Vec<&Value> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["level"] == "fail")
        .collect();
    assert_eq!(
        code,
        Some(if fails.is_empty() { 0 } else { 1 }),
        "{fails:?}"
    );

    // A port in use, a data directory in memory and a server that is not there fail,
    // each with its fix, and the exit code says so.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    let (code, v) = doctor(
        &c,
        &[
            "--data-dir",
            "/dev/shm/motley-doctor-test",
            "--listen",
            &taken,
            "--server",
            "https://127.0.0.1:1",
        ],
    );
    assert_eq!(code, Some(1));
    let port = finding(&v, "port", &taken);
    assert_eq!(port["level"], "fail");
    assert!(
        port["message"]
            .as_str()
            .is_some_and(|m| m.contains("in use")),
        "{port}"
    );
    let dir = finding(&v, "data-dir", "tmpfs");
    assert_eq!(dir["level"], "fail");
    assert_eq!(finding(&v, "server", "127.0.0.1:1")["level"], "fail");
    // The table says the same to a person.
    let out = Command::new(motley_bin())
        .args([
            "doctor",
            "--data-dir",
            "/dev/shm/x",
            "--server",
            "https://127.0.0.1:1",
        ])
        .output()
        .expect("run motley doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL data-dir") && text.contains("fix: use a directory on a disk"),
        "{text}"
    );
}
