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
    if let Err(e) = conformance::run_all(open).await {
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
