//! The conformance suite every [`Store`] backend must pass.
//!
//! Call [`run_all`] from a test with a function that opens the backend under
//! test (fresh the first time, the same data when called again, to check
//! reopening). The embedded backend runs it in `tests/conformance.rs`; the
//! etcd backend will run the very same functions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::{Event, EventKind, Store, StoreError, Txn, Watch};

/// Opens the backend under test; called again to reopen the same data.
pub type Opener =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>> + Send + Sync>;

/// A failed conformance check.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// An expectation did not hold.
    #[error("{0}")]
    Check(String),
    /// The store returned an error.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(Failure::Check(format!($($fmt)+)));
        }
    };
}

/// The next revision's events (one transaction's changes arrive together).
async fn next_revision(w: &mut Watch) -> Result<Vec<Event>, Failure> {
    match tokio::time::timeout(Duration::from_secs(5), w.recv()).await {
        Ok(Some(Ok(e))) if e.is_empty() => Err(Failure::Check("an empty watch item".into())),
        Ok(Some(Ok(e))) => Ok(e),
        Ok(Some(Err(e))) => Err(Failure::Store(e)),
        Ok(None) => Err(Failure::Check("watch ended".into())),
        Err(_) => Err(Failure::Check("no watch event within 5s".into())),
    }
}

/// The next revision, which must hold exactly one event.
async fn next(w: &mut Watch) -> Result<Event, Failure> {
    let mut g = next_revision(w).await?;
    check!(
        g.len() == 1,
        "one event expected in this revision, got {g:?}"
    );
    g.pop()
        .ok_or_else(|| Failure::Check("an empty watch item".into()))
}

/// Revisions increase by one per writing transaction; keys carry create/mod revisions and versions.
pub async fn revisions(s: &dyn Store) -> Result<(), Failure> {
    let r0 = s.revision().await?;
    let t1 = s.txn(Txn::new().put("/c/rev/a", "1")).await?;
    check!(
        t1.succeeded && t1.revision == r0 + 1,
        "first put: {t1:?} after {r0}"
    );
    let t2 = s
        .txn(Txn::new().put("/c/rev/a", "2").put("/c/rev/b", "x"))
        .await?;
    check!(
        t2.revision == r0 + 2,
        "two puts in one txn share one revision: {t2:?}"
    );
    let a = s
        .get("/c/rev/a")
        .await?
        .ok_or(Failure::Check("a missing".into()))?;
    check!(
        a.value == b"2"
            && a.create_revision == r0 + 1
            && a.mod_revision == r0 + 2
            && a.version == 2,
        "a = {a:?}"
    );
    let none = s.txn(Txn::new().delete("/c/rev/never")).await?;
    check!(
        none.succeeded && none.revision == r0 + 2,
        "deleting a missing key changes nothing: {none:?}"
    );
    check!(s.get("/c/rev/never").await?.is_none(), "absent key");
    let range = s.range("/c/rev/").await?;
    let keys: Vec<&str> = range.kvs.iter().map(|k| k.key.as_str()).collect();
    check!(
        keys == ["/c/rev/a", "/c/rev/b"] && range.revision == r0 + 2,
        "range {keys:?} at {}",
        range.revision
    );
    check!(
        s.range("/c/rev/a").await?.kvs.len() == 1,
        "prefix is a prefix"
    );
    Ok(())
}

/// Compare-and-set: a stale mod revision fails and writes nothing; 0 means absent.
pub async fn compare_and_set(s: &dyn Store) -> Result<(), Failure> {
    let created = s
        .txn(Txn::new().when("/c/cas/k", 0).put("/c/cas/k", "v1"))
        .await?;
    check!(created.succeeded, "create-if-absent on a new key");
    let again = s
        .txn(Txn::new().when("/c/cas/k", 0).put("/c/cas/k", "v2"))
        .await?;
    check!(
        !again.succeeded && again.revision == created.revision,
        "create-if-absent on an existing key must fail: {again:?}"
    );
    let ok = s
        .txn(
            Txn::new()
                .when("/c/cas/k", created.revision)
                .put("/c/cas/k", "v3"),
        )
        .await?;
    check!(ok.succeeded, "CAS with the current mod revision");
    let stale = s
        .txn(
            Txn::new()
                .when("/c/cas/k", created.revision)
                .put("/c/cas/k", "v4")
                .put("/c/cas/other", "x"),
        )
        .await?;
    check!(!stale.succeeded, "CAS with a stale mod revision must fail");
    check!(
        s.get("/c/cas/other").await?.is_none(),
        "a failed txn writes none of its ops"
    );
    let v = s.get("/c/cas/k").await?.map(|k| k.value);
    check!(
        v.as_deref() == Some(b"v3".as_slice()),
        "value after CAS: {v:?}"
    );
    let del = s
        .txn(Txn::new().when("/c/cas/k", ok.revision).delete("/c/cas/k"))
        .await?;
    check!(
        del.succeeded && s.get("/c/cas/k").await?.is_none(),
        "CAS delete"
    );
    Ok(())
}

/// A watch delivers every change under its prefix, in order, from a given revision, then live.
pub async fn watch_in_order(s: &dyn Store) -> Result<(), Failure> {
    let start = s.revision().await? + 1;
    for i in 0..20 {
        s.txn(
            Txn::new()
                .put(format!("/c/w/{i:02}"), format!("{i}"))
                .put("/c/elsewhere", "x"),
        )
        .await?;
    }
    s.txn(Txn::new().delete("/c/w/03")).await?;
    let mut w = s.watch("/c/w/", start).await?;
    let mut last = 0;
    for i in 0..20 {
        let e = next(&mut w).await?;
        check!(
            e.kind == EventKind::Put && e.kv.key == format!("/c/w/{i:02}"),
            "event {i}: {e:?}"
        );
        check!(e.revision() > last, "revisions increase");
        last = e.revision();
    }
    let d = next(&mut w).await?;
    check!(
        d.kind == EventKind::Delete && d.kv.key == "/c/w/03",
        "delete event: {d:?}"
    );
    // Live events after the backlog.
    let t = s.txn(Txn::new().put("/c/w/live", "1")).await?;
    let e = next(&mut w).await?;
    check!(
        e.kv.key == "/c/w/live" && e.revision() == t.revision,
        "live event: {e:?}"
    );
    // A transaction's changes arrive together, in one item, whatever else is written.
    let t = s
        .txn(
            Txn::new()
                .put("/c/w/x1", "1")
                .put("/c/elsewhere", "y")
                .put("/c/w/x2", "2")
                .delete("/c/w/live"),
        )
        .await?;
    let g = next_revision(&mut w).await?;
    let keys: Vec<&str> = g.iter().map(|e| e.kv.key.as_str()).collect();
    check!(
        keys == ["/c/w/x1", "/c/w/x2", "/c/w/live"] && g.iter().all(|e| e.revision() == t.revision),
        "one transaction, one watch item: {g:?}"
    );
    // A watch from 0 sees only the future.
    let mut fut = s.watch("/c/w/", 0).await?;
    s.txn(Txn::new().put("/c/w/future", "1")).await?;
    let e = next(&mut fut).await?;
    check!(e.kv.key == "/c/w/future", "future-only watch got {e:?}");
    Ok(())
}

/// Compaction forgets history: watching from before it fails clearly, values remain.
pub async fn compaction(s: &dyn Store) -> Result<(), Failure> {
    let t = s.txn(Txn::new().put("/c/compact/a", "1")).await?;
    s.txn(Txn::new().put("/c/compact/a", "2")).await?;
    s.compact(t.revision + 1).await?;
    match s.watch("/c/compact/", t.revision).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => return Err(e.into()),
        Ok(_) => {
            return Err(Failure::Check(
                "watch from a compacted revision must fail".into(),
            ));
        }
    }
    let v = s.get("/c/compact/a").await?.map(|k| k.value);
    check!(
        v.as_deref() == Some(b"2".as_slice()),
        "compaction keeps current values"
    );
    Ok(())
}

/// Concurrent CAS increments: exactly one writer wins each round, none is lost.
pub async fn concurrent_cas(s: Arc<dyn Store>) -> Result<(), Failure> {
    s.txn(Txn::new().put("/c/counter", "0")).await?;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 25 {
                let cur = s
                    .get("/c/counter")
                    .await?
                    .ok_or(StoreError::Backend("counter vanished".into()))?;
                let n: u64 = String::from_utf8_lossy(&cur.value).parse().unwrap_or(0);
                let r = s
                    .txn(
                        Txn::new()
                            .when("/c/counter", cur.mod_revision)
                            .put("/c/counter", (n + 1).to_string()),
                    )
                    .await?;
                if r.succeeded {
                    done += 1;
                }
            }
            Ok::<(), StoreError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Failure::Check(e.to_string()))??;
    }
    let v = s
        .get("/c/counter")
        .await?
        .map(|k| String::from_utf8_lossy(&k.value).to_string());
    check!(v.as_deref() == Some("100"), "100 CAS increments, got {v:?}");
    Ok(())
}

/// What a reopened backend knows of the revisions before it was reopened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryAcrossReopen {
    /// A watch from a revision before the reopen replays it (etcd, the simulated store).
    Kept,
    /// A watch from before the reopen fails as compacted; the history starts at the
    /// revision found (the embedded store keeps its history in memory).
    Forgotten,
}

/// Runs every check, including a reopen: data and revisions survive, and the watch
/// history survives or is forgotten as `history` says.
pub async fn run_all(open: Opener, history: HistoryAcrossReopen) -> Result<(), Failure> {
    let s = open().await;
    revisions(&*s).await?;
    compare_and_set(&*s).await?;
    watch_in_order(&*s).await?;
    compaction(&*s).await?;
    concurrent_cas(s.clone()).await?;
    let rev = s.revision().await?;
    let before = s.range("/c/").await?;
    drop(s);
    let s = open().await;
    check!(s.revision().await? == rev, "revision survives reopen");
    let after = s.range("/c/").await?;
    check!(after == before, "every key survives reopen");
    match history {
        HistoryAcrossReopen::Kept => {
            // A watch from a revision before the reopen replays it.
            let mut w = s.watch("/c/counter", rev).await?;
            let e = next(&mut w).await?;
            check!(
                e.revision() == rev && e.kv.key == "/c/counter",
                "watch across reopen: {e:?}"
            );
        }
        HistoryAcrossReopen::Forgotten => match s.watch("/c/counter", rev).await {
            Err(StoreError::Compacted { requested, oldest }) => {
                check!(
                    requested == rev && oldest == rev + 1,
                    "history forgotten up to the reopen: {requested} {oldest}"
                );
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {
                return Err(Failure::Check(
                    "a watch from before the reopen must fail as compacted".into(),
                ));
            }
        },
    }
    // Either way a watch from the next revision sees what comes.
    let mut w = s.watch("/c/", rev + 1).await?;
    let t = s.txn(Txn::new().put("/c/after", "1")).await?;
    check!(t.revision == rev + 1, "revisions continue after reopen");
    let e = next(&mut w).await?;
    check!(
        e.revision() == rev + 1 && e.kv.key == "/c/after",
        "watch from the reopen: {e:?}"
    );
    Ok(())
}
