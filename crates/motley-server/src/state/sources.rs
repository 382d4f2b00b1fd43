//! Git sources' status on the leader (memory only); the sync loop that fills it is
//! [`crate::sources`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use motley_core::api::SourceView;
use motley_core::model::WorkloadRef;
use tokio::sync::Notify;

use super::lock;

/// A commit waiting at its health gate.
#[derive(Debug, Clone)]
pub(crate) struct Gating {
    /// The commit applied.
    pub commit: String,
    /// The workloads it created or changed.
    pub changed: Vec<WorkloadRef>,
    /// When it was applied (ms).
    pub since: u64,
    /// How long the gate waits (ms).
    pub timeout: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// What `get sources` shows.
    pub view: SourceView,
    /// When it is next polled (ms).
    pub due: u64,
    /// A webhook asked for a sync.
    pub asked: bool,
    /// The applied commit's gate, while it waits.
    pub gate: Option<Gating>,
    /// The spec it last synced with.
    pub synced: Option<motley_core::model::SourceSpec>,
    /// A commit found to need nothing, and the fingerprint of the objects then.
    pub checked: Option<(String, u64)>,
}

/// The leader's sources: their status (memory), the loop's wake-up, and the lock
/// that keeps syncs one at a time.
#[derive(Default)]
pub struct Sources {
    /// Where the bare repositories are (`<data-dir>/server/sources`).
    pub dir: OnceLock<PathBuf>,
    pub(crate) entries: Mutex<BTreeMap<String, Entry>>,
    /// Wakes the loop (a source applied, a webhook).
    pub wake: Notify,
    pub(crate) syncing: tokio::sync::Mutex<()>,
}

impl Sources {
    /// Every source's view, by name.
    pub fn views(&self) -> Vec<SourceView> {
        lock(&self.entries)
            .values()
            .map(|e| e.view.clone())
            .collect()
    }

    /// Asks for a sync of `name` at the next turn of the loop (a webhook). False when
    /// there is no such source.
    pub fn ask(&self, name: &str) -> bool {
        let found = lock(&self.entries)
            .get_mut(name)
            .map(|e| e.asked = true)
            .is_some();
        if found {
            self.wake.notify_one();
        }
        found
    }
}
