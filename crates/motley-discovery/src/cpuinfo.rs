//! `/proc/cpuinfo`: processors, their models, and the board lines a Pi adds.

use std::collections::BTreeSet;

use crate::arm;

/// What `/proc/cpuinfo` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuInfo {
    /// Logical processors.
    pub processors: u32,
    /// Kernel architecture (`amd64`, `arm64`, `arm`, `386`, `riscv64`, `s390x`,
    /// `loong64`), from the processors' fields ([`crate::arch`]); empty when unknown.
    pub arch: String,
    /// Which lines decided `arch`.
    pub arch_source: Option<String>,
    /// The ARM CPU architecture number (`CPU architecture`: 6, 7, 8), for the variant of
    /// a 32-bit userland (`linux/arm/v7`).
    pub arm_architecture: Option<u32>,
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
    /// `implementer:part` pairs not in the table ([`crate::arm`]).
    pub unknown_parts: Vec<String>,
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
    let mut sig = crate::arch::Signals::default();
    // The ARM core name of the processor block just read.
    let mut unknown = BTreeSet::new();
    let mut core_of = |implementer: Option<u32>, part: Option<u32>| {
        let (i, p) = (implementer?, part?);
        let name = arm::core_name(i, p).map(str::to_string);
        if name.is_none() {
            unknown.insert(format!("{i:#x}:{p:#x}"));
        }
        name
    };
    let mut part = None;
    // The RISC-V core name of the processor block just read.
    let mut uarch: Option<String> = None;
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
                    info.per_cpu_core
                        .push(core_of(implementer, part.take()).or(uarch.take()));
                }
                info.processors += 1;
                phys = None;
            }
            "vendor_id" => {
                // s390x kernels print a vendor_id too ("IBM/S390").
                x86 |= !value.contains("S390");
                sig.s390 |= value.contains("S390");
                info.vendor = match value {
                    "GenuineIntel" => Some("intel".into()),
                    "AuthenticAMD" | "HygonGenuine" => Some("amd".into()),
                    "" => None,
                    other => Some(other.to_string()),
                };
            }
            // Printed only by 32-bit x86 kernels (arch/x86/kernel/cpu/proc.c).
            "fdiv_bug" | "f00f_bug" | "coma_bug" | "hlt_bug" => sig.x86_32_kernel = true,
            "Features" if sig.features.is_empty() => {
                sig.features = value.split_whitespace().map(str::to_string).collect();
            }
            "isa" if sig.isa.is_none() => sig.isa = Some(value.to_ascii_lowercase()),
            "uarch" => {
                uarch = riscv_core_name(value);
                if info.vendor.is_none() {
                    info.vendor = value.split_once(',').map(|(v, _)| v.to_string());
                }
            }
            "mmu" if sig.mmu.is_none() => sig.mmu = Some(value.to_ascii_lowercase()),
            "CPU Family" | "cpu family" if value.contains("Loongson-64") => sig.loongarch = true,
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
            "model name" | "Processor" => {
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
                sig.cpu_architecture = Some(value.to_string());
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
        info.per_cpu_core.push(core_of(implementer, part).or(uarch));
        if info.vendor.is_none() {
            info.vendor = implementer
                .and_then(arm::implementer_name)
                .map(str::to_string);
        }
    }
    info.unknown_parts = unknown.into_iter().collect();
    info.sockets = sockets.len() as u32;
    info.cores = pairs.len() as u32;
    let types: BTreeSet<String> = info.per_cpu_core.iter().flatten().cloned().collect();
    sig.x86 = x86;
    sig.x86_lm = lm;
    sig.arm = implementer.is_some() || arch_v.is_some() || !sig.features.is_empty() && !x86;
    sig.model = info.model.clone();
    if let Some((arch, source)) = crate::arch::from_cpuinfo(&sig) {
        info.arch = arch.to_string();
        info.arch_source = Some(source);
    }
    info.arm_architecture = arch_v;
    if per_cpu_is_arm11(&info) {
        // ARM1176 (Pi 1, Zero) reports "CPU architecture: 7"; it is ARMv6.
        info.arm_architecture = Some(6);
    }
    if x86 {
        info.arch64_capable = lm;
    }
    if matches!(
        info.arch.as_str(),
        "arm64" | "riscv64" | "s390x" | "loong64"
    ) {
        info.arch64_capable = true;
    }
    if info
        .model
        .as_deref()
        .is_none_or(|m| m.starts_with("ARMv") || m.starts_with("AArch64 Processor"))
        && !types.is_empty()
    {
        info.model = Some(types.iter().cloned().collect::<Vec<_>>().join(" + "));
    }
    info.core_types = types.into_iter().collect();
    info
}

/// Whether the cores are ARM11 (ARMv6), whatever `CPU architecture` says.
fn per_cpu_is_arm11(info: &CpuInfo) -> bool {
    info.per_cpu_core
        .iter()
        .flatten()
        .any(|c| c.starts_with("ARM11"))
        || info
            .model
            .as_deref()
            .is_some_and(|m| m.contains("ARMv6") || m.contains("(v6l)"))
}

/// A RISC-V core's name from cpuinfo's `uarch` (`sifive,u74-mc` → `SiFive U74-MC`,
/// `thead,c910` → `T-Head C910`): the device-tree compatible of the hart.
pub fn riscv_core_name(uarch: &str) -> Option<String> {
    let (vendor, core) = uarch.trim().split_once(',')?;
    if core.is_empty() {
        return None;
    }
    let vendor = match vendor {
        "sifive" => "SiFive".to_string(),
        "thead" => "T-Head".to_string(),
        "spacemit" => "SpacemiT".to_string(),
        "starfive" => "StarFive".to_string(),
        "sophgo" => "Sophgo".to_string(),
        "andestech" => "Andes".to_string(),
        "openhwgroup" => "OpenHW".to_string(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    };
    Some(format!("{vendor} {}", core.to_ascii_uppercase()))
}
