//! Host facts for node registration: architecture, OS, CPUs, memory, host name.
//! (The discovery crate of a later milestone replaces this with the full picture.)

use std::path::Path;

use motley_core::model::NodeFacts;

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

/// Total memory in bytes from a `/proc/meminfo` text.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Reads this machine's facts from `root` (normally `/`).
pub fn host_facts(root: &Path) -> NodeFacts {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    NodeFacts {
        arch: arch_name(std::env::consts::ARCH).to_string(),
        os: std::env::consts::OS.to_string(),
        cpus,
        memory: mem_total(&read("proc/meminfo")).unwrap_or(0),
        hostname: read("proc/sys/kernel/hostname").trim().to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        assert_eq!(
            mem_total("MemTotal:        8000000 kB\nMemFree: 1 kB\n"),
            Some(8_192_000_000)
        );
        assert_eq!(mem_total("garbage"), None);
        assert_eq!(arch_name("aarch64"), "arm64");
    }
}
