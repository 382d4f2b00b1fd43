//! ARM CPU names from `/proc/cpuinfo`'s implementer and part numbers (`MIDR_EL1`).
//!
//! The numbers are the ones the vendors publish in each core's Technical Reference
//! Manual ("MIDR_EL1 bit descriptions") and that Linux lists in
//! `arch/arm64/include/asm/cputype.h`; the table runs through the Cortex-X925/A725/A520
//! generation, the automotive "AE" parts, Neoverse N1/N2/N3/V1/V2/V3 and Arm's C1 cores.
//! A part not in the table has no name here: the caller falls back to cpuinfo's `model
//! name` and says so.

/// One known core: implementer, part, name, and whether it implements AArch64.
struct Part(u32, u32, &'static str, bool);

/// Every core motley names. 64-bit means the core implements AArch64 (it may still run a
/// 32-bit kernel).
const PARTS: &[Part] = &[
    // Arm Ltd (0x41): classic, Cortex-A/R/M (32-bit), then ARMv8 and later.
    Part(0x41, 0x810, "ARM810", false),
    Part(0x41, 0x920, "ARM920", false),
    Part(0x41, 0x922, "ARM922", false),
    Part(0x41, 0x926, "ARM926", false),
    Part(0x41, 0x940, "ARM940", false),
    Part(0x41, 0x946, "ARM946", false),
    Part(0x41, 0x966, "ARM966", false),
    Part(0x41, 0xa20, "ARM1020", false),
    Part(0x41, 0xa22, "ARM1022", false),
    Part(0x41, 0xa26, "ARM1026", false),
    Part(0x41, 0xb02, "ARM11 MPCore", false),
    Part(0x41, 0xb36, "ARM1136", false),
    Part(0x41, 0xb56, "ARM1156", false),
    Part(0x41, 0xb76, "ARM1176", false),
    Part(0x41, 0xc05, "Cortex-A5", false),
    Part(0x41, 0xc07, "Cortex-A7", false),
    Part(0x41, 0xc08, "Cortex-A8", false),
    Part(0x41, 0xc09, "Cortex-A9", false),
    Part(0x41, 0xc0d, "Cortex-A17", false),
    Part(0x41, 0xc0e, "Cortex-A17", false),
    Part(0x41, 0xc0f, "Cortex-A15", false),
    Part(0x41, 0xc14, "Cortex-R4", false),
    Part(0x41, 0xc15, "Cortex-R5", false),
    Part(0x41, 0xc17, "Cortex-R7", false),
    Part(0x41, 0xc18, "Cortex-R8", false),
    Part(0x41, 0xc20, "Cortex-M0", false),
    Part(0x41, 0xc21, "Cortex-M1", false),
    Part(0x41, 0xc23, "Cortex-M3", false),
    Part(0x41, 0xc24, "Cortex-M4", false),
    Part(0x41, 0xc27, "Cortex-M7", false),
    Part(0x41, 0xc60, "Cortex-M0+", false),
    Part(0x41, 0xd01, "Cortex-A32", false),
    Part(0x41, 0xd02, "Cortex-A34", true),
    Part(0x41, 0xd03, "Cortex-A53", true),
    Part(0x41, 0xd04, "Cortex-A35", true),
    Part(0x41, 0xd05, "Cortex-A55", true),
    Part(0x41, 0xd06, "Cortex-A65", true),
    Part(0x41, 0xd07, "Cortex-A57", true),
    Part(0x41, 0xd08, "Cortex-A72", true),
    Part(0x41, 0xd09, "Cortex-A73", true),
    Part(0x41, 0xd0a, "Cortex-A75", true),
    Part(0x41, 0xd0b, "Cortex-A76", true),
    Part(0x41, 0xd0c, "Neoverse-N1", true),
    Part(0x41, 0xd0d, "Cortex-A77", true),
    Part(0x41, 0xd0e, "Cortex-A76AE", true),
    Part(0x41, 0xd13, "Cortex-R52", false),
    Part(0x41, 0xd15, "Cortex-R82", true),
    Part(0x41, 0xd16, "Cortex-R52+", false),
    Part(0x41, 0xd20, "Cortex-M23", false),
    Part(0x41, 0xd21, "Cortex-M33", false),
    Part(0x41, 0xd22, "Cortex-M55", false),
    Part(0x41, 0xd23, "Cortex-M85", false),
    Part(0x41, 0xd40, "Neoverse-V1", true),
    Part(0x41, 0xd41, "Cortex-A78", true),
    Part(0x41, 0xd42, "Cortex-A78AE", true),
    Part(0x41, 0xd43, "Cortex-A65AE", true),
    Part(0x41, 0xd44, "Cortex-X1", true),
    Part(0x41, 0xd46, "Cortex-A510", true),
    Part(0x41, 0xd47, "Cortex-A710", true),
    Part(0x41, 0xd48, "Cortex-X2", true),
    Part(0x41, 0xd49, "Neoverse-N2", true),
    Part(0x41, 0xd4a, "Neoverse-E1", true),
    Part(0x41, 0xd4b, "Cortex-A78C", true),
    Part(0x41, 0xd4c, "Cortex-X1C", true),
    Part(0x41, 0xd4d, "Cortex-A715", true),
    Part(0x41, 0xd4e, "Cortex-X3", true),
    Part(0x41, 0xd4f, "Neoverse-V2", true),
    Part(0x41, 0xd80, "Cortex-A520", true),
    Part(0x41, 0xd81, "Cortex-A720", true),
    Part(0x41, 0xd82, "Cortex-X4", true),
    Part(0x41, 0xd83, "Neoverse-V3AE", true),
    Part(0x41, 0xd84, "Neoverse-V3", true),
    Part(0x41, 0xd85, "Cortex-X925", true),
    Part(0x41, 0xd87, "Cortex-A725", true),
    Part(0x41, 0xd88, "Cortex-A520AE", true),
    Part(0x41, 0xd89, "Cortex-A720AE", true),
    Part(0x41, 0xd8b, "C1-Pro", true),
    Part(0x41, 0xd8c, "C1-Ultra", true),
    Part(0x41, 0xd8e, "Neoverse-N3", true),
    // Broadcom (0x42).
    Part(0x42, 0x00f, "Brahma-B15", false),
    Part(0x42, 0x100, "Brahma-B53", true),
    Part(0x42, 0x516, "Vulcan", true),
    // Cavium / Marvell ThunderX (0x43).
    Part(0x43, 0x0a0, "ThunderX", true),
    Part(0x43, 0x0a1, "ThunderX 88XX", true),
    Part(0x43, 0x0a2, "ThunderX 81XX", true),
    Part(0x43, 0x0a3, "ThunderX 83XX", true),
    Part(0x43, 0x0af, "ThunderX2 99XX", true),
    Part(0x43, 0x0b8, "ThunderX3 T110", true),
    // Fujitsu (0x46).
    Part(0x46, 0x001, "A64FX", true),
    // HiSilicon (0x48).
    Part(0x48, 0xd01, "TaiShan v110 (Kunpeng 920)", true),
    Part(0x48, 0xd02, "TaiShan v120 (HIP09)", true),
    // NVIDIA (0x4e); Jetson Xavier is Carmel, Orin reports Cortex-A78AE, Grace
    // Neoverse-V2.
    Part(0x4e, 0x000, "Denver", true),
    Part(0x4e, 0x003, "Denver 2", true),
    Part(0x4e, 0x004, "Carmel", true),
    // Applied Micro (0x50).
    Part(0x50, 0x000, "X-Gene", true),
    // Qualcomm (0x51); many Snapdragons report Arm's own parts (0x41) instead.
    Part(0x51, 0x001, "Oryon", true),
    Part(0x51, 0x00f, "Scorpion", false),
    Part(0x51, 0x02d, "Scorpion", false),
    Part(0x51, 0x04d, "Krait", false),
    Part(0x51, 0x06f, "Krait", false),
    Part(0x51, 0x201, "Kryo", true),
    Part(0x51, 0x205, "Kryo", true),
    Part(0x51, 0x211, "Kryo", true),
    Part(0x51, 0x800, "Kryo 2XX Gold", true),
    Part(0x51, 0x801, "Kryo 2XX Silver", true),
    Part(0x51, 0x802, "Kryo 3XX Gold", true),
    Part(0x51, 0x803, "Kryo 3XX Silver", true),
    Part(0x51, 0x804, "Kryo 4XX Gold", true),
    Part(0x51, 0x805, "Kryo 4XX Silver", true),
    Part(0x51, 0xc00, "Falkor", true),
    Part(0x51, 0xc01, "Saphira", true),
    // Samsung (0x53).
    Part(0x53, 0x001, "Exynos-M1", true),
    Part(0x53, 0x002, "Exynos-M3", true),
    Part(0x53, 0x003, "Exynos-M4", true),
    Part(0x53, 0x004, "Exynos-M5", true),
    // Marvell (0x56).
    Part(0x56, 0x131, "Feroceon 88FR131", false),
    Part(0x56, 0x581, "PJ4/PJ4b", false),
    Part(0x56, 0x584, "PJ4B-MP", false),
    // Apple (0x61): efficiency and performance cores per chip.
    Part(0x61, 0x020, "Icestorm (Apple A14)", true),
    Part(0x61, 0x021, "Firestorm (Apple A14)", true),
    Part(0x61, 0x022, "Icestorm (Apple M1)", true),
    Part(0x61, 0x023, "Firestorm (Apple M1)", true),
    Part(0x61, 0x024, "Icestorm (Apple M1 Pro)", true),
    Part(0x61, 0x025, "Firestorm (Apple M1 Pro)", true),
    Part(0x61, 0x028, "Icestorm (Apple M1 Max)", true),
    Part(0x61, 0x029, "Firestorm (Apple M1 Max)", true),
    Part(0x61, 0x030, "Blizzard (Apple A15)", true),
    Part(0x61, 0x031, "Avalanche (Apple A15)", true),
    Part(0x61, 0x032, "Blizzard (Apple M2)", true),
    Part(0x61, 0x033, "Avalanche (Apple M2)", true),
    Part(0x61, 0x034, "Blizzard (Apple M2 Pro)", true),
    Part(0x61, 0x035, "Avalanche (Apple M2 Pro)", true),
    Part(0x61, 0x038, "Blizzard (Apple M2 Max)", true),
    Part(0x61, 0x039, "Avalanche (Apple M2 Max)", true),
    // Phytium (0x70).
    Part(0x70, 0x660, "FTC660", true),
    Part(0x70, 0x661, "FTC661", true),
    Part(0x70, 0x662, "FTC662", true),
    Part(0x70, 0x663, "FTC663", true),
    // Ampere (0xc0); Altra reports Neoverse-N1 (0x41).
    Part(0xc0, 0xac3, "AmpereOne", true),
    Part(0xc0, 0xac4, "AmpereOne AC04", true),
];

fn find(implementer: u32, part: u32) -> Option<&'static Part> {
    PARTS.iter().find(|p| p.0 == implementer && p.1 == part)
}

/// The core's name for an (implementer, part) pair, e.g. (0x41, 0xd0b) → Cortex-A76.
pub fn core_name(implementer: u32, part: u32) -> Option<&'static str> {
    find(implementer, part).map(|p| p.2)
}

/// The implementer's name for cpuinfo's `CPU implementer` code.
pub fn implementer_name(implementer: u32) -> Option<&'static str> {
    Some(match implementer {
        0x41 => "arm",
        0x42 => "broadcom",
        0x43 => "cavium",
        0x44 => "dec",
        0x46 => "fujitsu",
        0x48 => "hisilicon",
        0x49 => "infineon",
        0x4d => "motorola",
        0x4e => "nvidia",
        0x50 => "apm",
        0x51 => "qualcomm",
        0x53 => "samsung",
        0x56 => "marvell",
        0x61 => "apple",
        0x66 => "faraday",
        0x69 => "intel",
        0x6d => "microsoft",
        0x70 => "phytium",
        0xc0 => "ampere",
        _ => return None,
    })
}

/// True for cores that implement AArch64, even when running a 32-bit kernel. An unknown
/// Arm part numbered 0xd00 or above is taken as 64-bit (every such application core is),
/// except the R- and M-profile numbers.
pub fn is_64bit_core(implementer: u32, part: u32) -> bool {
    match find(implementer, part) {
        Some(p) => p.3,
        None => implementer == 0x41 && part >= 0xd00 && !(0xd10..0xd30).contains(&part),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_cores_are_named() {
        assert_eq!(core_name(0x41, 0xd0b), Some("Cortex-A76"));
        assert_eq!(core_name(0x41, 0xd85), Some("Cortex-X925"));
        assert_eq!(core_name(0x41, 0xd87), Some("Cortex-A725"));
        assert_eq!(core_name(0x41, 0xd80), Some("Cortex-A520"));
        assert_eq!(core_name(0x41, 0xd42), Some("Cortex-A78AE"));
        assert_eq!(core_name(0x41, 0xd8e), Some("Neoverse-N3"));
        assert_eq!(core_name(0x41, 0xd84), Some("Neoverse-V3"));
        assert_eq!(core_name(0x4e, 0x004), Some("Carmel"));
        assert_eq!(core_name(0x51, 0x001), Some("Oryon"));
        assert_eq!(core_name(0xc0, 0xac3), Some("AmpereOne"));
        assert_eq!(core_name(0x41, 0xfff), None);
    }

    #[test]
    fn the_table_has_no_duplicate_numbers() {
        for (i, a) in PARTS.iter().enumerate() {
            for b in &PARTS[i + 1..] {
                assert!(
                    (a.0, a.1) != (b.0, b.1),
                    "{:#x}:{:#x} twice ({} and {})",
                    a.0,
                    a.1,
                    a.2,
                    b.2
                );
            }
        }
    }

    #[test]
    fn bitness() {
        assert!(is_64bit_core(0x41, 0xd03), "Cortex-A53");
        assert!(!is_64bit_core(0x41, 0xc07), "Cortex-A7");
        assert!(!is_64bit_core(0x41, 0xd01), "Cortex-A32 is AArch32 only");
        assert!(!is_64bit_core(0x41, 0xd13), "Cortex-R52");
        assert!(
            is_64bit_core(0x41, 0xd99),
            "an unknown new application core"
        );
        assert!(!is_64bit_core(0x41, 0xd24), "an unknown M-profile number");
        assert!(is_64bit_core(0x61, 0x023));
        assert!(!is_64bit_core(0x56, 0x581));
    }
}
