//! A replica's health from its check's results: passes and failures in a row against
//! the check's thresholds ([`crate::model::Check`]). Pure; the agent probes and feeds
//! [`Tracker::observe`], and reports the changes it returns.
//!
//! A replica starts `Unknown` (no traffic yet); `healthy_after` passes in a row make it
//! `Healthy`; `unhealthy_after` failures in a row make it `Unhealthy`, from either
//! state. A start (or restart) begins again at `Unknown`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a replica's check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not yet decided: no traffic.
    Unknown,
    /// Passing: takes traffic.
    Healthy,
    /// Failing: out of rotation.
    Unhealthy,
}

impl Health {
    /// `unknown`, `healthy`, `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// Results in a row, and the health they add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    healthy_after: u32,
    unhealthy_after: u32,
    passes: u32,
    failures: u32,
    health: Health,
}

impl Tracker {
    /// A tracker for a just-started replica.
    pub fn new(healthy_after: u32, unhealthy_after: u32) -> Tracker {
        Tracker {
            healthy_after: healthy_after.max(1),
            unhealthy_after: unhealthy_after.max(1),
            passes: 0,
            failures: 0,
            health: Health::Unknown,
        }
    }

    /// The health now.
    pub fn health(&self) -> Health {
        self.health
    }

    /// One probe's result; returns the new health when it changed.
    pub fn observe(&mut self, passed: bool) -> Option<Health> {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let next = if self.passes >= self.healthy_after {
            Health::Healthy
        } else if self.failures >= self.unhealthy_after {
            Health::Unhealthy
        } else {
            self.health
        };
        (next != self.health).then(|| {
            self.health = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thresholds_in_a_row_decide() {
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None, "a failure resets the passes");
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(Health::Healthy));
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None, "a pass resets the failures");
        assert_eq!(t.health(), Health::Healthy);
        for _ in 0..2 {
            assert_eq!(t.observe(false), None);
        }
        assert_eq!(t.observe(false), Some(Health::Unhealthy));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(Health::Healthy));
    }

    proptest! {
        #[test]
        fn health_follows_the_last_run_of_results(
            healthy_after in 1u32..5,
            unhealthy_after in 1u32..5,
            results in proptest::collection::vec(any::<bool>(), 0..64),
        ) {
            let mut t = Tracker::new(healthy_after, unhealthy_after);
            let mut last = Health::Unknown;
            for (i, r) in results.iter().enumerate() {
                if let Some(h) = t.observe(*r) {
                    prop_assert_ne!(h, last);
                    last = h;
                }
                // The trailing run of equal results decides, once long enough.
                let run = results[..=i].iter().rev().take_while(|x| *x == r).count() as u32;
                if *r && run >= healthy_after {
                    prop_assert_eq!(t.health(), Health::Healthy);
                }
                if !*r && run >= unhealthy_after {
                    prop_assert_eq!(t.health(), Health::Unhealthy);
                }
            }
            prop_assert_eq!(t.health(), last);
        }
    }
}
