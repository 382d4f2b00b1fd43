//! The exec driver: a task is a process in its own process group, with its
//! output appended to a log file in the allocation's directory.
//!
//! Stopping sends SIGTERM to the whole group, waits the grace period, then
//! sends SIGKILL. After the main process exits, whatever is left of its group
//! is killed too, so no task leaves orphans behind.
//!
//! A task started by an earlier agent process is *adopted*: recognised by pid
//! and start time (so a reused pid is never mistaken for it) and watched
//! through a pidfd. Its exit status cannot be known (it is not our child).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use motley_core::model::Allocation;
use motley_core::proto::SecretDelivery;
use motley_core::restart::Exit;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

/// How to find a running task again after an agent restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    /// Process id (also the process group id).
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

/// The log file of an allocation.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("output.log")
}

/// Start time of a process, from `/proc/PID/stat`.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when the process the handle names still runs (and is not a zombie).
pub fn alive(h: &Handle) -> bool {
    if start_time(h.pid) != Some(h.start_time) {
        return false;
    }
    let state = std::fs::read_to_string(format!("/proc/{}/stat", h.pid))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().chars().next()))
        .flatten();
    state != Some('Z')
}

/// Expands `${MOTLEY_*}` variables in a string.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// The name part of a `MOTLEY_PORT_*` or `MOTLEY_VOLUME_*` variable: `web-data` →
/// `WEB_DATA`.
pub fn env_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The variables every task sees: its ids and directory, and its host ports
/// (`MOTLEY_PORT_<NAME>`), volumes (`MOTLEY_VOLUME_<NAME>`) and GPUs (`MOTLEY_GPUS`).
pub fn motley_vars(
    a: &Allocation,
    dir: &Path,
    volumes: &[(String, PathBuf)],
) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::from([
        ("MOTLEY_ALLOC_ID".to_string(), a.id.clone()),
        ("MOTLEY_ALLOC_DIR".to_string(), dir.display().to_string()),
        ("MOTLEY_INDEX".to_string(), a.index.to_string()),
        ("MOTLEY_NODE".to_string(), a.node.clone()),
        ("MOTLEY_WORKLOAD".to_string(), a.workload.name.clone()),
        ("MOTLEY_KIND".to_string(), a.workload.kind.to_string()),
        ("MOTLEY_NAMESPACE".to_string(), a.workload.namespace.clone()),
    ]);
    for p in &a.task.ports {
        vars.insert(
            format!("MOTLEY_PORT_{}", env_name(&p.name)),
            p.port.to_string(),
        );
    }
    for (name, path) in volumes {
        vars.insert(
            format!("MOTLEY_VOLUME_{}", env_name(name)),
            path.display().to_string(),
        );
    }
    if !a.gpus.is_empty() {
        vars.insert("MOTLEY_GPUS".to_string(), a.gpus.join(","));
    }
    vars
}

/// A running task: our child, or adopted.
pub enum Running {
    /// Started by this agent process (a pidfd of our child: it is reaped for its status).
    Child(AsyncFd<OwnedFd>, Handle),
    /// Started by an earlier agent process.
    Adopted(AsyncFd<OwnedFd>, Handle),
}

impl Running {
    /// Its handle.
    pub fn handle(&self) -> Handle {
        match self {
            Running::Child(_, h) | Running::Adopted(_, h) => *h,
        }
    }

    /// Waits for the main process to exit, then kills what is left of its group.
    pub async fn wait(&mut self) -> Exit {
        let exit = match self {
            Running::Child(fd, h) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    break Exit::Unknown;
                };
                match crate::spawn::reap(h.pid) {
                    Some(st) => {
                        use std::os::unix::process::ExitStatusExt;
                        break match (st.code(), st.signal()) {
                            (Some(c), _) => Exit::Code(c),
                            (None, Some(s)) => Exit::Signal(s),
                            _ => Exit::Unknown,
                        };
                    }
                    None => ready.clear_ready(),
                }
            },
            Running::Adopted(fd, _) => {
                // A pidfd becomes readable when the process exits.
                let _ = fd.readable().await;
                Exit::Unknown
            }
        };
        let _ = killpg(Pid::from_raw(self.handle().pid as i32), Signal::SIGKILL);
        exit
    }

    /// SIGTERM to the group, up to `grace` to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        let pgid = Pid::from_raw(self.handle().pid as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                self.wait().await
            }
        }
    }
}

/// The value of variable `name` in a `/proc/PID/environ` image (NUL-separated).
pub fn env_var(env: &[u8], name: &str) -> Option<String> {
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Finds running task processes by the `MOTLEY_ALLOC_ID` in their environment: the
/// process-group leaders whose environment names an allocation, with the allocation
/// directory it names (`MOTLEY_ALLOC_DIR`: which agent started it). This finds a task
/// even when the agent died between starting it and recording it.
pub fn scan_tasks() -> motley_rt::HashMap<String, (Handle, Option<PathBuf>)> {
    let mut out = motley_rt::HashMap::default();
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
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // fields[0] = state, fields[2] = process group, fields[19] = start time
        if fields.len() < 20 || fields[0] == "Z" || fields[2].parse::<u32>().ok() != Some(pid) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let id = env_var(&env, "MOTLEY_ALLOC_ID");
        if let (Some(id), Ok(start_time)) = (id, fields[19].parse()) {
            let dir = env_var(&env, "MOTLEY_ALLOC_DIR").map(PathBuf::from);
            out.insert(id, (Handle { pid, start_time }, dir));
        }
    }
    out
}

/// Adopts a task started earlier, if it still runs.
pub fn adopt(h: Handle) -> Option<Running> {
    if !alive(&h) {
        return None;
    }
    let fd = crate::spawn::pidfd_open(h.pid).ok()?;
    // Check again now that the pidfd pins the process: the pid cannot be reused any more.
    if !alive(&h) {
        return None;
    }
    debug_assert!(fd.as_raw_fd() >= 0);
    // SAFETY: `fd` is an OwnedFd: valid, open, and always the same descriptor until dropped.
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()?;
    Some(Running::Adopted(fd, h))
}

/// Waits until the process a handle names has exited (a pidfd becomes readable),
/// without signalling anything; at once when it is gone already.
pub async fn exited(h: Handle) {
    if let Some(Running::Adopted(fd, _)) = adopt(h) {
        let _ = fd.readable().await;
    }
}

/// Who tasks run as. An agent running as root starts them as an unprivileged user
/// (`--task-user`, default `nobody`, as Nomad's exec driver does); only a task that asks
/// for root (`task.root`) on a node that allows it (`--allow-root-tasks`) runs as root.
/// An agent that is not root runs tasks as its own user and never as root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskUser {
    /// `(uid, gid, name)` to switch to; `None`: the agent's own user.
    pub switch_to: Option<(u32, u32, String)>,
    /// Tasks that ask for root run as root.
    pub allow_root: bool,
}

impl TaskUser {
    /// Resolves `--task-user NAME` and `--allow-root-tasks` for this process.
    pub fn resolve(name: &str, allow_root: bool) -> Result<TaskUser, String> {
        if !nix::unistd::geteuid().is_root() {
            if allow_root {
                tracing::warn!("--allow-root-tasks needs an agent running as root; ignored");
            }
            return Ok(TaskUser {
                switch_to: None,
                allow_root: false,
            });
        }
        if name == "root" {
            return Ok(TaskUser {
                switch_to: None,
                allow_root: true,
            });
        }
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| format!("looking up the task user {name}: {e}"))?
            .ok_or_else(|| {
                format!("the task user {name} does not exist here: create it, or pick one with --task-user")
            })?;
        Ok(TaskUser {
            switch_to: Some((user.uid.as_raw(), user.gid.as_raw(), name.to_string())),
            allow_root,
        })
    }

    /// The `(uid, gid)` a container runs as: its own numeric `user` (which needs an
    /// agent that can switch users), else as [`TaskUser::for_task`].
    pub fn for_container(
        &self,
        task: &motley_core::model::Task,
    ) -> Result<Option<(u32, u32)>, String> {
        match task.numeric_user() {
            Some(ids) if self.switch_to.is_some() => Ok(Some(ids)),
            Some((uid, gid)) => Err(format!(
                "the task asks for user {uid}:{gid} and this agent does not run as root, so it cannot switch users"
            )),
            None => self.for_task(task.root),
        }
    }

    /// The `(uid, gid)` a task runs as (`None`: the agent's own), or why it cannot run.
    pub fn for_task(&self, wants_root: bool) -> Result<Option<(u32, u32)>, String> {
        match (wants_root, &self.switch_to) {
            (true, _) if !self.allow_root => Err(
                "the task asks for root and this node does not allow it (motley agent --allow-root-tasks)"
                    .into(),
            ),
            (true, _) | (false, None) => Ok(None),
            (false, Some((u, g, _))) => Ok(Some((*u, *g))),
        }
    }
}

/// Every directory above `dir` must let `uid`/`gid` through, or the task cannot reach
/// its own directory: names the first that does not.
pub fn check_reachable(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    for p in dir.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(p) else {
            continue;
        };
        let mode = m.mode();
        let ok = if m.uid() == uid {
            mode & 0o100 != 0
        } else if m.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(format!(
                "the task's user (uid {uid}) cannot reach {}: {} is mode {:o}; let others through it (chmod o+x) or use another data dir",
                dir.display(),
                p.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

pub(crate) fn chown(p: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    match owner {
        Some((u, g)) => std::os::unix::fs::chown(p, Some(u), Some(g))
            .map_err(|e| format!("giving {} to uid {u}: {e}", p.display())),
        None => Ok(()),
    }
}

/// How a task is started beyond its allocation: who it runs as, the Secret values it is
/// given, and where its secret files go (a directory on an in-memory filesystem; `None`
/// when the node has none).
pub struct TaskSetup<'a> {
    /// Who the task runs as.
    pub user: &'a TaskUser,
    /// What the server delivered, if the task references secrets.
    pub secrets: Option<&'a SecretDelivery>,
    /// `<tmpfs>/motley-secrets-<node>-<hash>/<alloc>`.
    pub secret_dir: Option<PathBuf>,
    /// Tells the server what a slow start is doing (`pulling 41 % of 120 MiB`).
    pub progress: Option<&'a (dyn Fn(String) + Send + Sync)>,
}

/// Writes the secret files: a fresh directory (0700) with one file per value (0400),
/// never on a disk. Returns the directory.
pub(crate) fn write_secret_files(
    d: &SecretDelivery,
    dir: Option<&Path>,
    owner: Option<(u32, u32)>,
) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = dir.ok_or(
        "this node has no in-memory filesystem (/dev/shm or /run) for secret files; they are never written to disk",
    )?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    chown(dir, owner)?;
    for (name, value) in &d.files {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("writing the secret file {name}: {e}"))?;
        f.write_all(value.as_bytes())
            .map_err(|e| format!("writing the secret file {name}: {e}"))?;
        chown(&path, owner)?;
    }
    Ok(dir.to_path_buf())
}

/// Writes the Config files under `<alloc dir>/configs`, each at the path the task named
/// (`/etc/app.ini` → `configs/etc/app.ini`), read-only (0444) and fresh at every start.
/// Returns the directory, or `None` when there are none.
pub(crate) fn write_config_files(
    d: &SecretDelivery,
    alloc_dir: &Path,
) -> Result<Option<PathBuf>, String> {
    use std::os::unix::fs::PermissionsExt;
    if d.config_files.is_empty() {
        return Ok(None);
    }
    let root = alloc_dir.join("configs");
    if root.exists() {
        // Read-only files in read-only-free directories: removable by their owner.
        std::fs::remove_dir_all(&root).map_err(|e| format!("clearing {}: {e}", root.display()))?;
    }
    for (path, value) in &d.config_files {
        // Validated as absolute and normal when applied.
        let rel = path.trim_start_matches('/');
        let file = root.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&file, value).map_err(|e| format!("writing the config file {path}: {e}"))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444))
            .map_err(|e| format!("making {path} read-only: {e}"))?;
    }
    Ok(Some(root))
}

/// A native task's environment, later entries overriding earlier ones: `PATH`, `HOME`,
/// motley's variables, the task's `env`, Config values and Secret values given as
/// variables.
fn task_env(
    a: &Allocation,
    dir: &Path,
    vars: &BTreeMap<String, String>,
    delivery: &SecretDelivery,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if let Some(p) = std::env::var_os("PATH") {
        env.insert("PATH".into(), p.to_string_lossy().to_string());
    }
    env.insert("HOME".into(), dir.display().to_string());
    env.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(a.task.env.iter().map(|(k, v)| (k.clone(), expand(v, vars))));
    env.extend(
        delivery
            .config_env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env.extend(delivery.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.into_iter().collect()
}

/// How a native task's `exec` check runs: its command (variables expanded) with the
/// task's environment, directory and user, next to the running task.
pub fn check_command(
    a: &Allocation,
    dir: &Path,
    volumes: &[(String, PathBuf)],
    setup: &TaskSetup<'_>,
    argv: &[String],
) -> Result<crate::checks::ExecSpec, String> {
    let user = setup.user.for_task(a.task.root)?;
    let mut vars = motley_vars(a, dir, volumes);
    let empty = SecretDelivery::default();
    let delivery = setup.secrets.unwrap_or(&empty);
    if !delivery.files.is_empty()
        && let Some(sdir) = &setup.secret_dir
    {
        vars.insert("MOTLEY_SECRETS".to_string(), sdir.display().to_string());
    }
    if !delivery.config_files.is_empty() {
        vars.insert(
            "MOTLEY_CONFIGS".to_string(),
            dir.join("configs").display().to_string(),
        );
    }
    Ok(crate::checks::ExecSpec {
        argv: argv.iter().map(|s| expand(s, &vars)).collect(),
        env: task_env(a, dir, &vars, delivery),
        cwd: a
            .task
            .workdir
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.to_path_buf()),
        user,
    })
}

/// Starts an allocation's task; `volumes` are its volumes' directories on this node,
/// created here when missing (a volume is provisioned on first use).
pub fn start(
    a: &Allocation,
    dir: &Path,
    log_dir: &Path,
    volumes: &[(String, PathBuf)],
    setup: &TaskSetup<'_>,
) -> Result<Running, String> {
    use std::os::unix::fs::PermissionsExt;
    let owner = setup.user.for_task(a.task.root)?;
    for d in [dir, log_dir]
        .into_iter()
        .chain(volumes.iter().map(|(_, p)| p.as_path()))
    {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    // The allocation's directory is its user's alone; so are its volumes' directories.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("securing {}: {e}", dir.display()))?;
    for d in std::iter::once(dir).chain(volumes.iter().map(|(_, p)| p.as_path())) {
        chown(d, owner)?;
    }
    let mut vars = motley_vars(a, dir, volumes);
    let empty = SecretDelivery::default();
    let delivery = setup.secrets.unwrap_or(&empty);
    if !delivery.files.is_empty() {
        let sdir = write_secret_files(delivery, setup.secret_dir.as_deref(), owner)?;
        vars.insert("MOTLEY_SECRETS".to_string(), sdir.display().to_string());
    }
    if let Some(cdir) = write_config_files(delivery, dir)? {
        vars.insert("MOTLEY_CONFIGS".to_string(), cdir.display().to_string());
    }
    let argv: Vec<String> = a.task.command.iter().map(|s| expand(s, &vars)).collect();
    let program = argv.first().ok_or("empty command")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(log_dir))
        .map_err(|e| format!("opening the log: {e}"))?;
    let log: OwnedFd = log.into();
    let log2 = log
        .try_clone()
        .map_err(|e| format!("opening the log: {e}"))?;
    let env = task_env(a, dir, &vars, delivery);
    let cwd = a.task.workdir.as_deref().map(Path::new).unwrap_or(dir);
    // A fenced task must not outlive its agent: nobody would stop it when the lease
    // runs out, and the control plane would start a second copy elsewhere. It is
    // started from the keeper thread, which lives as long as the agent.
    let started = if a.on_node_loss == motley_core::model::NodeLoss::Fence {
        crate::spawn::spawn_kept(crate::spawn::OwnedSpec {
            program: program.to_string(),
            argv: argv.clone(),
            env: env.clone(),
            cwd: cwd.to_path_buf(),
            stdin: None,
            stdout: log,
            stderr: log2,
            user: owner,
        })
    } else {
        crate::spawn::spawn(&crate::spawn::Spec {
            program,
            argv: &argv,
            env: &env,
            cwd,
            stdin: None,
            stdout: &log,
            stderr: &log2,
            user: owner,
            parent_death_kill: false,
        })
    }
    .map_err(|e| {
        // Diagnosed only on failure, off the start path: usually a directory above the
        // allocation's that the task's user cannot pass through.
        owner
            .and_then(|(u, g)| check_reachable(dir, u, g).err())
            .unwrap_or_else(|| format!("cannot start {program:?}: {e}"))
    })?;
    let pid = started.pid;
    let st = start_time(pid).unwrap_or(0);
    // SAFETY: an OwnedFd: valid, open, and always the same descriptor until dropped.
    let fd =
        unsafe { AsyncFd::register_with_interest(started.pidfd, tokio::io::Interest::READABLE) }
            .map_err(|e| format!("watching the task: {e}"))?;
    Ok(Running::Child(
        fd,
        Handle {
            pid,
            start_time: st,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn expands_variables() {
        let vars = BTreeMap::from([("MOTLEY_INDEX".to_string(), "7".to_string())]);
        assert_eq!(expand("frame-${MOTLEY_INDEX}.png", &vars), "frame-7.png");
        assert_eq!(expand("${OTHER}", &vars), "${OTHER}");
    }

    #[test]
    fn finds_an_unrecorded_task_by_its_allocation_id() {
        let id = format!("scan-test-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("MOTLEY_ALLOC_ID", &id)
            .env("MOTLEY_ALLOC_DIR", "/var/lib/motley/allocs/x")
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        // /proc/PID/environ is empty for a moment while exec completes: look again briefly.
        let mut h = None;
        for _ in 0..100 {
            h = scan_tasks().get(&id).cloned();
            if h.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let (h, dir) = h.expect("the task is found by its allocation id");
        assert_eq!(h.pid, child.id());
        assert_eq!(dir, Some(PathBuf::from("/var/lib/motley/allocs/x")));
    }

    #[test]
    fn own_start_time_is_readable() {
        let me = std::process::id();
        let st = start_time(me).expect("start time");
        assert!(alive(&Handle {
            pid: me,
            start_time: st
        }));
        assert!(!alive(&Handle {
            pid: me,
            start_time: st + 1
        }));
    }
}
