//! The agent's side of the fence guard ([`motley_core::fence`]): which orders go to the
//! driver's guard, and when. The order names every fenced allocation this node holds
//! that has not ended (those about to start too: an order goes out *before* a fenced
//! start), with the lease's end on the guard's clock.

use std::sync::Mutex;

use motley_core::fence::FenceOrder;
use motley_core::model::NodeLoss;

use crate::{Agent, lock};

/// A renewal moves the guard's deadline only once it moved this much: the guard then
/// acts up to this much before the agent would, and only if the agent stops renewing.
const RENEWAL_STEP_MS: u64 = 1_000;

/// The last order the guard took.
#[derive(Debug, Default)]
pub(crate) struct Fencing {
    sent: Mutex<Option<FenceOrder>>,
}

/// A fenced allocation this node holds: running, or assigned and not ended.
fn held_fenced(l: &crate::local::LocalAlloc) -> bool {
    l.alloc.on_node_loss == NodeLoss::Fence && !l.report.state.is_terminal()
}

/// A fenced allocation whose task has started (running, or waiting to restart in
/// place): what an expired lease stops. A pending one waits for a lease anyway (its
/// supervisor starts nothing without one), and a quiet node holds none when fenced work
/// arrives: stopping pending ones stopped new work whenever the first renewal took
/// longer than the watchdog's 100 ms (a loaded machine:
/// `multinode::scheduler_places_by_hardware`, 3 of 6).
pub(crate) fn started_fenced(l: &crate::local::LocalAlloc) -> bool {
    held_fenced(l) && l.report.state != motley_core::model::AllocState::Pending
}

impl Agent {
    /// True while the node holds fenced work (running, or assigned and not ended): its
    /// heartbeats then ask for acknowledgements, which renew the lease
    /// (`motley_core::lease::asks_ack`).
    pub(crate) fn holds_fenced_work(&self) -> bool {
        self.inner.local.state().allocs.values().any(held_fenced)
    }

    /// Sends the guard a new order if it matters ([`FenceOrder::worth_sending`]).
    /// Called after every lease renewal, before a fenced start and after an end.
    pub(crate) fn fence_sync(&self) {
        let allocs = self
            .inner
            .local
            .state()
            .allocs
            .values()
            .filter(|l| held_fenced(l))
            .map(|l| (l.alloc.id.clone(), l.alloc.task.stop_grace.as_millis()))
            .collect();
        let mut sent = lock(&self.inner.fencing.sent);
        // The agent measures its lease on the guard's clock (`Contact::now_ms`).
        let order = FenceOrder {
            deadline_ms: self.inner.contact.lease_deadline(),
            allocs,
        };
        if !order.worth_sending(sent.as_ref(), RENEWAL_STEP_MS) {
            return;
        }
        match self.inner.cfg.driver.fence(&order) {
            Ok(()) => *sent = (!order.allocs.is_empty()).then_some(order),
            Err(e) => {
                tracing::error!("fence guard: {e}");
                *sent = None;
            }
        }
    }
}
