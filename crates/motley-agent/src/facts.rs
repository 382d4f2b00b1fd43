//! What this node is: discovery (`motley-discovery`) turned into the node's facts,
//! conditions and readings, refreshed periodically and sent only when they change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use motley_core::hw::{self, Condition, Hardware, Readings, Thresholds};
use motley_core::model::{LogTarget, NodeFacts};

pub use motley_discovery::arch_name;

/// Where facts come from and how they are judged.
#[derive(Debug, Clone)]
pub struct FactsConfig {
    /// The filesystem root to read (`/`, or a captured tree).
    pub root: PathBuf,
    /// The agent's data directory on this host (its disk usage raises disk pressure).
    pub data_dir: PathBuf,
    /// How often to re-read the hardware.
    pub interval: Duration,
    /// When conditions are raised.
    pub thresholds: Thresholds,
    /// The owner's choice of task log place (`None`: memory on fragile flash, else disk).
    pub task_logs: Option<LogTarget>,
    /// What the node's task logs may take together, in memory and on disk each
    /// (`--log-budget`; `None`: [`motley_core::logbudget`]'s defaults).
    pub log_budget: Option<u64>,
    /// A CPU score given by the owner instead of calibrating.
    pub cpu_score: Option<u32>,
    /// Tasks that ask for root run as root here (reported to the scheduler).
    pub root_tasks: bool,
    /// containerd's version while it answers (kept by the container driver).
    pub containerd: crate::drivers::container::Status,
    /// The machine's power at rest and loaded (`--watts`), to estimate its draw when
    /// nothing measures it (`crate::energy`).
    pub power_model: Option<motley_core::energy::PowerModel>,
}

impl FactsConfig {
    /// Defaults for a real host: root `/`, refresh every 30 s.
    pub fn host(data_dir: PathBuf) -> FactsConfig {
        FactsConfig {
            root: PathBuf::from("/"),
            data_dir,
            interval: Duration::from_secs(30),
            thresholds: Thresholds::default(),
            task_logs: None,
            log_budget: None,
            cpu_score: None,
            root_tasks: false,
            containerd: Default::default(),
            power_model: None,
        }
    }
    /// The data directory as a path inside the root: the real one on a host, the
    /// conventional `/var/lib/motley` inside a captured tree.
    pub fn data_dir_in_root(&self) -> String {
        if self.root == Path::new("/") {
            std::fs::canonicalize(&self.data_dir)
                .unwrap_or_else(|_| self.data_dir.clone())
                .to_string_lossy()
                .into_owned()
        } else {
            "/var/lib/motley".into()
        }
    }
}

/// Reads the hardware. On a real host without the firmware's sysfs throttle file, asks
/// `vcgencmd` (Raspberry Pi OS) when it is installed.
pub fn read_hardware(cfg: &FactsConfig) -> Hardware {
    let mut hw = motley_discovery::discover(
        &cfg.root,
        &motley_discovery::Options {
            data_dir: Some(cfg.data_dir_in_root()),
        },
    );
    if hw.throttle.is_none() && cfg.root == Path::new("/") {
        hw.throttle = vcgencmd_throttled();
    }
    hw
}

fn vcgencmd_throttled() -> Option<hw::Throttle> {
    let path = std::env::var_os("PATH")?;
    let exe = std::env::split_paths(&path)
        .map(|d| d.join("vcgencmd"))
        .find(|p| p.is_file())?;
    let out = std::process::Command::new(exe)
        .arg("get_throttled")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    motley_discovery::throttle::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Percent of the data directory's filesystem in use (as `df` counts it).
pub fn disk_used_pct(dir: &Path) -> Option<u8> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    let frsize = s.fragment_size() as u128;
    let total = s.blocks() as u128 * frsize;
    let avail = s.blocks_available() as u128 * frsize;
    let free = s.blocks_free() as u128 * frsize;
    let used = total.checked_sub(free)?;
    let denom = used + avail;
    (denom > 0).then(|| ((used * 100).div_ceil(denom)).min(100) as u8)
}

/// Where task logs go, and why.
pub fn task_logs(cfg: &FactsConfig, hw: &Hardware) -> (LogTarget, String) {
    if let Some(t) = cfg.task_logs {
        return (t, format!("set by the owner (--task-logs {})", t.as_str()));
    }
    match &hw.data_disk {
        Some(d) if d.media.is_fragile_flash() => (
            LogTarget::Memory,
            format!(
                "data dir on {} ({}): logs kept in memory, nothing written periodically",
                d.media.as_str(),
                d.device
            ),
        ),
        Some(d) => (
            LogTarget::Disk,
            format!("data dir on {} ({})", d.media.as_str(), d.device),
        ),
        None => (LogTarget::Disk, "data dir device unknown".into()),
    }
}

/// One observation of the node: its facts (with conditions) and its readings.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Facts as sent to the server (stable: they change rarely).
    pub facts: NodeFacts,
    /// Readings (change every refresh; kept in the server's memory only).
    pub readings: Readings,
    /// The full hardware read, for turning energy counters into power next time.
    pub hw: Hardware,
    /// When (ms since the epoch).
    pub at: u64,
}

/// Observes the node: reads hardware, judges conditions against the previous ones.
pub fn observe(
    cfg: &FactsConfig,
    hostname_fallback: &str,
    cpu_score: Option<u32>,
    prev: Option<&Observation>,
    now: u64,
) -> Observation {
    let hw = read_hardware(cfg);
    let used = disk_used_pct(&cfg.data_dir);
    let prev_conditions: &[Condition] = prev.map_or(&[], |p| &p.facts.conditions);
    let conditions = hw::conditions(&hw, used, &cfg.thresholds, prev_conditions, now);
    let (stable, readings) = hw.split(prev.map(|p| (&p.hw, p.at)), now, used);
    let (logs, why) = task_logs(cfg, &hw);
    let hostname = std::fs::read_to_string(cfg.root.join("proc/sys/kernel/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| hostname_fallback.to_string());
    let cpus = if stable.cpu.logical > 0 {
        stable.cpu.logical
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    };
    let facts = NodeFacts {
        arch: stable.arch.clone(),
        os: stable.os.clone(),
        cpus,
        memory: stable.memory,
        hostname,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        cpu_score,
        task_logs: Some(logs),
        task_logs_reason: Some(why),
        hw: Some(Box::new(stable)),
        conditions,
        root_tasks: cfg.root_tasks,
        containerd: cfg
            .containerd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    };
    Observation {
        facts,
        readings,
        hw,
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(arch_name("aarch64"), "arm64");
        assert_eq!(arch_name("x86_64"), "amd64");
    }

    #[test]
    fn this_hosts_data_disk_usage() {
        let pct = disk_used_pct(Path::new("/")).expect("statvfs /");
        assert!(pct <= 100);
        assert_eq!(disk_used_pct(Path::new("/nonexistent-motley")), None);
    }
}
