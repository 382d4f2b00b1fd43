//! The fence guard: what ends a node's fenced tasks when its agent cannot.
//!
//! The agent stops fenced tasks when its lease runs out (`motley_core::lease`), but a
//! paused agent (SIGSTOP, a Pi thrashing under memory pressure, a stalled SD card)
//! stops nothing, while the control plane, counting from its side, replaces the work
//! after the lease and a margin: two copies. So the lease is also held by a second
//! party that does not depend on the agent running: a small guard process on the node
//! (`motley fence-guard`; in the simulator, a timer outside the agent's process). The
//! agent sends it a [`FenceOrder`] before every fenced start and after lease renewals:
//! the allocations to end and the lease's end on the guard's clock. Without a newer
//! order, at the lease's end the guard asks each task to stop (SIGTERM) and after the
//! task's stop grace ends it (SIGKILL), again on every wake while the order stands
//! (a start that was under way when the agent froze). The server waits the lease plus a
//! margin plus the stop grace after declaring the node down before it replaces fenced
//! work ([`crate::failure::FailureConfig::fence_after_ms`]), from the later receipt of
//! the heartbeat the lease runs from: the guard has acted by then.
//!
//! Tasks are named by allocation id, not pid: an order goes out *before* a start (the
//! agent may freeze right after it), when no pid exists yet.
//!
//! The guard's clock must run while the node sleeps: `CLOCK_BOOTTIME` for processes
//! (`CLOCK_MONOTONIC` stops during suspend, so a laptop that wakes would keep running
//! work the cluster replaced meanwhile).

use std::collections::BTreeMap;

/// Longest a guard sleeps between looks at its clock (a sleep may not count time the
/// node was suspended).
pub const MAX_SLEEP_MS: u64 = 1_000;

/// Longest line an order may take on the wire (the guard refuses longer ones).
pub const MAX_ORDER_BYTES: usize = 1 << 20;

/// What the guard must do: end these allocations' tasks unless a newer order comes first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FenceOrder {
    /// The lease's end, in ms of the guard's clock.
    pub deadline_ms: u64,
    /// Allocation id → its stop grace (ms between SIGTERM and SIGKILL).
    pub allocs: BTreeMap<String, u64>,
}

impl FenceOrder {
    /// One line: `fence <deadline_ms> [<alloc-id>:<grace_ms>]...`.
    pub fn encode(&self) -> String {
        let mut s = format!("fence {}", self.deadline_ms);
        for (id, grace) in &self.allocs {
            s.push_str(&format!(" {id}:{grace}"));
        }
        s.push('\n');
        s
    }

    /// Reads a line written by [`FenceOrder::encode`].
    pub fn parse(line: &str) -> Result<FenceOrder, String> {
        let mut words = line.split_whitespace();
        if words.next() != Some("fence") {
            return Err(format!("not a fence order: {line:?}"));
        }
        let deadline_ms = words
            .next()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("fence order without a deadline: {line:?}"))?;
        let mut allocs = BTreeMap::new();
        for w in words {
            let (id, grace) = w
                .rsplit_once(':')
                .and_then(|(id, g)| Some((id, g.parse::<u64>().ok()?)))
                .filter(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| format!("bad allocation in a fence order: {w:?}"))?;
            allocs.insert(id.to_string(), grace);
        }
        Ok(FenceOrder {
            deadline_ms,
            allocs,
        })
    }

    /// When the agent should send `self` although `sent` stands: the set changed, the
    /// deadline moved earlier (a shorter lease), or later by at least `step_ms`. An
    /// order a little behind the agent's lease is safe (the guard acts early, and only
    /// if the agent stops renewing), so renewals are not sent one by one.
    pub fn worth_sending(&self, sent: Option<&FenceOrder>, step_ms: u64) -> bool {
        match sent {
            None => !self.allocs.is_empty(),
            Some(s) => {
                s.allocs != self.allocs
                    || self.deadline_ms < s.deadline_ms
                    || self.deadline_ms >= s.deadline_ms.saturating_add(step_ms)
            }
        }
    }
}

/// A signal the guard sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Asks the task to stop.
    Term,
    /// Ends it.
    Kill,
}

/// The guard's state: the order that stands and what it already did about it.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    order: FenceOrder,
    /// Allocations asked to stop under the current order.
    termed: std::collections::BTreeSet<String>,
}

impl Guard {
    /// A guard with nothing to guard.
    pub fn new() -> Guard {
        Guard::default()
    }

    /// A newer order replaces the old one (a renewed lease starts over).
    pub fn order(&mut self, order: FenceOrder) {
        if order.deadline_ms != self.order.deadline_ms {
            self.termed.clear();
        }
        self.termed.retain(|id| order.allocs.contains_key(id));
        self.order = order;
    }

    /// The order that stands.
    pub fn current(&self) -> &FenceOrder {
        &self.order
    }

    /// What to signal at `now`: SIGTERM once when the lease ends, SIGKILL from the end
    /// of each task's grace on, at every step while the order stands.
    pub fn step(&mut self, now_ms: u64) -> Vec<(String, Signal)> {
        let mut out = Vec::new();
        if now_ms < self.order.deadline_ms || crate::mutants::active("guard-ignores-lease") {
            return out;
        }
        for (id, grace) in &self.order.allocs {
            if now_ms >= self.order.deadline_ms.saturating_add(*grace) {
                out.push((id.clone(), Signal::Kill));
            } else if self.termed.insert(id.clone()) {
                out.push((id.clone(), Signal::Term));
            }
        }
        out
    }

    /// Whether a guard whose agent is gone may exit: nothing named, or every named
    /// task's grace over (its last kill sent by the [`Guard::step`] at `now_ms`). Tasks
    /// that outlive their agent (containers, kept by containerd's shim) are ended at
    /// the lease's end all the same; native tasks died with the agent already.
    pub fn done(&self, now_ms: u64) -> bool {
        let last = self
            .order
            .allocs
            .values()
            .map(|g| self.order.deadline_ms.saturating_add(*g))
            .max();
        last.is_none_or(|end| now_ms >= end)
    }

    /// How long to sleep before the next [`Guard::step`] (at most [`MAX_SLEEP_MS`]).
    pub fn sleep_ms(&self, now_ms: u64) -> u64 {
        let d = self.order.deadline_ms;
        let next = if now_ms < d {
            d
        } else {
            // Past the lease: the next grace to end, or a repeat of the kills.
            self.order
                .allocs
                .values()
                .map(|g| d.saturating_add(*g))
                .filter(|t| *t > now_ms)
                .min()
                .unwrap_or(now_ms.saturating_add(MAX_SLEEP_MS))
        };
        next.saturating_sub(now_ms).clamp(1, MAX_SLEEP_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orphaned_guard_exits_only_after_the_last_grace() {
        let mut g = Guard::new();
        assert!(g.done(0), "nothing to guard");
        let mut allocs = BTreeMap::new();
        allocs.insert("a".to_string(), 1_000);
        allocs.insert("b".to_string(), 3_000);
        g.order(FenceOrder {
            deadline_ms: 10_000,
            allocs,
        });
        assert!(!g.done(9_999));
        assert!(!g.done(12_999), "b's grace runs until 13 000");
        let kills = g.step(13_000);
        assert!(
            kills.iter().all(|(_, s)| *s == Signal::Kill) && kills.len() == 2,
            "{kills:?}"
        );
        assert!(g.done(13_000));
    }

    fn order(deadline: u64, allocs: &[(&str, u64)]) -> FenceOrder {
        FenceOrder {
            deadline_ms: deadline,
            allocs: allocs.iter().map(|(i, g)| (i.to_string(), *g)).collect(),
        }
    }

    #[test]
    fn orders_round_trip_and_bad_ones_are_refused() {
        let o = order(12_345, &[("web-1a2b", 5_000), ("db-9", 0)]);
        assert_eq!(FenceOrder::parse(&o.encode()), Ok(o));
        assert_eq!(FenceOrder::parse("fence 7\n"), Ok(order(7, &[])));
        for bad in [
            "",
            "fence",
            "fence x",
            "fence 1 a",
            "fence 1 a:b",
            "fence 1 :5",
            "stop 1",
        ] {
            assert!(FenceOrder::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_guard_terms_at_the_deadline_and_kills_after_the_grace() {
        let mut g = Guard::new();
        g.order(order(10_000, &[("a", 2_000), ("b", 0)]));
        assert!(g.step(9_999).is_empty());
        assert_eq!(g.sleep_ms(9_000), 1_000);
        assert_eq!(
            g.step(10_000),
            vec![("a".into(), Signal::Term), ("b".into(), Signal::Kill)]
        );
        assert_eq!(
            g.step(10_500),
            vec![("b".into(), Signal::Kill)],
            "term once"
        );
        assert_eq!(g.sleep_ms(10_500), 1_000);
        assert_eq!(g.sleep_ms(11_500), 500, "wakes when a's grace ends");
        assert_eq!(
            g.step(12_000),
            vec![("a".into(), Signal::Kill), ("b".into(), Signal::Kill)]
        );
    }

    #[test]
    fn a_renewal_in_time_holds_the_guard_off() {
        let mut g = Guard::new();
        g.order(order(10_000, &[("a", 1_000)]));
        g.order(order(15_000, &[("a", 1_000)]));
        assert!(g.step(12_000).is_empty());
        // An empty order guards nothing.
        g.order(order(20_000, &[]));
        assert!(g.step(30_000).is_empty());
        assert_eq!(g.sleep_ms(30_000), MAX_SLEEP_MS);
    }

    #[test]
    fn orders_are_sent_when_they_matter() {
        let sent = order(10_000, &[("a", 0)]);
        assert!(!order(10_500, &[("a", 0)]).worth_sending(Some(&sent), 1_000));
        assert!(order(11_000, &[("a", 0)]).worth_sending(Some(&sent), 1_000));
        assert!(order(9_000, &[("a", 0)]).worth_sending(Some(&sent), 1_000));
        assert!(order(10_000, &[("a", 0), ("b", 0)]).worth_sending(Some(&sent), 1_000));
        assert!(order(10_000, &[("a", 0)]).worth_sending(None, 1_000));
        assert!(!order(10_000, &[]).worth_sending(None, 1_000));
    }
}
