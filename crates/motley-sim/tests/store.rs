//! The simulated store passes the same conformance suite as the embedded store and etcd.

use std::sync::Arc;

use motley_sim::rng::Rng;
use motley_sim::store::SimStore;
use motley_store::Store;
use motley_store::conformance::{self, Opener};

#[tokio::test(start_paused = true)]
async fn the_simulated_store_passes_the_conformance_suite() {
    let store = SimStore::new(Rng::new(7));
    // Reopening finds the same store, as a restarted server finds etcd.
    let open: Opener = Box::new(move || {
        let s = store.clone();
        Box::pin(async move { Arc::new(s) as Arc<dyn Store> })
    });
    if let Err(e) = conformance::run_all(open, conformance::HistoryAcrossReopen::Kept).await {
        panic!("conformance: {e}");
    }
}

#[tokio::test(start_paused = true)]
async fn late_watch_events_still_arrive_whole_and_in_order() {
    use motley_store::Txn;
    let store = SimStore::new(Rng::new(9));
    store.faults().watch_lag = std::time::Duration::from_millis(300);
    let mut w = store.watch("/k/", 1).await.expect("watch");
    for i in 0..20u32 {
        store
            .txn(
                Txn::new()
                    .put(format!("/k/{i}/a"), "1")
                    .put(format!("/k/{i}/b"), "2"),
            )
            .await
            .expect("txn");
    }
    let mut last = 0;
    for _ in 0..20 {
        let g = w.recv().await.expect("open").expect("no error");
        assert_eq!(g.len(), 2, "a transaction arrives whole: {g:?}");
        assert!(g[0].revision() > last && g[0].revision() == g[1].revision());
        last = g[0].revision();
    }
}
