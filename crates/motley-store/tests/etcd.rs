//! The etcd backend against real etcd (Debian's `etcd-server`) on 127.0.0.1: the
//! conformance suite, failover between members, and no quorum answered cleanly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use motley_store::conformance::{self, Opener};
use motley_store::etcd::testing::EtcdCluster;
use motley_store::etcd::{Etcd, EtcdTls};
use motley_store::{Leases, Store, StoreError, Txn};

#[test]
fn etcd_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = EtcdCluster::start(dir.path(), 1);
    let url = cluster.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let open: Opener = Box::new(move || {
            let url = url.clone();
            Box::pin(async move {
                Arc::new(
                    Etcd::connect(&url, EtcdTls::default())
                        .await
                        .expect("connect to etcd"),
                ) as Arc<dyn Store>
            })
        });
        if let Err(e) = conformance::run_all(open, conformance::HistoryAcrossReopen::Kept).await {
            panic!("conformance: {e}");
        }
    });
    drop(cluster);
}

#[test]
fn a_dead_member_is_skipped_and_no_quorum_is_answered_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = EtcdCluster::start(dir.path(), 3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt
        .block_on(Etcd::connect(&cluster.url(), EtcdTls::default()))
        .expect("connect");
    rt.block_on(store.txn(Txn::new().put("/k", "1")))
        .expect("put");
    // The member the client is talking to (the first) dies: calls move on.
    cluster.kill(0);
    let t = Instant::now();
    let r = rt
        .block_on(store.txn(Txn::new().put("/k", "2")))
        .expect("a put after the first member died");
    assert!(r.succeeded);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let v = rt.block_on(store.get("/k")).expect("get").map(|k| k.value);
    assert_eq!(v.as_deref(), Some(b"2".as_slice()));
    // A second one dies: no quorum. An error that says so, promptly, not a hang.
    cluster.kill(1);
    let t = Instant::now();
    let r = rt.block_on(store.txn(Txn::new().put("/k", "3")));
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "without quorum: {r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // Both come back: the store recovers by itself.
    cluster.start_member(0);
    cluster.start_member(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rt.block_on(store.txn(Txn::new().put("/k", "4"))) {
            Ok(r) if r.succeeded => break,
            other => assert!(Instant::now() < deadline, "no recovery: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let v = rt.block_on(store.get("/k")).expect("get").map(|k| k.value);
    assert_eq!(v.as_deref(), Some(b"4".as_slice()));
}

/// The leases leader election is built on: a key written only if absent, kept while its
/// lease is renewed, gone when the lease runs out or is revoked.
#[test]
fn leased_keys_live_and_die_with_their_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = EtcdCluster::start(dir.path(), 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let e = Etcd::connect(&cluster.url(), EtcdTls::default())
            .await
            .expect("connect");
        let a = e.lease_grant(Duration::from_secs(1)).await.expect("grant");
        let b = e.lease_grant(Duration::from_secs(5)).await.expect("grant");
        let won = e
            .put_leased("/l/leader", b"a".to_vec(), a, true)
            .await
            .expect("put");
        assert!(won.is_some_and(|r| r > 0));
        // Taken: a second campaign loses, and the key keeps the first value.
        let lost = e
            .put_leased("/l/leader", b"b".to_vec(), b, true)
            .await
            .expect("put");
        assert_eq!(lost, None);
        let kv = e.get("/l/leader").await.expect("get").expect("present");
        assert_eq!(kv.value, b"a");
        assert_eq!(Some(kv.mod_revision), won);
        // Renewed past its time to live: still there.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(e.lease_renew(a).await.expect("renew"));
        }
        assert!(e.get("/l/leader").await.expect("get").is_some());
        // Not renewed: gone, and the lease says so.
        let deadline = Instant::now() + Duration::from_secs(10);
        while e.get("/l/leader").await.expect("get").is_some() {
            assert!(
                Instant::now() < deadline,
                "the leased key outlived its lease"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!e.lease_renew(a).await.expect("renew"));
        // Now the other wins; revoking its lease deletes the key at once.
        assert!(
            e.put_leased("/l/leader", b"b".to_vec(), b, true)
                .await
                .expect("put")
                .is_some()
        );
        e.lease_revoke(b).await.expect("revoke");
        assert!(e.get("/l/leader").await.expect("get").is_none());
        // Revoking again is not an error.
        e.lease_revoke(b).await.expect("revoke twice");
    });
}
