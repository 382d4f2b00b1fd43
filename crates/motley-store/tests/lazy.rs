//! The embedded store's group commit: a killed process loses no transaction (the log
//! beside the file has them, in the page cache), the log replays in order, and a group
//! commit puts everything in the file within the interval and empties the log.
//!
//! A kill is modelled by copying the store's files while it is open: the copy holds
//! what the page cache holds at that instant, which is what a process killed then
//! leaves behind.

use std::path::Path;
use std::time::Duration;

use motley_store::embedded::{DEFAULT_COMMIT_INTERVAL, Embedded};
use motley_store::{Store, Txn};

fn copy_files(from: &Path, to: &Path, with_log: bool) {
    std::fs::create_dir_all(to).expect("target dir");
    std::fs::copy(from.join("s.redb"), to.join("s.redb")).expect("copy the store");
    if with_log {
        std::fs::copy(from.join("s.redb.wal"), to.join("s.redb.wal")).expect("copy the log");
    }
}

async fn value(store: &Embedded, key: &str) -> Option<Vec<u8>> {
    match store.get(key).await {
        Ok(kv) => kv.map(|kv| kv.value),
        Err(e) => panic!("reading {key}: {e}"),
    }
}

#[tokio::test]
async fn a_killed_process_loses_no_lazy_transaction_and_the_log_replays_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).expect("dir");
    let store = Embedded::open(&live.join("s.redb")).expect("open");
    let r = store
        .txn(Txn::new().put("/spec/a", b"apply".to_vec()))
        .await
        .expect("durable put");
    assert_eq!(r.revision, 1);
    for i in 0..40u32 {
        let t = Txn::new()
            .put(format!("/alloc/{}", i % 7), i.to_le_bytes().to_vec())
            .lazy(true);
        let t = if i % 10 == 9 {
            t.delete(format!("/alloc/{}", (i + 1) % 7))
        } else {
            t
        };
        assert!(store.txn(t).await.expect("lazy txn").succeeded);
    }
    let expected: Vec<(String, Option<Vec<u8>>)> = {
        let mut v = Vec::new();
        for k in 0..7 {
            let key = format!("/alloc/{k}");
            v.push((key.clone(), value(&store, &key).await));
        }
        v
    };
    let revision = store.revision().await.expect("revision");
    assert_eq!(revision, 41);
    let log_len = std::fs::metadata(live.join("s.redb.wal"))
        .expect("the log")
        .len();
    assert!(log_len > 0, "lazy transactions are in the log");

    // Killed now, with the log: everything comes back; the watch history (in memory)
    // starts at the revision found.
    let killed = dir.path().join("killed");
    copy_files(&live, &killed, true);
    let back = Embedded::open(&killed.join("s.redb")).expect("reopen after a kill");
    assert_eq!(back.revision().await.expect("revision"), revision);
    for (key, want) in &expected {
        assert_eq!(&value(&back, key).await, want, "{key} after the replay");
    }
    assert_eq!(
        value(&back, "/spec/a").await.as_deref(),
        Some(&b"apply"[..])
    );
    match back.watch("/alloc/", 2).await {
        Err(motley_store::StoreError::Compacted { requested, oldest }) => {
            assert_eq!(
                (requested, oldest),
                (2, revision + 1),
                "history starts at the open"
            );
        }
        other => panic!("a watch from before the open must fail as compacted: {other:?}"),
    }
    assert_eq!(
        std::fs::metadata(killed.join("s.redb.wal"))
            .expect("log")
            .len(),
        0,
        "a replayed log is emptied"
    );
    let mut watch = back
        .watch("/alloc/", revision + 1)
        .await
        .expect("watch from the open");
    back.txn(Txn::new().put("/alloc/9", b"new".to_vec()))
        .await
        .expect("put after the open");
    let first = watch.recv().await.expect("an event").expect("no error");
    assert_eq!(first[0].kv.mod_revision, revision + 1, "revisions continue");
    drop(back);

    // The file alone holds none of it before the group commit: every transaction, the
    // durable one too, is in the log only (which is why a durable one is synced there).
    let cut = dir.path().join("cut");
    copy_files(&live, &cut, false);
    let cut_store = Embedded::open(&cut.join("s.redb")).expect("reopen the file alone");
    assert_eq!(cut_store.revision().await.expect("revision"), 0);
    assert_eq!(value(&cut_store, "/spec/a").await, None);
    drop(cut_store);

    // A durable transaction is in the log when it returns (synced there, with every
    // lazy one before it: tests/power_loss.rs cuts the power at each write and sync).
    let before = std::fs::metadata(live.join("s.redb.wal"))
        .expect("log")
        .len();
    store
        .txn(Txn::new().put("/spec/b", b"apply".to_vec()))
        .await
        .expect("durable put");
    let after_len = std::fs::metadata(live.join("s.redb.wal"))
        .expect("log")
        .len();
    assert!(after_len > before, "{before} → {after_len}");
    let after = dir.path().join("after-durable");
    copy_files(&live, &after, true);
    let durable = Embedded::open(&after.join("s.redb")).expect("reopen");
    assert_eq!(durable.revision().await.expect("revision"), revision + 1);
    for (key, want) in &expected {
        assert_eq!(
            &value(&durable, key).await,
            want,
            "{key} after a durable txn"
        );
    }
    assert_eq!(
        value(&durable, "/spec/b").await.as_deref(),
        Some(&b"apply"[..])
    );
}

#[tokio::test]
async fn a_group_commit_puts_lazy_transactions_on_the_disk_within_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).expect("dir");
    let store = Embedded::open(&live.join("s.redb")).expect("open");
    store
        .txn(Txn::new().put("/alloc/x", b"1".to_vec()).lazy(true))
        .await
        .expect("lazy put");
    // Not on the disk yet: a copy of the file alone does not have it.
    let early = dir.path().join("early");
    copy_files(&live, &early, false);
    let e = Embedded::open(&early.join("s.redb")).expect("open early copy");
    assert_eq!(value(&e, "/alloc/x").await, None);
    drop(e);
    // After the interval (and a margin), the file has it and the log is empty.
    tokio::time::sleep(DEFAULT_COMMIT_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::metadata(live.join("s.redb.wal"))
            .expect("log")
            .len(),
        0
    );
    let late = dir.path().join("late");
    copy_files(&live, &late, false);
    let l = Embedded::open(&late.join("s.redb")).expect("open late copy");
    assert_eq!(value(&l, "/alloc/x").await.as_deref(), Some(&b"1"[..]));
}
