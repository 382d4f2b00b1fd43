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

/// The checker's count of periodic runs: a run created, deleted and created again for
/// the same due time counts twice (a double run); a run by hand, an update of a run
/// and another due time do not add to it.
#[tokio::test(start_paused = true)]
async fn the_store_counts_each_creation_of_a_run_by_its_due_time() {
    use motley_core::model::{RunOf, Spec, Workload};
    use motley_store::Txn;
    let store = SimStore::new(Rng::new(11));
    let docs = motley_core::manifest::parse_set(&[motley_core::manifest::Source {
        name: "j.yaml",
        text: "kind: Job\nname: tick-60\ntask:\n  command: [x]\n",
    }])
    .expect("valid");
    let run = |due: u64, manual: bool| {
        let mut w = Workload::created(docs[0].spec.clone(), "u".into(), 0);
        w.run_of = Some(RunOf {
            job: "tick".into(),
            due,
            manual,
        });
        assert!(matches!(w.spec, Spec::Job(_)));
        serde_json::to_vec(&w).expect("json")
    };
    let put = |key: &str, value: Vec<u8>| Txn::new().put(key, value);
    store
        .txn(put("/w/a", run(60_000, false)))
        .await
        .expect("create");
    store
        .txn(put("/w/a", run(60_000, false)))
        .await
        .expect("update");
    store
        .txn(put("/w/m", run(60_000, true)))
        .await
        .expect("by hand");
    store
        .txn(put("/w/b", run(120_000, false)))
        .await
        .expect("another");
    let counts = store.runs_started();
    assert_eq!(
        counts.get(&("job/tick".to_string(), 60_000)),
        Some(&1),
        "{counts:?}"
    );
    store.txn(Txn::new().delete("/w/a")).await.expect("delete");
    store
        .txn(put("/w/a", run(60_000, false)))
        .await
        .expect("again");
    let counts = store.runs_started();
    assert_eq!(
        counts.get(&("job/tick".to_string(), 60_000)),
        Some(&2),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&("job/tick".to_string(), 120_000)),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(counts.len(), 2, "{counts:?}");
}
