//! A service's objective: `slo: { availability: 99.5% }` (issue 23; the arithmetic is
//! in [`crate::uptime`]).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a service promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Of the time observed over 30 days, the share with a replica in rotation.
    pub availability: Percent,
}

/// A percentage below 100, such as `99.5%`, kept in thousandths of a percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent(pub u32);

impl Percent {
    /// As a fraction: `99.5%` is 0.995.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 100_000.0
    }

    /// Parses `99.5%` (more than 0, less than 100, at most three decimals).
    pub fn parse(s: &str) -> Result<Percent, String> {
        let bad = || format!("expected a percentage such as 99.5%, got {s:?}");
        let num = s.trim().strip_suffix('%').ok_or_else(bad)?.trim();
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let frac: u32 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<3}").parse().map_err(|_| bad())?
        };
        let v = whole.saturating_mul(1000).saturating_add(frac);
        if v == 0 || v >= 100_000 {
            return Err(format!("{s}: must be more than 0% and less than 100%"));
        }
        Ok(Percent(v))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, r) = (self.0 / 1000, self.0 % 1000);
        if r == 0 {
            write!(f, "{w}%")
        } else {
            let frac = format!("{r:03}");
            write!(f, "{w}.{}%", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Percent::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a percentage below 100, e.g. 99.5%",
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]{1,3})?%$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_and_print_back() {
        for (text, v, back) in [
            ("99.5%", 99_500, "99.5%"),
            ("99.95%", 99_950, "99.95%"),
            ("90%", 90_000, "90%"),
            ("99.999%", 99_999, "99.999%"),
        ] {
            assert_eq!(Percent::parse(text), Ok(Percent(v)), "{text}");
            assert_eq!(Percent(v).to_string(), back);
        }
        assert!((Percent(99_500).fraction() - 0.995).abs() < 1e-12);
        for bad in [
            "99.5", "100%", "0%", "101%", "99.9999%", "abc%", "%", "-1%", ".5%",
        ] {
            assert!(Percent::parse(bad).is_err(), "{bad}");
        }
    }
}
