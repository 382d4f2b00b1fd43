//! Git sources against real git: a bare repository served by `git daemon` on
//! loopback, commits made during the test, a real cluster syncing it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// A bare repository, a work tree that pushes to it, and `git daemon` serving it.
struct Repo {
    _dir: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
    daemon: Option<Child>,
    url: String,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `git-daemon` itself: `git daemon` runs it as a child, which outlives a kill of
/// `git` (found as strays after the benchmark).
fn git_daemon() -> PathBuf {
    Path::new(&git(Path::new("."), &["--exec-path"])).join("git-daemon")
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("home.git");
        let work = dir.path().join("work");
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "home.git"],
        );
        git(dir.path(), &["init", "-q", "-b", "main", "work"]);
        git(
            &work,
            &["remote", "add", "origin", bare.to_str().expect("utf-8")],
        );
        let port = free_port();
        let daemon = Command::new(git_daemon())
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.path().display()))
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "git daemon did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Repo {
            url: format!("git://127.0.0.1:{port}/home.git"),
            _dir: dir,
            work,
            bare,
            daemon: Some(daemon),
        }
    }

    /// Writes (or with `None` removes) files, commits and pushes; returns the commit.
    fn commit(&self, files: &[(&str, Option<&str>)], msg: &str) -> String {
        for (path, text) in files {
            let p = self.work.join(path);
            match text {
                Some(t) => {
                    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&p, t).expect("write");
                }
                None => std::fs::remove_file(&p).expect("remove"),
            }
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(&self.work, &["push", "-q", "-f", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn source(c: &Cluster, name: &str) -> Value {
    c.json(&["get", "source", name])
        .as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or_else(|| panic!("get source {name}: not one source"))
}

/// Waits until the source's `applied` commit is `commit` and its result one of `results`.
fn wait_applied(c: &Cluster, name: &str, commit: &str, results: &[&str]) -> Value {
    let t0 = Instant::now();
    loop {
        let v = source(c, name);
        if v["applied"] == commit && results.iter().any(|r| v["result"] == *r) {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "source {name} not at {commit} ({results:?}) after 60 s: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn names(c: &Cluster, kind: &str) -> Vec<String> {
    let mut out: Vec<String> = c
        .json(&["get", kind])
        .as_array()
        .unwrap_or_else(|| panic!("get {kind} is not a list"))
        .iter()
        .map(|w| {
            w["workload"]["spec"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("no name in {w}"))
                .to_string()
        })
        .collect();
    out.sort();
    out
}

fn replicas(c: &Cluster, name: &str) -> u64 {
    let v = c.json(&["get", "service", name]);
    v[0]["workload"]["spec"]["replicas"]
        .as_u64()
        .unwrap_or_else(|| panic!("no replicas in {v}"))
}

fn service(name: &str, replicas: u32, command: &str) -> String {
    format!(
        "kind: Service\nname: {name}\nreplicas: {replicas}\nupdate: {{ deadline: 3s }}\ntask:\n  command: [sh, -c, '{command}']\n  resources: {{ cpu: 10m, memory: 8Mi }}\n"
    )
}

const WEB: &str = "clusters/home/web.yaml";
const DB: &str = "clusters/home/db.yaml";
const JOB: &str = "clusters/home/batch/hello.yaml";

#[test]
fn a_git_source_syncs_prunes_refuses_reverts_drift_and_rolls_back() {
    let repo = Repo::new();
    let c = Cluster::up(&[]);
    let web1 = service("web", 1, "sleep 3600");
    let first = repo.commit(
        &[
            (WEB, Some(&web1)),
            (
                JOB,
                Some("kind: Job\nname: hello\ntask:\n  command: [echo, hi]\n  resources: { cpu: 10m, memory: 8Mi }\n"),
            ),
            ("README.md", Some("not a manifest\n")),
            // A Kubernetes object in git, as a Flux repository has them: translated.
            (
                "clusters/home/k8s/settings.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: home\n"),
            ),
        ],
        "first",
    );
    let apply_source = |drift: &str| {
        let out = c.apply_yaml(
            "source.yaml",
            &format!(
                "kind: Source\nname: home\ngit:\n  url: {}\n  branch: main\n  path: clusters/home\ninterval: 5s\nprune: true\ndrift: {drift}\nhealth: {{ timeout: 20s }}\n",
                repo.url
            ),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    apply_source("revert");
    // A hand-made service the source never touches.
    let out = c.apply_yaml("manual.yaml", &service("manual", 1, "sleep 3600"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The first commit: applied by the loop, its gate passed once web runs and the
    // job's instance started.
    let v = wait_applied(&c, "home", &first, &["healthy", "synced"]);
    assert_eq!(v["healthy"], first.as_str(), "{v}");
    assert_eq!(names(&c, "services"), ["manual", "web"]);
    assert_eq!(names(&c, "jobs"), ["hello"]);
    let settings = c.json(&["get", "config", "settings"]);
    assert_eq!(settings[0]["workload"]["source"], "home", "{settings}");
    assert_eq!(
        settings[0]["workload"]["spec"]["data"]["mode"]["value"], "home",
        "{settings}"
    );
    let web = c.json(&["get", "service", "web"]);
    assert_eq!(web[0]["workload"]["source"], "home", "{web}");
    let table = c.ok(&["get", "sources"]);
    assert!(
        table.contains("REVISION") && table.contains(&first[..12]) && table.contains(&repo.url),
        "{table}"
    );

    // A new commit, announced by the webhook: web scaled, the job's file removed
    // (pruned), db added. The hand-made service stays.
    let second = repo.commit(
        &[
            (WEB, Some(&service("web", 2, "sleep 3600"))),
            (JOB, None),
            ("clusters/home/k8s/settings.yaml", None),
            (DB, Some(&service("db", 1, "sleep 3600"))),
        ],
        "second",
    );
    let (http, base, _) = c.http();
    let hooked = rt().block_on(async {
        http.post(format!("{base}/hooks/sources/home"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(hooked.ok(), Some(202));
    wait_applied(&c, "home", &second, &["healthy", "synced"]);
    assert_eq!(names(&c, "services"), ["db", "manual", "web"]);
    assert!(names(&c, "jobs").is_empty(), "the job was pruned");
    assert!(
        names(&c, "configs").is_empty(),
        "the translated ConfigMap was pruned"
    );
    assert_eq!(replicas(&c, "web"), 2);
    let plan = c.ok(&["source", "plan", "home"]);
    assert!(
        plan.contains(&second)
            && plan.contains("job/hello would be deleted")
            && plan.contains("service/db would be created"),
        "{plan}"
    );

    // Drift: web changed by hand is reported and put back at the next sync (by the
    // loop or by hand, whichever comes first).
    let put_back = || {
        source(&c, "home")["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("drift put back: service/web"))
            })
            .count()
    };
    let drift_put_back = |before: usize| {
        wait_for("web put back", Duration::from_secs(30), || {
            (replicas(&c, "web") == 2).then_some(())
        });
        assert_eq!(put_back(), before + 1, "{}", source(&c, "home")["events"]);
    };
    let out = c.apply_yaml("drift.yaml", &service("web", 3, "sleep 3600"));
    assert!(out.status.success());
    c.ok(&["source", "sync", "home"]);
    drift_put_back(0);
    // With `drift: report`, a hand change is shown (the DRIFT column) and left. (A
    // sync by hand first: syncs run one at a time, so none with the old spec is left.)
    apply_source("report");
    c.ok(&["source", "sync", "home"]);
    let out = c.apply_yaml("drift.yaml", &service("web", 3, "sleep 3600"));
    assert!(out.status.success());
    let synced = c.ok(&["source", "sync", "home"]);
    assert!(synced.contains("drift reported: service/web"), "{synced}");
    assert_eq!(replicas(&c, "web"), 3);
    let table = c.ok(&["get", "sources"]);
    assert!(
        table.contains("DRIFT") && table.contains("service/web"),
        "{table}"
    );
    // Back to `revert`: the changed source syncs at once and puts web back.
    let before = put_back();
    apply_source("revert");
    drift_put_back(before);

    // An invalid manifest: nothing changes, the error names commit, file, line, column.
    let bad = repo.commit(
        &[(
            "clusters/home/bad.yaml",
            Some("kind: Service\nname: bad\nreplicas: lots\ntask:\n  command: [x]\n"),
        )],
        "bad",
    );
    let out = c.cli(&["source", "sync", "home"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("{}:clusters/home/bad.yaml:3:", &bad[..12]))
            && said.contains("replicas")
            && said.contains(&bad),
        "{said}"
    );
    assert_eq!(names(&c, "services"), ["db", "manual", "web"]);
    assert_eq!(source(&c, "home")["applied"], second.as_str());

    // A commit in which the path vanished: refused until confirmed.
    let empty = repo.commit(
        &[("clusters/home/bad.yaml", None), (WEB, None), (DB, None)],
        "everything gone",
    );
    let out = c.cli(&["source", "sync", "home"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("refused") && said.contains("--allow-empty") && said.contains(&empty),
        "{said}"
    );
    assert_eq!(names(&c, "services"), ["db", "manual", "web"]);
    let said = c.ok(&["source", "sync", "home", "--allow-empty"]);
    assert!(said.contains("2 deleted"), "{said}");
    assert_eq!(
        names(&c, "services"),
        ["manual"],
        "only the hand-made one is left"
    );

    // A healthy commit, then one whose web never gets healthy: the gate fails and
    // the source goes back to the healthy one, and holds the failed one back.
    // (Found by polling alone, within the 5 s interval.)
    let good = repo.commit(&[(WEB, Some(&web1))], "good again");
    wait_applied(&c, "home", &good, &["healthy", "synced"]);
    let failing = repo.commit(&[(WEB, Some(&service("web", 1, "exit 3")))], "broken");
    c.ok(&["source", "sync", "home"]);
    let v = wait_for("the rollback", Duration::from_secs(90), || {
        let v = source(&c, "home");
        (v["failed"] == failing.as_str()).then_some(v)
    });
    assert_eq!(v["applied"], good.as_str(), "{v}");
    let events = v["events"].to_string();
    assert!(
        events.contains("rolled back") && events.contains("failed its health gate"),
        "{events}"
    );
    let spec = c.json(&["get", "service", "web"]);
    assert_eq!(
        spec[0]["workload"]["spec"]["task"]["command"][2], "sleep 3600",
        "{spec}"
    );
    // The next poll keeps it back and says so.
    let said = c.ok(&["source", "sync", "home"]);
    assert!(
        said.contains("failed its health gate; staying at"),
        "{said}"
    );

    // A force-pushed branch: the source follows the rewritten history.
    git(&repo.work, &["reset", "-q", "--hard", &good]);
    let forced = repo.commit(&[(DB, Some(&service("db", 1, "sleep 3600")))], "rewritten");
    let said = c.ok(&["source", "sync", "home"]);
    assert!(said.contains(&forced[..12]), "{said}");
    wait_applied(&c, "home", &forced, &["healthy", "synced"]);
    assert_eq!(names(&c, "services"), ["db", "manual", "web"]);

    // The repository disappears: the sync fails, nothing is deleted.
    std::fs::remove_dir_all(&repo.bare).expect("remove the repository");
    let out = c.cli(&["source", "sync", "home"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("fetch") && said.contains("nothing was changed"),
        "{said}"
    );
    assert_eq!(names(&c, "services"), ["db", "manual", "web"]);
    let metrics = c.metrics();
    assert!(
        metrics.contains("motley_source_syncs_total{source=\"home\",result=\"failed\"}")
            && metrics.contains("motley_source_last_success_seconds{source=\"home\"}"),
        "{metrics}"
    );
}

/// Encrypts `plain` to `recipient` with the real `age` (armored), through a pipe.
fn age_encrypt(recipient: &str, plain: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("age")
        .args(["-a", "-r", recipient])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run age (Debian package age)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(plain.as_bytes())
        .expect("write to age");
    let out = child.wait_with_output().expect("age");
    assert!(out.status.success(), "age failed");
    String::from_utf8(out.stdout).expect("armored")
}

#[test]
fn age_and_sops_files_in_git_are_decrypted_in_memory_and_delivered() {
    let repo = Repo::new();
    let mut c = Cluster::up(&[]);
    let keys = tempfile::tempdir().expect("tempdir");
    let generated = keys.path().join("generated.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&generated)
        .output()
        .expect("run age-keygen");
    assert!(out.status.success());
    let id_text = std::fs::read_to_string(&generated).expect("identity");
    let recipient = id_text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line")
        .to_string();
    // The cluster's identity holds that key and the SOPS fixture's.
    let fixtures = repo_root().join("tests/fixtures/sops");
    let fixture_key = std::fs::read_to_string(fixtures.join("age-key.txt")).expect("fixture key");
    let both = keys.path().join("identity.txt");
    std::fs::write(&both, format!("{id_text}{fixture_key}")).expect("write identity");
    let secret = keys.path().join("age-key.yaml");
    std::fs::write(
        &secret,
        format!(
            "kind: Secret\nname: age-key\ndata:\n  identity: {{ fromFile: {} }}\n",
            both.display()
        ),
    )
    .expect("write secret");
    c.ok(&["apply", "-f", secret.to_str().expect("utf-8")]);

    let token = format!("age-plaintext-{}", std::process::id());
    let sops_value = "sops-plaintext-4f1c9e"; // in motley-secret.yaml
    let encrypted = age_encrypt(
        &recipient,
        &format!("kind: Secret\nname: api\ndata:\n  token: {token}\n"),
    );
    let sops = std::fs::read_to_string(fixtures.join("motley-secret.enc.yaml")).expect("fixture");
    let app = "kind: Service\nname: app\ntask:\n  command: [sleep, '3600']\n  resources: { cpu: 10m, memory: 8Mi }\n  secrets:\n    - { secret: api, key: token, env: API_TOKEN }\n    - { secret: sops-db, key: password, env: DB_PASSWORD }\n";
    let first = repo.commit(
        &[
            ("apps/api.yaml.age", Some(&encrypted)),
            ("apps/db.sops.yaml", Some(&sops)),
            ("apps/app.yaml", Some(app)),
        ],
        "encrypted",
    );
    let out = c.apply_yaml(
        "source.yaml",
        &format!(
            "kind: Source\nname: apps\ngit:\n  url: {}\n  path: apps\ninterval: 5s\ndecrypt: {{ age_key: {{ secret: age-key, key: identity }} }}\n",
            repo.url
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_applied(&c, "apps", &first, &["healthy", "synced"]);
    let pid = wait_for("app running", Duration::from_secs(30), || {
        c.running("service/app")
            .first()
            .and_then(|a| a["pid"].as_u64())
    }) as u32;
    assert_eq!(
        crate::secrets::env_of(pid, "API_TOKEN").as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        crate::secrets::env_of(pid, "DB_PASSWORD").as_deref(),
        Some(sops_value)
    );
    // Sealed as any Secret: not shown, owned by the source.
    let shown = c.ok(&["get", "secret", "api", "-o", "json"]);
    assert!(
        !shown.contains(&token) && shown.contains("\"source\": \"apps\""),
        "{shown}"
    );

    // A file the identity cannot open changes nothing and names the file.
    let other = Command::new("age-keygen").output().expect("age-keygen");
    let other = String::from_utf8_lossy(&other.stdout);
    let other_recipient = other
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key")
        .to_string();
    let stranger = repo.commit(
        &[(
            "apps/other.yaml.age",
            Some(&age_encrypt(
                &other_recipient,
                "kind: Secret\nname: other\ndata:\n  x: y\n",
            )),
        )],
        "for someone else",
    );
    let out = c.cli(&["source", "sync", "apps"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("{}:apps/other.yaml.age", &stranger[..12])),
        "{said}"
    );
    assert_eq!(source(&c, "apps")["applied"], first.as_str());

    // No plaintext on disk: the data dir (the server's git objects included) and the log.
    let found = crate::secrets::files_containing(
        &c.data_dir(),
        &[&c.stderr_log],
        &[token.as_str(), sops_value],
    );
    assert!(found.is_empty(), "plaintext secret in {found:?}");
    assert!(
        c.data_dir().join("server/sources/apps").is_dir(),
        "the source's repository is where the search looked"
    );
}

/// `sshd` on a loopback port, letting in one key as root; killed when dropped.
struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let keygen = |name: &str| {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(dir.path().join(name))
                .output()
                .expect("run ssh-keygen");
            assert!(out.status.success(), "ssh-keygen {name}");
        };
        keygen("host_key");
        keygen("deploy");
        keygen("other_host");
        std::fs::copy(
            dir.path().join("deploy.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nPidFile {d}/sshd.pid\n",
                d = dir.path().display()
            ),
        )
        .expect("sshd_config");
        // sshd's privilege separation directory (made by systemd on a booted system).
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run sshd (Debian openssh-server)");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "sshd did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd { dir, child, port }
    }

    /// A known_hosts line for the host key in `file` (`host_key.pub`).
    fn known_host(&self, file: &str) -> String {
        let key = std::fs::read_to_string(self.dir.path().join(file)).expect("host key");
        let mut parts = key.split_whitespace();
        let (kind, body) = (parts.next().expect("type"), parts.next().expect("key"));
        format!("[127.0.0.1]:{} {kind} {body}\n", self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deploy_keys_in_shm() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("motley-deploy-key-"))
        .collect()
}

#[test]
fn a_source_fetches_over_ssh_with_a_deploy_key_from_a_secret() {
    let repo = Repo::new();
    let sshd = Sshd::start();
    let c = Cluster::up(&[]);
    let commit = repo.commit(
        &[("web.yaml", Some(&service("web", 1, "sleep 3600")))],
        "first",
    );
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, repo.bare.display());
    let key_file = sshd.dir.path().join("deploy");
    let secret = |name: &str, host: &str| {
        let hosts = sshd.dir.path().join(format!("{name}.known_hosts"));
        std::fs::write(&hosts, sshd.known_host(host)).expect("known_hosts");
        let out = c.apply_yaml(
            &format!("{name}.yaml"),
            &format!(
                "kind: Secret\nname: {name}\ndata:\n  identity: {{ fromFile: {} }}\n  known_hosts: {{ fromFile: {} }}\n",
                key_file.display(),
                hosts.display()
            ),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    secret("deploy", "host_key.pub");
    secret("deploy-wrong-host", "other_host.pub");
    let add_source = |name: &str, secret: &str| {
        let out = c.apply_yaml(
            &format!("source-{name}.yaml"),
            &format!(
                "kind: Source\nname: {name}\ngit:\n  url: {url}\n  ssh_key: {{ secret: {secret}, key: identity }}\ninterval: 1h\n"
            ),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    add_source("over-ssh", "deploy");
    wait_applied(&c, "over-ssh", &commit, &["healthy", "synced"]);
    assert_eq!(names(&c, "services"), ["web"]);
    // With an interval of an hour, a push is found through the webhook.
    let second = repo.commit(
        &[("db.yaml", Some(&service("db", 1, "sleep 3600")))],
        "second",
    );
    let (http, base, _) = c.http();
    let hook = |name: &str| {
        rt().block_on(async {
            http.post(format!("{base}/hooks/sources/{name}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    assert_eq!(hook("nonesuch").ok(), Some(404));
    assert_eq!(hook("over-ssh").ok(), Some(202));
    wait_applied(&c, "over-ssh", &second, &["healthy", "synced"]);
    assert_eq!(names(&c, "services"), ["db", "web"]);
    // A host whose key is not the one the Secret names is refused.
    add_source("spoofed", "deploy-wrong-host");
    let out = c.cli(&["source", "sync", "spoofed"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("fetch") && said.contains("nothing was changed"),
        "{said}"
    );
    assert!(said.contains("Host key verification failed"), "{said}");
    assert!(source(&c, "spoofed")["applied"].is_null());
    // A deleted source leaves no repository behind.
    let repo_dir = c.data_dir().join("server/sources/spoofed");
    assert!(repo_dir.is_dir());
    c.ok(&["delete", "source/spoofed"]);
    wait_for("the repository removed", Duration::from_secs(30), || {
        (!repo_dir.exists()).then_some(())
    });
    // The key (and ssh's words) were on tmpfs for the fetch only.
    assert!(
        deploy_keys_in_shm().is_empty(),
        "{:?}",
        deploy_keys_in_shm()
    );
}

/// A CA and a certificate for 127.0.0.1 it signed, made by `openssl`: (ca.pem,
/// cert.pem, key.pem).
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=motley test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "key.pem",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[test]
fn a_source_over_https_gives_its_credentials_from_a_secret() {
    let repo = Repo::new();
    let commit = repo.commit(
        &[("web.yaml", Some(&service("web", 1, "sleep 3600")))],
        "first",
    );
    let tls = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_files(tls.path());
    let base = repo.bare.parent().expect("base").to_path_buf();
    let port = free_port();
    let _server = KillOnDrop(
        Command::new("python3")
            .arg(repo_root().join("crates/motley-git/tests/git_http.py"))
            .arg(port.to_string())
            .arg(&base)
            .arg("deploy:s3cret-t0ken")
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the git HTTPS server"),
    );
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the git HTTPS server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server trusts the test CA for git (the process's roots: SSL_CERT_FILE).
    let c = Cluster::up_with_env(&[], &[("SSL_CERT_FILE", ca.to_str().expect("utf-8"))]);
    let url = format!("https://127.0.0.1:{port}/home.git");
    let out = c.apply_yaml(
        "creds.yaml",
        &format!(
            "kind: Secret\nname: git-creds\ndata:\n  username: deploy\n  password: s3cret-t0ken\n---\n\
             kind: Source\nname: private\ngit:\n  url: {url}\n  credentials: {{ secret: git-creds }}\ninterval: 5s\n---\n\
             kind: Source\nname: anonymous\ngit:\n  url: {url}\ninterval: 1h\n"
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_applied(&c, "private", &commit, &["healthy", "synced"]);
    assert_eq!(names(&c, "services"), ["web"]);
    // Without them the server's 401 stands, and nothing is applied.
    let out = c.cli(&["source", "sync", "anonymous"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("fetch") && said.contains("nothing was changed"),
        "{said}"
    );
    assert!(source(&c, "anonymous")["applied"].is_null());
    // Credentials are only ever sent over https: http:// with them is refused where
    // it is written.
    let out = c.apply_yaml(
        "plain.yaml",
        "kind: Source\nname: plain\ngit:\n  url: http://127.0.0.1:1/home.git\n  credentials: { secret: git-creds }\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("plain.yaml:5:")
            && err.contains("only over https://"),
        "{err}"
    );
    let found =
        crate::secrets::files_containing(&c.data_dir(), &[&c.stderr_log], &["s3cret-t0ken"]);
    assert!(found.is_empty(), "the password in clear in {found:?}");
}

/// A server process, killed when the test ends (also when it fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_source_in_a_namespace_applies_only_into_it() {
    let repo = Repo::new();
    let c = Cluster::up(&[]);
    let web = service("web", 1, "sleep 3600");
    let first = repo.commit(&[("app/web.yaml", Some(&web))], "first");
    let out = c.apply_yaml(
        "team.yaml",
        &format!(
            "kind: Namespace\nname: dev\n---\nkind: Source\nname: team\nnamespace: dev\ngit:\n  url: {}\n  branch: main\n  path: app\ninterval: 1h\nprune: true\nhealth: {{ timeout: 20s }}\n",
            repo.url
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What names no namespace goes into the source's.
    wait_applied(&c, "team", &first, &["healthy", "synced"]);
    // Its events are dev's: `dev/source/team`, found with -n dev, not in default.
    let synced = c.ok(&["events", "-n", "dev", "--for", "source/team"]);
    assert!(synced.contains("source-synced"), "{synced}");
    assert!(synced.contains("dev/source/team"), "{synced}");
    let default = c.ok(&["events", "--for", "source/team"]);
    assert!(!default.contains("source-synced"), "{default}");
    // A token limited to dev sees and syncs dev's source, and only with -n dev.
    let token = c
        .ok(&["token", "create", "--role", "admin", "--namespaces", "dev"])
        .trim()
        .to_string();
    let as_dev = |args: &[&str]| {
        std::process::Command::new(motley_bin())
            .arg("--config")
            .arg(c.config())
            .args(args)
            .env("MOTLEY_TOKEN", &token)
            .output()
            .expect("run motley")
    };
    let listed = as_dev(&["get", "sources", "-n", "dev"]);
    assert!(
        listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains("team"),
        "{listed:?}"
    );
    let sync = as_dev(&["source", "sync", "team", "-n", "dev"]);
    assert!(sync.status.success(), "{sync:?}");
    let seen = as_dev(&["events", "-n", "dev"]);
    assert!(
        seen.status.success() && String::from_utf8_lossy(&seen.stdout).contains("dev/source/team"),
        "{seen:?}"
    );
    let refused = as_dev(&["get", "sources"]);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("must name one"),
        "{refused:?}"
    );
    // Named in another namespace, it is not found there.
    let elsewhere = c.cli(&["get", "source", "team", "-n", "default"]);
    assert!(
        !elsewhere.status.success()
            && String::from_utf8_lossy(&elsewhere.stderr).contains("not found"),
        "{elsewhere:?}"
    );
    assert_eq!(
        c.json(&["get", "sources", "-n", "default"]),
        serde_json::json!([])
    );
    let dev = c.json(&["get", "services", "-n", "dev"]);
    assert_eq!(dev[0]["workload"]["spec"]["name"], "web", "{dev}");
    assert_eq!(dev[0]["workload"]["spec"]["namespace"], "dev", "{dev}");
    assert!(names(&c, "services").is_empty(), "nothing in default");

    // A document naming another namespace fails the sync at its field; nothing changes.
    let other = repo.commit(
        &[(
            "app/other.yaml",
            Some(&format!(
                "namespace: default\n{}",
                service("other", 1, "sleep 3600")
            )),
        )],
        "into default",
    );
    let out = c.cli(&["source", "sync", "team"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "{}:app/other.yaml:1:12: namespace: is default",
            &other[..12]
        )),
        "{said}"
    );
    assert!(names(&c, "services").is_empty(), "nothing in default");
    assert_eq!(source(&c, "team")["applied"], first.as_str());

    // Nor may it make a namespace.
    let ns = repo.commit(
        &[
            ("app/other.yaml", None),
            ("app/ns.yaml", Some("kind: Namespace\nname: prod\n")),
        ],
        "a namespace",
    );
    let out = c.cli(&["source", "sync", "team"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("{}:app/ns.yaml:1:", &ns[..12]))
            && said.contains("may not make namespaces"),
        "{said}"
    );
    let out = c.cli(&["get", "namespace", "prod"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not found"), "{err}");

    // A source's name is unique in the cluster: another `team` in default is refused.
    let out = c.apply_yaml(
        "again.yaml",
        &format!("kind: Source\nname: team\ngit:\n  url: {}\n", repo.url),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("again.yaml:2:7: name: source team exists in namespace dev already"),
        "{err}"
    );
}
