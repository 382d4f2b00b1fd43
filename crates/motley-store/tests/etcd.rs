//! The etcd backend against real etcd (Debian's `etcd-server`) on 127.0.0.1: the
//! conformance suite, failover between members, and no quorum answered cleanly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use motley_store::conformance::{self, Opener};
use motley_store::etcd::testing::EtcdCluster;
use motley_store::etcd::{Etcd, EtcdTls};
use motley_store::{Store, StoreError, Txn};

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
        if let Err(e) = conformance::run_all(open).await {
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
