//! The embedded store under power loss (issue 18): on a disk that keeps only what was
//! synced, the power is cut at every write, length change and sync of a run of
//! applies. After each cut the store must open, and every apply it acknowledged must be
//! there. The disk after a cut is modelled as what was synced plus any part of what was
//! not: none of it, all of it, and seeded random subsets of the unsynced writes, one of
//! them torn in half (a sector-sized write that reached the disk only partly). With the
//! store's log (issue 25: every transaction goes through it, a durable one synced) the
//! two files keep their unsynced parts independently; with lazy writes between the
//! durable ones, what survives must be a prefix of the writes holding every durable one
//! acknowledged.

use std::sync::{Arc, Mutex};

use motley_store::embedded::Embedded;
use motley_store::{Store, Txn};

/// One unsynced change.
#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

/// One file of the disk.
#[derive(Debug, Default, Clone)]
struct Image {
    /// What a power cut cannot take.
    durable: Vec<u8>,
    /// What reads see: `durable` with `pending` applied.
    current: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<Op>,
}

/// The store's file (0) and its log (1).
#[derive(Debug, Default)]
struct Disk {
    files: [Image; 2],
    /// Writes, length changes and syncs so far, of both files.
    ops: usize,
    /// The power goes out at this operation: it and every later one fail.
    cut_at: Option<usize>,
}

impl Disk {
    fn step(&mut self) -> std::io::Result<()> {
        self.ops += 1;
        if self.cut_at.is_some_and(|c| self.ops > c) {
            return Err(std::io::Error::other("the power is out"));
        }
        Ok(())
    }
    fn change(&mut self, file: usize, op: Op) -> std::io::Result<()> {
        self.step()?;
        let f = &mut self.files[file];
        apply(&mut f.current, &op);
        f.pending.push(op);
        Ok(())
    }
    fn sync(&mut self, file: usize) -> std::io::Result<()> {
        self.step()?;
        let f = &mut self.files[file];
        f.durable = f.current.clone();
        f.pending.clear();
        Ok(())
    }
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::SetLen(n) => image.resize(*n as usize, 0),
        Op::Write(at, data) => {
            let end = *at as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*at as usize..end].copy_from_slice(data);
        }
    }
}

/// One file of a disk shared by the store and its log.
#[derive(Debug, Clone)]
struct CutDisk(Arc<Mutex<Disk>>, usize);

impl CutDisk {
    fn with(images: [Vec<u8>; 2]) -> Arc<Mutex<Disk>> {
        let [store, log] = images;
        let file = |b: Vec<u8>| Image {
            durable: b.clone(),
            current: b,
            pending: Vec::new(),
        };
        Arc::new(Mutex::new(Disk {
            files: [file(store), file(log)],
            ..Disk::default()
        }))
    }
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        lock(&self.0)
    }
}

fn lock(d: &Arc<Mutex<Disk>>) -> std::sync::MutexGuard<'_, Disk> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

impl redb::StorageBackend for CutDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.disk().files[self.1].current.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let d = self.disk();
        let cur = &d.files[self.1].current;
        let end = offset as usize + out.len();
        if end > cur.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        out.copy_from_slice(&cur[offset as usize..end]);
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.disk().change(self.1, Op::SetLen(len))
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.disk().sync(self.1)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.disk().change(self.1, Op::Write(offset, data.to_vec()))
    }
}

impl motley_store::wal::LogFile for CutDisk {
    fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        Ok(self.disk().files[self.1].current.clone())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.disk().change(self.1, Op::Write(offset, data.to_vec()))
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.disk().sync(self.1)
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.disk().change(self.1, Op::SetLen(len))
    }
}

fn open(disk: &Arc<Mutex<Disk>>, with_log: bool) -> Result<Embedded, motley_store::StoreError> {
    if with_log {
        Embedded::open_on_backend_with_log(
            CutDisk(disk.clone(), 0),
            Box::new(CutDisk(disk.clone(), 1)),
            100,
        )
    } else {
        Embedded::open_on_backend(CutDisk(disk.clone(), 0), 100)
    }
}

const APPLIES: usize = 12;

fn key(i: usize) -> String {
    format!("/motley/workloads/service/w{i}")
}

/// Whether write `i` of a run is lazy (group-committed): with `mixed`, two of every
/// three, as allocation transitions between applies.
fn lazy(i: usize, mixed: bool) -> bool {
    mixed && i % 3 != 2
}

/// Runs the applies on a fresh store (with its log when `with_log`), the power cut at
/// operation `cut` after it was created (`None`: never). Returns the disk and the
/// writes acknowledged. With `group_commits`, a group commit after every fourth write
/// puts what came before in the store file and empties the log, which fills again.
async fn run(
    cut: Option<usize>,
    mixed: bool,
    with_log: bool,
    group_commits: bool,
) -> (Arc<Mutex<Disk>>, Vec<usize>) {
    let disk = CutDisk::with([Vec::new(), Vec::new()]);
    let store = match open(&disk, with_log) {
        Ok(s) => s,
        Err(e) => panic!("creating the store: {e}"),
    };
    {
        let mut d = lock(&disk);
        d.cut_at = cut.map(|c| d.ops + c);
    }
    let mut acked = Vec::new();
    for i in 0..APPLIES {
        let t = Txn::new()
            .put(key(i), format!("spec {i}").into_bytes())
            .lazy(lazy(i, mixed));
        match store.txn(t).await {
            Ok(r) if r.succeeded => acked.push(i),
            Ok(r) => panic!("apply {i} did not succeed: {r:?}"),
            Err(_) => break,
        }
        if group_commits && i % 4 == 3 && store.sync().await.is_err() {
            break;
        }
    }
    drop(store);
    (disk, acked)
}

/// What one file may hold after a cut: what was synced, everything, and seeded random
/// parts of the unsynced writes (one of them torn in half).
fn images(f: &Image, rng: &mut u64) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = vec![("synced only".into(), f.durable.clone())];
    let mut all = f.durable.clone();
    for op in &f.pending {
        apply(&mut all, op);
    }
    out.push(("everything written".into(), all));
    for v in 0..4 {
        let mut image = f.durable.clone();
        let mut torn = false;
        for op in &f.pending {
            *rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (*rng >> 33).is_multiple_of(2) {
                continue;
            }
            match op {
                Op::Write(at, data)
                    if !torn && data.len() > 1 && (*rng >> 40).is_multiple_of(3) =>
                {
                    torn = true;
                    apply(&mut image, &Op::Write(*at, data[..data.len() / 2].to_vec()));
                }
                _ => apply(&mut image, op),
            }
        }
        out.push((format!("random part {v} of the unsynced writes"), image));
    }
    out
}

/// Opens the store on `image` and checks every acknowledged durable write is there, and
/// that what is there is a prefix of the writes (a lazy write may be lost, but only
/// with every write after it).
async fn check(
    images: [Vec<u8>; 2],
    acked: &[usize],
    mixed: bool,
    with_log: bool,
    what: &str,
) -> usize {
    let store = match open(&CutDisk::with(images), with_log) {
        Ok(s) => s,
        Err(e) => panic!("{what}: the store does not open: {e}"),
    };
    for i in acked.iter().filter(|i| !lazy(**i, mixed)) {
        match store.get(&key(*i)).await {
            Ok(Some(kv)) => assert_eq!(kv.value, format!("spec {i}").into_bytes(), "{what}"),
            Ok(None) => panic!("{what}: acknowledged apply {i} lost"),
            Err(e) => panic!("{what}: reading apply {i}: {e}"),
        }
    }
    let mut present = Vec::new();
    for i in 0..APPLIES {
        match store.get(&key(i)).await {
            Ok(Some(kv)) => {
                assert_eq!(kv.value, format!("spec {i}").into_bytes(), "{what}");
                present.push(i);
            }
            Ok(None) => {}
            Err(e) => panic!("{what}: reading write {i}: {e}"),
        }
    }
    let prefix: Vec<usize> = (0..present.len()).collect();
    assert_eq!(present, prefix, "{what}: not a prefix of the writes");
    match store.revision().await {
        Ok(r) => assert_eq!(r, present.len() as u64, "{what}: revision"),
        Err(e) => panic!("{what}: revision: {e}"),
    }
    present.len()
}

#[tokio::test]
async fn a_power_cut_at_any_write_or_sync_loses_no_acknowledged_apply() {
    cut_everywhere(false, false, false).await;
}

#[tokio::test]
async fn with_lazy_writes_between_a_power_cut_keeps_a_prefix_holding_every_durable_one() {
    cut_everywhere(true, false, false).await;
}

#[tokio::test]
async fn through_the_log_a_power_cut_loses_no_acknowledged_apply() {
    cut_everywhere(false, true, false).await;
}

#[tokio::test]
async fn through_the_log_with_lazy_writes_a_cut_keeps_a_prefix_holding_every_durable_one() {
    cut_everywhere(true, true, false).await;
}

#[tokio::test]
async fn across_group_commits_a_power_cut_loses_no_acknowledged_apply() {
    cut_everywhere(false, true, true).await;
}

#[tokio::test]
async fn across_group_commits_with_lazy_writes_a_cut_keeps_a_prefix_holding_every_durable_one() {
    cut_everywhere(true, true, true).await;
}

async fn cut_everywhere(mixed: bool, with_log: bool, group_commits: bool) {
    let (whole, acked) = run(None, mixed, with_log, group_commits).await;
    assert_eq!(
        acked.len(),
        APPLIES,
        "without a cut every apply is acknowledged"
    );
    let total = lock(&whole).ops;
    assert!(
        total > APPLIES,
        "{total} disk operations for {APPLIES} applies"
    );
    let mut rng: u64 = 0x6d6f746c6579;
    let mut cuts = 0;
    let mut opened = 0;
    let mut acked_before_cut = 0;
    // Acknowledged lazy writes a cut took (with every write after them).
    let mut lazy_lost = 0;
    for cut in 0..total {
        let (disk, acked) = run(Some(cut), mixed, with_log, group_commits).await;
        acked_before_cut += acked.len();
        let files = lock(&disk).files.clone();
        cuts += 1;
        let store_images = images(&files[0], &mut rng);
        let log_images = images(&files[1], &mut rng);
        // Each file keeps its own part of what was not synced: pair them up, and
        // cross the extremes.
        let mut pairs: Vec<(String, [Vec<u8>; 2])> = store_images
            .iter()
            .zip(&log_images)
            .map(|((a, s), (b, l))| (format!("store: {a}; log: {b}"), [s.clone(), l.clone()]))
            .collect();
        pairs.push((
            "store: synced only; log: everything written".into(),
            [store_images[0].1.clone(), log_images[1].1.clone()],
        ));
        pairs.push((
            "store: everything written; log: synced only".into(),
            [store_images[1].1.clone(), log_images[0].1.clone()],
        ));
        for (what, pair) in pairs {
            opened += 1;
            let kept = check(
                pair,
                &acked,
                mixed,
                with_log,
                &format!("cut at operation {cut} of {total}, {what}"),
            )
            .await;
            lazy_lost += acked.len().saturating_sub(kept);
        }
    }
    assert!(
        acked_before_cut > 0,
        "no cut came after an acknowledged apply"
    );
    assert_eq!(
        lazy_lost > 0,
        mixed,
        "lazy writes are taken by a cut, durable ones never"
    );
    eprintln!(
        "{cuts} cut points, {opened} disk images opened, {acked_before_cut} acknowledged writes checked, {lazy_lost} lazy ones taken"
    );
}
