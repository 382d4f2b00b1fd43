//! A service's availability over time (issue 23): how much of the observed time it had
//! a replica in rotation (running and passing its check, or running without one), in
//! minute buckets for the last hour and hour buckets for 30 days; and what its SLO
//! says of that (error budget left, burn rate). Pure: the server samples, this counts.
//!
//! Time nobody observed (no server leading) is neither up nor down: availability is
//! up time over observed time.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// A minute, in ms.
pub const MINUTE: u64 = 60_000;
/// An hour, in ms.
pub const HOUR: u64 = 3_600_000;
/// The windows reported: 1 h, 24 h, 30 d.
pub const WINDOWS: [(&str, u64); 3] = [("1h", HOUR), ("24h", 24 * HOUR), ("30d", 720 * HOUR)];

/// Up and observed time in one bucket (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Observed and up.
    pub up: u64,
    /// Observed.
    pub seen: u64,
}

/// Buckets of one length, newest last, at most `cap`. Stored run-length encoded
/// (`[[up, seen, times], …]`): a service up all month is a few bytes, not 720 tallies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Packed", into = "Packed")]
struct Buckets {
    /// Start (ms) of the newest bucket.
    start: u64,
    /// Oldest first.
    tallies: VecDeque<Tally>,
}

/// [`Buckets`] as stored.
#[derive(Serialize, Deserialize)]
struct Packed {
    start: u64,
    runs: Vec<(u64, u64, u32)>,
}

impl From<Buckets> for Packed {
    fn from(b: Buckets) -> Packed {
        let mut runs: Vec<(u64, u64, u32)> = Vec::new();
        for t in &b.tallies {
            match runs.last_mut() {
                Some((up, seen, n)) if *up == t.up && *seen == t.seen => *n += 1,
                _ => runs.push((t.up, t.seen, 1)),
            }
        }
        Packed {
            start: b.start,
            runs,
        }
    }
}

impl From<Packed> for Buckets {
    fn from(p: Packed) -> Buckets {
        let mut tallies = VecDeque::new();
        for (up, seen, n) in p.runs {
            // At most a month of hours: a damaged record cannot make it allocate more.
            for _ in 0..n.min(720) {
                tallies.push_back(Tally { up, seen });
            }
        }
        Buckets {
            start: p.start,
            tallies,
        }
    }
}

impl Buckets {
    /// Credits `[from, to)` (one bucket at most) to the bucket that holds `from`.
    fn credit(&mut self, len: u64, cap: usize, from: u64, to: u64, up: bool) {
        let start = from - from % len;
        if self.tallies.is_empty() {
            self.start = start;
            self.tallies.push_back(Tally::default());
        }
        while self.start < start {
            self.start += len;
            self.tallies.push_back(Tally::default());
            if self.tallies.len() > cap {
                self.tallies.pop_front();
            }
        }
        if start < self.start {
            return; // older than the newest bucket: the clock went back; not counted
        }
        if let Some(t) = self.tallies.back_mut() {
            t.seen += to - from;
            if up {
                t.up += to - from;
            }
        }
    }

    /// The sum of the buckets that start at or after `from`.
    fn since(&self, len: u64, from: u64) -> Tally {
        let mut sum = Tally::default();
        let n = self.tallies.len() as u64;
        for (i, t) in self.tallies.iter().enumerate() {
            let start = self.start.saturating_sub((n - 1 - i as u64) * len);
            if start + len > from {
                sum.up += t.up;
                sum.seen += t.seen;
            }
        }
        sum
    }
}

/// One service's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    minutes: Buckets,
    hours: Buckets,
    /// The last observation: when, and whether it was up.
    #[serde(skip)]
    last: Option<(u64, bool)>,
}

impl Record {
    /// The service was seen `up` (or not) at `now`: the time since the last
    /// observation counts as what was seen then. A gap longer than `max_gap` (nobody
    /// was looking: a failover, a restart) is not counted.
    pub fn observe(&mut self, now: u64, up: bool, max_gap: u64) {
        if let Some((at, was)) = self.last
            && now > at
            && now - at <= max_gap
        {
            let mut from = at;
            while from < now {
                let to = now.min(from - from % MINUTE + MINUTE);
                self.minutes.credit(MINUTE, 60, from, to, was);
                self.hours.credit(HOUR, 720, from, to, was);
                from = to;
            }
        }
        self.last = Some((now, up));
    }

    /// Up over observed time within the window of `len` ms ending at `now`; none when
    /// nothing was observed. The last hour comes from minute buckets, longer windows
    /// from hour buckets.
    pub fn availability(&self, now: u64, len: u64) -> Option<f64> {
        let from = now.saturating_sub(len);
        let t = if len <= HOUR {
            self.minutes.since(MINUTE, from)
        } else {
            self.hours.since(HOUR, from)
        };
        (t.seen > 0).then(|| t.up as f64 / t.seen as f64)
    }

    /// Whether it holds anything worth keeping.
    pub fn is_empty(&self) -> bool {
        self.hours.tallies.iter().all(|t| t.seen == 0)
    }
}

/// What an SLO says of a service's availability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// The error budget left over 30 days: 1 is untouched, 0 spent, below 0 overspent.
    pub remaining: f64,
    /// How fast the last hour spends it: 1 spends exactly the budget over 30 days.
    pub burn_rate: f64,
}

/// The budget of a target (`0.995`) given 30-day and 1-hour availability.
pub fn budget(target: f64, d30: Option<f64>, h1: Option<f64>) -> Option<Budget> {
    let allowed = 1.0 - target;
    if allowed.is_nan() || allowed <= 0.0 {
        return None;
    }
    Some(Budget {
        remaining: 1.0 - (1.0 - d30?) / allowed,
        burn_rate: (1.0 - h1.unwrap_or(1.0)) / allowed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GAP: u64 = 10_000;

    #[test]
    fn down_time_counts_against_it_and_unobserved_time_does_not() {
        let mut r = Record::default();
        let t0 = 10 * HOUR;
        // Up for 50 minutes, down for 10, observed every second.
        for s in 0..3600u64 {
            r.observe(t0 + s * 1000, s < 3000, GAP);
        }
        let now = t0 + 3600 * 1000;
        r.observe(now, true, GAP);
        let h1 = r.availability(now, HOUR).unwrap_or(-1.0);
        assert!((h1 - 50.0 / 60.0).abs() < 0.001, "{h1}");
        assert_eq!(r.availability(now, 24 * HOUR), Some(h1));
        // Nobody looked for a day; then an hour up: the gap counts for nothing.
        let later = now + 24 * HOUR;
        r.observe(later, true, GAP);
        for s in 1..=3600u64 {
            r.observe(later + s * 1000, true, GAP);
        }
        let end = later + 3600 * 1000;
        assert_eq!(r.availability(end, HOUR), Some(1.0));
        let d30 = r.availability(end, 720 * HOUR).unwrap_or(-1.0);
        assert!((d30 - 110.0 / 120.0).abs() < 0.001, "{d30}");
        assert!(!r.is_empty());
        assert_eq!(Record::default().availability(end, HOUR), None);
    }

    #[test]
    fn the_budget_and_its_burn() {
        // 99.5 % allows 0.5 %: at 99.75 % over 30 days half is left.
        let b = budget(0.995, Some(0.9975), Some(0.99)).unwrap_or(Budget {
            remaining: 9.0,
            burn_rate: 9.0,
        });
        assert!((b.remaining - 0.5).abs() < 1e-9, "{b:?}");
        assert!((b.burn_rate - 2.0).abs() < 1e-9, "{b:?}");
        assert!(
            budget(1.0, Some(1.0), None).is_none(),
            "100 % allows nothing"
        );
        assert!(budget(0.99, None, None).is_none());
    }

    #[test]
    fn a_record_survives_its_checkpoint() {
        let mut r = Record::default();
        for s in 0..200u64 {
            r.observe(HOUR + s * 1000, s % 7 != 0, GAP);
        }
        let text = serde_json::to_string(&r).unwrap_or_default();
        let back: Record = serde_json::from_str(&text).unwrap_or_default();
        assert!(text.len() < 400, "{} bytes: {text}", text.len());
        let now = HOUR + 200 * 1000;
        assert_eq!(back.availability(now, HOUR), r.availability(now, HOUR));
        assert!(back.availability(now, HOUR).is_some());
    }

    proptest! {
        #[test]
        fn availability_is_a_fraction_and_all_up_is_one(
            steps in proptest::collection::vec((1u64..120_000, any::<bool>()), 1..300),
        ) {
            let mut r = Record::default();
            let mut all_up = Record::default();
            let mut now = 5 * HOUR + 12_345;
            for (dt, up) in steps {
                r.observe(now, up, 200_000);
                all_up.observe(now, true, 200_000);
                now += dt;
            }
            r.observe(now, true, 200_000);
            all_up.observe(now, true, 200_000);
            for (_, len) in WINDOWS {
                if let Some(a) = r.availability(now, len) {
                    prop_assert!((0.0..=1.0).contains(&a), "{a}");
                }
                if let Some(a) = all_up.availability(now, len) {
                    prop_assert_eq!(a, 1.0);
                }
            }
        }
    }
}
