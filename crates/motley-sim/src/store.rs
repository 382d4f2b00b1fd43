//! The simulated store: etcd's model in memory (revisions, compare-and-swap, watches
//! from a revision, compaction, leases), with the faults a real one shows: watch events
//! that arrive late, a store that is unavailable for a while, and slow commits.
//!
//! Like etcd, it outlives the servers: a server killed and started again finds every
//! committed key. A commit is acknowledged only once applied; nothing is half-written.
//!
//! Lazy transactions ([`motley_store::Txn::lazy`]) are held as the embedded store holds
//! them: applied at once, on the disk at the first group commit (the interval after the
//! first one not yet durable: 1–10 s, drawn per seed) or with the next durable one. [`SimStore::power_cut`]
//! takes what was not on the disk yet, or a later part of it (the embedded store's log
//! may keep a prefix of it), as a power cut of the store's machine would.

use motley_rt::HashMap;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use motley_store::embedded::DEFAULT_COMMIT_INTERVAL;
use motley_store::{
    Compare, Event, EventKind, KeyValue, Leases, Op, Range, Store, StoreError, Txn, TxnResult,
    Watch,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::rng::Rng;

/// Faults of the store, set by the simulator.
#[derive(Debug, Clone, Default)]
pub struct StoreFaults {
    /// Every call fails with `Unavailable` until then.
    pub unavailable_until: Option<Instant>,
    /// Each transaction takes this long before it applies (a slow disk).
    pub commit_delay: Duration,
    /// Most a watch event is delayed by (each watcher, in order).
    pub watch_lag: Duration,
}

struct Lease {
    ttl: Duration,
    expires: Instant,
    keys: Vec<String>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<Vec<Event>>,
}

/// One lazy transaction not on the disk yet: when it committed, the revision before it,
/// and the keys it changed with their records before it.
struct Unsynced {
    at: Instant,
    before: u64,
    undo: Vec<(String, Option<(KeyValue, i64)>)>,
}

#[derive(Default)]
struct Data {
    unsynced: Vec<Unsynced>,
    commit_interval: Duration,
    kv: BTreeMap<String, (KeyValue, i64)>,
    log: Vec<Event>,
    revision: u64,
    compacted: u64,
    leases: HashMap<i64, Lease>,
    next_lease: i64,
    watchers: Vec<Watcher>,
    /// Runs of periodic jobs ever created, by (job reference, due time): more than one
    /// for a due time is a double run (`run::check_runs`).
    runs_started: BTreeMap<(String, u64), u32>,
}

/// The simulated store (shared by every simulated server).
#[derive(Clone)]
pub struct SimStore {
    data: Arc<Mutex<Data>>,
    faults: Arc<Mutex<StoreFaults>>,
    rng: Rng,
}

impl SimStore {
    /// An empty store; `rng` draws watch delays.
    pub fn new(rng: Rng) -> SimStore {
        // The embedded store's group commit runs a second after the first unsynced
        // transaction; each seed's store takes 1–10 s (swarm testing: no rule may lean
        // on the interval, and a longer one leaves more for a power cut to take).
        let commit_interval = rng.between(DEFAULT_COMMIT_INTERVAL, DEFAULT_COMMIT_INTERVAL * 10);
        SimStore {
            data: Arc::new(Mutex::new(Data {
                next_lease: 1,
                commit_interval,
                ..Default::default()
            })),
            faults: Arc::new(Mutex::new(StoreFaults::default())),
            rng,
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A power cut of the store's machine: every lazy transaction not yet on the disk
    /// is taken, except a prefix of them chosen by the seed (what the log kept). Returns
    /// the keys whose records went back. The servers must be down (their watches end).
    pub fn power_cut(&self) -> Vec<String> {
        let mut d = self.data();
        settle(&mut d, Instant::now());
        let keep = self.rng.below(d.unsynced.len() as u64 + 1) as usize;
        let lost: Vec<Unsynced> = d.unsynced.drain(keep..).collect();
        let mut keys = Vec::new();
        let Some(first) = lost.first() else {
            return keys;
        };
        let back_to = first.before;
        for u in lost.into_iter().rev() {
            for (key, old) in u.undo.into_iter().rev() {
                match old {
                    Some(rec) => {
                        d.kv.insert(key.clone(), rec);
                    }
                    None => {
                        d.kv.remove(&key);
                    }
                }
                keys.push(key);
            }
        }
        d.log.retain(|e| e.revision() <= back_to);
        d.revision = back_to;
        d.watchers.clear();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The store's faults, to change.
    pub fn faults(&self) -> std::sync::MutexGuard<'_, StoreFaults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.faults().unavailable_until {
            Some(t) if Instant::now() < t => {
                Err(StoreError::Unavailable("simulated datastore outage".into()))
            }
            _ => Ok(()),
        }
    }

    /// Runs of periodic jobs ever created, by (periodic job, due time), for the checker.
    pub fn runs_started(&self) -> BTreeMap<(String, u64), u32> {
        self.data().runs_started.clone()
    }

    /// The revision now (no fault applies).
    pub fn revision_now(&self) -> u64 {
        self.data().revision
    }

    /// Every key and value now, for the checker (no fault applies).
    pub fn snapshot(&self, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        self.data()
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (kv, _))| (k.clone(), kv.value.clone()))
            .collect()
    }

    /// Deletes the keys of leases that ran out (etcd's lessor). Called on every lease
    /// renewal and leased write, which every server makes each third of its lease, so a
    /// dead leader's key goes about when etcd would delete it.
    pub fn expire_leases(&self) {
        let now = Instant::now();
        let mut d = self.data();
        let gone: Vec<i64> = d
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            revoke(&mut d, id);
        }
    }
}

/// Counts a new record if it is a scheduled run of a periodic job.
fn count_run(d: &mut Data, value: &[u8]) {
    if !value.windows(8).any(|w| w == b"\"run_of\"") {
        return;
    }
    let Ok(w) = serde_json::from_slice::<motley_core::model::Workload>(value) else {
        return;
    };
    if let Some(of) = w.run_of.as_ref().filter(|o| !o.manual)
        && let Some(job) = motley_core::periodic::job_of_run(&w)
    {
        *d.runs_started.entry((job.to_string(), of.due)).or_default() += 1;
    }
}

/// Keeps one revision's events in the log and hands each watcher its share, whole.
fn broadcast(d: &mut Data, events: Vec<Event>) {
    d.watchers.retain(|w| !w.tx.is_closed());
    d.log.extend(events.iter().cloned());
    for w in &d.watchers {
        let mine: Vec<Event> = events
            .iter()
            .filter(|e| e.kv.key.starts_with(&w.prefix))
            .cloned()
            .collect();
        if !mine.is_empty() {
            let _ = w.tx.send(mine);
        }
    }
}

/// Lazy transactions a group commit has put on the disk by `now` leave the undo list:
/// a group commit runs the store's interval after the first transaction not on the
/// disk, and takes every one committed until then.
fn settle(d: &mut Data, now: Instant) {
    while let Some(first) = d.unsynced.first() {
        let flush = first.at + d.commit_interval;
        if flush > now {
            return;
        }
        let n = d.unsynced.iter().take_while(|u| u.at <= flush).count();
        d.unsynced.drain(..n);
    }
}

fn revoke(d: &mut Data, id: i64) {
    let Some(lease) = d.leases.remove(&id) else {
        return;
    };
    // Every key of the lease goes in one revision, as etcd's lessor deletes them.
    let rev = d.revision + 1;
    let mut events = Vec::new();
    for key in lease.keys {
        if d.kv.get(&key).is_some_and(|(_, l)| *l == id) {
            d.kv.remove(&key);
            events.push(Event::deleted(key, rev));
        }
    }
    if !events.is_empty() {
        d.revision = rev;
        // A durable write: everything before it is on the disk too.
        d.unsynced.clear();
    }
    broadcast(d, events);
}

fn apply(d: &mut Data, txn: &Txn, lease: i64) -> (TxnResult, Vec<Event>) {
    let ok = txn.compares.iter().all(|c| match c {
        Compare::ModRevision(key, revision) => {
            d.kv.get(key).map_or(0, |(kv, _)| kv.mod_revision) == *revision
        }
    });
    if !ok || txn.ops.is_empty() {
        return (
            TxnResult {
                succeeded: ok,
                revision: d.revision,
            },
            Vec::new(),
        );
    }
    let rev = d.revision + 1;
    let mut events = Vec::new();
    let mut undo = Vec::new();
    for op in &txn.ops {
        if txn.lazy {
            let key = match op {
                Op::Put(k, _) | Op::Delete(k) => k,
            };
            undo.push((key.clone(), d.kv.get(key).cloned()));
        }
        match op {
            Op::Put(key, value) => {
                let (create, version) =
                    d.kv.get(key)
                        .map_or((rev, 1), |(kv, _)| (kv.create_revision, kv.version + 1));
                if version == 1 {
                    count_run(d, value);
                }
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: create,
                    mod_revision: rev,
                    version,
                };
                d.kv.insert(key.clone(), (kv.clone(), lease));
                if lease != 0
                    && let Some(l) = d.leases.get_mut(&lease)
                {
                    l.keys.push(key.clone());
                }
                events.push(Event {
                    kind: EventKind::Put,
                    kv,
                });
            }
            Op::Delete(key) => {
                if d.kv.remove(key).is_some() {
                    events.push(Event::deleted(key.clone(), rev));
                }
            }
        }
    }
    if !events.is_empty() {
        let now = Instant::now();
        settle(d, now);
        if txn.lazy {
            d.unsynced.push(Unsynced {
                at: now,
                before: d.revision,
                undo,
            });
        } else {
            d.unsynced.clear();
        }
        d.revision = rev;
    }
    (
        TxnResult {
            succeeded: true,
            revision: d.revision,
        },
        events,
    )
}

#[async_trait]
impl Store for SimStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.check()?;
        Ok(self.data().kv.get(key).map(|(kv, _)| kv.clone()))
    }

    async fn range(&self, prefix: &str) -> Result<Range, StoreError> {
        self.check()?;
        let d = self.data();
        Ok(Range {
            kvs: d
                .kv
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, (kv, _))| kv.clone())
                .collect(),
            revision: d.revision,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.check()?;
        let delay = self.faults().commit_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
            self.check()?;
        }
        let mut d = self.data();
        let (r, events) = apply(&mut d, &txn, 0);
        broadcast(&mut d, events);
        Ok(r)
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError> {
        self.check()?;
        let (tx, rx) = mpsc::channel(1024);
        let (live_tx, mut live_rx) = mpsc::unbounded_channel::<Vec<Event>>();
        let backlog: Vec<Vec<Event>> = {
            let mut d = self.data();
            if from_revision != 0 && from_revision <= d.compacted {
                return Err(StoreError::Compacted {
                    requested: from_revision,
                    oldest: d.compacted + 1,
                });
            }
            let backlog = if from_revision == 0 {
                Vec::new()
            } else {
                motley_store::by_revision(
                    d.log
                        .iter()
                        .filter(|e| e.revision() >= from_revision && e.kv.key.starts_with(prefix))
                        .cloned(),
                )
            };
            d.watchers.push(Watcher {
                prefix: prefix.to_string(),
                tx: live_tx,
            });
            backlog
        };
        // Deliver in order, each event late by up to the watch lag of the moment.
        let (faults, rng) = (self.faults.clone(), self.rng.clone());
        tokio::spawn(async move {
            let mut due = Instant::now();
            let mut next_backlog = backlog.into_iter();
            loop {
                let ev = match next_backlog.next() {
                    Some(e) => e,
                    None => match live_rx.recv().await {
                        Some(e) => e,
                        None => return,
                    },
                };
                let lag = faults.lock().unwrap_or_else(|e| e.into_inner()).watch_lag;
                if !lag.is_zero() {
                    let at = Instant::now() + rng.duration(lag);
                    due = due.max(at);
                    tokio::time::sleep_until(due).await;
                }
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.check()?;
        let mut d = self.data();
        d.compacted = d.compacted.max(revision.min(d.revision));
        let keep = d.compacted;
        d.log.retain(|e| e.revision() > keep);
        Ok(())
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.check()?;
        Ok(self.data().revision)
    }
}

#[async_trait]
impl Leases for SimStore {
    async fn lease_grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        self.check()?;
        let ttl = ttl.max(Duration::from_secs(1));
        let mut d = self.data();
        let id = d.next_lease;
        d.next_lease += 1;
        d.leases.insert(
            id,
            Lease {
                ttl,
                expires: Instant::now() + ttl,
                keys: Vec::new(),
            },
        );
        Ok(id)
    }

    async fn lease_renew(&self, id: i64) -> Result<bool, StoreError> {
        self.check()?;
        self.expire_leases();
        let mut d = self.data();
        Ok(match d.leases.get_mut(&id) {
            Some(l) => {
                l.expires = Instant::now() + l.ttl;
                true
            }
            None => false,
        })
    }

    async fn lease_revoke(&self, id: i64) -> Result<(), StoreError> {
        self.check()?;
        revoke(&mut self.data(), id);
        Ok(())
    }

    async fn put_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
        only_if_absent: bool,
    ) -> Result<Option<u64>, StoreError> {
        self.check()?;
        self.expire_leases();
        let mut d = self.data();
        if !d.leases.contains_key(&lease) {
            return Err(StoreError::Backend("lease not found".into()));
        }
        if only_if_absent && d.kv.contains_key(key) {
            return Ok(None);
        }
        let (r, events) = apply(&mut d, &Txn::new().put(key, value), lease);
        broadcast(&mut d, events);
        Ok(Some(r.revision))
    }
}
