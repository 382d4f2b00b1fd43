//! The Raspberry Pi firmware's throttle flags (`get_throttled`, `vcgencmd get_throttled`).

use serde::Serialize;

/// Decoded flags. Bits 0–3 are the state now; bits 16–19 have happened since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Throttle {
    /// The raw value.
    pub raw: u32,
    /// Under-voltage now.
    pub undervoltage_now: bool,
    /// Arm frequency capped now.
    pub freq_capped_now: bool,
    /// Throttled now.
    pub throttled_now: bool,
    /// Soft temperature limit active now.
    pub soft_temp_limit_now: bool,
    /// Under-voltage has happened since boot.
    pub undervoltage_since_boot: bool,
    /// Frequency capping has happened since boot.
    pub freq_capped_since_boot: bool,
    /// Throttling has happened since boot.
    pub throttled_since_boot: bool,
    /// The soft temperature limit was reached since boot.
    pub soft_temp_limit_since_boot: bool,
    /// Bits the documentation does not name, kept rather than rejected.
    pub unknown_bits: u32,
}

const KNOWN: u32 = 0xF | 0xF_0000;

/// Decodes a raw value.
pub fn decode(raw: u32) -> Throttle {
    let bit = |n: u32| raw & (1 << n) != 0;
    Throttle {
        raw,
        undervoltage_now: bit(0),
        freq_capped_now: bit(1),
        throttled_now: bit(2),
        soft_temp_limit_now: bit(3),
        undervoltage_since_boot: bit(16),
        freq_capped_since_boot: bit(17),
        throttled_since_boot: bit(18),
        soft_temp_limit_since_boot: bit(19),
        unknown_bits: raw & !KNOWN,
    }
}

/// Parses the firmware file (hex, with or without `0x`) or `vcgencmd` output
/// (`throttled=0x50005`).
pub fn parse(text: &str) -> Option<Throttle> {
    let t = text.trim().trim_start_matches("throttled=");
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(hex.trim(), 16).ok().map(decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_values() {
        assert_eq!(parse("0x0"), Some(decode(0)));
        let t = parse("throttled=0x50000").expect("parse");
        assert!(
            t.undervoltage_since_boot
                && t.throttled_since_boot
                && !t.undervoltage_now
                && !t.throttled_now
        );
        let t = parse("50005\n").expect("sysfs form");
        assert!(
            t.undervoltage_now
                && t.throttled_now
                && t.undervoltage_since_boot
                && t.throttled_since_boot
        );
        assert!(!t.freq_capped_now && t.unknown_bits == 0);
        let t = parse("0x80000").expect("parse");
        assert!(t.soft_temp_limit_since_boot && !t.soft_temp_limit_now);
        let t = parse("0x100001").expect("unknown bit kept");
        assert!(t.undervoltage_now);
        assert_eq!(t.unknown_bits, 0x100000);
        assert_eq!(parse("garbage"), None);
    }
}
