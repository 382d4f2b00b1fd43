//! What a seed ended with, judged after it healed: convergence, every acknowledged
//! apply kept, no completion run twice without a recorded failure, and the fingerprint
//! that makes a replay checkable. The run itself is `run.rs`.

use std::collections::{BTreeMap, BTreeSet};

use motley_core::model::{Spec, Workload};

use crate::run::{ApplyRecord, SeedReport};
use crate::world::World;

/// The same allocation completed twice only after a failure it recorded (an exit its
/// agent could not see counts, as a restart). Judged at the end, once every report has
/// had time to arrive: an agent records a failure locally first.
pub(crate) fn check_reruns(world: &World, report: &mut SeedReport) {
    let recorded = recorded_allocs(world);
    let mut runs: BTreeMap<(String, u32, String), u32> = BTreeMap::new();
    for a in &world.agents {
        for t in a.driver.completed() {
            *runs.entry((t.workload, t.index, t.alloc)).or_default() += 1;
        }
    }
    for ((w, i, a), n) in runs {
        // Recorded lost or failed: the failure is on record (a replaced job's cut-off copy
        // may run on, docs/multi-node.md); recorded complete: each rerun needs a restart,
        // unless a power cut of the store took its record back (its completion may not
        // have been on the disk; ARCHITECTURE, "What a power cut keeps").
        if n > 1 && !world.cut.contains(&a) && recorded.get(&a).is_some_and(|r| r.0 && r.1 + 1 < n)
        {
            report.violations.push(format!(
                "{w} #{i}: {a} completed {n} times, with {} restarts recorded",
                recorded.get(&a).map_or(0, |r| r.1)
            ));
        }
    }
}

/// Allocations as the store records them: complete or not, restarts, node.
pub(crate) fn recorded_allocs(world: &World) -> BTreeMap<String, (bool, u32, String)> {
    world
        .store
        .snapshot(motley_server::keys::ALLOCS)
        .into_values()
        .filter_map(|v| serde_json::from_slice::<motley_core::model::Allocation>(&v).ok())
        .map(|a| {
            let done = a.state == motley_core::model::AllocState::Complete;
            (a.id, (done, a.restarts, a.node))
        })
        .collect()
}

/// Workloads as stored now, decoded.
fn stored(world: &World) -> BTreeMap<String, Workload> {
    world
        .store
        .snapshot(motley_server::keys::WORKLOADS)
        .into_values()
        .filter_map(|v| serde_json::from_slice::<Workload>(&v).ok())
        .map(|w| (w.spec.reference().to_string(), w))
        .collect()
}

/// The stored allocations of a workload, for a failure's message: id, index, node,
/// desired and observed state, and the last reason.
fn allocs_of(world: &World, uid: &str) -> String {
    let list: Vec<String> = world
        .store
        .snapshot(motley_server::keys::ALLOCS)
        .into_values()
        .filter_map(|v| serde_json::from_slice::<motley_core::model::Allocation>(&v).ok())
        .filter(|a| a.workload_uid == uid)
        .map(|a| {
            format!(
                "{} #{} on {} {:?}/{:?} ({})",
                a.id,
                a.index,
                a.node,
                a.desired,
                a.state,
                a.reasons.last().map_or("", String::as_str)
            )
        })
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join("; ")
    }
}

/// See [`SeedReport::fingerprint`]. `DefaultHasher::new` has fixed keys.
pub(crate) fn fingerprint(world: &World, steps: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    steps.hash(&mut h);
    world.store.revision_now().hash(&mut h);
    // Allocations whole (ids, nodes, states, reasons, times all follow the seed);
    // workloads by name only: sealed secret values carry random nonces, as the CA and
    // tokens carry random keys, none of which steers anything.
    world
        .store
        .snapshot(motley_server::keys::ALLOCS)
        .hash(&mut h);
    world
        .store
        .snapshot(motley_server::keys::WORKLOADS)
        .keys()
        .for_each(|k| k.hash(&mut h));
    for a in &world.agents {
        let mut ran: Vec<(String, u32)> = a
            .driver
            .tasks()
            .into_iter()
            .chain(a.driver.completed())
            .map(|t| (t.alloc, t.index))
            .collect();
        ran.sort();
        ran.hash(&mut h);
    }
    h.finish()
}

/// Converged: a leader, every agent connected, every service at its replicas (on the
/// nodes, not just in the store), every job's instances complete.
pub(crate) fn converged(world: &World) -> Result<(), String> {
    if world.leader().is_none() {
        return Err("no server leads".into());
    }
    if let Some(a) = world
        .agents
        .iter()
        .find(|a| !a.gone && !a.up.as_ref().is_some_and(|(ag, _)| ag.is_connected()))
    {
        return Err(format!("agent {} is not connected", a.name));
    }
    let mut running: BTreeMap<String, u32> = BTreeMap::new();
    let mut completed: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for a in &world.agents {
        for t in a.driver.tasks() {
            *running.entry(t.workload_uid).or_default() += 1;
        }
        for t in a.driver.completed() {
            completed.entry(t.workload_uid).or_default().insert(t.index);
        }
    }
    for (name, w) in stored(world) {
        match &w.spec {
            Spec::Service(s) => {
                let n = running.get(&w.uid).copied().unwrap_or(0);
                if n != s.replicas {
                    return Err(format!(
                        "{name}: {n} of {} replicas run; stored: {}",
                        s.replicas,
                        allocs_of(world, &w.uid)
                    ));
                }
            }
            // A periodic job runs only through its runs; a run due lately may still run.
            Spec::Job(_) if crate::periodic::exempt(&w) => {}
            Spec::Job(j) => {
                let n = completed.get(&w.uid).map_or(0, |s| s.len()) as u32;
                if n < j.completions {
                    return Err(format!(
                        "{name}: {n} of {} completions; stored: {}",
                        j.completions,
                        allocs_of(world, &w.uid)
                    ));
                }
            }
            _ => {}
        }
    }
    let allocs: Vec<motley_core::model::Allocation> = world
        .store
        .snapshot(motley_server::keys::ALLOCS)
        .into_values()
        .filter_map(|v| serde_json::from_slice(&v).ok())
        .collect();
    crate::configs::converged(&stored(world), &allocs)?;
    Ok(())
}

/// No acknowledged apply lost: what the store holds for each name is what its last
/// acknowledged apply no later one followed said, or what an apply with no clear answer said.
pub(crate) fn check_acknowledged(world: &World, history: &[ApplyRecord], report: &mut SeedReport) {
    let stored = stored(world);
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for r in history {
        names.insert(&r.name);
    }
    for name in names {
        let ops: Vec<&ApplyRecord> = history.iter().filter(|r| r.name == name).collect();
        let Some(last_ack) = ops.iter().rposition(|r| r.status == Some(200)) else {
            continue;
        };
        // Applies overlap in time: the store may hold the value of any acknowledged
        // apply that no other acknowledged apply followed entirely (sent after it was
        // answered), or of any apply with no clear answer: it may take effect at any time
        // after it was sent, even after later ones (a paused server answers late, or
        // never). A refusal (4xx) changed nothing.
        let acked: Vec<&&ApplyRecord> = ops.iter().filter(|r| r.status == Some(200)).collect();
        let mut allowed: BTreeSet<u32> = acked
            .iter()
            .filter(|a| !acked.iter().any(|b| a.done.is_some_and(|d| d < b.sent)))
            .map(|a| a.value)
            .collect();
        for r in &ops {
            let refused = r.status.is_some_and(|s| (400..500).contains(&s));
            if r.status != Some(200) && !refused {
                allowed.insert(r.value);
            }
        }
        let have = stored.get(name).and_then(|w| match &w.spec {
            Spec::Service(s) => Some(s.replicas),
            Spec::Job(j) => Some(j.completions),
            _ => crate::configs::value(w),
        });
        match have {
            Some(v) if allowed.contains(&v) => {}
            other => report.violations.push(format!(
                "acknowledged apply of {name} lost: the store has {other:?}, the last acknowledged apply said {} (applies, value:status: {})",
                ops[last_ack].value,
                ops.iter()
                    .map(|r| format!("{}:{}", r.value, r.status.map_or("-".into(), |s| s.to_string())))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        }
    }
}
