//! A node's task logs together: when they outgrow the node's budget, how much of each to
//! keep. Each allocation's log is bounded on its own (the agent's `logs::LOG_MAX`); this
//! bounds their sum, since a node with many allocations (or many ended jobs whose logs
//! are kept until the server forgets them) would otherwise fill its tmpfs or SD card.
//!
//! The rule is water-filling: logs below a common level are untouched and every larger
//! log is cut to that level (keeping its newest bytes), the level being the largest one
//! at which the total fits. A single chatty task loses its history first; quiet tasks
//! keep all of theirs.

/// Default budget of the logs a node keeps in memory (tmpfs, on SD, eMMC and USB flash).
pub const BUDGET_MEMORY: u64 = 32 << 20;
/// Default budget of the logs a node keeps on its data disk.
pub const BUDGET_DISK: u64 = 1 << 30;

/// The size every log larger than it is cut to so that the logs of `sizes` fit in
/// `budget`; `None` when they fit already.
pub fn level(sizes: &[u64], budget: u64) -> Option<u64> {
    let total = sizes.iter().fold(0u64, |a, s| a.saturating_add(*s));
    if total <= budget {
        return None;
    }
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let mut left = budget;
    for (i, s) in sorted.iter().enumerate() {
        let n = (sorted.len() - i) as u64;
        // Every log from here on is at least `s`: if they all fit at `s`, this one is
        // kept whole and the level rises for the rest.
        if s.saturating_mul(n) <= left {
            left -= s;
        } else {
            return Some(left / n);
        }
    }
    // Unreachable when the total is over budget; kept total for the types.
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kept(sizes: &[u64], level: u64) -> u64 {
        sizes.iter().map(|s| (*s).min(level)).sum()
    }

    #[test]
    fn small_logs_are_kept_and_large_ones_cut_to_one_level() {
        assert_eq!(level(&[10, 20, 30], 60), None);
        // 10 kept; 100 and 1000 share the remaining 90.
        assert_eq!(level(&[1000, 10, 100], 100), Some(45));
        assert_eq!(level(&[5, 5, 5, 5], 8), Some(2));
        assert_eq!(level(&[7], 0), Some(0));
    }

    proptest! {
        #[test]
        fn the_level_is_the_highest_at_which_the_logs_fit(
            sizes in proptest::collection::vec(0u64..1 << 40, 0..64),
            budget in 0u64..1 << 42,
        ) {
            match level(&sizes, budget) {
                None => prop_assert!(sizes.iter().sum::<u64>() <= budget),
                Some(l) => {
                    prop_assert!(kept(&sizes, l) <= budget);
                    prop_assert!(kept(&sizes, l + 1) > budget);
                }
            }
        }
    }
}
