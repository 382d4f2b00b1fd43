//! The Raspberry Pi firmware's throttle flags (`get_throttled`, `vcgencmd get_throttled`).
//!
//! The sysfs attribute prints lowercase hex without `0x` (`50005`); `vcgencmd` prints
//! `throttled=0x50005`. Both are accepted, with or without a final newline. Unknown
//! bits are kept in [`Throttle::unknown_bits`], never rejected.

pub use motley_core::hw::{Throttle, ThrottleSource};

/// Decodes a raw value read from sysfs.
pub fn decode(raw: u32) -> Throttle {
    Throttle::decode(raw, ThrottleSource::Sysfs)
}

/// Parses the firmware file (hex, with or without `0x`) or `vcgencmd` output.
pub fn parse(text: &str) -> Option<Throttle> {
    let t = text.trim();
    let (t, source) = match t.strip_prefix("throttled=") {
        Some(rest) => (rest, ThrottleSource::Vcgencmd),
        None => (t, ThrottleSource::Sysfs),
    };
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(hex.trim(), 16)
        .ok()
        .map(|raw| Throttle::decode(raw, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_values() {
        assert_eq!(parse("0x0"), Some(decode(0)));
        let t = parse("throttled=0x50000").expect("parse");
        assert_eq!(t.source, ThrottleSource::Vcgencmd);
        assert!(
            t.undervoltage_since_boot
                && t.throttled_since_boot
                && !t.undervoltage_now
                && !t.throttled_now
        );
        let t = parse("50005\n").expect("sysfs form");
        assert_eq!(t.source, ThrottleSource::Sysfs);
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
        assert_eq!(parse(""), None);
        assert_eq!(parse("throttled=0x1ffffffff"), None, "too wide");
    }
}
