//! Where an agent keeps what its tasks need: allocation directories, in-memory logs and
//! secret files (tmpfs directories this user owns).

use std::path::PathBuf;

use crate::{AgentConfig, driver};

/// Where allocation directories go: `<dir>/allocs`, made passable (0711) for the user
/// tasks run as. When that user cannot reach it anyway (a data directory inside a
/// private one: any `mktemp -d`, any home directory), a directory of this agent's own
/// under `/run/motley/` instead, named by a hash of the data directory so that a
/// restarted agent finds its tasks again. Tasks then start instead of failing with
/// exit 127 in a loop.
pub(crate) fn allocs_root(cfg: &AgentConfig) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let make = |d: &std::path::Path| -> anyhow::Result<()> {
        std::fs::create_dir_all(d).map_err(|e| anyhow::anyhow!("creating {}: {e}", d.display()))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| anyhow::anyhow!("securing {}: {e}", d.display()))
    };
    let home = cfg.dir.join("allocs");
    // Tasks' users pass through to their own directories (0700) but list nothing.
    make(&cfg.dir)?;
    make(&home)?;
    let Some((uid, gid, user)) = &cfg.task_user.switch_to else {
        return Ok(home);
    };
    let Err(why) = driver::check_reachable(&home.join("x"), *uid, *gid) else {
        return Ok(home);
    };
    let hash = motley_net::token_hash(&cfg.dir.display().to_string());
    let run = PathBuf::from("/run/motley").join(format!("tasks-{}", &hash[..12]));
    match make(std::path::Path::new("/run/motley")).and_then(|_| make(&run)) {
        Ok(()) => match driver::check_reachable(&run.join("x"), *uid, *gid) {
            Ok(()) => {
                tracing::warn!(
                    "tasks run as {user} and cannot reach {} ({why}): their directories are in {} instead",
                    home.display(),
                    run.display()
                );
                Ok(run)
            }
            Err(e) => {
                tracing::error!("tasks run as {user} and cannot start here: {why}; {e}");
                Ok(home)
            }
        },
        Err(e) => {
            tracing::error!(
                "tasks run as {user} and cannot start here: {why} (and {e}; or run tasks as another user with --task-user)"
            );
            Ok(home)
        }
    }
}

/// `<what>-<node>-<hash of the agent's directory>`: two agents on one machine (two
/// clusters, or test runs side by side) never share a tmpfs directory, even with the
/// same node name, and a restarted agent finds its own again.
fn tmpfs_leaf(what: &str, cfg: &AgentConfig) -> String {
    let hash = motley_net::token_hash(&cfg.dir.display().to_string());
    format!("motley-{what}-{}-{}", cfg.name, &hash[..8])
}

/// A tmpfs directory for in-memory task logs of this agent, if one is writable.
pub(crate) fn memory_log_root(cfg: &AgentConfig) -> Option<PathBuf> {
    tmpfs_dir(&tmpfs_leaf("logs", cfg))
}

/// A tmpfs directory for secret files of this agent, if one is writable: mode 0711, so
/// a task's user reaches its own allocation's directory (0700) but lists nothing.
pub(crate) fn secret_root(cfg: &AgentConfig) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpfs_dir(&tmpfs_leaf("secrets", cfg))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).ok()?;
    Some(dir)
}

/// `<tmpfs>/<leaf>`, created, on the first usable in-memory filesystem. A directory that
/// is there already must be a real directory owned by this process's user: `/dev/shm` is
/// writable by everyone, and a planted one (or a symlink) would hand our files to another.
fn tmpfs_dir(leaf: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let candidates = [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(PathBuf::from("/dev/shm")),
        Some(PathBuf::from("/run")),
    ];
    candidates.into_iter().flatten().find_map(|base| {
        let on_tmpfs = nix::sys::statfs::statfs(&base)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        let dir = base.join(leaf);
        if !on_tmpfs || std::fs::create_dir_all(&dir).is_err() {
            return None;
        }
        let ours = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw());
        if !ours {
            tracing::warn!(
                "{} is not a directory of this user; not using it",
                dir.display()
            );
        }
        ours.then_some(dir)
    })
}
