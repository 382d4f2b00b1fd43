//! The leader's part of services' availability: read the checkpoint after taking
//! the lead, sample once a second, write the checkpoint once an hour and on a clean
//! stop (`crate::uptime` holds the records).

use super::*;

/// Once per health tick on the leader.
pub(crate) async fn tick(s: &Shared) {
    let u = &s.uptime;
    let now = now_ms();
    if !u.loaded() {
        match s.store.get(crate::uptime::KEY).await {
            Ok(kv) => u.load(kv.as_ref().map(|kv| kv.value.as_slice()), now),
            Err(e) => {
                tracing::warn!("reading the uptime checkpoint: {e}");
                return;
            }
        }
    }
    {
        let cache = s.cache();
        u.sample(&cache.workloads, &cache.allocs, now);
    }
    if u.due(now) {
        checkpoint(s).await;
    }
}

/// Writes the records now, unless the store holds them already.
pub async fn checkpoint(s: &Shared) {
    let Some(value) = s.uptime.checkpoint(now_ms()) else {
        return;
    };
    let key = crate::uptime::KEY;
    let current = match s.store.get(key).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("reading the uptime checkpoint: {e}");
            return;
        }
    };
    if current.as_ref().is_some_and(|kv| kv.value == value) {
        return;
    }
    let rev = current.map_or(0, |kv| kv.mod_revision);
    if let Err(e) = s.store.txn(Txn::new().when(key, rev).put(key, value)).await {
        tracing::warn!("writing the uptime checkpoint: {e}");
    }
}
