//! Snapshots: save from a running server, refuse damaged files, restore into a fresh
//! data dir and into real etcd (the path from one Pi to three), scheduled snapshots
//! that write nothing while idle.

use std::time::Duration;

use motley_store::etcd::testing::{EtcdCluster, free_port};

use crate::common::*;

/// A `motley server` on its own port and data dir (or datastore).
fn server(dir: &std::path::Path, data: &str, extra: &[&str]) -> (Proc, String) {
    let data = dir.join(data);
    let mut args = vec![
        "server".to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proc::spawn(
        &refs,
        dir.join(format!(
            "{}.log",
            data.display().to_string().replace('/', "_")
        )),
    )
    .expect("server ready");
    (p, data.join("client.yaml").display().to_string())
}

/// `motley snapshot restore FILE ARGS...`.
fn restore(file: &std::path::Path, args: &[&str]) -> std::process::Output {
    restore_cmd(file, args).output().expect("run motley")
}

/// `motley snapshot restore FILE ARGS... PATH` (a target directory last).
fn restore_at(
    file: &std::path::Path,
    args: &[&str],
    path: std::path::PathBuf,
) -> std::process::Output {
    restore_cmd(file, args)
        .arg(path)
        .output()
        .expect("run motley")
}

fn restore_cmd(file: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(motley_bin());
    c.args(["snapshot", "restore"]).arg(file).args(args);
    c
}

/// Every workload's spec, by reference, as the API returns them.
fn specs(config: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_slice(&cli_with(config, &["get", "services", "-o", "json"]).stdout)
            .expect("json");
    let jobs: serde_json::Value =
        serde_json::from_slice(&cli_with(config, &["get", "jobs", "-o", "json"]).stdout)
            .expect("json");
    let vols: serde_json::Value =
        serde_json::from_slice(&cli_with(config, &["get", "volumes", "-o", "json"]).stdout)
            .expect("json");
    let mut out = serde_json::Map::new();
    for w in [v, jobs, vols]
        .iter()
        .flat_map(|l| l.as_array().cloned().unwrap_or_default())
    {
        let spec = &w["workload"]["spec"];
        let key = format!("{}/{}", spec["kind"], spec["name"]);
        out.insert(
            key,
            serde_json::json!([spec, w["workload"]["uid"], w["workload"]["generation"]]),
        );
    }
    serde_json::Value::Object(out)
}

#[test]
fn snapshots_round_trip_refuse_damage_and_move_to_etcd() {
    let dir = test_dir();
    let snaps = dir.path().join("scheduled");
    let (mut first, config) = server(
        dir.path(),
        "one",
        &[
            "--snapshot-interval",
            "1s",
            "--snapshot-dir",
            snaps.to_str().expect("path"),
            "--snapshot-retain",
            "2",
        ],
    );
    let manifests = dir.path().join("m.yaml");
    std::fs::write(
        &manifests,
        "kind: Service\nname: web\nreplicas: 3\ntask:\n  command: [sleep, '600']\n---\n\
         kind: Job\nname: batch\npriority: low\ncompletions: 4\ntask:\n  command: [sleep, '1']\n---\n\
         kind: Volume\nname: data\nsize: 1Gi\n",
    )
    .expect("write");
    assert!(
        cli_with(&config, &["apply", "-f", manifests.to_str().expect("path")])
            .status
            .success()
    );
    let before = specs(&config);
    assert_eq!(before.as_object().map(|o| o.len()), Some(3), "{before}");

    // Scheduled: a snapshot appears after the change, and an idle store adds none.
    let listed = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    wait_for("a scheduled snapshot", Duration::from_secs(10), || {
        let v = listed(&snaps);
        v.iter()
            .any(|f| f.starts_with("snapshot-") && f.ends_with(".snap"))
            .then_some(v)
    });
    // Once the controller's first pass has settled, an idle store adds nothing.
    std::thread::sleep(Duration::from_millis(1500));
    let first_files = listed(&snaps);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        listed(&snaps),
        first_files,
        "nothing changed, nothing written"
    );
    for i in 0..3 {
        std::fs::write(
            &manifests,
            format!("kind: Service\nname: extra{i}\ntask:\n  command: [sleep, '600']\n"),
        )
        .expect("write");
        assert!(
            cli_with(&config, &["apply", "-f", manifests.to_str().expect("path")])
                .status
                .success()
        );
        std::thread::sleep(Duration::from_millis(1300));
    }
    let kept = listed(&snaps);
    assert!(kept.len() <= 2, "retention 2: {kept:?}");

    // Save, then damage copies of it.
    let file = dir.path().join("cluster.snap");
    let out = cli_with(&config, &["snapshot", "save", file.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("objects written to"));
    let saved = specs(&config);
    first.terminate();

    let bytes = std::fs::read(&file).expect("snapshot");
    let truncated = dir.path().join("truncated.snap");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let edited = dir.path().join("edited.snap");
    let mut e = bytes.clone();
    let i = e.iter().position(|b| *b == b'7').expect("a hex digit");
    e[i] = b'8';
    std::fs::write(&edited, &e).expect("write");
    for (bad, why) in [(&truncated, "snapshot"), (&edited, "checksum")] {
        let out = restore_at(bad, &["--data-dir"], dir.path().join("refused"));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(why) && err.contains("nothing was restored"),
            "{err}"
        );
        assert!(
            !dir.path().join("refused/server/store.redb").exists(),
            "nothing written"
        );
    }

    // Restore into a fresh data dir: every object comes back as it was.
    let out = restore_at(&file, &["--data-dir"], dir.path().join("two"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The restored data dir has no CA yet: the new server creates one; its admin
    // token came with the snapshot, so a fresh client.yaml is written for it.
    let (mut second, config2) = server(dir.path(), "two", &[]);
    assert_eq!(specs(&config2), saved);
    second.terminate();

    // Embedded → etcd: the same file into an empty etcd, a server on it.
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start(etcd_dir.path(), 1);
    let out = restore(&file, &["--datastore", &etcd.url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut third, config3) = server(dir.path(), "three", &["--datastore", &etcd.url()]);
    assert_eq!(specs(&config3), saved);
    // The etcd-backed server works: an apply lands in etcd.
    std::fs::write(
        &manifests,
        "kind: Service\nname: on-etcd\ntask:\n  command: [sleep, '600']\n",
    )
    .expect("write");
    assert!(
        cli_with(
            &config3,
            &["apply", "-f", manifests.to_str().expect("path")]
        )
        .status
        .success()
    );
    let again = dir.path().join("etcd.snap");
    assert!(
        cli_with(
            &config3,
            &["snapshot", "save", again.to_str().expect("path")]
        )
        .status
        .success()
    );
    third.terminate();
    // A second restore into the now non-empty etcd is refused.
    let out = restore(&file, &["--datastore", &etcd.url()]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("restore into an empty store"), "{err}");
    drop(etcd);
}
