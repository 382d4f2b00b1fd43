//! Read, decide, compare-and-swap, and again on conflict: the one retry loop every
//! optimistic writer uses.

use crate::{Store, StoreError, Txn};

/// How many times [`update`] tries before it gives up.
pub const MAX_ATTEMPTS: usize = 10;

/// What one attempt decided.
pub enum Attempt<T> {
    /// Commit this transaction (guarded by the revisions the attempt read); on success
    /// the update ends with `T`.
    Write(Txn, T),
    /// Nothing to write: the update ends with `T` now.
    Done(T),
}

/// How an update ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Updated<T> {
    /// The transaction committed, at this revision.
    Committed(T, u64),
    /// The attempt found nothing to write.
    Unchanged(T),
    /// Every attempt's transaction lost to a concurrent writer.
    Conflicted,
}

/// Runs `attempt` until its transaction commits, it decides there is nothing to write,
/// or [`MAX_ATTEMPTS`] transactions have failed their compares. Each attempt must read
/// afresh what it compares on (a failed compare means what it read has changed);
/// `on_conflict` is called after each failed transaction (metrics, logs).
pub async fn update<T, E, F, Fut>(
    store: &dyn Store,
    mut attempt: F,
    mut on_conflict: impl FnMut(),
) -> Result<Updated<T>, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Attempt<T>, E>>,
    E: From<StoreError>,
{
    for _ in 0..MAX_ATTEMPTS {
        match attempt().await? {
            Attempt::Done(v) => return Ok(Updated::Unchanged(v)),
            Attempt::Write(txn, v) => {
                let r = store.txn(txn).await?;
                if r.succeeded {
                    return Ok(Updated::Committed(v, r.revision));
                }
                on_conflict();
            }
        }
    }
    Ok(Updated::Conflicted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::Embedded;

    #[tokio::test]
    async fn retries_until_the_compare_holds_and_stops_when_nothing_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Embedded::open(&dir.path().join("s.redb")).expect("open");
        store.txn(Txn::new().put("/k", "0")).await.expect("put");
        // An increment that races with another writer twice: the first two attempts
        // compare on a revision the other writer has moved.
        let races = std::sync::atomic::AtomicU32::new(2);
        let mut conflicts = 0;
        let (store, races) = (&store, &races);
        let r = update(
            store,
            || async move {
                let kv = store.get("/k").await?.expect("present");
                let n: u32 = String::from_utf8_lossy(&kv.value).parse().expect("number");
                if races.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                    races.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    store
                        .txn(Txn::new().put("/k", (n + 10).to_string()))
                        .await?;
                }
                Ok::<_, StoreError>(Attempt::Write(
                    Txn::new()
                        .when("/k", kv.mod_revision)
                        .put("/k", (n + 1).to_string()),
                    n + 1,
                ))
            },
            || conflicts += 1,
        )
        .await
        .expect("update");
        assert!(matches!(r, Updated::Committed(21, _)), "{r:?}");
        assert_eq!(conflicts, 2);
        let r = update(
            store,
            || async { Ok::<_, StoreError>(Attempt::Done(7)) },
            || {},
        )
        .await
        .expect("update");
        assert_eq!(r, Updated::Unchanged(7));
        // Always losing: Conflicted after MAX_ATTEMPTS transactions.
        let r = update(
            store,
            || async move {
                store.txn(Txn::new().put("/k", "x")).await?;
                Ok::<_, StoreError>(Attempt::Write(Txn::new().when("/k", 1).put("/k", "y"), ()))
            },
            || {},
        )
        .await
        .expect("update");
        assert_eq!(r, Updated::Conflicted);
    }
}
