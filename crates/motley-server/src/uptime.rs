//! Services' availability on the leader (issue 23): sampled once a second from the
//! cache (a replica in rotation: running and passing its check, or running without
//! one), counted by `motley_core::uptime`, kept in memory and checkpointed to
//! `/motley/uptime` at most once an hour (and when the leader stops), so that a new
//! leader goes on from there. Time with no leader counts for nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use motley_core::api::UptimeView;
use motley_core::model::{AllocState, Desired, Kind, Spec, WorkloadRef};
use motley_core::uptime::{HOUR, Record, WINDOWS, budget};

use motley_core::model::{Allocation, Workload};

use crate::util::lock;

/// Where the checkpoint is.
pub const KEY: &str = "/motley/uptime";
/// How often services are sampled.
pub const SAMPLE_MS: u64 = 1_000;
/// A longer gap between samples (a paused or busy leader) is not counted.
const MAX_GAP_MS: u64 = 10_000;

/// The records and their bookkeeping.
#[derive(Default)]
pub struct Uptime {
    records: Mutex<BTreeMap<WorkloadRef, Record>>,
    /// When the last sample was taken (0: never).
    sampled_at: AtomicU64,
    /// When the records were last written (or loaded: an hour from then).
    saved_at: AtomicU64,
    /// The checkpoint has been read since this server began to lead.
    loaded: AtomicBool,
}

/// Whether each service (with replicas) has a replica in rotation now.
fn ups<'a>(
    workloads: &'a BTreeMap<WorkloadRef, Workload>,
    allocs: &BTreeMap<String, Allocation>,
) -> BTreeMap<&'a WorkloadRef, bool> {
    let mut out: BTreeMap<&WorkloadRef, bool> = workloads
        .iter()
        .filter(|(_, w)| matches!(&w.spec, Spec::Service(s) if s.replicas > 0))
        .map(|(r, _)| (r, false))
        .collect();
    // Once every service has a replica up, no other allocation can change the answer
    // (at 100,000 replicas of one service the first one running ends the walk).
    let mut down = out.len();
    for a in allocs.values() {
        if down == 0 {
            break;
        }
        if a.workload.kind != Kind::Service
            || a.state != AllocState::Running
            || a.desired != Desired::Run
        {
            continue;
        }
        let healthy = a.check.is_none() || a.health == Some(motley_core::health::Health::Healthy);
        if healthy
            && let Some(up) = out.get_mut(&a.workload)
            && !*up
        {
            *up = true;
            down -= 1;
        }
    }
    out
}

/// A record's availability per window and what `target` says of it.
fn view_of(rec: &Record, now: u64, target: Option<f64>) -> UptimeView {
    let [h1, h24, d30] = WINDOWS.map(|(_, len)| rec.availability(now, len));
    let b = target.and_then(|t| budget(t, d30, h1));
    UptimeView {
        h1,
        h24,
        d30,
        target,
        budget_remaining: b.map(|b| b.remaining),
        burn_rate: b.map(|b| b.burn_rate),
    }
}

impl Uptime {
    /// Samples every service now (at most once per [`SAMPLE_MS`]).
    pub fn sample(
        &self,
        workloads: &BTreeMap<WorkloadRef, Workload>,
        allocs: &BTreeMap<String, Allocation>,
        now: u64,
    ) {
        let last = self.sampled_at.load(Ordering::Relaxed);
        if now < last + SAMPLE_MS {
            return;
        }
        self.sampled_at.store(now, Ordering::Relaxed);
        let ups = ups(workloads, allocs);
        let mut records = lock(&self.records);
        records.retain(|r, _| workloads.contains_key(r));
        for (r, up) in ups {
            records
                .entry(r.clone())
                .or_default()
                .observe(now, up, MAX_GAP_MS);
        }
    }

    /// What `r` looks like now (`target`: its SLO's).
    pub fn view(&self, r: &WorkloadRef, now: u64, target: Option<f64>) -> Option<UptimeView> {
        lock(&self.records)
            .get(r)
            .map(|rec| view_of(rec, now, target))
    }

    /// Every service's view (`target`: a service's SLO), for `/metrics`.
    pub fn all(
        &self,
        now: u64,
        target: impl Fn(&WorkloadRef) -> Option<f64>,
    ) -> Vec<(WorkloadRef, UptimeView)> {
        lock(&self.records)
            .iter()
            .map(|(r, rec)| (r.clone(), view_of(rec, now, target(r))))
            .collect()
    }

    /// Whether the checkpoint was read since this server began to lead.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Takes in a checkpoint (none: there was none) read at `now`.
    pub fn load(&self, saved: Option<&[u8]>, now: u64) {
        let saved: BTreeMap<String, Record> = saved
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        let mut records = lock(&self.records);
        for (k, rec) in saved {
            if let Some(r) = WorkloadRef::parse(&k) {
                records.insert(r, rec);
            }
        }
        self.loaded.store(true, Ordering::Relaxed);
        self.saved_at.store(now, Ordering::Relaxed);
    }

    /// Whether a checkpoint is due (an hour since the last, or since loading).
    pub fn due(&self, now: u64) -> bool {
        self.loaded() && now >= self.saved_at.load(Ordering::Relaxed) + HOUR
    }

    /// The checkpoint to write now (none before one was read: writing then would wipe
    /// what a former leader kept).
    pub fn checkpoint(&self, now: u64) -> Option<Vec<u8>> {
        if !self.loaded() {
            return None;
        }
        self.saved_at.store(now, Ordering::Relaxed);
        let records = lock(&self.records);
        let kept: BTreeMap<String, &Record> = records
            .iter()
            .filter(|(_, rec)| !rec.is_empty())
            .map(|(r, rec)| (r.to_string(), rec))
            .collect();
        serde_json::to_vec(&kept).ok()
    }

    /// Forgets everything (this server no longer leads).
    pub fn reset(&self) {
        lock(&self.records).clear();
        self.loaded.store(false, Ordering::Relaxed);
        self.sampled_at.store(0, Ordering::Relaxed);
    }
}
