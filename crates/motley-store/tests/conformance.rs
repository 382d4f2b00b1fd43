use std::sync::Arc;

use motley_store::conformance::{self, Opener};
use motley_store::embedded::Embedded;
use motley_store::{Store, Txn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let open: Opener = Box::new(move || {
        let path = path.clone();
        Box::pin(async move {
            // The previous handle may still be closing; retry briefly.
            for _ in 0..50 {
                if let Ok(s) = Embedded::open(&path) {
                    return Arc::new(s) as Arc<dyn Store>;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("could not reopen {}", path.display());
        })
    });
    if let Err(e) = conformance::run_all(open, conformance::HistoryAcrossReopen::Forgotten).await {
        panic!("conformance: {e}");
    }
}

#[tokio::test]
async fn bounded_history_compacts_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Embedded::open_with_history(&dir.path().join("s.redb"), 5).expect("open");
    for i in 0..20 {
        s.txn(Txn::new().put("/k", i.to_string()))
            .await
            .expect("txn");
    }
    assert!(
        s.watch("/", 10).await.is_err(),
        "revision 10 is older than the 5 kept"
    );
    let mut w = s.watch("/", 17).await.expect("recent history");
    let e = w.recv().await.expect("event").expect("ok");
    assert_eq!(e.first().map(|e| e.revision()), Some(17));
}

#[tokio::test]
async fn history_is_bounded_by_bytes_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Embedded::open(&dir.path().join("s.redb")).expect("open");
    let quarter = motley_store::embedded::HISTORY_BYTES / 4;
    let big = vec![b'x'; quarter];
    for _ in 0..10 {
        s.txn(Txn::new().put("/big", big.clone()))
            .await
            .expect("txn");
    }
    // Four values of a quarter of HISTORY_BYTES are over it: the newest three are kept.
    match s.watch("/", 7).await {
        Err(motley_store::StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (7, 8));
        }
        other => panic!("revision 7 must be forgotten: {other:?}"),
    }
    let mut w = s.watch("/", 8).await.expect("recent history");
    for want in 8..=10 {
        let g = w.recv().await.expect("event").expect("ok");
        assert_eq!(g.first().map(|e| e.revision()), Some(want));
        assert_eq!(g[0].kv.value.len(), quarter);
    }
}

#[tokio::test]
async fn a_watcher_far_behind_the_live_feed_sees_every_revision_in_order() {
    // More revisions than the live feed holds (and than the watch's own queue), written
    // while the watcher reads nothing: it falls behind, then catches up from the history.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Embedded::open(&dir.path().join("s.redb")).expect("open");
    let start = s
        .txn(Txn::new().put("/lag/0", b"0".to_vec()))
        .await
        .expect("txn")
        .revision;
    let mut w = s.watch("/lag/", start + 1).await.expect("watch");
    let n = 3_000u64;
    for i in 1..=n {
        s.txn(Txn::new().put(format!("/lag/{i}"), i.to_string().into_bytes()))
            .await
            .expect("txn");
    }
    for i in 1..=n {
        let g = tokio::time::timeout(std::time::Duration::from_secs(30), w.recv())
            .await
            .expect("the next revision within 30 s")
            .expect("the watch is open")
            .expect("no error");
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].revision(), start + i);
        assert_eq!(g[0].kv.value, i.to_string().into_bytes());
    }
}

#[tokio::test]
async fn a_file_with_the_old_history_table_loses_it_and_keeps_its_data() {
    use redb::{ReadableDatabase, TableDefinition};
    const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.redb");
    {
        let db = redb::Database::create(&path).expect("create");
        let wtx = db.begin_write().expect("write");
        {
            let mut kv = wtx.open_table(KV).expect("kv");
            let mut record = Vec::new();
            for n in [2u64, 3, 2] {
                record.extend_from_slice(&n.to_le_bytes()); // create, mod revision, version
            }
            record.extend_from_slice(b"old value");
            kv.insert("/k", record.as_slice()).expect("insert");
            let mut log = wtx.open_table(LOG).expect("log");
            for rev in 1..=3u64 {
                log.insert(rev, b"anything".as_slice()).expect("log");
            }
            let mut meta = wtx.open_table(META).expect("meta");
            meta.insert("revision", 3).expect("revision");
            meta.insert("compacted", 0).expect("compacted");
        }
        wtx.commit().expect("commit");
    }
    {
        let s = Embedded::open(&path).expect("open the old file");
        assert_eq!(s.revision().await.expect("revision"), 3);
        let kv = s.get("/k").await.expect("get").expect("the value is kept");
        assert_eq!(
            (kv.value.as_slice(), kv.mod_revision),
            (&b"old value"[..], 3)
        );
        assert!(matches!(
            s.watch("/", 2).await,
            Err(motley_store::StoreError::Compacted { .. })
        ));
        let t = s.txn(Txn::new().put("/k", "new")).await.expect("txn");
        assert_eq!(t.revision, 4);
    }
    let db = redb::Database::create(&path).expect("reopen with redb");
    let rtx = db.begin_read().expect("read");
    assert!(
        matches!(
            rtx.open_table(LOG),
            Err(redb::TableError::TableDoesNotExist(_))
        ),
        "the old history table is dropped"
    );
    let meta = rtx.open_table(META).expect("meta");
    assert!(meta.get("compacted").expect("get").is_none());
    assert_eq!(
        meta.get("revision").expect("get").map(|v| v.value()),
        Some(4)
    );
}
