//! `/proc/cpuinfo`: processors, their models, and the board lines a Pi adds.

use std::collections::BTreeSet;

use crate::arm;

/// What `/proc/cpuinfo` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuInfo {
    /// Logical processors.
    pub processors: u32,
    /// Kernel architecture (`amd64`, `arm64`, `arm`, `386`), from the processors' fields.
    pub arch: String,
    /// 64-bit capable cores.
    pub arch64_capable: bool,
    /// The (first) CPU model name.
    pub model: Option<String>,
    /// Distinct core names, for hybrid chips.
    pub core_types: Vec<String>,
    /// A Raspberry Pi's `Model` line.
    pub board: Option<String>,
    /// `Hardware` line (SoC).
    pub hardware: Option<String>,
    /// Vendor: `intel`, `amd` (from `vendor_id`), or the ARM implementer's name.
    pub vendor: Option<String>,
    /// Distinct `physical id` values (sockets), where x86 kernels give them.
    pub sockets: u32,
    /// Distinct (`physical id`, `core id`) pairs: physical cores, where given.
    pub cores: u32,
    /// The ARM core name of each processor, in order (for core types on big.LITTLE).
    pub per_cpu_core: Vec<Option<String>>,
}

fn num(v: &str) -> Option<u32> {
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Parses `/proc/cpuinfo` text. Never panics; unknown lines are ignored.
pub fn parse(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let (mut implementer, mut arch_v, mut x86, mut lm) = (None, None, false, false);
    // The ARM core name of the processor block just read.
    let core_of = |implementer: Option<u32>, part: Option<u32>| {
        arm::core_name(implementer?, part?).map(str::to_string)
    };
    let mut part = None;
    let mut phys: Option<u32> = None;
    let mut sockets = BTreeSet::new();
    let mut pairs = BTreeSet::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" if value.parse::<u32>().is_ok() => {
                if info.processors > 0 {
                    info.per_cpu_core.push(core_of(implementer, part.take()));
                }
                info.processors += 1;
                phys = None;
            }
            "vendor_id" => {
                x86 = true;
                info.vendor = match value {
                    "GenuineIntel" => Some("intel".into()),
                    "AuthenticAMD" | "HygonGenuine" => Some("amd".into()),
                    "" => None,
                    other => Some(other.to_string()),
                };
            }
            "physical id" => {
                phys = num(value);
                if let Some(p) = phys {
                    sockets.insert(p);
                }
            }
            "core id" => {
                if let Some(c) = num(value) {
                    pairs.insert((phys.unwrap_or(0), c));
                }
            }
            "model name" => {
                if info.model.is_none() && !value.is_empty() {
                    info.model = Some(value.to_string());
                }
                if value.contains("Intel") || value.contains("AMD") {
                    x86 = true;
                }
            }
            "flags" => lm |= value.split_whitespace().any(|f| f == "lm"),
            "CPU implementer" => implementer = num(value),
            "CPU part" => {
                part = num(value);
                if let (Some(i), Some(p)) = (implementer, part)
                    && arm::is_64bit_core(i, p)
                {
                    info.arch64_capable = true;
                }
            }
            "CPU architecture" => {
                arch_v = num(value).or(if value.starts_with("AArch64") {
                    Some(8)
                } else {
                    None
                })
            }
            "Model" => info.board = Some(value.to_string()).filter(|v| !v.is_empty()),
            "Hardware" => info.hardware = Some(value.to_string()).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
    if info.processors > 0 || implementer.is_some() {
        info.per_cpu_core.push(core_of(implementer, part));
        if info.vendor.is_none() {
            info.vendor = implementer
                .and_then(arm::implementer_name)
                .map(str::to_string);
        }
    }
    info.sockets = sockets.len() as u32;
    info.cores = pairs.len() as u32;
    let types: BTreeSet<String> = info.per_cpu_core.iter().flatten().cloned().collect();
    info.arch = if x86 {
        if lm { "amd64".into() } else { "386".into() }
    } else if implementer.is_some() || arch_v.is_some() {
        // A 32-bit kernel reports "CPU architecture: 7" even on a 64-bit Cortex-A53, and
        // says "ARMv7 Processor" in its model name; a 64-bit kernel reports 8 and no model.
        let armv7_kernel = info
            .model
            .as_deref()
            .is_some_and(|m| m.starts_with("ARMv") || m.contains("(v7l)") || m.contains("(v6l)"));
        if arch_v.unwrap_or(0) >= 8 && !armv7_kernel {
            "arm64".into()
        } else {
            "arm".into()
        }
    } else {
        String::new()
    };
    if x86 {
        info.arch64_capable = lm;
    }
    if info.model.as_deref().is_none_or(|m| m.starts_with("ARMv")) && !types.is_empty() {
        info.model = Some(types.iter().cloned().collect::<Vec<_>>().join(" + "));
    }
    info.core_types = types.into_iter().collect();
    info
}
