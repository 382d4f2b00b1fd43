//! Starting a task's process without copying the agent.
//!
//! `std::process::Command` forks when it must change the user or run code before
//! `exec` (tasks run as `nobody`, and fenced ones ask for a parent-death signal), and a
//! fork copies the agent's page tables and makes every page the agent touches next a
//! copy-on-write fault: measured on `motley up` running a 10,000-task array, fork and
//! those faults were a fifth of all CPU time (docs/BENCHMARKS.md). Here the child
//! shares the agent's memory and the agent waits until it has called `exec`
//! (`clone(CLONE_VM | CLONE_VFORK)`, what `posix_spawn` does inside glibc), so nothing is
//! copied. The child only makes system calls on data prepared beforehand, with every
//! signal blocked until its handlers are reset.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What to start.
pub struct Spec<'a> {
    /// The program: a path, or a name looked up in `PATH` of `env`.
    pub program: &'a str,
    /// Arguments, the program's name first.
    pub argv: &'a [String],
    /// The whole environment.
    pub env: &'a [(String, String)],
    /// Working directory.
    pub cwd: &'a Path,
    /// Standard input (`/dev/null` when `None`).
    pub stdin: Option<&'a OwnedFd>,
    /// Standard output and error.
    pub stdout: &'a OwnedFd,
    /// Standard error.
    pub stderr: &'a OwnedFd,
    /// Switch to this user and group (dropping supplementary groups).
    pub user: Option<(u32, u32)>,
    /// Killed when the thread that started it exits: start such a process with
    /// [`spawn_kept`], from a thread that lives as long as the agent.
    pub parent_death_kill: bool,
}

/// A [`Spec`] that owns its parts, to be sent to the keeper thread.
pub struct OwnedSpec {
    /// The program.
    pub program: String,
    /// Arguments, the program's name first.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Standard input (`/dev/null` when `None`).
    pub stdin: Option<OwnedFd>,
    /// Standard output.
    pub stdout: OwnedFd,
    /// Standard error.
    pub stderr: OwnedFd,
    /// Switch to this user and group.
    pub user: Option<(u32, u32)>,
}

type KeeperJob = (OwnedSpec, std::sync::mpsc::Sender<std::io::Result<Started>>);

/// The keeper thread's queue: started once, never ended while the process lives.
static KEEPER: std::sync::OnceLock<std::sync::mpsc::Sender<KeeperJob>> = std::sync::OnceLock::new();

fn keeper() -> std::io::Result<std::sync::mpsc::Sender<KeeperJob>> {
    if let Some(k) = KEEPER.get() {
        return Ok(k.clone());
    }
    let (tx, rx) = std::sync::mpsc::channel::<KeeperJob>();
    std::thread::Builder::new()
        .name("motley-keeper".into())
        .spawn(move || {
            for (spec, reply) in rx {
                let r = spawn(&Spec {
                    program: &spec.program,
                    argv: &spec.argv,
                    env: &spec.env,
                    cwd: &spec.cwd,
                    stdin: spec.stdin.as_ref(),
                    stdout: &spec.stdout,
                    stderr: &spec.stderr,
                    user: spec.user,
                    parent_death_kill: true,
                });
                let _ = reply.send(r);
            }
        })?;
    // Another caller may have won the race: use whichever queue was stored (the
    // losing thread ends when its sender is dropped here).
    Ok(KEEPER.get_or_init(|| tx).clone())
}

/// Starts a process that must die with the agent (`PR_SET_PDEATHSIG`), from the
/// keeper thread. The kernel sends the parent-death signal when the *thread* that
/// created the child exits, and tokio ends idle blocking threads after 10 s: started
/// from one of those, a fenced task would be killed seconds later. The keeper thread
/// lives as long as the process, so the signal comes exactly when the agent dies.
pub fn spawn_kept(spec: OwnedSpec) -> std::io::Result<Started> {
    let (reply, answer) = std::sync::mpsc::channel();
    keeper()?
        .send((spec, reply))
        .map_err(|_| std::io::Error::other("the keeper thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the keeper thread is gone"))?
}

/// A started process: its pid (also its process group) and a pidfd for it.
pub struct Started {
    /// Process id.
    pub pid: u32,
    /// Readable once the process has exited (it stays our child until reaped).
    pub pidfd: OwnedFd,
}

/// Prepared, borrowed by the child: nothing in it is allocated after the clone.
struct Prepared {
    programs: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    user: Option<(libc::uid_t, libc::gid_t)>,
    parent_death_kill: bool,
    old_mask: libc::sigset_t,
    /// Set by the child when a step fails: (step, errno).
    failed: (i32, i32),
}

const STEP_SIGNALS: i32 = 1;
const STEP_PGID: i32 = 2;
const STEP_PDEATHSIG: i32 = 3;
const STEP_USER: i32 = 4;
const STEP_CWD: i32 = 5;
const STEP_FDS: i32 = 6;
const STEP_EXEC: i32 = 7;

fn cstring(s: &[u8], what: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Where `program` may be, in the order `execvp` tries: as given when it holds a '/',
/// else in each directory of `PATH`. The child tries them in turn as the task's user
/// (a first match the user may not execute, like a pyenv shim under /root, is skipped).
fn candidates(program: &str, env: &[(String, String)]) -> Vec<PathBuf> {
    if program.contains('/') {
        return vec![PathBuf::from(program)];
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .collect()
}

/// Starts the process. On success the child has called `exec`.
pub fn spawn(spec: &Spec<'_>) -> std::io::Result<Started> {
    let programs: Vec<CString> = candidates(spec.program, spec.env)
        .iter()
        .map(|p| cstring(p.as_os_str().as_bytes(), "the program"))
        .collect::<Result<_, _>>()?;
    let args: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes(), "an argument"))
        .collect::<Result<_, _>>()?;
    let vars: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes(), "an environment variable"))
        .collect::<Result<_, _>>()?;
    let cwd = cstring(OsStr::new(spec.cwd.as_os_str()).as_bytes(), "the directory")?;
    let devnull = std::fs::File::open("/dev/null")?;
    let mut p = Box::new(Prepared {
        programs,
        argv: args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
        envp: vars
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
        cwd,
        stdin: spec.stdin.map_or(devnull.as_raw_fd(), |f| f.as_raw_fd()),
        stdout: spec.stdout.as_raw_fd(),
        stderr: spec.stderr.as_raw_fd(),
        user: spec.user,
        parent_death_kill: spec.parent_death_kill,
        // SAFETY: sigset_t is plain data; sigemptyset below initialises it properly.
        old_mask: unsafe { std::mem::zeroed() },
        failed: (0, 0),
    });
    // The child runs on its own stack, in our memory, until it calls exec. `stack`
    // outlives the child's use of it (we are suspended until it calls exec or exits).
    let stack = ChildStack::new()?;
    let top = stack.top();
    let pid = {
        // SAFETY: plain libc calls on locals. All signals are blocked around the clone so
        // that none is handled in the child while it shares our memory; the child
        // resets its handlers before unblocking them.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigemptyset(&mut p.old_mask);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut p.old_mask);
            let arg = &mut *p as *mut Prepared as *mut libc::c_void;
            let pid = libc::clone(
                child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                arg,
            );
            let err = std::io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &p.old_mask, std::ptr::null_mut());
            if pid < 0 {
                return Err(err);
            }
            pid
        }
    };
    drop(stack);
    drop(devnull);
    let (step, errno) = p.failed;
    if step != 0 {
        // It exited without exec: reap it, and say why.
        let mut status = 0;
        // SAFETY: waiting for our own child, which has exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let e = std::io::Error::from_raw_os_error(errno);
        let what = match step {
            STEP_SIGNALS => "resetting signals",
            STEP_PGID => "starting a process group",
            STEP_PDEATHSIG => "asking for the parent-death signal",
            STEP_USER => "switching user",
            STEP_CWD => "entering the working directory",
            STEP_FDS => "setting up standard input and output",
            _ => return Err(e),
        };
        return Err(std::io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    // Our unreaped child: its pid cannot be reused before we wait for it.
    Ok(Started {
        pid: pid as u32,
        pidfd: pidfd_open(pid as u32)?,
    })
}

/// The stack a child runs on until it calls exec: mapped for each start and unmapped
/// after, not taken from the C allocator. Ten tasks started at once took ten 64 KiB
/// stacks from the heap, and the heap kept its peak after they were freed (an idle
/// agent's heap 616 kB, of it 386 KB live: docs/decisions.md, "One malloc arena").
/// Unmapping gives the pages the child touched back at once.
struct ChildStack {
    base: *mut libc::c_void,
}

impl ChildStack {
    /// 64 KiB: the child makes system calls only (glibc's `posix_spawn` uses less).
    const SIZE: usize = 64 << 10;

    fn new() -> std::io::Result<ChildStack> {
        // SAFETY: an anonymous private mapping at an address the kernel chooses; nothing
        // else refers to it until `top` hands it to the child.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ChildStack { base })
    }

    /// The stack's top (stacks grow down), aligned to 16 bytes as the ABI wants: a
    /// mapping starts on a page, so its end is aligned.
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(Self::SIZE)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: `base` is the mapping `new` made, of `SIZE` bytes; the child no longer
        // runs on it (it called exec or exited before `clone` returned, CLONE_VFORK).
        unsafe {
            libc::munmap(self.base, Self::SIZE);
        }
    }
}

/// A pidfd for `pid`: readable once that process has exited.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The child, in the parent's memory: system calls only, then exec or `_exit`.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` the parent keeps alive, unchanged, until we exec
    // or exit (CLONE_VFORK); every call below is a plain system call wrapper.
    unsafe {
        let p = &mut *(arg as *mut Prepared);
        let fail = |p: &mut Prepared, step: i32| -> libc::c_int {
            p.failed = (step, *libc::__errno_location());
            libc::_exit(127)
        };
        // Handlers are the agent's: back to the default before any signal can arrive.
        // (SIGPIPE too, which Rust ignores; exec keeps ignored signals ignored.)
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                if libc::sigaction(sig, &dfl, std::ptr::null_mut()) != 0 {
                    return fail(p, STEP_SIGNALS);
                }
            }
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(p, STEP_PGID);
        }
        if let Some((uid, gid)) = p.user
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0)
        {
            return fail(p, STEP_USER);
        }
        // After the user switch: changing credentials clears the parent-death signal
        // (commit_creds), so set before it, a fenced task run as `nobody` outlived its
        // agent.
        if p.parent_death_kill && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return fail(p, STEP_PDEATHSIG);
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            return fail(p, STEP_CWD);
        }
        if libc::dup2(p.stdin, 0) < 0 || libc::dup2(p.stdout, 1) < 0 || libc::dup2(p.stderr, 2) < 0
        {
            return fail(p, STEP_FDS);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &p.old_mask, std::ptr::null_mut());
        // As execvp: on to the next candidate when this one is missing or not ours to
        // run; EACCES wins over ENOENT when nothing could be run.
        let mut denied = false;
        for program in &p.programs {
            libc::execve(program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
            match *libc::__errno_location() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG => {}
                _ => return fail(p, STEP_EXEC),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(p, STEP_EXEC)
    }
}

/// How a started process ended, once its pidfd is readable: reaps it.
pub fn reap(pid: u32) -> Option<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    (r == pid as libc::pid_t).then(|| std::process::ExitStatus::from_raw(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> (tempfile::TempDir, OwnedFd) {
        let d = tempfile::tempdir().expect("tempdir");
        let f = std::fs::File::create(d.path().join("out")).expect("log");
        (d, f.into())
    }

    /// Runs `[program]` with only PATH set, as this user.
    fn bare(program: &str, path: &str, cwd: &Path, out: &OwnedFd) -> std::io::Result<Started> {
        spawn(&Spec {
            program,
            argv: &[program.to_string()],
            env: &[("PATH".into(), path.into())],
            cwd,
            stdin: None,
            stdout: out,
            stderr: out,
            user: None,
            parent_death_kill: false,
        })
    }

    fn wait(s: &Started) -> std::process::ExitStatus {
        for _ in 0..500 {
            if let Some(st) = reap(s.pid) {
                return st;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the child did not exit");
    }

    #[test]
    fn runs_a_program_from_path_with_its_environment_directory_and_output() {
        let (d, out) = log();
        let err = out.try_clone().expect("dup");
        let s = spawn(&Spec {
            program: "sh",
            argv: &[
                "sh".into(),
                "-c".into(),
                "echo $GREETING; pwd; exit 3".into(),
            ],
            env: &[
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("GREETING".into(), "hello".into()),
            ],
            cwd: d.path(),
            stdin: None,
            stdout: &out,
            stderr: &err,
            user: None,
            parent_death_kill: false,
        })
        .expect("spawn");
        let st = wait(&s);
        assert_eq!(st.code(), Some(3));
        let text = std::fs::read_to_string(d.path().join("out")).expect("read");
        let cwd = d.path().canonicalize().expect("canonical");
        assert_eq!(text, format!("hello\n{}\n", cwd.display()));
    }

    #[test]
    fn a_path_entry_it_may_not_run_is_skipped_as_execvp_does() {
        use std::os::unix::fs::PermissionsExt;
        let (d, out) = log();
        // First in PATH: a "true" that is not executable (EACCES), then the real one.
        let shim = d.path().join("true");
        std::fs::write(&shim, "#!/bin/sh\nexit 9\n").expect("shim");
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let path = format!("{}:/usr/bin:/bin", d.path().display());
        let s = bare("true", &path, d.path(), &out).expect("spawn");
        assert_eq!(wait(&s).code(), Some(0));
        // Nothing else to run: EACCES, not ENOENT.
        let e = bare("true", &d.path().display().to_string(), d.path(), &out)
            .err()
            .expect("not executable");
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    }

    #[test]
    fn a_missing_program_or_directory_is_an_error_and_leaves_no_child() {
        let (d, out) = log();
        let spec = |program, cwd| bare(program, "/usr/bin:/bin", Path::new(cwd), &out);
        let e = spec("no-such-program-here", "/")
            .err()
            .expect("missing program");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = spec("true", "/no/such/dir")
            .err()
            .expect("missing directory");
        assert!(
            e.to_string().contains("entering the working directory"),
            "{e}"
        );
        // The failed children were reaped: no zombie child is left that never reached
        // exec (such a child has its parent thread's name: the test's, "spawn::…").
        let me = std::process::id().to_string();
        let zombies: Vec<String> = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                let Some((name, rest)) = stat.rsplit_once(") ") else {
                    return false;
                };
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.first() == Some(&"Z")
                    && f.get(1) == Some(&me.as_str())
                    && name.contains("(spawn::")
            })
            .collect();
        assert!(zombies.is_empty(), "unreaped children: {zombies:?}");
        drop(d);
    }

    #[test]
    fn its_own_process_group_and_default_signal_handling() {
        let (d, out) = log();
        // Ignored in the agent (Rust ignores SIGPIPE): back to the default in the task.
        let s = spawn(&Spec {
            program: "/bin/sh",
            argv: &[
                "sh".into(),
                "-c".into(),
                "read -r _ _ _ _ pgid _ < /proc/$$/stat; echo $pgid; grep SigIgn /proc/$$/status"
                    .into(),
            ],
            env: &[("PATH".into(), "/usr/bin:/bin".into())],
            cwd: d.path(),
            stdin: None,
            stdout: &out,
            stderr: &out,
            user: None,
            parent_death_kill: true,
        })
        .expect("spawn");
        let st = wait(&s);
        assert_eq!(st.code(), Some(0));
        let text = std::fs::read_to_string(d.path().join("out")).expect("read");
        let mut lines = text.lines();
        let pgid: u32 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("pgid");
        assert_eq!(pgid, s.pid, "the task leads its own group");
        let ign = lines.next().expect("SigIgn line");
        let mask =
            u64::from_str_radix(ign.split_whitespace().nth(1).expect("mask"), 16).expect("hex");
        assert_eq!(
            mask & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE is not ignored: {ign}"
        );
    }

    /// Whether the process runs (exists and is not a zombie).
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                st.rfind(')')
                    .map(|i| st[i + 1..].trim_start().starts_with('Z'))
            })
            .is_some_and(|zombie| !zombie)
    }

    fn kill_and_reap(s: &Started) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(s.pid as i32, libc::SIGKILL) };
        wait(s);
    }

    fn sleeper(d: &Path, out: &OwnedFd, parent_death_kill: bool) -> std::io::Result<Started> {
        spawn(&Spec {
            program: "/bin/sleep",
            argv: &["sleep".into(), "30".into()],
            env: &[("PATH".into(), "/usr/bin:/bin".into())],
            cwd: d,
            stdin: None,
            stdout: out,
            stderr: out,
            user: None,
            parent_death_kill,
        })
    }

    #[test]
    fn the_parent_death_signal_follows_the_thread_and_the_keeper_outlives_it() {
        // The hazard: started with a parent-death signal from a thread that then ends
        // (as tokio's idle blocking threads do), the process is killed.
        let (d, out) = log();
        let dir = d.path().to_path_buf();
        let out2 = out.try_clone().expect("dup");
        let s = std::thread::spawn(move || sleeper(&dir, &out2, true))
            .join()
            .expect("thread")
            .expect("spawn");
        let st = wait(&s);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "killed when its thread ended"
        );
        // From the keeper thread, asked for by a thread that ends: it runs on.
        let dir = d.path().to_path_buf();
        let (o1, o2) = (out.try_clone().expect("dup"), out.try_clone().expect("dup"));
        let kept = std::thread::spawn(move || {
            spawn_kept(OwnedSpec {
                program: "/bin/sleep".into(),
                argv: vec!["sleep".into(), "30".into()],
                env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                cwd: dir,
                stdin: None,
                stdout: o1,
                stderr: o2,
                user: None,
            })
        })
        .join()
        .expect("thread")
        .expect("spawn_kept");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            running(kept.pid),
            "a kept process outlives the asking thread"
        );
        kill_and_reap(&kept);
        drop(out);
    }
}
