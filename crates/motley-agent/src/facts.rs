//! Host facts for node registration: architecture, OS, CPUs, memory, host name.
//! (`motley-discovery` will supply the full picture; its meminfo parser is used here.)

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
        memory: motley_discovery::mem_total(&read("proc/meminfo")).unwrap_or(0),
        hostname: read("proc/sys/kernel/hostname").trim().to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
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
}
