//! The kernel's architecture, from signals that cannot lie, never from a suffix in a
//! model name.
//!
//! In order of trust:
//!
//! 1. The kernel's machine: `uname -m` (given by the agent for the host) or
//!    `/proc/sys/kernel/arch` (Linux 6.1+). `armv8l` is what a 64-bit kernel tells a
//!    32-bit task (`COMPAT_UTS_MACHINE`): the kernel is arm64.
//! 2. `/proc/cpuinfo`:
//!    - ARM: the `Features` line. A 64-bit kernel lists AArch64 hardware capabilities
//!      (`fp`, `asimd`, `atomics`, `cpuid`, `lrcpc`... none of which exist in AArch32);
//!      a 32-bit kernel lists AArch32 ones (`half`, `thumb`, `vfp`, `neon`...). A 64-bit
//!      kernel shows a 32-bit reader the AArch32 list with the model `... (v8l)`, so
//!      `(v8l)` with AArch32 features is still an arm64 kernel, while NVIDIA's L4T
//!      kernels print `(v8l)` beside AArch64 features for every reader: both arm64.
//!      Without a `Features` line, `CPU architecture: AArch64` or `8` (a 32-bit kernel
//!      says 7 even on a Cortex-A53).
//!    - x86: 32-bit kernels print `fdiv_bug`, `f00f_bug`, `coma_bug` and `hlt_bug`
//!      lines and 64-bit kernels do not (`arch/x86/kernel/cpu/proc.c`). The `lm` flag
//!      says only that the CPU could run a 64-bit kernel.
//!    - RISC-V: `isa : rv64...` / `rv32...`, or `mmu : sv39|sv48|sv57` (64-bit only).
//!    - s390x: `vendor_id : IBM/S390`. LoongArch: `CPU Family : Loongson-64bit`.
//!
//! Anything else is unknown, and reported as such.

/// What `/proc/cpuinfo` says that bears on the architecture.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// An x86 processor (`vendor_id` of an x86 vendor, or Intel/AMD in the model).
    pub x86: bool,
    /// The x86 `lm` flag.
    pub x86_lm: bool,
    /// A 32-bit x86 kernel's `fdiv_bug`-style lines were present.
    pub x86_32_kernel: bool,
    /// An ARM processor (implementer, `CPU architecture` or `Features` seen).
    pub arm: bool,
    /// The ARM `Features` flags.
    pub features: Vec<String>,
    /// `CPU architecture` as written.
    pub cpu_architecture: Option<String>,
    /// The first model name.
    pub model: Option<String>,
    /// RISC-V `isa` line, lowercase.
    pub isa: Option<String>,
    /// RISC-V `mmu` line, lowercase.
    pub mmu: Option<String>,
    /// `vendor_id : IBM/S390`.
    pub s390: bool,
    /// `CPU Family : Loongson-64bit`.
    pub loongarch: bool,
}

/// Hardware capabilities the kernel prints only for AArch64 (arch/arm64 `hwcap_str`);
/// `evtstrm`, `aes`, `pmull`, `sha1`, `sha2` and `crc32` exist in both lists.
const AARCH64_ONLY: &[&str] = &[
    "fp", "asimd", "atomics", "fphp", "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc",
    "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat",
    "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg", "dcpodp", "sve2", "bti", "mte",
];

/// Hardware capabilities of AArch32 (arch/arm `hwcap_str`, and the compat list an arm64
/// kernel shows a 32-bit reader).
const AARCH32_ONLY: &[&str] = &[
    "swp", "half", "thumb", "26bit", "fastmult", "fpa", "vfp", "edsp", "java", "iwmmxt", "crunch",
    "thumbee", "neon", "vfpv3", "vfpv3d16", "tls", "vfpv4", "idiva", "idivt", "vfpd32", "lpae",
];

/// The kernel architecture for a `uname -m` machine string, in Go/OCI naming.
pub fn from_machine(machine: &str) -> Option<&'static str> {
    Some(match machine.trim() {
        "x86_64" | "amd64" => "amd64",
        "i386" | "i486" | "i586" | "i686" => "386",
        // armv8l: a 32-bit task's view of a 64-bit kernel.
        "aarch64" | "arm64" | "armv8l" | "armv8b" => "arm64",
        m if m.starts_with("armv") || m == "arm" => "arm",
        "riscv64" => "riscv64",
        "ppc64le" => "ppc64le",
        "ppc64" => "ppc64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        "mips64" => "mips64",
        "mips" => "mips",
        _ => return None,
    })
}

/// The kernel architecture from cpuinfo's signals, with the reason; `None` when the
/// text does not say.
pub fn from_cpuinfo(s: &Signals) -> Option<(&'static str, String)> {
    if s.x86 {
        return Some(if s.x86_32_kernel {
            (
                "386",
                "cpuinfo: fdiv_bug lines (a 32-bit x86 kernel)".into(),
            )
        } else if s.x86_lm {
            (
                "amd64",
                "cpuinfo: x86 with lm, no 32-bit kernel lines".into(),
            )
        } else {
            ("386", "cpuinfo: x86 without lm".into())
        });
    }
    if let Some(isa) = &s.isa {
        if isa.starts_with("rv64") {
            return Some(("riscv64", format!("cpuinfo isa: {isa}")));
        }
        if isa.starts_with("rv32") {
            return Some(("riscv32", format!("cpuinfo isa: {isa}")));
        }
    }
    if let Some(mmu) = &s.mmu
        && matches!(mmu.as_str(), "sv39" | "sv48" | "sv57")
    {
        return Some(("riscv64", format!("cpuinfo mmu: {mmu}")));
    }
    if s.s390 {
        return Some(("s390x", "cpuinfo: vendor_id IBM/S390".into()));
    }
    if s.loongarch {
        return Some(("loong64", "cpuinfo: CPU Family Loongson-64bit".into()));
    }
    if !s.arm {
        return None;
    }
    let has = |list: &[&str]| {
        s.features
            .iter()
            .find(|f| list.contains(&f.as_str()))
            .cloned()
    };
    if let Some(f) = has(AARCH64_ONLY) {
        return Some(("arm64", format!("cpuinfo Features: {f} (AArch64 only)")));
    }
    let v8l = s.model.as_deref().is_some_and(|m| m.contains("(v8l)"));
    if let Some(f) = has(AARCH32_ONLY) {
        return Some(if v8l {
            (
                "arm64",
                format!(
                    "cpuinfo: AArch32 Features ({f}) with a (v8l) model: a 64-bit kernel seen by a 32-bit reader"
                ),
            )
        } else {
            ("arm", format!("cpuinfo Features: {f} (AArch32)"))
        });
    }
    let model_aarch64 = s.model.as_deref().is_some_and(|m| m.contains("AArch64"));
    match s.cpu_architecture.as_deref().map(str::trim) {
        Some(a) if a.starts_with("AArch64") => {
            Some(("arm64", "cpuinfo: CPU architecture AArch64".into()))
        }
        _ if model_aarch64 => Some(("arm64", "cpuinfo: AArch64 processor".into())),
        Some(a) => match a.parse::<u32>() {
            Ok(n) if n >= 8 => Some(("arm64", format!("cpuinfo: CPU architecture {n}"))),
            Ok(n) => Some(("arm", format!("cpuinfo: CPU architecture {n}"))),
            Err(_) => None,
        },
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(features: &str, cpu_arch: &str, model: &str) -> Signals {
        Signals {
            arm: true,
            features: features.split_whitespace().map(str::to_string).collect(),
            cpu_architecture: Some(cpu_arch.into()).filter(|s: &String| !s.is_empty()),
            model: Some(model.into()).filter(|s: &String| !s.is_empty()),
            ..Signals::default()
        }
    }

    fn arch(s: &Signals) -> Option<&'static str> {
        from_cpuinfo(s).map(|(a, _)| a)
    }

    #[test]
    fn machines() {
        assert_eq!(from_machine("x86_64"), Some("amd64"));
        assert_eq!(from_machine("i686"), Some("386"));
        assert_eq!(from_machine("aarch64"), Some("arm64"));
        assert_eq!(from_machine("armv8l"), Some("arm64"));
        assert_eq!(from_machine("armv7l"), Some("arm"));
        assert_eq!(from_machine("armv6l"), Some("arm"));
        assert_eq!(from_machine("riscv64"), Some("riscv64"));
        assert_eq!(from_machine("loongarch64"), Some("loong64"));
        assert_eq!(from_machine("sparc64"), None);
    }

    #[test]
    fn arm_kernels_from_features_not_model_suffixes() {
        // NVIDIA L4T: "(v8l)" for a 64-bit kernel and reader.
        let l4t = arm(
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm",
            "8",
            "ARMv8 Processor rev 1 (v8l)",
        );
        assert_eq!(arch(&l4t), Some("arm64"));
        // A 64-bit kernel seen by a 32-bit reader (Raspberry Pi OS 32-bit on a Pi 4).
        let compat = arm(
            "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm crc32",
            "8",
            "ARMv8 Processor rev 3 (v8l)",
        );
        assert_eq!(arch(&compat), Some("arm64"));
        // A 32-bit kernel on the same Cortex-A72: says 7 and (v7l).
        let arm32 = arm(
            "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm crc32",
            "7",
            "ARMv7 Processor rev 3 (v7l)",
        );
        assert_eq!(arch(&arm32), Some("arm"));
        // A 32-bit kernel that says CPU architecture 8 with AArch32 features is arm.
        assert_eq!(arch(&arm("half thumb vfp neon", "8", "")), Some("arm"));
        // Old arm64 kernels: no AArch64-only flags yet, "AArch64" spelled out.
        assert_eq!(arch(&arm("fp asimd", "AArch64", "")), Some("arm64"));
        assert_eq!(arch(&arm("", "AArch64", "")), Some("arm64"));
        assert_eq!(
            arch(&arm("", "", "AArch64 Processor rev 4 (aarch64)")),
            Some("arm64")
        );
        assert_eq!(arch(&arm("", "8", "")), Some("arm64"));
        assert_eq!(
            arch(&arm(
                "swp half thumb fastmult vfp edsp java tls",
                "7",
                "ARMv6-compatible processor rev 7 (v6l)"
            )),
            Some("arm")
        );
        assert_eq!(arch(&arm("", "", "")), None);
    }

    #[test]
    fn x86_kernels_from_32_bit_lines_not_lm() {
        let s = |lm, k32| Signals {
            x86: true,
            x86_lm: lm,
            x86_32_kernel: k32,
            ..Signals::default()
        };
        assert_eq!(arch(&s(true, false)), Some("amd64"));
        assert_eq!(
            arch(&s(true, true)),
            Some("386"),
            "a 32-bit kernel on a 64-bit CPU"
        );
        assert_eq!(arch(&s(false, false)), Some("386"));
    }

    #[test]
    fn other_architectures() {
        let rv = Signals {
            isa: Some("rv64imafdc_zicntr_zicsr_zifencei_zihpm".into()),
            ..Signals::default()
        };
        assert_eq!(arch(&rv), Some("riscv64"));
        let rv32 = Signals {
            isa: Some("rv32imac".into()),
            ..Signals::default()
        };
        assert_eq!(arch(&rv32), Some("riscv32"));
        let sv = Signals {
            mmu: Some("sv39".into()),
            ..Signals::default()
        };
        assert_eq!(arch(&sv), Some("riscv64"));
        let s390 = Signals {
            s390: true,
            ..Signals::default()
        };
        assert_eq!(arch(&s390), Some("s390x"));
        let loong = Signals {
            loongarch: true,
            ..Signals::default()
        };
        assert_eq!(arch(&loong), Some("loong64"));
        assert_eq!(arch(&Signals::default()), None);
    }
}
