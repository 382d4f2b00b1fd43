//! motley-git against real git: repositories made by the `git` command, served as
//! `file://`, by `git daemon` and by `git http-backend` (smart HTTP) on loopback;
//! hostile trees made with `git fast-import`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use motley_git::{GitError, Limits, Want, fetch, manifests};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// A work tree and the bare repository it pushes to (the "remote").
struct Remote {
    _dir: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().expect("tempdir");
        let (work, bare) = (dir.path().join("work"), dir.path().join("remote.git"));
        std::fs::create_dir_all(&work).expect("work");
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &work,
            &["remote", "add", "origin", bare.to_str().expect("utf-8")],
        );
        Remote {
            _dir: dir,
            work,
            bare,
        }
    }

    /// Commits everything in the work tree and pushes; the commit id.
    fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["push", "-q", "-f", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

/// Every file under `dir` with its length and modification time.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().expect("mtime")));
            }
        }
    }
    out.sort();
    out
}

fn branch(b: &str) -> Want {
    Want::Branch(b.to_string())
}

/// Fetch, read, fetch again, and the ways a remote changes, over `url`.
fn fetch_and_read(remote: &Remote, url: &str) {
    write(
        &remote.work,
        "clusters/home/web.yaml",
        "kind: Service\nname: web\n",
    );
    write(
        &remote.work,
        "clusters/home/batch/job.yml",
        "kind: Job\nname: batch\n",
    );
    write(&remote.work, "clusters/home/README.md", "not a manifest\n");
    write(
        &remote.work,
        "clusters/lab/other.yaml",
        "kind: Service\nname: other\n",
    );
    let first = remote.commit("first");
    let local = tempfile::tempdir().expect("tempdir");
    let repo = local.path().join("homelab.git");

    let got = fetch(&repo, url, &branch("main"), None).expect("first fetch");
    assert_eq!((got.commit.as_str(), got.fetched), (first.as_str(), true));
    let files = manifests(&repo, &got.commit, "clusters/home", &Limits::default()).expect("read");
    let names: Vec<(&str, &str)> = files
        .iter()
        .map(|f| (f.path.as_str(), f.text().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("clusters/home/batch/job.yml", "kind: Job\nname: batch\n"),
            ("clusters/home/web.yaml", "kind: Service\nname: web\n"),
        ]
    );
    assert!(!repo.join("clusters").exists(), "no work tree");
    let whole = manifests(&repo, &got.commit, "", &Limits::default()).expect("whole tree");
    assert_eq!(whole.len(), 3, "{whole:?}");

    // The ref did not move: nothing fetched, nothing written.
    let before = listing(&repo);
    let again = fetch(&repo, url, &branch("main"), Some(&first)).expect("second fetch");
    assert_eq!(
        (again.commit.as_str(), again.fetched),
        (first.as_str(), false)
    );
    assert_eq!(
        listing(&repo),
        before,
        "a sync that finds nothing new writes nothing"
    );

    // A new commit: fetched, its files read.
    write(
        &remote.work,
        "clusters/home/web.yaml",
        "kind: Service\nname: web\nreplicas: 2\n",
    );
    let second = remote.commit("second");
    let got = fetch(&repo, url, &branch("main"), Some(&first)).expect("third fetch");
    assert_eq!((got.commit.as_str(), got.fetched), (second.as_str(), true));
    let files = manifests(&repo, &second, "clusters/home", &Limits::default()).expect("read");
    assert!(
        files[1].text().unwrap().contains("replicas: 2"),
        "{files:?}"
    );

    // A force-push to an unrelated history: the new tip, whatever came before.
    git(&remote.work, &["checkout", "-q", "--orphan", "rewritten"]);
    git(&remote.work, &["rm", "-q", "-rf", "--cached", "."]);
    for f in [
        "clusters/home/batch/job.yml",
        "clusters/home/README.md",
        "clusters/lab/other.yaml",
    ] {
        std::fs::remove_file(remote.work.join(f)).expect("rm");
    }
    write(
        &remote.work,
        "clusters/home/web.yaml",
        "kind: Service\nname: rewritten\n",
    );
    let forced = remote.commit("rewritten");
    let got = fetch(&repo, url, &branch("main"), Some(&second)).expect("fetch after force-push");
    assert_eq!((got.commit.as_str(), got.fetched), (forced.as_str(), true));
    let files = manifests(&repo, &forced, "clusters/home", &Limits::default()).expect("read");
    assert_eq!(files.len(), 1);
    assert!(files[0].text().unwrap().contains("rewritten"));

    // An annotated tag names its commit.
    git(&remote.work, &["tag", "-a", "-m", "release", "v1"]);
    git(&remote.work, &["push", "-q", "origin", "v1"]);
    let tagged = fetch(&repo, url, &Want::Tag("v1".into()), None).expect("tag");
    assert_eq!(tagged.commit, forced);

    // A pinned commit (an older one: `second`, before the force-push): fetched by id
    // into a fresh repository, then never asked for again.
    let pinned = local.path().join("pinned.git");
    let got = fetch(&pinned, url, &Want::Commit(second.clone()), None);
    match got {
        Ok(got) => {
            assert_eq!((got.commit.as_str(), got.fetched), (second.as_str(), true));
            let files = manifests(&pinned, &second, "clusters/home", &Limits::default())
                .expect("read pinned");
            assert!(
                files
                    .iter()
                    .any(|f| f.text().unwrap().contains("replicas: 2")),
                "{files:?}"
            );
            let again = fetch(
                &pinned,
                "file:///nonexistent",
                &Want::Commit(second.clone()),
                None,
            )
            .expect("pinned and here: the remote is not asked");
            assert!(!again.fetched);
        }
        Err(e) => panic!("fetching commit {second}: {e}"),
    }

    // What is not there says so.
    match fetch(&repo, url, &branch("nope"), None) {
        Err(GitError::NoRef { wanted, .. }) => assert_eq!(wanted, "refs/heads/nope"),
        other => panic!("a missing branch: {other:?}"),
    }
    let e =
        manifests(&repo, &forced, "clusters/gone", &Limits::default()).expect_err("missing path");
    assert!(
        e.to_string().contains(&forced) && e.to_string().contains("clusters/gone"),
        "{e}"
    );
}

#[test]
fn a_file_remote_is_fetched_only_when_it_moved_and_read_without_a_work_tree() {
    let remote = Remote::new();
    let url = remote.url();
    fetch_and_read(&remote, &url);
    // The repository disappears: a clear error naming it.
    let local = tempfile::tempdir().expect("tempdir");
    std::fs::remove_dir_all(&remote.bare).expect("rm remote");
    let e = fetch(&local.path().join("r.git"), &url, &branch("main"), None).expect_err("gone");
    assert!(e.to_string().contains(&url), "{e}");
}

/// A server process, killed when dropped. [`Daemon::start`] picks a free loopback
/// port, builds the command for it and returns once it accepts connections.
struct Daemon(Child);

impl Daemon {
    fn start(what: &str, with_port: impl FnOnce(u16) -> Command) -> (Daemon, u16) {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            l.local_addr().expect("addr").port()
        };
        let child = with_port(port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let daemon = Daemon(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{what} did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (daemon, port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_git_daemon_remote_works_the_same() {
    let remote = Remote::new();
    let base = remote.bare.parent().expect("base").to_path_buf();
    let (_daemon, port) = Daemon::start("git daemon", |port| {
        // `git-daemon` itself: `git daemon` runs it as a child, which outlives a kill
        // of `git`.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let mut c = Command::new(std::path::Path::new(&exec_path).join("git-daemon"));
        c.args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(&base);
        c
    });
    fetch_and_read(&remote, &format!("git://127.0.0.1:{port}/remote.git"));
}

#[test]
fn a_smart_http_remote_works_the_same() {
    // `git http-backend` behind a small HTTP server on loopback (`git_http.py`; HTTP,
    // and HTTPS is the same transport with rustls underneath).
    let remote = Remote::new();
    let base = remote.bare.parent().expect("base").to_path_buf();
    let (_server, port) = Daemon::start("the git HTTP server", |port| {
        let mut c = Command::new("python3");
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/git_http.py"))
            .arg(port.to_string())
            .arg(&base);
        c
    });
    fetch_and_read(&remote, &format!("http://127.0.0.1:{port}/remote.git"));
}

/// A bare repository whose `main` is one commit made by `git fast-import` from `stream`.
fn imported(stream: &[u8]) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("r.git");
    git(dir.path(), &["init", "-q", "--bare", "-b", "main", "r.git"]);
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stream)
        .expect("stream");
    assert!(child.wait().expect("fast-import").success());
    let commit = git(&repo, &["rev-parse", "main"]);
    (dir, repo, commit)
}

fn stream(blobs: &[&[u8]], files: impl Iterator<Item = String>) -> Vec<u8> {
    let mut s = Vec::new();
    for (i, b) in blobs.iter().enumerate() {
        s.extend(format!("blob\nmark :{}\ndata {}\n", i + 1, b.len()).as_bytes());
        s.extend(*b);
        s.push(b'\n');
    }
    s.extend(b"commit refs/heads/main\ncommitter t <t@example.invalid> 1700000000 +0000\ndata 7\nhostile\n");
    for f in files {
        s.extend(f.as_bytes());
        s.push(b'\n');
    }
    s.push(b'\n');
    s
}

#[test]
fn hostile_trees_stop_at_a_limit_with_what_and_where() {
    let limits = Limits::default();
    // 100,000 files (in 100 directories: fast-import builds one huge directory
    // slowly): refused after the limit, quickly.
    let (_d, repo, commit) = imported(&stream(
        &[b"kind: Job\n"],
        (0..100_000).map(|i| format!("M 100644 :1 home/d{:03}/f{i:06}.yaml", i / 1000)),
    ));
    let t0 = Instant::now();
    let e = manifests(&repo, &commit, "home", &limits).expect_err("too many files");
    assert!(e.to_string().contains("more than 10000 files"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // A symlinked manifest pointing out of the path: refused, never followed.
    let (_d, repo, commit) = imported(&stream(
        &[b"kind: Job\n", b"../../etc/shadow"],
        [
            "M 100644 :1 home/ok.yaml".to_string(),
            "M 120000 :2 home/link.yaml".to_string(),
        ]
        .into_iter(),
    ));
    let e = manifests(&repo, &commit, "home", &limits).expect_err("symlink");
    assert!(
        e.to_string().contains("home/link.yaml") && e.to_string().contains("symlink"),
        "{e}"
    );

    // Deeply nested directories: refused at the depth limit, naming where.
    let deep = (0..40)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/");
    let (_d, repo, commit) = imported(&stream(
        &[b"kind: Job\n"],
        std::iter::once(format!("M 100644 :1 home/{deep}/x.yaml")),
    ));
    let e = manifests(&repo, &commit, "home", &limits).expect_err("too deep");
    assert!(
        e.to_string().contains("more than 32 directory levels"),
        "{e}"
    );

    // Not UTF-8: named.
    let (_d, repo, commit) = imported(&stream(
        &[b"\xff\xfe"],
        std::iter::once("M 100644 :1 home/bin.yaml".to_string()),
    ));
    let e = manifests(&repo, &commit, "home", &limits).expect_err("not utf-8");
    assert!(
        e.to_string().contains("home/bin.yaml") && e.to_string().contains("UTF-8"),
        "{e}"
    );

    // A path that is a file, not a directory.
    let (_d, repo, commit) = imported(&stream(
        &[b"kind: Job\n"],
        std::iter::once("M 100644 :1 home.yaml".to_string()),
    ));
    let e = manifests(&repo, &commit, "home.yaml", &limits).expect_err("a file");
    assert!(e.to_string().contains("not a directory"), "{e}");
}

#[test]
fn a_1_gb_blob_is_refused_by_its_size_without_reading_or_fetching_it() {
    // Made by git from a sparse file (zeros compress to about a megabyte); the
    // refusal comes from the object's header, before any of it is inflated.
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("w");
    git(dir.path(), &["init", "-q", "-b", "main", "w"]);
    write(&work, "home/small.yaml", "kind: Job\n");
    let big = std::fs::File::create(work.join("home/big.yaml")).expect("big");
    big.set_len(1 << 30).expect("1 GiB sparse");
    git(&work, &["add", "-A"]);
    git(
        &work,
        &[
            "-c",
            "core.bigFileThreshold=1m",
            "commit",
            "-q",
            "-m",
            "big",
        ],
    );
    let commit = git(&work, &["rev-parse", "HEAD"]);
    let t0 = Instant::now();
    let e =
        manifests(&work.join(".git"), &commit, "home", &Limits::default()).expect_err("too big");
    assert!(
        e.to_string().contains("home/big.yaml") && e.to_string().contains("1073741824 bytes"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // Fetched from a remote: refused while receiving, at the object limit, instead of
    // inflating 1 GiB in memory (the peak memory with and without the limit is in
    // BENCHMARKS.md "Git source sync"; here, that it fails and says why, quickly).
    let t0 = Instant::now();
    let url = format!("file://{}", work.display());
    let e =
        fetch(&dir.path().join("m.git"), &url, &branch("main"), None).expect_err("a 1 GiB blob");
    assert!(
        e.to_string()
            .contains("over 64 MiB, the most a source fetches"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn credentials_are_never_sent_in_clear_text_nor_made_up() {
    // The HTTPS path with credentials is tested through the server
    // (tests/system/gitops.rs); here, over plain HTTP, what must not happen.
    let remote = Remote::new();
    write(&remote.work, "home/web.yaml", "kind: Service\nname: web\n");
    remote.commit("first");
    let base = remote.bare.parent().expect("base").to_path_buf();
    let (_server, port) = Daemon::start("the git HTTP server", |port| {
        let mut c = Command::new("python3");
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/git_http.py"))
            .arg(port.to_string())
            .arg(&base)
            .arg("deploy:t0ken");
        c
    });
    let url = format!("http://127.0.0.1:{port}/remote.git");
    let want = Want::Branch("main".into());
    let fetch_as = |auth: Option<&motley_git::Auth>| {
        let dir = tempfile::tempdir().expect("tempdir");
        motley_git::fetch_with(
            &dir.path().join("m.git"),
            &url,
            &want,
            None,
            &motley_git::Access {
                ssh_command: None,
                auth,
            },
        )
    };
    // None given: the server's 401 stands; no helper or prompt is asked instead.
    let e = fetch_as(None).expect_err("fetched without credentials");
    assert!(matches!(e, GitError::Remote { .. }), "{e}");
    // Given, over http://: refused before they leave.
    let right = motley_git::Auth {
        username: "deploy".into(),
        password: "t0ken".into(),
    };
    let e = fetch_as(Some(&right)).expect_err("sent credentials over http");
    assert!(e.to_string().contains("clear text"), "{e}");
    assert!(
        !format!("{right:?}").contains("t0ken"),
        "Debug shows no password"
    );
}
