//! Quantities in Kubernetes' notation: CPU (`500m`, `2`, `0.5`), bytes
//! (`256Mi`, `1G`, `1048576`) and durations (`10s`, `500ms`, `2m`, `1h`).
//!
//! Each type deserializes from a string or a number and serializes to its
//! canonical string, so a manifest read back with `get -o yaml` applies again.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Why a quantity could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {why}")]
pub struct QuantityError {
    what: &'static str,
    input: String,
    why: &'static str,
}

fn err(what: &'static str, input: &str, why: &'static str) -> QuantityError {
    QuantityError {
        what,
        input: input.to_string(),
        why,
    }
}

/// Splits `12.5Mi` into (`12.5`, `Mi`).
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a non-negative decimal into (integer part, fraction numerator, fraction denominator).
fn parse_decimal(num: &str) -> Option<(u64, u64, u64)> {
    if num.is_empty() || num == "." {
        return None;
    }
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let den = 10u64.pow(frac.len() as u32);
    let numr: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Some((int, numr, den))
}

/// CPU in millicores: `500m` is half a core, `2` is two cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MilliCpu(pub u64);

impl MilliCpu {
    /// Parses `250m`, `1`, `1.5`.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let t = s.trim();
        let (num, suffix) = split_number(t);
        let (int, frac, den) = parse_decimal(num)
            .ok_or_else(|| err("cpu", s, "expected a number like 500m, 1 or 1.5"))?;
        let milli = match suffix {
            "m" => {
                if frac != 0 {
                    return Err(err("cpu", s, "millicores must be whole"));
                }
                Some(int)
            }
            "" => int
                .checked_mul(1000)
                .and_then(|v| v.checked_add(frac * 1000 / den)),
            _ => {
                return Err(err(
                    "cpu",
                    s,
                    "unknown suffix (use m for millicores, or none)",
                ));
            }
        };
        milli
            .map(MilliCpu)
            .ok_or_else(|| err("cpu", s, "too large"))
    }
}

impl fmt::Display for MilliCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

/// A size in bytes: `256Mi`, `1Gi`, `500M`, `1048576`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    /// Parses a byte quantity with an optional binary (Ki..Ei) or decimal (k..E) suffix.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let t = s.trim();
        let (num, suffix) = split_number(t);
        let (int, frac, den) = parse_decimal(num)
            .ok_or_else(|| err("size", s, "expected a number like 256Mi or 1G"))?;
        let mult: u64 = match suffix {
            "" => 1,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "P" => 1_000_000_000_000_000,
            "E" => 1_000_000_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "Pi" => 1 << 50,
            "Ei" => 1 << 60,
            _ => {
                return Err(err(
                    "size",
                    s,
                    "unknown suffix (use Ki, Mi, Gi, Ti, k, M, G, T or none)",
                ));
            }
        };
        let whole = int
            .checked_mul(mult)
            .ok_or_else(|| err("size", s, "too large"))?;
        let part = (frac as u128 * mult as u128 / den as u128) as u64;
        whole
            .checked_add(part)
            .map(Bytes)
            .ok_or_else(|| err("size", s, "too large"))
    }
}

const BYTE_UNITS: [(&str, u64); 5] = [
    ("Pi", 1 << 50),
    ("Ti", 1 << 40),
    ("Gi", 1 << 30),
    ("Mi", 1 << 20),
    ("Ki", 1 << 10),
];

impl Bytes {
    /// For messages people read: a quantity as manifests write it when it is exact
    /// (`2Gi`, `1536Mi`), else to one decimal in the largest unit, rounded down so that
    /// a comparison reads right (`21.1Gi`, never `22748376269`).
    pub fn readable(self) -> String {
        let exact = self.to_string();
        if self.0 < 1024 || !exact.bytes().all(|b| b.is_ascii_digit()) {
            return exact;
        }
        for (name, size) in BYTE_UNITS {
            if self.0 >= size {
                let tenths = (u128::from(self.0) * 10 / u128::from(size)) as u64;
                return format!("{}.{}{name}", tenths / 10, tenths % 10);
            }
        }
        exact
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, size) in BYTE_UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{}", self.0 / size, name);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A duration in milliseconds: `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub u64);

impl Duration {
    /// The duration in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// Parses `500ms`, `10s`, `1.5s`, `2m`, `1h`, `30` (seconds).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let t = s.trim();
        let (num, suffix) = split_number(t);
        let (int, frac, den) = parse_decimal(num)
            .ok_or_else(|| err("duration", s, "expected a number like 500ms, 10s or 2m"))?;
        let mult: u64 = match suffix {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(err("duration", s, "unknown unit (use ms, s, m or h)")),
        };
        int.checked_mul(mult)
            .and_then(|w| w.checked_add(frac * mult / den))
            .map(Duration)
            .ok_or_else(|| err("duration", s, "too large"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms != 0 && ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms != 0 && ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

macro_rules! quantity_serde {
    ($ty:ident, $expecting:literal, $pattern:literal, $from_int:expr, $from_float:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::parse(v).map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        let f: fn(u64) -> Option<$ty> = $from_int;
                        f(v).ok_or_else(|| E::custom(concat!($expecting, ": too large")))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        if v < 0 {
                            return Err(E::custom(concat!($expecting, ": must not be negative")));
                        }
                        self.visit_u64(v as u64)
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                        if !(v.is_finite() && v >= 0.0) {
                            return Err(E::custom(concat!($expecting, ": must be a non-negative number")));
                        }
                        let f: fn(f64) -> $ty = $from_float;
                        Ok(f(v))
                    }
                }
                d.deserialize_any(V)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "description": $expecting,
                    "anyOf": [
                        { "type": "string", "pattern": $pattern },
                        { "type": "number", "minimum": 0 }
                    ]
                })
            }
        }
    };
}

quantity_serde!(
    MilliCpu,
    "a CPU quantity like 500m, 1 or 1.5",
    "^([0-9]+m|[0-9]*\\.?[0-9]+)$",
    |v| v.checked_mul(1000).map(MilliCpu),
    |v| MilliCpu((v * 1000.0).round() as u64)
);
quantity_serde!(
    Bytes,
    "a size like 256Mi, 1Gi, 500M or a number of bytes",
    "^[0-9]*\\.?[0-9]+([kKMGTPE]|[KMGTPE]i)?$",
    |v| Some(Bytes(v)),
    |v| Bytes(v.round() as u64)
);
quantity_serde!(
    Duration,
    "a duration like 500ms, 10s, 2m or 1h",
    "^[0-9]*\\.?[0-9]+(ms|s|m|h)?$",
    |v| v.checked_mul(1000).map(Duration),
    |v| Duration((v * 1000.0).round() as u64)
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu() {
        assert_eq!(MilliCpu::parse("500m"), Ok(MilliCpu(500)));
        assert_eq!(MilliCpu::parse("2"), Ok(MilliCpu(2000)));
        assert_eq!(MilliCpu::parse("0.25"), Ok(MilliCpu(250)));
        assert!(MilliCpu::parse("5x").is_err());
        assert!(MilliCpu::parse("").is_err());
        assert!(MilliCpu::parse("-1").is_err());
        assert_eq!(MilliCpu(1500).to_string(), "1500m");
        assert_eq!(MilliCpu(2000).to_string(), "2");
    }

    #[test]
    fn bytes() {
        assert_eq!(Bytes::parse("256Mi"), Ok(Bytes(256 << 20)));
        assert_eq!(Bytes::parse("1G"), Ok(Bytes(1_000_000_000)));
        assert_eq!(Bytes::parse("1.5Gi"), Ok(Bytes(3 << 29)));
        assert_eq!(Bytes::parse("1024"), Ok(Bytes(1024)));
        assert!(Bytes::parse("256Mx").is_err());
        assert!(Bytes::parse("Mi").is_err());
        assert!(Bytes::parse("99999999999Ei").is_err());
        assert_eq!(Bytes(256 << 20).to_string(), "256Mi");
        assert_eq!(Bytes(1000).to_string(), "1000");
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("500ms"), Ok(Duration(500)));
        assert_eq!(Duration::parse("10s"), Ok(Duration(10_000)));
        assert_eq!(Duration::parse("1.5s"), Ok(Duration(1_500)));
        assert_eq!(Duration::parse("2m"), Ok(Duration(120_000)));
        assert_eq!(Duration::parse("3"), Ok(Duration(3_000)));
        assert!(Duration::parse("3d").is_err());
        assert_eq!(Duration(90_000).to_string(), "90s");
        assert_eq!(Duration(120_000).to_string(), "2m");
    }

    proptest! {
        #[test]
        fn display_parses_back(b in 0u64..(1 << 52), c in 0u64..10_000_000, d in 0u64..(1 << 40)) {
            prop_assert_eq!(Bytes::parse(&Bytes(b).to_string()), Ok(Bytes(b)));
            prop_assert_eq!(MilliCpu::parse(&MilliCpu(c).to_string()), Ok(MilliCpu(c)));
            prop_assert_eq!(Duration::parse(&Duration(d).to_string()), Ok(Duration(d)));
        }

        #[test]
        fn never_panics(s in ".{0,20}") {
            let _ = Bytes::parse(&s);
            let _ = MilliCpu::parse(&s);
            let _ = Duration::parse(&s);
        }
    }

    #[test]
    fn readable_bytes_use_manifest_units() {
        assert_eq!(Bytes(22_748_376_269).readable(), "21.1Gi");
        assert_eq!(Bytes(2 << 30).readable(), "2Gi");
        assert_eq!(Bytes(1536 << 20).readable(), "1536Mi");
        assert_eq!(Bytes((2 << 30) - 1).readable(), "1.9Gi", "rounded down");
        assert_eq!(Bytes(1000).readable(), "1000");
        assert_eq!(Bytes(1500).readable(), "1.4Ki");
    }
}
