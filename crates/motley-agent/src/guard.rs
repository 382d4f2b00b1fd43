//! The exec driver's fence guard: a small process, `motley fence-guard`, that ends
//! fenced tasks when their lease runs out even while the agent is paused
//! ([`motley_core::fence`] holds the rules; this is its IO).
//!
//! - **The process** ([`run`]) reads [`FenceOrder`] lines on its standard input and
//!   acts on them with `CLOCK_BOOTTIME`, which runs through suspend. It finds the tasks
//!   by their `MOTLEY_ALLOC_ID` ([`crate::driver::scan_tasks`]) and signals their
//!   process groups. It has no tokio runtime and no sockets: two threads, a few
//!   hundred KB of private memory. It exists only while fenced work does.
//! - **The agent's end** ([`ExecGuard`]) starts it from the keeper thread, writes
//!   orders into a non-blocking pipe, starts it again if it died, and closes the pipe
//!   after an empty order (it exits) when no fenced work is left. The guard clears its
//!   parent-death signal: when the agent dies it carries out its last order (ending
//!   what it names at the lease's end: native fenced tasks died with the agent, but a
//!   container lives on under containerd's shim) and then exits.

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use motley_core::fence::{FenceOrder, Guard, MAX_ORDER_BYTES, Signal};

/// Now on the guard's clock (`CLOCK_BOOTTIME`), in ms.
pub fn boottime_ms() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u64::try_from(t.tv_nsec()).ok()?;
    Some(secs.saturating_mul(1_000).saturating_add(nanos / 1_000_000))
}

/// The guard process: `motley fence-guard`. Returns its exit code: 0 when its agent
/// closed the pipe, 1 when it cannot read its clock.
pub fn run() -> i32 {
    let state = Arc::new((Mutex::new((Guard::new(), false)), Condvar::new()));
    let reader = state.clone();
    let spawned = std::thread::Builder::new()
        .name("orders".into())
        .spawn(move || read_orders(&reader));
    if let Err(e) = spawned {
        eprintln!("motley fence-guard: starting its reader: {e}");
        return 1;
    }
    // Outlive the agent: a task it started may too (a container, kept by containerd's
    // shim), and must end when the lease does, agent or not.
    let _ = nix::sys::prctl::set_pdeathsig(None);
    let (lock, wake) = &*state;
    let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let Some(now) = boottime_ms() else {
            eprintln!("motley fence-guard: CLOCK_BOOTTIME cannot be read");
            return 1;
        };
        let due = g.0.step(now);
        if !due.is_empty() {
            let late = now.saturating_sub(g.0.current().deadline_ms);
            drop(g);
            signal(&due, late);
            g = lock.lock().unwrap_or_else(|e| e.into_inner());
        }
        // The agent closed the pipe (it ended, or has no fenced work left): exit once
        // the last order is carried out.
        if g.1 && g.0.done(now) {
            return 0;
        }
        let sleep = g.0.sleep_ms(boottime_ms().unwrap_or(now));
        g = wake
            .wait_timeout(g, Duration::from_millis(sleep))
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

/// The reader thread: each line replaces the order; end of input ends the guard.
fn read_orders(state: &(Mutex<(Guard, bool)>, Condvar)) {
    let mut input = std::io::stdin().lock();
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut input)
            .take(MAX_ORDER_BYTES as u64)
            .read_line(&mut line);
        let order = match n {
            Ok(0) | Err(_) => None,
            Ok(_) if !line.ends_with('\n') => {
                eprintln!("motley fence-guard: an order longer than {MAX_ORDER_BYTES} bytes");
                None
            }
            Ok(_) => match FenceOrder::parse(&line) {
                Ok(o) => Some(o),
                Err(e) => {
                    // The last good order stands: it can only end tasks earlier than a
                    // newer one would.
                    eprintln!("motley fence-guard: {e}");
                    continue;
                }
            },
        };
        let mut g = state.0.lock().unwrap_or_else(|e| e.into_inner());
        match order {
            Some(o) => g.0.order(o),
            None => g.1 = true,
        }
        state.1.notify_one();
        if g.1 {
            return;
        }
    }
}

/// Signals the process groups of the tasks named.
fn signal(due: &[(String, Signal)], late_ms: u64) {
    let tasks = crate::driver::scan_tasks();
    for (id, sig) in due {
        let Some((h, _)) = tasks.get(id) else {
            continue;
        };
        let (name, s) = match sig {
            Signal::Term => ("SIGTERM", nix::sys::signal::Signal::SIGTERM),
            Signal::Kill => ("SIGKILL", nix::sys::signal::Signal::SIGKILL),
        };
        let Ok(pid) = i32::try_from(h.pid) else {
            continue;
        };
        match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), s) {
            Ok(()) => eprintln!(
                "motley fence-guard: {id}: the lease ended {late_ms} ms ago and the agent did not stop it: {name} to process group {pid}"
            ),
            Err(e) => eprintln!("motley fence-guard: {id}: {name} to {pid}: {e}"),
        }
    }
}

/// The running guard process, as its agent holds it.
struct Running {
    pipe: std::io::PipeWriter,
    pid: u32,
    pidfd: OwnedFd,
}

/// The agent's end of its guard (see the module).
#[derive(Debug)]
pub struct ExecGuard {
    program: PathBuf,
    running: Mutex<Option<RunningDebug>>,
}

/// [`Running`] with a `Debug` that shows the pid only.
struct RunningDebug(Running);

impl std::fmt::Debug for RunningDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "guard pid {}", self.0.pid)
    }
}

impl Default for ExecGuard {
    /// The guard is this binary (`/proc/self/exe` still names it after an upgrade
    /// replaced the file).
    fn default() -> Self {
        ExecGuard::new(PathBuf::from("/proc/self/exe"))
    }
}

impl ExecGuard {
    /// A guard run as `<program> fence-guard`.
    pub fn new(program: PathBuf) -> ExecGuard {
        ExecGuard {
            program,
            running: Mutex::new(None),
        }
    }

    /// The guard's pid, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(|r| r.0.pid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RunningDebug>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the guard `order`: starts it if needed (again, if it died), and ends it
    /// when the order names nothing.
    pub fn send(&self, order: &FenceOrder) -> Result<(), String> {
        let mut running = self.lock();
        if order.allocs.is_empty() {
            if let Some(mut r) = running.take() {
                // Nothing left to guard: said first, so that it exits at once rather
                // than carrying out its last order (which it does when the agent dies).
                let _ = r.0.pipe.write_all(order.encode().as_bytes());
                finish(r.0);
            }
            return Ok(());
        }
        let line = order.encode();
        for attempt in 0..2 {
            if running.is_none() {
                *running = Some(RunningDebug(self.start()?));
            }
            let Some(r) = running.as_mut() else {
                continue;
            };
            match r.0.pipe.write_all(line.as_bytes()) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // Gone (EPIPE) or not reading (a full pipe): a new one.
                    tracing::error!(
                        "the fence guard (pid {}) did not take an order ({e}); starting another (attempt {})",
                        r.0.pid,
                        attempt + 1
                    );
                    if let Some(r) = running.take() {
                        if let Ok(pid) = i32::try_from(r.0.pid) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        finish(r.0);
                    }
                }
            }
        }
        Err("the fence guard does not take orders".into())
    }

    fn start(&self) -> Result<Running, String> {
        let (read, write) =
            std::io::pipe().map_err(|e| format!("a pipe for the fence guard: {e}"))?;
        nix::fcntl::fcntl(
            write.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| format!("a pipe for the fence guard: {e}"))?;
        let err = |e: std::io::Error| format!("the fence guard's output: {e}");
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(err)?;
        let stdout = stderr.try_clone().map_err(err)?;
        let program = self.program.display().to_string();
        let started = crate::spawn::spawn_kept(crate::spawn::OwnedSpec {
            program: program.clone(),
            argv: vec!["motley".into(), "fence-guard".into()],
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            stdin: Some(OwnedFd::from(read)),
            stdout,
            stderr,
            user: None,
        })
        .map_err(|e| format!("starting the fence guard ({program}): {e}"))?;
        tracing::info!("fence guard started (pid {})", started.pid);
        Ok(Running {
            pipe: write,
            pid: started.pid,
            pidfd: started.pidfd,
        })
    }
}

/// Closes the guard's pipe (it exits) and reaps it off the caller's thread.
fn finish(r: Running) {
    drop(r.pipe);
    let (pid, pidfd) = (r.pid, r.pidfd);
    let _ = std::thread::Builder::new()
        .name("guard-reap".into())
        .spawn(move || {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            }
            drop(pidfd);
        });
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        if let Some(r) = self.lock().take() {
            finish(r.0);
        }
    }
}
