//! Scheduled snapshots: every interval, if the store's revision moved since the last
//! snapshot, write `snapshot-<revision>.snap` (atomically: a temporary file, then a
//! rename; mode 0600) and delete the oldest beyond the retention.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use motley_store::Store;
use motley_store::snapshot::Snapshot;

use crate::SnapshotSchedule;
use crate::util::now_ms;

/// The snapshots in `dir`, oldest first, with their revisions.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rev = name
                .strip_prefix("snapshot-")?
                .strip_suffix(".snap")?
                .parse()
                .ok()?;
            Some((rev, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Takes one snapshot into `dir` unless the newest there is already at the store's
/// revision; then keeps the newest `retain`. Returns the file written, if any.
pub async fn take_into(
    store: &dyn Store,
    dir: &Path,
    retain: usize,
) -> anyhow::Result<Option<PathBuf>> {
    use anyhow::Context;
    let rev = store.revision().await?;
    if list(dir).last().is_some_and(|(r, _)| *r >= rev) {
        return Ok(None);
    }
    let snap = Snapshot::take(store, crate::keys::PREFIX, now_ms()).await?;
    let path = dir.join(format!("snapshot-{:012}.snap", snap.revision));
    // Atomically, mode 0600: a snapshot holds the cluster CA's private key.
    motley_net::write_private(&path, &snap.encode(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    let all = list(dir);
    let extra = all.len().saturating_sub(retain.max(1));
    for (_, old) in all.into_iter().take(extra) {
        let _ = std::fs::remove_file(old);
    }
    Ok(Some(path))
}

/// The schedule's loop.
pub async fn run(store: Arc<dyn Store>, s: SnapshotSchedule) {
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match take_into(&*store, &s.dir, s.retain).await {
            Ok(Some(p)) => tracing::info!("snapshot written: {}", p.display()),
            Ok(None) => {}
            Err(e) => tracing::warn!("scheduled snapshot: {e:#}"),
        }
    }
}
