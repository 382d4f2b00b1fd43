//! Hardware discovery: what a machine really is, read from a filesystem root.
//!
//! Everything here reads files under a root directory (normally `/`) and nothing
//! else, so tests feed it real captured trees and an agent can pretend to be a
//! captured machine (`motley agent --facts-root`). Parsers never panic on any input:
//! missing files, no final newline, masked serials, negative temperatures and
//! unknown bits are kept or skipped, never rejected (fuzzed: `fuzz/`).
//!
//! The result is [`motley_core::hw::Hardware`]: plain data the core turns into
//! labels, conditions and taints.
//!
//! | module | reads |
//! |---|---|
//! | [`cpuinfo`], [`arm`] | `/proc/cpuinfo`: processors, models, ARM part names, a Pi's Model line |
//! | [`arch`] | the kernel's architecture: `uname`, `/proc/sys/kernel/arch`, cpuinfo's flags |
//! | [`userland`] | the userland's OCI platform, from the ELF headers of init and the shell |
//! | [`cpu`] | `/sys/devices/system/cpu`: sockets, cores, core types, frequencies |
//! | [`board`] | device-tree `model` and `compatible`, DMI, cpuinfo's `Model`/`Hardware` |
//! | [`block`] | `/sys/block`, `/sys/class/nvme`, `/proc/self/mountinfo`: disks, media, mounts |
//! | [`gpu`] | `/sys/class/drm`, `/proc/driver/nvidia` |
//! | [`thermal`], [`hwmon`] | thermal zones, hwmon temperatures, `rpi_volt` |
//! | [`throttle`] | the Pi firmware's `get_throttled` |
//! | [`power`] | `/sys/class/power_supply`, RAPL |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod arch;
pub mod arm;
pub mod block;
pub mod board;
pub mod cpu;
pub mod cpuinfo;
pub mod fuzzing;
pub mod gpu;
pub mod hwmon;
pub mod power;
pub mod thermal;
pub mod throttle;
pub mod userland;

use std::path::{Path, PathBuf};

pub use motley_core::hw::Hardware;

/// What to look up besides the machine itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The agent's data directory as a path inside the root: its device is reported.
    pub data_dir: Option<String>,
}

/// Reads `root/rel` as (lossy) UTF-8.
pub(crate) fn read(root: &Path, rel: &str) -> Option<String> {
    read_path(&root.join(rel))
}

fn read_path(p: &Path) -> Option<String> {
    // sysfs files are small; anything huge is not what we are looking for.
    use std::io::Read;
    let f = std::fs::File::open(p).ok()?;
    let mut buf = Vec::new();
    f.take(1 << 20).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads a file and trims whitespace and NULs.
pub(crate) fn read_trim(p: &Path) -> Option<String> {
    read_path(p).map(|s| {
        s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string()
    })
}

/// The entries of a directory as (name, path), sorted by name; empty when unreadable.
pub(crate) fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

/// A `/proc/meminfo` field in bytes (`MemTotal`, `MemAvailable`).
pub fn meminfo_field(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        kb.checked_mul(1024)
    })
}

/// Total memory from `/proc/meminfo` text.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo_field(meminfo, "MemTotal")
}

/// PSI `some avg10` of `/proc/pressure/memory`, in hundredths of a percent.
pub fn psi_some_avg10(text: &str) -> Option<u32> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let v = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?;
    let f: f64 = v.parse().ok()?;
    (f.is_finite() && f >= 0.0).then(|| (f * 100.0).round().min(10_000.0) as u32)
}

/// Maps Rust's architecture names to the Go/OCI names clusters use.
pub fn arch_name(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `PRETTY_NAME` of an os-release file.
pub fn os_release_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim().trim_matches('"').trim_matches('\'').to_string()).filter(|v| !v.is_empty())
    })
}

/// The kernel's architecture and what decided it: the kernel's own machine name
/// (`uname` for this machine, `/proc/sys/kernel/arch` in a tree that has it), else
/// cpuinfo's signals ([`arch`]); empty when nothing says.
fn kernel_arch(root: &Path, host: bool, info: &cpuinfo::CpuInfo) -> (String, Option<String>) {
    let machine = if host {
        Some((
            nix::sys::utsname::uname()
                .map(|u| u.machine().to_string_lossy().into_owned())
                .unwrap_or_default(),
            "uname",
        ))
    } else {
        read_trim(&root.join("proc/sys/kernel/arch")).map(|m| (m, "/proc/sys/kernel/arch"))
    };
    if let Some((m, from)) = machine
        && let Some(a) = arch::from_machine(&m)
    {
        return (a.to_string(), Some(format!("{from}: {m}")));
    }
    (info.arch.clone(), info.arch_source.clone())
}

/// Discovers the machine whose filesystem is at `root`.
pub fn discover(root: &Path, opts: &Options) -> Hardware {
    let info = read(root, "proc/cpuinfo")
        .map(|t| cpuinfo::parse(&t))
        .unwrap_or_default();
    let host = root == Path::new("/");
    let (arch, arch_source) = kernel_arch(root, host, &info);
    let platform = userland::platform_cached(root, info.arm_architecture);
    let b = board::board(root, &info);
    let version = read(root, "proc/version").unwrap_or_default();
    let os = if host {
        std::env::consts::OS.to_string()
    } else if version.starts_with("Linux")
        || read_trim(&root.join("proc/sys/kernel/ostype")).as_deref() == Some("Linux")
        || root.join("proc/cpuinfo").exists()
    {
        "linux".into()
    } else {
        String::new()
    };
    let meminfo = read(root, "proc/meminfo").unwrap_or_default();
    let (disks, data_disk) = block::disks(root, opts.data_dir.as_deref());
    let throttle = [
        "sys/devices/platform/soc/soc:firmware/get_throttled",
        "sys/devices/platform/soc:firmware/get_throttled",
        "sys/devices/platform/axi/axi:firmware/get_throttled",
    ]
    .iter()
    .find_map(|p| read(root, p))
    .and_then(|t| throttle::parse(&t));
    Hardware {
        arch64_capable: info.arch64_capable || arch == "amd64" || arch == "arm64",
        arch,
        arch_source,
        platform_source: platform.as_ref().map(|(_, why)| why.clone()),
        platform: platform.map(|(p, _)| p),
        os,
        distro: read(root, "etc/os-release")
            .or_else(|| read(root, "usr/lib/os-release"))
            .and_then(|t| os_release_name(&t)),
        kernel: read_trim(&root.join("proc/sys/kernel/osrelease"))
            .filter(|k| !k.is_empty())
            .or_else(|| version.split_whitespace().nth(2).map(str::to_string)),
        board: b.model,
        board_family: b.family,
        cpu: {
            let mut c = cpu::cpu(root, &info);
            if b.soc.is_some() {
                c.soc = b.soc;
            }
            c
        },
        memory: mem_total(&meminfo).unwrap_or(0),
        memory_available: meminfo_field(&meminfo, "MemAvailable"),
        memory_psi_some_avg10: read(root, "proc/pressure/memory").and_then(|t| psi_some_avg10(&t)),
        disks,
        data_disk,
        gpus: gpu::gpus(root),
        thermal: thermal::zones(root),
        hwmon: hwmon::chips(root),
        throttle,
        power: power::supplies(root),
        rapl: power::rapl(root),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn meminfo() {
        let t = "MemTotal:        8000000 kB\nMemFree: 1 kB\nMemAvailable:  4000 kB";
        assert_eq!(super::mem_total(t), Some(8_192_000_000));
        assert_eq!(super::meminfo_field(t, "MemAvailable"), Some(4_096_000));
        assert_eq!(super::mem_total("garbage"), None);
        assert_eq!(super::mem_total("MemTotal: 99999999999999999999 kB"), None);
    }

    #[test]
    fn psi() {
        let t = "some avg10=12.34 avg60=1.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(super::psi_some_avg10(t), Some(1234));
        assert_eq!(super::psi_some_avg10("some avg10=NaN"), None);
        assert_eq!(super::psi_some_avg10(""), None);
    }

    #[test]
    fn os_release() {
        assert_eq!(
            super::os_release_name("NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            Some("Debian GNU/Linux 12 (bookworm)".into())
        );
        assert_eq!(super::os_release_name("PRETTY_NAME="), None);
    }
}
