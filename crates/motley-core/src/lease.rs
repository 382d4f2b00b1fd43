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
//!
//! Only fenced work heeds the lease, so a node that holds none asks for no
//! acknowledgement ([`asks_ack`]): its heartbeats still tell the server it lives, and
//! the server writes nothing back (at 1,000 agents, the acknowledgements were a fifth
//! of the server's work). Such a node gives its lease up with each quiet heartbeat:
//! fenced work must never start on what is left of an old lease (a Welcome's, ending
//! before the first renewal could come back: a real-process test caught a fenced
//! replica stopped 20 ms after its start). A node given fenced work without a lease
//! beats at once, asking ([`beat_now`]): the work starts one round trip later, on a
//! whole lease, not a pace later.

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

    /// A heartbeat is sent at `at`: its number, to put in the message. `asks`: it asks
    /// for an acknowledgement ([`asks_ack`]); one that does not is not remembered, so
    /// an acknowledgement of it (a server may answer anyway, to set a new pace) renews
    /// nothing: the safe side, and nothing to renew for a node without fenced work.
    pub fn send(&mut self, at: T, asks: bool) -> u64 {
        let seq = self.next;
        self.next += 1;
        if !asks {
            return seq;
        }
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

/// Whether a heartbeat asks the server to acknowledge it: only while the node holds
/// fenced work (running, or assigned and not ended), the only work its lease governs.
pub fn asks_ack(holds_fenced: bool) -> bool {
    holds_fenced
}

/// Whether the agent should beat now rather than at its next tick: it holds fenced
/// work, which cannot start without a lease, and its lease has run out (it asked for
/// no acknowledgement while it held none).
pub fn beat_now(holds_fenced: bool, lease_valid: bool) -> bool {
    holds_fenced && !lease_valid
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
        let a = h.send(100u64, true);
        let b = h.send(600, true);
        let c = h.send(1100, true);
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
        let a = h.send(5u64, true);
        assert_eq!(h.acked(0), None, "an older server's ack has no number");
        assert_eq!(h.acked(a + 7), None, "never sent");
        assert_eq!(h.acked(a), None, "settled by the later number");
    }

    #[test]
    fn a_quiet_heartbeat_is_numbered_and_renews_nothing() {
        let mut h = Heartbeats::new();
        let asked = h.send(100u64, true);
        let quiet = h.send(600, false);
        assert_eq!(quiet, asked + 1, "numbered in the same sequence");
        // A server that answers the quiet one (a new pace) settles the earlier one too,
        // and renews nothing: nothing was remembered of the quiet beat.
        assert_eq!(h.acked(quiet), None);
        assert_eq!(h.acked(asked), None);
        let next = h.send(1100, true);
        assert_eq!(h.acked(next), Some(1100));
    }

    #[test]
    fn only_fenced_work_asks_for_acknowledgements_and_beats_at_once_without_a_lease() {
        assert!(asks_ack(true));
        assert!(!asks_ack(false));
        assert!(beat_now(true, false));
        assert!(
            !beat_now(true, true),
            "a valid lease: the next tick is soon enough"
        );
        assert!(!beat_now(false, false), "nothing fenced: no lease needed");
        assert!(!beat_now(false, true));
    }

    #[test]
    fn old_heartbeats_are_forgotten() {
        let mut h = Heartbeats::new();
        let first = h.send(0u64, true);
        for t in 1..=MAX_OUTSTANDING as u64 {
            h.send(t, true);
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
