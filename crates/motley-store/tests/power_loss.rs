//! The embedded store under power loss (issue 18): on a disk that keeps only what was
//! synced, the power is cut at every write, length change and sync of a run of
//! applies. After each cut the store must open, and every apply it acknowledged must be
//! there. The disk after a cut is modelled as what was synced plus any part of what was
//! not: none of it, all of it, and seeded random subsets of the unsynced writes, one of
//! them torn in half (a sector-sized write that reached the disk only partly).

use std::sync::{Arc, Mutex};

use motley_store::embedded::Embedded;
use motley_store::{Store, Txn};

/// One unsynced change.
#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Disk {
    /// What a power cut cannot take.
    durable: Vec<u8>,
    /// What reads see: `durable` with `pending` applied.
    current: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<Op>,
    /// Writes, length changes and syncs so far.
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

#[derive(Debug, Clone)]
struct CutDisk(Arc<Mutex<Disk>>);

impl CutDisk {
    fn with(image: Vec<u8>) -> CutDisk {
        CutDisk(Arc::new(Mutex::new(Disk {
            durable: image.clone(),
            current: image,
            ..Disk::default()
        })))
    }
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl redb::StorageBackend for CutDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.disk().current.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let d = self.disk();
        let end = offset as usize + out.len();
        if end > d.current.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        out.copy_from_slice(&d.current[offset as usize..end]);
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut d = self.disk();
        d.step()?;
        let op = Op::SetLen(len);
        apply(&mut d.current, &op);
        d.pending.push(op);
        Ok(())
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut d = self.disk();
        d.step()?;
        d.durable = d.current.clone();
        d.pending.clear();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut d = self.disk();
        d.step()?;
        let op = Op::Write(offset, data.to_vec());
        apply(&mut d.current, &op);
        d.pending.push(op);
        Ok(())
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

/// Runs the applies on a fresh store, the power cut at operation `cut` after it was
/// created (`None`: never). Returns the disk and the writes acknowledged.
async fn run(cut: Option<usize>, mixed: bool) -> (CutDisk, Vec<usize>) {
    let disk = CutDisk::with(Vec::new());
    let store = match Embedded::open_on_backend(disk.clone(), 100) {
        Ok(s) => s,
        Err(e) => panic!("creating the store: {e}"),
    };
    {
        let mut d = disk.disk();
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
    }
    drop(store);
    (disk, acked)
}

/// Opens the store on `image` and checks every acknowledged durable write is there, and
/// that what is there is a prefix of the writes (a lazy write may be lost, but only
/// with every write after it).
async fn check(image: Vec<u8>, acked: &[usize], mixed: bool, what: &str) -> usize {
    let store = match Embedded::open_on_backend(CutDisk::with(image), 100) {
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
    cut_everywhere(false).await;
}

#[tokio::test]
async fn with_lazy_writes_between_a_power_cut_keeps_a_prefix_holding_every_durable_one() {
    cut_everywhere(true).await;
}

async fn cut_everywhere(mixed: bool) {
    let (whole, acked) = run(None, mixed).await;
    assert_eq!(
        acked.len(),
        APPLIES,
        "without a cut every apply is acknowledged"
    );
    let total = {
        let d = whole.disk();
        d.ops
    };
    assert!(
        total > APPLIES,
        "{total} disk operations for {APPLIES} applies"
    );
    let mut rng: u64 = 0x6d6f746c6579;
    let mut cuts = 0;
    let mut images = 0;
    let mut acked_before_cut = 0;
    // Acknowledged lazy writes a cut took (with every write after them).
    let mut lazy_lost = 0;
    for cut in 0..total {
        let (disk, acked) = run(Some(cut), mixed).await;
        acked_before_cut += acked.len();
        let (durable, pending) = {
            let d = disk.disk();
            (d.durable.clone(), d.pending.clone())
        };
        cuts += 1;
        let mut variants: Vec<(String, Vec<u8>)> = vec![("synced only".into(), durable.clone())];
        let mut all = durable.clone();
        for op in &pending {
            apply(&mut all, op);
        }
        variants.push(("everything written".into(), all));
        for v in 0..4 {
            let mut image = durable.clone();
            let mut torn = false;
            for op in &pending {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if (rng >> 33).is_multiple_of(2) {
                    continue;
                }
                match op {
                    Op::Write(at, data)
                        if !torn && data.len() > 1 && (rng >> 40).is_multiple_of(3) =>
                    {
                        torn = true;
                        apply(&mut image, &Op::Write(*at, data[..data.len() / 2].to_vec()));
                    }
                    _ => apply(&mut image, op),
                }
            }
            variants.push((format!("random part {v} of the unsynced writes"), image));
        }
        for (what, image) in variants {
            images += 1;
            let kept = check(
                image,
                &acked,
                mixed,
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
        "{cuts} cut points, {images} disk images opened, {acked_before_cut} acknowledged writes checked, {lazy_lost} lazy ones taken"
    );
}
