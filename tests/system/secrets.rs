//! Secrets: given to a task as environment variables and tmpfs files, hidden from get,
//! revealed to admins only, never in plaintext on disk, re-encrypted by rotate-key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn random_value() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    format!("s3cr3t-{}", hex::encode(b))
}

/// Every file under `root` (and the extra files) that contains any of `needles`.
pub(crate) fn files_containing(root: &Path, extra: &[&Path], needles: &[&str]) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&path, out),
                    Ok(t) if t.is_file() => out.push(path),
                    _ => {}
                }
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files.extend(extra.iter().map(|p| p.to_path_buf()));
    assert!(files.len() > 3, "nothing to search in {}", root.display());
    files
        .into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap_or_default();
            needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == n.as_bytes()))
        })
        .map(|f| f.display().to_string())
        .collect()
}

pub(crate) fn env_of(pid: u32, name: &str) -> Option<String> {
    environ(pid)
        .into_iter()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

#[test]
fn secrets_reach_only_their_task_and_never_disk_in_plaintext() {
    let mut c = Cluster::up(&[]);
    let inputs = tempfile::tempdir().expect("tempdir");
    let (pw, token, cert) = (random_value(), random_value(), random_value());
    std::fs::write(inputs.path().join("cert.pem"), &cert).expect("write cert");
    let manifest = inputs.path().join("app.yaml");
    std::fs::write(
        &manifest,
        format!(
            "kind: Secret\nname: db\ndata:\n  password: {pw}\n  token: {{ fromEnv: TEST_API_TOKEN }}\n  cert: {{ fromFile: cert.pem }}\n---\n\
             kind: Service\nname: app\ntask:\n  command: [sleep, '3600']\n  resources: {{ cpu: 10m, memory: 8Mi }}\n  secrets:\n\
             \x20   - {{ secret: db, key: password, env: DB_PASSWORD }}\n\
             \x20   - {{ secret: db, key: token, env: API_TOKEN }}\n\
             \x20   - {{ secret: db, key: cert, file: cert.pem }}\n"
        ),
    )
    .expect("write manifest");
    let config = c.config();
    let apply = |env: Option<&str>| {
        let mut cmd = Command::new(motley_bin());
        cmd.arg("--config")
            .arg(&config)
            .args(["apply", "-f"])
            .arg(&manifest)
            .env_remove("MOTLEY_TOKEN");
        match env {
            Some(v) => cmd.env("TEST_API_TOKEN", v),
            None => cmd.env_remove("TEST_API_TOKEN"),
        };
        cmd.output().expect("run motley apply")
    };

    // fromEnv unset: refused at the field, nothing applied.
    let out = apply(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("app.yaml:5:")
            && err.contains("data.token.fromEnv")
            && err.contains("TEST_API_TOKEN is not set"),
        "{err}"
    );
    assert!(
        c.json(&["get", "secrets"])
            .as_array()
            .is_some_and(Vec::is_empty)
    );

    let out = apply(Some(&token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("secret/db created"), "{stdout}");

    // The task has its values: two variables and one file on tmpfs, 0400 in a 0700 dir.
    let pid = wait_for("app running", Duration::from_secs(20), || {
        c.running("service/app")
            .first()
            .and_then(|a| a["pid"].as_u64())
    }) as u32;
    assert_eq!(env_of(pid, "DB_PASSWORD").as_deref(), Some(pw.as_str()));
    assert_eq!(env_of(pid, "API_TOKEN").as_deref(), Some(token.as_str()));
    let sdir = env_of(pid, "MOTLEY_SECRETS").expect("MOTLEY_SECRETS set");
    let on_tmpfs = nix::sys::statfs::statfs(Path::new(&sdir))
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    assert!(on_tmpfs, "{sdir} is not on tmpfs");
    let file = Path::new(&sdir).join("cert.pem");
    assert_eq!(std::fs::read_to_string(&file).expect("secret file"), cert);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o400);
    assert_eq!(mode(Path::new(&sdir)), 0o700);
    // Owned by the task's user (nobody), which only it and root can read.
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("user lookup")
        .expect("a nobody user")
        .uid
        .as_raw();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&file).expect("stat").uid(), nobody);
    assert_eq!(std::fs::metadata(&sdir).expect("stat").uid(), nobody);

    // Shown without values; the same values again change nothing.
    for args in [
        &["get", "secret", "db", "-o", "json"][..],
        &["get", "secrets", "-o", "yaml"],
        &["get", "secrets"],
        &["describe", "secret", "db"],
    ] {
        let shown = c.ok(args);
        for v in [&pw, &token, &cert] {
            assert!(
                !shown.contains(v.as_str()),
                "{args:?} shows a value:\n{shown}"
            );
        }
        if args[1] == "secrets" && args.len() == 2 {
            assert!(shown.contains("cert,password,token"), "{shown}");
        }
    }
    let again = apply(Some(&token));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("secret/db unchanged"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // Admins see values when they ask; viewers never.
    let revealed = c.json(&["get", "secret", "db", "--reveal"]);
    assert_eq!(revealed["data"]["password"], pw.as_str());
    assert_eq!(revealed["data"]["cert"], cert.as_str());
    let viewer = c.ok(&["token", "create", "--role", "viewer"]);
    let viewer = viewer.trim();
    let as_viewer = |args: &[&str]| {
        Command::new(motley_bin())
            .arg("--config")
            .arg(c.config())
            .args(args)
            .env("MOTLEY_TOKEN", viewer)
            .output()
            .expect("run motley")
    };
    let refused = as_viewer(&["get", "secret", "db", "--reveal"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("viewer"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let listed = as_viewer(&["get", "secret", "db", "-o", "json"]);
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("redacted") && !listed.contains(pw.as_str()),
        "{listed}"
    );
    let audit = c.ok(&["get", "audit"]);
    assert!(audit.contains("secret db revealed"), "{audit}");
    assert!(
        audit.contains("/v1/secrets/db/reveal") && audit.contains("403"),
        "{audit}"
    );

    // Nothing on disk holds a value in plaintext: data dir, and the server's log.
    let needles = [pw.as_str(), token.as_str(), cert.as_str()];
    let found = files_containing(&c.data_dir(), &[&c.stderr_log], &needles);
    assert!(found.is_empty(), "plaintext secret in {found:?}");

    // Rotation: a new key, every value sealed again, the old key gone; values unchanged.
    let key_file = c.data_dir().join("server/secrets.key");
    let old_key = std::fs::read_to_string(&key_file).expect("key file");
    assert_eq!(mode(&key_file), 0o600);
    let rotated = c.ok(&["secrets", "rotate-key"]);
    assert!(rotated.contains("3 value(s) encrypted again"), "{rotated}");
    let new_key = std::fs::read_to_string(&key_file).expect("key file");
    assert_ne!(old_key, new_key);
    assert!(!c.data_dir().join("server/secrets.key.next").exists());
    let snap = c.dir.path().join("after-rotation.snap");
    c.ok(&["snapshot", "save", snap.to_str().expect("utf-8")]);
    let snap_bytes = std::fs::read(&snap).expect("snapshot");
    let decoded = motley_store::snapshot::Snapshot::decode(&snap_bytes).expect("snapshot decodes");
    let (_, stored) = decoded
        .entries
        .iter()
        .find(|(k, _)| k == "/motley/workloads/secret/db")
        .expect("the secret in the snapshot");
    let snap_text = String::from_utf8_lossy(stored);
    let new_id = rotated
        .split_whitespace()
        .nth(4)
        .expect("key id")
        .trim_end_matches(';');
    assert!(
        snap_text.contains(&format!("v1:{new_id}:")),
        "values not sealed with {new_id}"
    );
    assert!(!snap_text.contains(pw.as_str()));
    let revealed = c.json(&["get", "secret", "db", "--reveal"]);
    assert_eq!(revealed["data"]["token"], token.as_str());

    // A restarted cluster still opens them (the key is in its file).
    c.stop();
    c.start(&[]);
    let revealed = c.json(&["get", "secret", "db", "--reveal"]);
    assert_eq!(revealed["data"]["password"], pw.as_str());
    let found = files_containing(&c.data_dir(), &[&c.stderr_log], &needles);
    assert!(found.is_empty(), "plaintext secret in {found:?}");

    // A reference to a missing secret or key is refused at its field.
    let out = c.apply_yaml(
        "bad.yaml",
        "kind: Service\nname: bad\ntask:\n  command: [sleep, '1']\n  secrets:\n    - { secret: db, key: nope, env: X }\n    - { secret: other, key: k, file: k }\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.yaml:6:")
            && err.contains("task.secrets[0].key")
            && err.contains("has no key nope"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:7:") && err.contains("secret other is neither"),
        "{err}"
    );

    // The service gone, its secret files go too.
    c.ok(&["delete", "service/app"]);
    wait_for("secret files removed", Duration::from_secs(20), || {
        (!Path::new(&sdir).exists()).then_some(())
    });
}
