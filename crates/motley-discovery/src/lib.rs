//! Hardware discovery: what a machine really is, read from a filesystem root.
//!
//! Everything here reads files under a root directory (normally `/`) and nothing
//! else, so tests feed it real captured trees. Parsers never panic on any input:
//! missing files, no final newline, masked serials and unknown bits are kept or
//! skipped, never rejected.
//!
//! This first slice covers the CPU (`/proc/cpuinfo`, cpufreq), memory, the board
//! model, thermal zones and the Raspberry Pi firmware's throttle flags.
#![warn(missing_docs)]

pub mod arm;
pub mod cpuinfo;
pub mod thermal;
pub mod throttle;

use std::path::Path;

use serde::Serialize;

/// What discovery found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    /// Kernel architecture in Go/OCI naming (`amd64`, `arm64`, `arm`, `386`, ...).
    pub arch: String,
    /// The cores can run 64-bit code even when the kernel is 32-bit (`arm` on a Cortex-A53).
    pub arch64_capable: bool,
    /// Board model (device tree, a Pi's `Model` line, or DMI vendor and product).
    pub board: Option<String>,
    /// CPU model name (`Cortex-A76`, `Intel(R) Core(TM) ...`).
    pub cpu_model: Option<String>,
    /// Distinct core types, e.g. `["Firestorm", "Icestorm"]` on an Apple M1.
    pub core_types: Vec<String>,
    /// Logical CPUs.
    pub logical_cpus: u32,
    /// Highest maximum frequency of any CPU, MHz.
    pub max_mhz: Option<u32>,
    /// Lowest minimum frequency, MHz.
    pub min_mhz: Option<u32>,
    /// Total memory, bytes.
    pub memory: Option<u64>,
    /// Raspberry Pi throttle flags, when the firmware exposes them.
    pub throttle: Option<throttle::Throttle>,
    /// Thermal zones.
    pub thermal: Vec<thermal::ThermalZone>,
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read(root.join(rel))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Total memory from `/proc/meminfo` text.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        kb.checked_mul(1024)
    })
}

/// Reads a cpufreq value (kHz) as MHz.
fn khz_file(root: &Path, rel: &str) -> Option<u32> {
    read(root, rel)?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|khz| (khz / 1000) as u32)
}

/// Discovers the facts of the machine whose filesystem is at `root`.
pub fn discover(root: &Path) -> Facts {
    let cpu = read(root, "proc/cpuinfo")
        .map(|t| cpuinfo::parse(&t))
        .unwrap_or_default();
    let mut facts = Facts {
        arch: cpu.arch.clone(),
        arch64_capable: cpu.arch64_capable,
        board: read(root, "proc/device-tree/model")
            .map(|m| m.trim_end_matches('\0').trim().to_string())
            .filter(|m| !m.is_empty())
            .or(cpu.board.clone())
            .or_else(|| {
                let vendor = read(root, "sys/class/dmi/id/sys_vendor")?;
                let product = read(root, "sys/class/dmi/id/product_name")?;
                Some(
                    format!("{} {}", vendor.trim(), product.trim())
                        .trim()
                        .to_string(),
                )
            }),
        cpu_model: cpu.model.clone(),
        core_types: cpu.core_types.clone(),
        logical_cpus: cpu.processors,
        memory: read(root, "proc/meminfo").and_then(|m| mem_total(&m)),
        ..Default::default()
    };
    for i in 0..facts.logical_cpus.max(1) {
        let base = format!("sys/devices/system/cpu/cpu{i}/cpufreq");
        if let Some(max) = khz_file(root, &format!("{base}/cpuinfo_max_freq")) {
            facts.max_mhz = Some(facts.max_mhz.map_or(max, |m| m.max(max)));
        }
        if let Some(min) = khz_file(root, &format!("{base}/cpuinfo_min_freq")) {
            facts.min_mhz = Some(facts.min_mhz.map_or(min, |m| m.min(min)));
        }
    }
    facts.throttle = [
        "sys/devices/platform/soc/soc:firmware/get_throttled",
        "sys/devices/platform/soc:firmware/get_throttled",
    ]
    .iter()
    .find_map(|p| read(root, p))
    .and_then(|t| throttle::parse(&t));
    facts.thermal = thermal::zones(root);
    facts
}

#[cfg(test)]
mod tests {
    #[test]
    fn meminfo() {
        assert_eq!(
            super::mem_total("MemTotal:        8000000 kB\nMemFree: 1 kB\n"),
            Some(8_192_000_000)
        );
        assert_eq!(super::mem_total("garbage"), None);
    }
}
