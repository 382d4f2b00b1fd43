//! Resource limits through cgroups: v2 (unified) where the host has it, v1
//! (memory and cpu controllers, as on hybrid hosts) otherwise. Where neither is
//! writable, limits are not enforced and the allocation says so.

use std::fs;
use std::path::{Path, PathBuf};

use motley_core::model::Resources;

/// Which cgroup layout the host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// Unified hierarchy at this mount.
    V2(PathBuf),
    /// Separate memory and cpu hierarchies.
    V1 {
        /// The memory controller's mount.
        memory: PathBuf,
        /// The cpu controller's mount.
        cpu: Option<PathBuf>,
    },
    /// No usable cgroups.
    None,
}

/// CFS period used for CPU limits.
const PERIOD_US: u64 = 100_000;

impl Cgroups {
    /// Detects the layout under `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Cgroups {
        if root.join("cgroup.controllers").exists() {
            return Cgroups::V2(root.to_path_buf());
        }
        let memory = root.join("memory");
        if memory.join("memory.limit_in_bytes").exists() {
            let cpu = ["cpu,cpuacct", "cpu"]
                .iter()
                .map(|d| root.join(d))
                .find(|p| p.join("cpu.cfs_quota_us").exists());
            return Cgroups::V1 { memory, cpu };
        }
        Cgroups::None
    }

    /// Creates a group for an allocation, sets its limits and moves `pid` into it.
    /// Returns the directories created, to remove later.
    pub fn limit(&self, id: &str, pid: u32, limits: &Resources) -> Result<Vec<PathBuf>, String> {
        let mut made = Vec::new();
        let res = self.limit_inner(id, pid, limits, &mut made);
        if res.is_err() {
            remove(&made);
        }
        res.map(|_| made)
    }

    fn limit_inner(
        &self,
        id: &str,
        pid: u32,
        limits: &Resources,
        made: &mut Vec<PathBuf>,
    ) -> Result<(), String> {
        let write =
            |p: PathBuf, v: String| fs::write(&p, v).map_err(|e| format!("{}: {e}", p.display()));
        let mkdir = |base: &Path, made: &mut Vec<PathBuf>| -> Result<PathBuf, String> {
            let parent = base.join("motley");
            if !parent.exists() {
                fs::create_dir(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
                if base.join("cgroup.subtree_control").exists() {
                    // v2: let the children use memory and cpu.
                    let _ = fs::write(base.join("cgroup.subtree_control"), "+memory +cpu");
                }
            }
            if parent.join("cgroup.subtree_control").exists() {
                let _ = fs::write(parent.join("cgroup.subtree_control"), "+memory +cpu");
            }
            let dir = parent.join(id);
            fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            made.push(dir.clone());
            Ok(dir)
        };
        match self {
            Cgroups::None => {
                Err("no writable cgroup controllers on this node; limits are not enforced".into())
            }
            Cgroups::V2(root) => {
                let dir = mkdir(root, made)?;
                if let Some(m) = limits.memory {
                    write(dir.join("memory.max"), m.0.to_string())?;
                    let _ = fs::write(dir.join("memory.swap.max"), "0");
                }
                if let Some(c) = limits.cpu {
                    write(
                        dir.join("cpu.max"),
                        format!("{} {PERIOD_US}", c.0 * PERIOD_US / 1000),
                    )?;
                }
                write(dir.join("cgroup.procs"), pid.to_string())
            }
            Cgroups::V1 { memory, cpu } => {
                if let Some(m) = limits.memory {
                    let dir = mkdir(memory, made)?;
                    write(dir.join("memory.limit_in_bytes"), m.0.to_string())?;
                    write(dir.join("cgroup.procs"), pid.to_string())?;
                }
                if let Some(c) = limits.cpu {
                    let base = cpu
                        .as_ref()
                        .ok_or("no cpu cgroup controller; the cpu limit is not enforced")?;
                    let dir = mkdir(base, made)?;
                    write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                    write(
                        dir.join("cpu.cfs_quota_us"),
                        (c.0 * PERIOD_US / 1000).to_string(),
                    )?;
                    write(dir.join("cgroup.procs"), pid.to_string())?;
                }
                Ok(())
            }
        }
    }
}

/// Removes allocation groups (they must be empty: every process gone).
pub fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = fs::remove_dir(d);
    }
}
