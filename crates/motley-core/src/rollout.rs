//! What a service's updates leave behind and how one is judged: its earlier specs
//! (`history`, for `motley rollout history|undo` and auto-revert), what the control
//! plane recorded of the latest update ([`Rollout`]: promoted, reverted), and the
//! status `motley rollout status` and `motley apply` show ([`status`]).
//!
//! The replacing itself is the reconciler's (`reconcile::Pass::roll`).

use serde::{Deserialize, Serialize};

use crate::model::{AllocState, Allocation, Desired, Spec, UpdatePolicy, Workload};

/// How many earlier specs of a service are kept.
pub const KEEP_REVISIONS: usize = 10;

/// An earlier spec of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Its generation.
    pub generation: u64,
    /// When it was applied (ms).
    pub at: u64,
    /// Its update failed (stopped at its deadline, or reverted): never reverted to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
    /// The spec.
    pub spec: Spec,
}

/// What the control plane recorded of a service's latest update.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rollout {
    /// The generation it is about.
    pub generation: u64,
    /// Its canaries were promoted (`motley promote`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoted: bool,
    /// This generation is a revert of that one, whose update failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_from: Option<u64>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where an update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Replicas are being replaced.
    Progressing,
    /// The canaries run; the rest waits for `motley promote`.
    WaitingForPromotion,
    /// Every replica runs the current spec and is healthy.
    Complete,
    /// A new replica did not get healthy by the deadline: nothing more is replaced.
    Failed,
}

/// `motley rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The generation being rolled out.
    pub generation: u64,
    /// Replicas wanted.
    pub desired: u32,
    /// Replicas running the current spec.
    pub updated: u32,
    /// Of those, healthy for `min_healthy`.
    pub healthy: u32,
    /// Replicas still running an earlier spec.
    pub old: u32,
    /// Where it stands.
    pub state: State,
    /// Why, in words.
    pub reason: String,
    /// When this generation was a revert: the failed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_from: Option<u64>,
}

/// Whether an allocation has passed its check (or run, without one) for `min_healthy`.
pub fn settled(a: &Allocation, policy: &UpdatePolicy, now: u64) -> bool {
    a.ready_at
        .is_some_and(|t| now >= t + policy.min_healthy.as_millis())
}

/// Whether a replacement has been unhealthy past the update's deadline.
pub fn overdue(a: &Allocation, policy: &UpdatePolicy, now: u64) -> bool {
    a.ready_at.is_none() && now >= a.created_at + policy.deadline.as_millis()
}

/// The status of a service's latest update; `None` for other workloads.
pub fn status<'a>(
    w: &Workload,
    allocs: impl IntoIterator<Item = &'a Allocation>,
    now: u64,
) -> Option<Status> {
    let Spec::Service(s) = &w.spec else {
        return None;
    };
    let (mut updated, mut healthy, mut old, mut late) = (0, 0, 0, false);
    for a in allocs {
        if !(a.is_live() && a.desired == Desired::Run && a.workload_uid == w.uid) {
            continue;
        }
        if crate::reconcile::is_outdated(w, a) {
            old += 1;
            continue;
        }
        if a.state == AllocState::Running {
            updated += 1;
        }
        if settled(a, &s.update, now) {
            healthy += 1;
        }
        late |= overdue(a, &s.update, now);
    }
    let rec = w.rollout.as_ref().filter(|r| r.generation == w.generation);
    let canaries_waiting = s.update.canary > 0
        && old > 0
        && !rec.is_some_and(|r| r.promoted)
        && updated >= s.update.canary.min(s.replicas);
    let (state, reason) = if late && old > 0 {
        (
            State::Failed,
            format!(
                "a new replica was not healthy within {}: the update stopped with {old} old replica(s) serving",
                s.update.deadline
            ),
        )
    } else if canaries_waiting {
        (
            State::WaitingForPromotion,
            format!(
                "{} canary replica(s) run generation {}: motley promote {} to go on",
                updated, w.generation, s.name
            ),
        )
    } else if old == 0 && healthy >= s.replicas {
        (
            State::Complete,
            "every replica is updated and healthy".into(),
        )
    } else {
        (
            State::Progressing,
            format!("{updated} of {} updated, {healthy} healthy", s.replicas),
        )
    };
    let reason = match rec.and_then(|r| r.reason.clone()) {
        Some(r) => format!("{reason} ({r})"),
        None => reason,
    };
    Some(Status {
        generation: w.generation,
        desired: s.replicas,
        updated,
        healthy,
        old,
        state,
        reason,
        reverted_from: rec.and_then(|r| r.reverted_from),
    })
}

/// The spec an update that failed goes back to: the newest earlier one whose own update
/// did not fail.
pub fn revert_target(w: &Workload) -> Option<&Revision> {
    w.history
        .iter()
        .rev()
        .find(|r| !r.failed && r.spec != w.spec)
}

/// The record that reverts `w`'s failed update to `to`: the old spec as a new
/// generation, the failed one kept in the history.
pub fn reverted(w: &Workload, to: &Revision, why: &str, now: u64) -> Workload {
    let mut next = w.clone();
    push_history(&mut next, w, true);
    next.spec = to.spec.clone();
    next.generation = w.generation + 1;
    next.updated_at = now;
    next.rollout = Some(Rollout {
        generation: next.generation,
        promoted: false,
        reverted_from: Some(w.generation),
        reason: Some(format!(
            "reverted to generation {}'s spec: generation {} failed: {why}",
            to.generation, w.generation
        )),
    });
    next
}

/// Keeps `old`'s spec in `next`'s history (at most [`KEEP_REVISIONS`]).
pub fn push_history(next: &mut Workload, old: &Workload, failed: bool) {
    if !matches!(old.spec, Spec::Service(_)) {
        return;
    }
    next.history.push(Revision {
        generation: old.generation,
        at: old.updated_at,
        failed,
        spec: old.spec.clone(),
    });
    let excess = next.history.len().saturating_sub(KEEP_REVISIONS);
    next.history.drain(..excess);
}

/// `motley promote`: the record with the current generation's canaries promoted;
/// `Ok(None)` when they already are.
pub fn promote(w: &Workload) -> Result<Option<Workload>, String> {
    let Spec::Service(s) = &w.spec else {
        return Err(format!("{} is not a service", w.spec.reference()));
    };
    if s.update.canary == 0 {
        return Err(format!(
            "service {} has no canaries (update.canary is 0): its updates need no promotion",
            s.name
        ));
    }
    if w.rollout
        .as_ref()
        .is_some_and(|r| r.generation == w.generation && r.promoted)
    {
        return Ok(None);
    }
    let mut next = w.clone();
    let mut rec = w
        .rollout
        .clone()
        .filter(|r| r.generation == w.generation)
        .unwrap_or_default();
    rec.generation = w.generation;
    rec.promoted = true;
    next.rollout = Some(rec);
    Ok(Some(next))
}
