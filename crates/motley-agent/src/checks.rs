//! Health checks: the probes a running replica's check asks for, run every interval
//! with a timeout, their results sent to its supervisor (which feeds
//! [`motley_core::health::Tracker`] and reports the changes).
//!
//! Probes go to the node's loopback: a native task and a container on the host
//! network listen there.

use std::time::Duration;

use motley_core::model::{Check, Probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A probe's result: `Err` says why it failed.
pub type Outcome = Result<(), String>;

/// What a check probes, owned (the probe loop outlives the borrow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// GET `path` on this loopback port.
    Http(u16, String),
    /// Connect to this loopback port.
    Tcp(u16),
    /// Run this command (a native task's `exec` check).
    Exec(ExecSpec),
    /// Run this command inside a container (a container's `exec` check).
    ContainerExec(ContainerExec),
}

/// An `exec` check of a container: run through containerd in the container, as
/// `ctr task exec` does, with the container's user, environment and namespaces.
#[derive(Debug, Clone)]
pub struct ContainerExec {
    /// containerd, as this agent reaches it.
    pub containers: std::sync::Arc<crate::drivers::container::Containers>,
    /// The container (the allocation's id).
    pub id: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The check's timeout: past it the process is killed.
    pub timeout: Duration,
    /// The process to run, read from the container once (at the first probe).
    pub process: std::sync::Arc<tokio::sync::OnceCell<motley_containerd::run::ExecProcess>>,
}

impl PartialEq for ContainerExec {
    fn eq(&self, other: &ContainerExec) -> bool {
        (&self.id, &self.argv, self.timeout) == (&other.id, &other.argv, other.timeout)
    }
}

impl Eq for ContainerExec {}

/// Each probe's process in containerd has an id of its own.
static EXEC_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn container_exec(c: &ContainerExec) -> Outcome {
    let n = EXEC_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let c2 = c.clone();
    // On a task of its own: a probe dropped at its timeout must not leave the process
    // in containerd (the exec kills and deletes it at the same timeout).
    let run = motley_rt::spawn(async move {
        let c = c2;
        let conn = c.containers.conn().await?;
        let process = c
            .process
            .get_or_try_init(|| conn.exec_process(&c.id, &c.argv))
            .await
            .map_err(|e| e.to_string())?;
        conn.exec(&c.id, &format!("check-{n}"), process, c.timeout)
            .await
            .map_err(|e| e.to_string())
    });
    match run.await {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(status)) => {
            use motley_core::restart::Exit;
            let (code, signal) = match crate::drivers::container::exit_of(status) {
                Exit::Code(c) => (Some(c), None),
                Exit::Signal(s) => (None, Some(s)),
                Exit::OutOfMemory | Exit::Unknown => (None, None),
            };
            Err(format!("{} {}", c.argv.join(" "), failure(code, signal)))
        }
        Ok(Err(e)) => Err(e),
        Err(e) => Err(format!("the check's task ended: {e}")),
    }
}

/// A command an `exec` check runs: exit status 0 passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: std::path::PathBuf,
    /// `(uid, gid)` to run as; `None`: the agent's own.
    pub user: Option<(u32, u32)>,
}

impl Target {
    /// The target of `check` for `task`; `exec` is resolved by the caller (it needs the
    /// task's environment and user), so it is `Err` here.
    pub fn of(check: &Check, task: &motley_core::model::Task) -> Result<Target, String> {
        match check.probe(task) {
            Some(Probe::Http(port, path)) => Ok(Target::Http(port, path.to_string())),
            Some(Probe::Tcp(port)) => Ok(Target::Tcp(port)),
            Some(Probe::Exec(_)) => Err("an exec check needs the task's environment".into()),
            None => Err("the check names no port of the task".into()),
        }
    }
}

async fn exec(spec: &ExecSpec) -> Outcome {
    let Some(program) = spec.argv.first() else {
        return Err("an empty command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // A probe past its timeout is dropped: its process goes with it.
        .kill_on_drop(true);
    if let Some((uid, gid)) = spec.user {
        cmd.uid(uid).gid(gid);
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| format!("running {program:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        use std::os::unix::process::ExitStatusExt;
        Err(format!(
            "{} {}",
            spec.argv.join(" "),
            failure(status.code(), status.signal())
        ))
    }
}

/// How a check's command ended, for its reason (a native process's exit status, or a
/// container process's).
fn failure(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited with {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".to_string(),
    }
}

/// Probes `target` every `interval` (the first right away), each within `timeout`,
/// sending each outcome; ends when the receiver is gone.
pub async fn run(
    target: Target,
    interval: Duration,
    timeout: Duration,
    out: mpsc::Sender<Outcome>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = match tokio::time::timeout(timeout, probe(&target)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        if out.send(outcome).await.is_err() {
            return;
        }
    }
}

async fn probe(target: &Target) -> Outcome {
    let port = match target {
        Target::Http(p, _) | Target::Tcp(p) => *p,
        Target::Exec(spec) => return exec(spec).await,
        Target::ContainerExec(c) => return container_exec(c).await,
    };
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connecting to port {port}: {e}"))?;
    let Target::Http(_, path) = target else {
        return Ok(());
    };
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: motley-check\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending GET {path}: {e}"))?;
    // The status line is all that is read: "HTTP/1.x NNN ...".
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("reading the answer to GET {path}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(c) if (200..400).contains(&c) => Ok(()),
        Some(c) => Err(format!("GET {path} answered {c}")),
        None => Err(format!("GET {path}: not an HTTP answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_once(answer: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_passes_on_2xx_and_3xx_and_fails_otherwise_with_the_reason() {
        let ok = serve_once("HTTP/1.0 200 OK\r\n\r\nfine").await;
        let moved = serve_once("HTTP/1.1 302 Found\r\n\r\n").await;
        let broken = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let garbage = serve_once("SSH-2.0-OpenSSH\r\n").await;
        assert_eq!(probe(&Target::Http(ok, "/".into())).await, Ok(()));
        assert_eq!(probe(&Target::Http(moved, "/".into())).await, Ok(()));
        assert_eq!(
            probe(&Target::Http(broken, "/health".into())).await,
            Err("GET /health answered 503".into())
        );
        assert_eq!(
            probe(&Target::Http(garbage, "/".into())).await,
            Err("GET /: not an HTTP answer".into())
        );
        assert_eq!(probe(&Target::Tcp(ok)).await, Ok(()));
        // Nothing listens on a port just freed.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let err = probe(&Target::Tcp(closed)).await.expect_err("refused");
        assert!(
            err.starts_with(&format!("connecting to port {closed}")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn exec_passes_on_exit_0_with_the_given_environment_and_is_killed_past_its_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = |script: &str| ExecSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![("WANT".into(), "yes".into())],
            cwd: dir.path().to_path_buf(),
            user: None,
        };
        assert_eq!(
            probe(&Target::Exec(spec(
                "test \"$WANT\" = yes && test -z \"$HOME\""
            )))
            .await,
            Ok(())
        );
        assert_eq!(
            probe(&Target::Exec(spec("exit 3"))).await,
            Err("/bin/sh -c exit 3 exited with 3".into())
        );
        // Past the timeout the probe is dropped and its process killed.
        let marker = dir.path().join("still-running");
        let (tx, mut rx) = mpsc::channel(1);
        let slow = spec(&format!("sleep 0.5; touch {}", marker.display()));
        let runner = tokio::spawn(run(
            Target::Exec(slow),
            Duration::from_secs(60),
            Duration::from_millis(100),
            tx,
        ));
        let outcome = rx.recv().await.expect("an outcome");
        assert_eq!(outcome, Err("no answer within 100 ms".into()));
        runner.abort();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!marker.exists(), "the timed-out command went on running");
    }
}
