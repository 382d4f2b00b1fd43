//! Harness: start `motley up`, run CLI commands against it, inspect processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn motley_bin() -> &'static str {
    env!("CARGO_BIN_EXE_motley")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A free port for a container's published port: below the kernel's ephemeral range
/// (where [`free_port`] draws from for every other test) and below motley's dynamic
/// ports, so that no concurrent test's server picks the same number while the CNI
/// portmap rule sends its loopback traffic to the container (seen: another test's agent
/// got "No route to host" connecting to its own server on 127.0.0.1).
pub fn free_published_port() -> u16 {
    let start = 15_000 + (std::process::id() % 4_000) as u16;
    (0..5_000u16)
        .map(|i| 15_000 + (start - 15_000 + i) % 5_000)
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .expect("a free port in 15000-19999")
}

/// Polls `f` every 50 ms until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True while a process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rfind(')')
                .and_then(|i| s[i + 1..].trim_start().chars().next())
                != Some('Z')
        }
        Err(_) => false,
    }
}

/// Pids of every live process whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(i) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[i + 1..].split_whitespace().collect();
        // fields[0] = state, fields[2] = pgrp
        if fields.len() > 2 && fields[0] != "Z" && fields[2].parse::<u32>().ok() == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// A NUL-separated /proc file (`cmdline`, `environ`) as a list.
fn nul_list(path: String) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn cmdline(pid: u32) -> Vec<String> {
    nul_list(format!("/proc/{pid}/cmdline"))
}

pub fn environ(pid: u32) -> Vec<String> {
    nul_list(format!("/proc/{pid}/environ"))
}

/// Bytes a process caused to be written to storage (`/proc/PID/io` write_bytes).
pub fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    io.lines()
        .find_map(|l| {
            l.strip_prefix("write_bytes:")
                .and_then(|v| v.trim().parse().ok())
        })
        .expect("write_bytes in /proc/PID/io")
}

/// A temporary directory tasks can pass through: tasks run as `nobody`, and reach their
/// allocation's directory below it (0711, like /var/lib; the default 0700 would stop them).
/// An empty file `name` in `dir` that tasks (they run as nobody) may append to.
pub fn trace_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, "").expect("trace file");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod trace");
    path
}

pub fn test_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod tempdir");
    dir
}

/// A `motley server` on a free loopback port with its data in `<dir>/server` and its log
/// in `<dir>/server.log`, ready; and its URL.
pub fn spawn_server(dir: &Path) -> (Proc, String) {
    spawn_server_with(dir, &[])
}

/// [`spawn_server`] with more flags.
pub fn spawn_server_with(dir: &Path, flags: &[&str]) -> (Proc, String) {
    let port = free_port();
    let data = dir.join("server");
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "server",
        "--data-dir",
        data.to_str().expect("path"),
        "--listen",
        &listen,
    ];
    args.extend_from_slice(flags);
    let server = Proc::spawn(&args, dir.join("server.log")).expect("server ready");
    (server, format!("https://127.0.0.1:{port}"))
}

/// A running `motley up`.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
    pub stderr_log: PathBuf,
    /// Process groups of every task seen, checked for leftovers on drop.
    pub seen_pgids: Vec<u32>,
    starts: u32,
    /// More environment for `motley up`.
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `motley up` with extra arguments and waits until it prints `ready`.
    pub fn up(extra: &[&str]) -> Cluster {
        let dir = test_dir();
        let port = free_port();
        let mut c = Cluster {
            dir,
            port,
            child: None,
            stderr_log: PathBuf::new(),
            seen_pgids: vec![],
            starts: 0,
            env: Vec::new(),
        };
        c.start(extra);
        c
    }

    /// A cluster whose data directory is inside a private (0700) directory, as any
    /// `mktemp -d` or home directory is.
    pub fn up_in_private_dir(extra: &[&str]) -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700");
        let mut c = Cluster {
            dir,
            port: free_port(),
            child: None,
            stderr_log: PathBuf::new(),
            seen_pgids: vec![],
            starts: 0,
            env: Vec::new(),
        };
        c.start(extra);
        c
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config(&self) -> PathBuf {
        self.data_dir().join("client.yaml")
    }

    /// (Re)starts the `motley up` process on the same data dir and port.
    /// [`Cluster::up`] with more environment for `motley up` (`SSL_CERT_FILE`: the
    /// roots it trusts for git and registries).
    pub fn up_with_env(extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let mut c = Cluster {
            dir: test_dir(),
            port: free_port(),
            child: None,
            stderr_log: PathBuf::new(),
            seen_pgids: vec![],
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        c.start(extra);
        c
    }

    pub fn start(&mut self, extra: &[&str]) {
        let data = self.data_dir();
        self.starts += 1;
        self.stderr_log = self.dir.path().join(format!("motley-{}.log", self.starts));
        let log = std::fs::File::create(&self.stderr_log).expect("log file");
        let mut child = Command::new(motley_bin())
            .arg("up")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--name")
            .arg("node1")
            .args(extra)
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("MOTLEY_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn motley up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "motley up did not become ready:\n{}",
                std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
            );
        }
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// An empty file `name` in the cluster's directory that tasks (they run as nobody)
    /// may append to: a trace of what ran.
    pub fn trace_file(&self, name: &str) -> PathBuf {
        trace_file(self.dir.path(), name)
    }

    /// Runs a CLI command against this cluster.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(motley_bin())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .current_dir(repo_root())
            .env_remove("MOTLEY_TOKEN")
            .output()
            .expect("run motley")
    }

    /// Runs a CLI command and requires success.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "motley {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("JSON output")
    }

    pub fn allocs(&mut self) -> Vec<Value> {
        let v = self.json(&["get", "allocs", "-A"]);
        let list = v
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("get allocs -o json is not an array: {v}"));
        for a in &list {
            if let Some(pid) = a["pid"].as_u64()
                && !self.seen_pgids.contains(&(pid as u32))
            {
                self.seen_pgids.push(pid as u32);
            }
        }
        list
    }

    /// Running allocations of a workload (`service/web`).
    pub fn running(&mut self, workload: &str) -> Vec<Value> {
        self.allocs()
            .into_iter()
            .filter(|a| {
                a["workload"] == workload && a["state"] == "running" && a["pid"].as_u64().is_some()
            })
            .collect()
    }

    pub fn apply_yaml(&self, name: &str, yaml: &str) -> Output {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write manifest");
        self.cli(&["apply", "-f", path.to_str().expect("utf-8 path")])
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("motley up did not exit within 60s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An HTTPS client trusting this cluster's CA, and its admin token.
    pub fn http(&self) -> (reqwest::Client, String, String) {
        let cfg = motley_net::ClientConfig::load(&self.config()).expect("client config");
        let tls = motley_net::client_tls(&cfg.ca).expect("tls");
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .expect("client");
        (client, cfg.servers[0].clone(), cfg.token)
    }

    /// The server's `/metrics` text, as the admin reads it.
    pub fn metrics(&self) -> String {
        rt().block_on(async {
            let (http, base, token) = self.http();
            http.get(format!("{base}/metrics"))
                .bearer_auth(token)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("metrics text")
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        // Whatever happened in the test, leave no task behind: the groups seen, when
        // their leader is still one of this cluster's tasks (a pid reused since by
        // another test's process, a container's, is not killed: that once turned an
        // OOM kill in `containers.rs` into a plain SIGKILL), then every task under
        // the data dir.
        let dir = self.data_dir();
        for pgid in &self.seen_pgids {
            let env = nul_list(format!("/proc/{pgid}/environ"));
            let ours = env.iter().any(|kv| {
                kv.strip_prefix("MOTLEY_ALLOC_DIR=")
                    .is_some_and(|d| Path::new(d).starts_with(&dir))
            });
            if ours {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(*pgid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        kill_tasks_under(&dir);
    }
}

/// `motley --config CONFIG ARGS...`, run to completion.
pub fn cli_with(config: &str, args: &[&str]) -> Output {
    Command::new(motley_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run motley")
}

/// A runtime for the async HTTP checks.
pub fn rt() -> tokio::runtime::Runtime {
    motley_net::install_crypto_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A `motley server` or `motley agent` process that printed `ready`.
pub struct Proc {
    pub child: Child,
    /// Its `--data-dir`: tasks an agent started there are killed when it is dropped.
    data_dir: Option<PathBuf>,
}

/// Kills the process groups of tasks whose allocation directory lies under `dir`
/// (agents leave their tasks running when they stop, as a restart adopts them).
pub fn kill_tasks_under(dir: &Path) {
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let env = nul_list(format!("/proc/{pid}/environ"));
        let under = env.iter().any(|kv| {
            kv.strip_prefix("MOTLEY_ALLOC_DIR=")
                .is_some_and(|d| Path::new(d).starts_with(dir))
        });
        if under {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Proc {
    /// Spawns motley with `args`, logging stderr to `log`, and waits for `ready`.
    /// Returns Err(stderr) if it exits first.
    pub fn spawn(args: &[&str], log: PathBuf) -> Result<Proc, String> {
        let file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(motley_bin())
            .args(args)
            .env("MOTLEY_LOG", "info")
            .env_remove("MOTLEY_JOIN_TOKEN")
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn motley");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ready = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.trim() == "ready");
            let _ = tx.send(ready);
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(true) => Ok(Proc {
                child,
                data_dir: args
                    .iter()
                    .position(|a| *a == "--data-dir")
                    .and_then(|i| args.get(i + 1))
                    .map(PathBuf::from),
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(&log).unwrap_or_default())
            }
        }
    }

    /// Runs motley to completion (for commands expected to fail fast): (exit code, stderr).
    pub fn run(args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new(motley_bin())
            .args(args)
            .env_remove("MOTLEY_JOIN_TOKEN")
            .current_dir(repo_root())
            .output()
            .expect("run motley");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn terminate(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
        if let Some(dir) = &self.data_dir {
            kill_tasks_under(dir);
        }
    }
}
