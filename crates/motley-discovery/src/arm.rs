//! ARM CPU names from `/proc/cpuinfo`'s implementer and part numbers.

/// The core's name for an (implementer, part) pair, e.g. (0x41, 0xd0b) → Cortex-A76.
pub fn core_name(implementer: u32, part: u32) -> Option<&'static str> {
    Some(match (implementer, part) {
        (0x41, 0xb76) => "ARM1176",
        (0x41, 0xc07) => "Cortex-A7",
        (0x41, 0xc08) => "Cortex-A8",
        (0x41, 0xc09) => "Cortex-A9",
        (0x41, 0xc0f) => "Cortex-A15",
        (0x41, 0xd03) => "Cortex-A53",
        (0x41, 0xd04) => "Cortex-A35",
        (0x41, 0xd05) => "Cortex-A55",
        (0x41, 0xd07) => "Cortex-A57",
        (0x41, 0xd08) => "Cortex-A72",
        (0x41, 0xd09) => "Cortex-A73",
        (0x41, 0xd0a) => "Cortex-A75",
        (0x41, 0xd0b) => "Cortex-A76",
        (0x41, 0xd0c) => "Neoverse-N1",
        (0x41, 0xd0d) => "Cortex-A77",
        (0x41, 0xd41) => "Cortex-A78",
        (0x41, 0xd44) => "Cortex-X1",
        (0x41, 0xd46) => "Cortex-A510",
        (0x41, 0xd47) => "Cortex-A710",
        (0x41, 0xd48) => "Cortex-X2",
        (0x41, 0xd49) => "Neoverse-N2",
        (0x41, 0xd4d) => "Cortex-A715",
        (0x41, 0xd4e) => "Cortex-X3",
        (0x61, 0x022) => "Icestorm (Apple M1)",
        (0x61, 0x023) => "Firestorm (Apple M1)",
        (0x61, 0x024) => "Icestorm (Apple M1 Pro/Max)",
        (0x61, 0x025) => "Firestorm (Apple M1 Pro/Max)",
        (0x61, 0x032) => "Blizzard (Apple M2)",
        (0x61, 0x033) => "Avalanche (Apple M2)",
        _ => return None,
    })
}

/// The implementer's name for cpuinfo's `CPU implementer` code.
pub fn implementer_name(implementer: u32) -> Option<&'static str> {
    Some(match implementer {
        0x41 => "arm",
        0x42 => "broadcom",
        0x43 => "cavium",
        0x48 => "hisilicon",
        0x4e => "nvidia",
        0x50 => "apm",
        0x51 => "qualcomm",
        0x53 => "samsung",
        0x61 => "apple",
        0xc0 => "ampere",
        _ => return None,
    })
}

/// True for cores that implement AArch64, even when running a 32-bit kernel.
pub fn is_64bit_core(implementer: u32, part: u32) -> bool {
    implementer == 0x61 || (implementer == 0x41 && part >= 0xd00)
}
