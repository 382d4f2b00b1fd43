//! The service catalog the leader keeps and sends its agents: rebuilt from the cache
//! (services, allocations), node verdicts and agent addresses whenever one of them
//! changes, and sent to every agent only when it differs from the last one sent.
//! Memory only: nothing is stored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use motley_core::catalog::Catalog;
use motley_core::proto::ServerMsg;
use tokio::sync::Notify;

use super::Shared;
use crate::util::lock;

/// Changes within this long of each other are sent as one catalog.
const COALESCE: Duration = Duration::from_millis(20);

/// The last catalog sent, and the signal that something it is built from changed.
#[derive(Default)]
pub struct CatalogState {
    last: Mutex<Arc<Catalog>>,
    dirty: Notify,
}

impl CatalogState {
    /// Something the catalog is built from changed (a node's verdict, an agent came
    /// or went).
    pub fn touch(&self) {
        self.dirty.notify_one();
    }

    /// The catalog as last sent.
    pub fn current(&self) -> Arc<Catalog> {
        lock(&self.last).clone()
    }
}

impl Shared {
    /// The catalog of the cluster as this server sees it now.
    pub fn build_catalog(&self) -> Catalog {
        let up = self.ready_nodes();
        let addrs = self.hub.addresses();
        let cache = self.cache();
        Catalog::build(&cache.workloads, &cache.allocs, &cache.nodes, &up, &addrs)
    }

    /// Rebuilds the catalog on every change and sends it to every agent when it differs.
    pub async fn run_catalog(self: Arc<Self>) {
        let mut rev = self.cache_rev.subscribe();
        loop {
            tokio::select! {
                r = rev.changed() => if r.is_err() { return },
                _ = self.catalog.dirty.notified() => {}
            }
            tokio::time::sleep(COALESCE).await;
            rev.borrow_and_update();
            if self.ha.leading().is_none() {
                continue;
            }
            let next = self.build_catalog();
            let changed = {
                let mut last = lock(&self.catalog.last);
                if **last == next {
                    false
                } else {
                    *last = Arc::new(next.clone());
                    true
                }
            };
            if changed {
                self.hub.broadcast(&ServerMsg::Catalog { catalog: next });
            }
        }
    }
}
