//! Rolling updates of services: which old replicas are replaced in this pass.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Allocation, Desired, Spec, Workload};

use super::{Pass, is_outdated};

impl Pass<'_, '_> {
    /// A rolling update: replaces serving replicas of an older generation at most
    /// `max_parallel` at a time. A replacement is in flight until it has passed its
    /// check (or run, without one) for `min_healthy`; a slot with no replica, or an old
    /// replica still stopping, counts as in flight too, so a new version that cannot be
    /// placed or never gets healthy stops the update with the old replicas serving.
    /// Past `deadline` without getting healthy, a replacement stops the update for good
    /// (until the spec changes again). Old replicas waiting their turn keep their slot.
    pub(super) fn roll<'a>(
        &mut self,
        w: &Workload,
        replicas: u32,
        mine: &[&'a Allocation],
        mut outdated: Vec<&'a Allocation>,
        live_by_slot: &mut BTreeMap<u32, Vec<&'a Allocation>>,
        stopping: &mut BTreeSet<u32>,
    ) {
        let policy = match &w.spec {
            Spec::Service(s) => s.update,
            _ => crate::model::UpdatePolicy::default(),
        };
        let now = self.input.now;
        let mut in_flight = 0u32;
        let mut stalled = false;
        for a in live_by_slot.values().flatten() {
            match a.ready_at {
                Some(t) if now >= t + policy.min_healthy.as_millis() => {}
                Some(t) => {
                    in_flight += 1;
                    self.plan.wake(t + policy.min_healthy.as_millis());
                }
                None => {
                    in_flight += 1;
                    let limit = a.created_at + policy.deadline.as_millis();
                    if now >= limit {
                        stalled = true;
                    } else {
                        self.plan.wake(limit);
                    }
                }
            }
        }
        if stalled
            && policy.auto_revert
            && let Some(to) = crate::rollout::revert_target(w)
        {
            let why = format!("a new replica was not healthy within {}", policy.deadline);
            self.plan
                .revert
                .push(crate::rollout::reverted(w, to, &why, now));
        }
        in_flight += mine
            .iter()
            .filter(|a| a.is_live() && a.desired == Desired::Stop && is_outdated(w, a))
            .count() as u32;
        let empty = (0..replicas)
            .filter(|s| !live_by_slot.contains_key(s) && !outdated.iter().any(|a| a.index == *s))
            .count() as u32;
        in_flight += empty;
        let mut budget = if stalled {
            0
        } else {
            policy.max_parallel.max(1).saturating_sub(in_flight)
        };
        // Canaries: only so many replaced until promoted.
        let promoted = w
            .rollout
            .as_ref()
            .is_some_and(|r| r.generation == w.generation && r.promoted);
        if policy.canary > 0 && !promoted {
            // Every slot not held by a serving old replica has, or gets, a new one.
            let replaced = replicas.saturating_sub(outdated.len() as u32);
            budget = budget.min(policy.canary.saturating_sub(replaced));
        }
        // Old replicas out of rotation first: replacing them costs no capacity.
        outdated.sort_by_key(|a| (a.ready_at.is_some(), a.index, a.id.as_str()));
        for (i, a) in outdated.into_iter().enumerate() {
            if (i as u32) < budget {
                self.stop(a, format!("replaced by generation {}", w.generation));
                stopping.insert(a.index);
            } else {
                // Waits its turn, and holds its slot meanwhile.
                live_by_slot.entry(a.index).or_default().push(a);
            }
        }
    }
}
