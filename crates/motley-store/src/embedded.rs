//! The embedded backend: one redb file in the data directory.
//!
//! redb is copy-on-write with checksummed commits, so a transaction is either
//! wholly on disk after `commit` returns (fsync) or not at all, whatever
//! instant a `kill -9` or a power cut arrives. Nothing is written unless a
//! transaction writes: an idle store does no IO.
//!
//! Tables: `kv` (key → header + value) and `meta` (the current revision). The
//! changes of recent revisions, for watches from a past revision, are kept in memory
//! only ([`Recent`]): the store's watchers live in the same process, so history
//! before an open is never asked for, and keeping it in the file wrote every value
//! twice (decisions.md, "Watch history in memory"). A file from before that change
//! loses its `log` table at the first open.
//!
//! With its log ([`crate::wal`], beside the file) every transaction is group-committed:
//! redb commits it without a sync (`Durability::None`: in memory, visible to every
//! reader), the log gets its record (synced before a durable transaction returns,
//! written for a lazy one, [`crate::Txn::lazy`]), and a durable redb commit at most
//! [`DEFAULT_COMMIT_INTERVAL`] after the first of them puts them all in the file and
//! empties the log. Under load that turns a sync and a copy of every B-tree page a
//! transaction touched (25–30 pages, about 110 KB, for one apply) into a synced log
//! page per acknowledged write and one copy of the pages per interval. Without a log
//! (a store on a caller's backend) durable transactions commit durably in redb.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc};

use crate::wal::Wal;
use crate::{
    Compare, Event, EventKind, KeyValue, Op, Range, Store, StoreError, Txn, TxnResult, Watch,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// The watch history of files written before it moved to memory: dropped at open.
const OLD_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Revisions kept in memory for watches before old ones are forgotten.
pub const DEFAULT_HISTORY: u64 = 10_000;

/// Most bytes of keys and values the history keeps (the newest revision is kept whatever
/// its size).
pub const HISTORY_BYTES: usize = 1 << 20;

/// Longest a lazy transaction waits for a durable commit (what a power cut may take).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The embedded store.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    recent: std::sync::Mutex<Recent>,
    write_lock: tokio::sync::Mutex<()>,
    lazy: std::sync::Mutex<Lazy>,
}

/// What lazy transactions left to do.
#[derive(Default)]
struct Lazy {
    /// The log of lazy transactions (a store in a file only).
    wal: Option<Wal>,
    /// redb holds commits that are not durable yet.
    pending: bool,
    /// A durable commit is scheduled.
    scheduled: bool,
}

/// The changes of the recent revisions, for watches from a past revision: in memory,
/// bounded by [`DEFAULT_HISTORY`] revisions (or the caller's) and [`HISTORY_BYTES`].
struct Recent {
    /// Revisions `compacted + 1 ..= revision`, oldest first, each with its [`weight`].
    groups: std::collections::VecDeque<(Arc<Vec<Event>>, usize)>,
    /// Every revision up to this one is forgotten.
    compacted: u64,
    /// The newest revision.
    revision: u64,
    bytes: usize,
    max_revisions: u64,
}

fn weight(events: &[Event]) -> usize {
    events
        .iter()
        .map(|e| e.kv.key.len() + e.kv.value.len() + std::mem::size_of::<Event>())
        .sum()
}

impl Recent {
    /// Nothing before `revision` is known.
    fn starting_at(revision: u64, max_revisions: u64) -> Recent {
        Recent {
            groups: Default::default(),
            compacted: revision,
            revision,
            bytes: 0,
            max_revisions: max_revisions.max(1),
        }
    }

    /// The next revision's changes.
    fn push(&mut self, events: Arc<Vec<Event>>) {
        let Some(rev) = events.first().map(|e| e.revision()) else {
            return;
        };
        if rev != self.revision + 1 {
            // Never happens under the write lock; forget rather than keep a gap.
            *self = Recent::starting_at(rev.saturating_sub(1), self.max_revisions);
        }
        let w = weight(&events);
        self.bytes += w;
        self.groups.push_back((events, w));
        self.revision = rev;
        while self.groups.len() as u64 > self.max_revisions
            || (self.bytes > HISTORY_BYTES && self.groups.len() > 1)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, w)) = self.groups.pop_front() {
            self.bytes -= w;
            self.compacted += 1;
        }
    }

    /// Forgets every revision up to `upto`.
    fn compact(&mut self, upto: u64) {
        while self.compacted < upto && !self.groups.is_empty() {
            self.forget_oldest();
        }
    }

    /// The changes from revision `from` on under `prefix`, or `Compacted`.
    fn since(&self, prefix: &str, from: u64) -> Result<Vec<Event>, StoreError> {
        if from <= self.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: self.compacted + 1,
            });
        }
        let skip = usize::try_from(from - self.compacted - 1).unwrap_or(usize::MAX);
        Ok(self
            .groups
            .iter()
            .skip(skip)
            .flat_map(|(g, _)| g.iter())
            .filter(|e| e.kv.key.starts_with(prefix))
            .cloned()
            .collect())
    }
}

impl Inner {
    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lazy(&self) -> std::sync::MutexGuard<'_, Lazy> {
        self.lazy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every lazy transaction durable now (one empty durable commit) and empties
    /// the log.
    fn sync_now(&self) -> Result<(), StoreError> {
        let mut lazy = self.lazy();
        lazy.scheduled = false;
        if !lazy.pending {
            return Ok(());
        }
        let wtx = self.db.begin_write().map_err(backend)?;
        wtx.commit().map_err(backend)?;
        lazy.pending = false;
        if let Some(wal) = &mut lazy.wal {
            wal.clear().map_err(backend)?;
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.sync_now() {
            tracing::error!("making the last lazy transactions durable: {e}");
        }
    }
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

fn decode_kv(key: &str, b: &[u8]) -> Result<KeyValue, StoreError> {
    let corrupt = || StoreError::Corrupt {
        key: key.to_string(),
        why: "record shorter than its header".into(),
    };
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: u64_at(b, 0).ok_or_else(corrupt)?,
        mod_revision: u64_at(b, 8).ok_or_else(corrupt)?,
        version: u64_at(b, 16).ok_or_else(corrupt)?,
        value: b[24..].to_vec(),
    })
}

/// A record of the log beside the file: for each event, kind (1 byte), key length (4), key, then the kv record length (4) and record.
fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.push(match e.kind {
            EventKind::Put => 1,
            EventKind::Delete => 2,
        });
        let rec = encode_kv(&e.kv);
        out.extend_from_slice(&(e.kv.key.len() as u32).to_le_bytes());
        out.extend_from_slice(e.kv.key.as_bytes());
        out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        out.extend_from_slice(&rec);
    }
    out
}

fn decode_events(rev: u64, mut b: &[u8]) -> Result<Vec<Event>, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt {
        key: format!("log/{rev}"),
        why: why.to_string(),
    };
    let mut out = Vec::new();
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>, StoreError> {
        if b.len() < n {
            return Err(corrupt("truncated"));
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h.to_vec())
    };
    let take_len = |b: &mut &[u8]| -> Result<usize, StoreError> {
        let raw = take(b, 4)?;
        let arr: [u8; 4] = raw.try_into().map_err(|_| corrupt("length"))?;
        Ok(u32::from_le_bytes(arr) as usize)
    };
    while !b.is_empty() {
        let kind = match take(&mut b, 1)?[0] {
            1 => EventKind::Put,
            2 => EventKind::Delete,
            _ => return Err(corrupt("unknown event kind")),
        };
        let klen = take_len(&mut b)?;
        let key = String::from_utf8(take(&mut b, klen)?).map_err(|_| corrupt("key not UTF-8"))?;
        let rlen = take_len(&mut b)?;
        let rec = take(&mut b, rlen)?;
        out.push(Event {
            kind,
            kv: decode_kv(&key, &rec)?,
        });
    }
    Ok(out)
}

impl Embedded {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Embedded, StoreError> {
        Self::open_with_history(path, DEFAULT_HISTORY)
    }

    /// Opens the store, keeping `history` revisions for watches.
    pub fn open_with_history(path: &Path, history: u64) -> Result<Embedded, StoreError> {
        let db = Database::builder()
            .set_cache_size(4 << 20)
            .create(path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        let (wal, records) = Wal::open(path).map_err(|e| {
            StoreError::Backend(format!("opening the log beside {}: {e}", path.display()))
        })?;
        Self::with_log(Self::on(db, history), wal, &records)
    }

    /// Applies what the log holds, empties it and writes through it from now on.
    fn with_log(
        store: Embedded,
        mut wal: Wal,
        records: &[crate::wal::Record],
    ) -> Result<Embedded, StoreError> {
        store.replay(records)?;
        store.begin_history()?;
        wal.clear()
            .map_err(|e| StoreError::Backend(format!("{}: {e}", wal.name())))?;
        store.inner.lazy().wal = Some(wal);
        Ok(store)
    }

    /// Opens the store on a storage backend and a log of the caller's: the power-loss
    /// tests put both on a disk that loses what was not synced (`tests/power_loss.rs`).
    pub fn open_on_backend_with_log(
        backend: impl redb::StorageBackend,
        log: Box<dyn crate::wal::LogFile>,
        history: u64,
    ) -> Result<Embedded, StoreError> {
        let store = Self::on(Self::db_on(backend)?, history);
        let (wal, records) = Wal::on(log, "the log".into())
            .map_err(|e| StoreError::Backend(format!("the log: {e}")))?;
        Self::with_log(store, wal, &records)
    }

    /// Applies the lazy transactions a killed process left in its log, in order, those
    /// the file does not hold yet, in one durable commit. Returns how many.
    fn replay(&self, records: &[crate::wal::Record]) -> Result<usize, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let wtx = self.inner.db.begin_write().map_err(backend)?;
        let mut applied = 0;
        {
            let mut kv = wtx.open_table(KV).map_err(backend)?;
            let mut meta = wtx.open_table(META).map_err(backend)?;
            let mut rev = meta
                .get("revision")
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            for r in records {
                if r.revision <= rev {
                    continue;
                }
                if r.revision != rev + 1 {
                    tracing::warn!(
                        "the store's log jumps from revision {rev} to {}: the rest is not applied",
                        r.revision
                    );
                    break;
                }
                for e in decode_events(r.revision, &r.events)? {
                    match e.kind {
                        EventKind::Put => {
                            kv.insert(e.kv.key.as_str(), encode_kv(&e.kv).as_slice())
                                .map_err(backend)?;
                        }
                        EventKind::Delete => {
                            kv.remove(e.kv.key.as_str()).map_err(backend)?;
                        }
                    }
                }
                rev = r.revision;
                meta.insert("revision", rev).map_err(backend)?;
                applied += 1;
            }
        }
        wtx.commit().map_err(backend)?;
        if applied > 0 {
            tracing::info!("applied {applied} transactions from the store's log");
        }
        Ok(applied)
    }

    /// Opens (or creates) the store on a storage backend of the caller's: the
    /// power-loss tests put it on a disk that loses what was not synced
    /// (`tests/power_loss.rs`).
    pub fn open_on_backend(
        backend: impl redb::StorageBackend,
        history: u64,
    ) -> Result<Embedded, StoreError> {
        let store = Self::on(Self::db_on(backend)?, history);
        store.begin_history()?;
        Ok(store)
    }

    fn db_on(backend: impl redb::StorageBackend) -> Result<Database, StoreError> {
        Database::builder()
            .set_cache_size(4 << 20)
            .create_with_backend(backend)
            .map_err(|e| StoreError::Backend(format!("opening the store: {e}")))
    }

    /// History starts at the revision found: drops the `log` table of a file written
    /// before the history moved to memory (one write, once).
    fn begin_history(&self) -> Result<(), StoreError> {
        let old_log = {
            let rtx = self.inner.db.begin_read().map_err(backend)?;
            match rtx.open_table(OLD_LOG) {
                Ok(_) => true,
                Err(redb::TableError::TableDoesNotExist(_)) => false,
                Err(e) => return Err(backend(e)),
            }
        };
        if old_log {
            let wtx = self.inner.db.begin_write().map_err(backend)?;
            wtx.delete_table(OLD_LOG).map_err(backend)?;
            if let Ok(mut meta) = wtx.open_table(META) {
                meta.remove("compacted").map_err(backend)?;
            }
            wtx.commit().map_err(backend)?;
            tracing::info!("dropped the store file's watch history (kept in memory now)");
        }
        let revision = self.read_meta("revision")?;
        let mut recent = self.inner.recent();
        *recent = Recent::starting_at(revision, recent.max_revisions);
        Ok(())
    }

    /// A store in memory only (the `agent_session` fuzz target, tests).
    pub fn in_memory(history: u64) -> Result<Embedded, StoreError> {
        Self::open_on_backend(redb::backends::InMemoryBackend::new(), history)
    }

    fn on(db: Database, history: u64) -> Embedded {
        let (events, _) = broadcast::channel(1024);
        Embedded {
            inner: Arc::new(Inner {
                db,
                events,
                recent: std::sync::Mutex::new(Recent::starting_at(0, history)),
                write_lock: tokio::sync::Mutex::new(()),
                lazy: Default::default(),
            }),
        }
    }

    fn read_meta(&self, name: &str) -> Result<u64, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(backend)?;
        let t = match rtx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(backend(e)),
        };
        Ok(t.get(name)
            .map_err(backend)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    fn commit(&self, txn: Txn) -> Result<(TxnResult, Vec<Event>), StoreError> {
        let mut wtx = self.inner.db.begin_write().map_err(backend)?;
        // Through the log, redb's commit waits for the group commit; without one, only
        // a lazy transaction does.
        let logged_store = self.inner.lazy().wal.is_some();
        if txn.lazy || logged_store {
            wtx.set_durability(Durability::None).map_err(backend)?;
        }
        let (result, events, logged) = {
            let mut kv = wtx.open_table(KV).map_err(backend)?;
            let mut meta = wtx.open_table(META).map_err(backend)?;
            let rev = meta
                .get("revision")
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            for Compare::ModRevision(key, want) in &txn.compares {
                let have = match kv.get(key.as_str()).map_err(backend)? {
                    Some(v) => decode_kv(key, v.value())?.mod_revision,
                    None => 0,
                };
                if have != *want {
                    return Ok((
                        TxnResult {
                            succeeded: false,
                            revision: rev,
                        },
                        Vec::new(),
                    ));
                }
            }
            let new_rev = rev + 1;
            let mut events = Vec::new();
            for op in &txn.ops {
                match op {
                    Op::Put(key, value) => {
                        let old = match kv.get(key.as_str()).map_err(backend)? {
                            Some(v) => Some(decode_kv(key, v.value())?),
                            None => None,
                        };
                        let rec = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: old.as_ref().map_or(new_rev, |o| o.create_revision),
                            mod_revision: new_rev,
                            version: old.as_ref().map_or(1, |o| o.version + 1),
                        };
                        kv.insert(key.as_str(), encode_kv(&rec).as_slice())
                            .map_err(backend)?;
                        events.push(Event {
                            kind: EventKind::Put,
                            kv: rec,
                        });
                    }
                    Op::Delete(key) => {
                        if kv.remove(key.as_str()).map_err(backend)?.is_some() {
                            events.push(Event::deleted(key.clone(), new_rev));
                        }
                    }
                }
            }
            if events.is_empty() {
                // Nothing changed: do not spend a revision or a disk write.
                return Ok((
                    TxnResult {
                        succeeded: true,
                        revision: rev,
                    },
                    events,
                ));
            }
            let encoded = encode_events(&events);
            meta.insert("revision", new_rev).map_err(backend)?;
            (
                TxnResult {
                    succeeded: true,
                    revision: new_rev,
                },
                events,
                (new_rev, encoded),
            )
        };
        let (rev, encoded) = logged;
        let mut lazy = self.inner.lazy();
        if let Some(wal) = &mut lazy.wal {
            // A durable transaction is acknowledged once its record is synced (and with
            // it every record before).
            wal.append(rev, &encoded, !txn.lazy).map_err(backend)?;
        }
        if let Err(e) = wtx.commit() {
            if let Some(wal) = &mut lazy.wal {
                let _ = wal.undo();
            }
            return Err(backend(e));
        }
        if txn.lazy || lazy.wal.is_some() {
            lazy.pending = true;
        } else {
            // Durable in redb: everything before it is in the file too.
            lazy.pending = false;
        }
        Ok((result, events))
    }

    /// Makes every lazy transaction durable now.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let _guard = self.inner.write_lock.lock().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.inner.sync_now())
            .await
            .map_err(backend)?
    }

    /// After a lazy commit: a durable one within the interval, unless one is due.
    fn schedule_sync(&self) {
        {
            let mut lazy = self.inner.lazy();
            if !lazy.pending || lazy.scheduled {
                return;
            }
            lazy.scheduled = true;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(DEFAULT_COMMIT_INTERVAL).await;
            let Some(inner) = weak.upgrade() else { return };
            if let Err(e) = (Embedded { inner }).sync().await {
                tracing::error!("group commit: {e}");
            }
        });
    }
}

#[async_trait]
impl Store for Embedded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(backend)?;
        let t = match rtx.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        match t.get(key).map_err(backend)? {
            Some(v) => Ok(Some(decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }

    async fn range(&self, prefix: &str) -> Result<Range, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(backend)?;
        let revision = match rtx.open_table(META) {
            Ok(m) => m
                .get("revision")
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(backend(e)),
        };
        let t = match rtx.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Ok(Range {
                    kvs: vec![],
                    revision,
                });
            }
            Err(e) => return Err(backend(e)),
        };
        let mut kvs = Vec::new();
        for row in t.range(prefix..).map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            kvs.push(decode_kv(key, v.value())?);
        }
        Ok(Range { kvs, revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        // One writer at a time, so events are broadcast in revision order.
        let _guard = self.inner.write_lock.lock().await;
        let (result, events) = if txn.lazy {
            // Nothing synced: redb commits in memory and the log's record goes to the page
            // cache, shorter than handing the work to another thread and back.
            self.commit(txn)?
        } else {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.commit(txn))
                .await
                .map_err(backend)??
        };
        if !events.is_empty() {
            self.schedule_sync();
            let events = Arc::new(events);
            // Into the history before the broadcast, so a watch that reads the history
            // after subscribing misses nothing (and drops what it sees twice).
            self.inner.recent().push(events.clone());
            let _ = self.inner.events.send(events);
        }
        Ok(result)
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError> {
        let mut live = self.inner.events.subscribe();
        let (current, from, backlog) = {
            let recent = self.inner.recent();
            let current = recent.revision;
            let from = if from_revision == 0 {
                current + 1
            } else {
                from_revision
            };
            (current, from, recent.since(prefix, from)?)
        };
        let (tx, rx) = mpsc::channel(256);
        let weak = Arc::downgrade(&self.inner);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut last = current.max(from.saturating_sub(1));
            for group in crate::by_revision(backlog) {
                if tx.send(Ok(group)).await.is_err() {
                    return;
                }
            }
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    _ = tx.closed() => return,
                };
                let batch: Vec<Event> = match received {
                    Ok(events) => events
                        .iter()
                        .filter(|e| e.revision() > last)
                        .cloned()
                        .collect(),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Hold the store only while catching up, so dropping it closes the file.
                        let Some(inner) = weak.upgrade() else { return };
                        // Fell behind the live feed: catch up from the history.
                        let caught_up = inner.recent().since("", last + 1);
                        match caught_up {
                            Ok(h) => h,
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if let Some(e) = batch.last() {
                    last = last.max(e.revision());
                }
                let mine = batch.into_iter().filter(|e| e.kv.key.starts_with(&prefix));
                for group in crate::by_revision(mine) {
                    if tx.send(Ok(group)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let mut recent = self.inner.recent();
        let upto = revision.min(recent.revision + 1).saturating_sub(1);
        recent.compact(upto);
        Ok(())
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.read_meta("revision")
    }
}
