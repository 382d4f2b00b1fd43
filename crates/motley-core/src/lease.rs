//! The agent's side of the fencing lease.
//!
//! A fenced allocation may run only while its node holds a lease from the control
//! plane. The server counts the lease from when it *received* a node's last
//! heartbeat and replaces fenced work after lease + grace. The agent must therefore
//! count from something no later than that receipt: the moment it *sent* the
//! heartbeat the server acknowledged. Counting from when a message *arrived* is
//! wrong: a connection that a partition holds delivers, when it heals, messages the
//! server sent long ago, and a lease renewed on their arrival outlives the server's
//! view by the whole partition (the simulator's seed 229423: a start queued for
//! 30 s ran beside its replacement).
//!
//! [`Heartbeats`] numbers heartbeats, remembers when each was sent, and turns an
//! acknowledgement ([`crate::proto::ServerMsg::Ack`]) into the instant the lease now
//! runs from. Generic over the instant type so the agent uses tokio's clock and tests
//! use integers.

use std::collections::VecDeque;

/// Heartbeats sent and not yet acknowledged; older ones are forgotten (an
/// acknowledgement of a forgotten heartbeat renews nothing, the safe side).
pub const MAX_OUTSTANDING: usize = 256;

/// Heartbeats in flight on one connection, in the order sent.
#[derive(Debug, Clone)]
pub struct Heartbeats<T> {
    next: u64,
    sent: VecDeque<(u64, T)>,
}

impl<T: Copy + Ord> Default for Heartbeats<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Ord> Heartbeats<T> {
    /// No heartbeat sent yet; the first is numbered 1 (0 is what an older server that
    /// echoes nothing acknowledges, and renews nothing).
    pub fn new() -> Self {
        Heartbeats {
            next: 1,
            sent: VecDeque::new(),
        }
    }

    /// A heartbeat is sent at `at`: its number, to put in the message.
    pub fn send(&mut self, at: T) -> u64 {
        let seq = self.next;
        self.next += 1;
        if self.sent.len() >= MAX_OUTSTANDING {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, at));
        seq
    }

    /// The server acknowledged heartbeat `seq`: when it was sent, which is when the
    /// lease now runs from; `None` if it is unknown (never sent, already acknowledged,
    /// or forgotten). Acknowledgements arrive in order, so every earlier heartbeat is
    /// settled too (the server acknowledges at most one a second).
    pub fn acked(&mut self, seq: u64) -> Option<T> {
        while let Some(&(s, at)) = self.sent.front() {
            if s > seq {
                break;
            }
            self.sent.pop_front();
            if s == seq {
                return Some(at);
            }
        }
        None
    }
}

/// The instant the lease runs from after a renewal anchored at `at`: never earlier
/// than it already ran from (acknowledgements can be reordered across reconnections).
pub fn renewed<T: Copy + Ord>(current: T, at: T) -> T {
    current.max(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_runs_from_the_send_time_of_the_acknowledged_heartbeat() {
        let mut h = Heartbeats::new();
        let a = h.send(100u64);
        let b = h.send(600);
        let c = h.send(1100);
        // An ack that arrives at 30_000 (a healed partition) still renews from 600.
        assert_eq!(h.acked(b), Some(600));
        // `a` was settled by the ack of `b`.
        assert_eq!(h.acked(a), None);
        assert_eq!(h.acked(c), Some(1100));
        assert_eq!(h.acked(c), None, "an ack counts once");
    }

    #[test]
    fn unknown_and_legacy_acks_renew_nothing() {
        let mut h = Heartbeats::new();
        assert_eq!(h.acked(0), None);
        let a = h.send(5u64);
        assert_eq!(h.acked(0), None, "an older server's ack has no number");
        assert_eq!(h.acked(a + 7), None, "never sent");
        assert_eq!(h.acked(a), None, "settled by the later number");
    }

    #[test]
    fn old_heartbeats_are_forgotten() {
        let mut h = Heartbeats::new();
        let first = h.send(0u64);
        for t in 1..=MAX_OUTSTANDING as u64 {
            h.send(t);
        }
        assert_eq!(h.acked(first), None);
        assert_eq!(h.acked(first + 1), Some(1));
    }

    #[test]
    fn renewal_never_moves_the_lease_back() {
        assert_eq!(renewed(500u64, 300), 500);
        assert_eq!(renewed(500u64, 700), 700);
    }
}
