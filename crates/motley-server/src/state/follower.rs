//! The cache and its watch follower: load the store, then apply each revision whole,
//! publish the revision reached, and deliver what changed to the agents connected here
//! (after the write lock is released). The cache changes only here.

use super::*;

impl Shared {
    /// Loads the whole store into the cache and starts following changes.
    pub async fn start_cache(self: &Arc<Self>) -> Result<(), StoreError> {
        let rev = self.reload().await?;
        let this = self.clone();
        motley_rt::spawn(async move { this.follow(rev).await });
        Ok(())
    }

    async fn reload(&self) -> Result<u64, StoreError> {
        let range = self.store.range(keys::PREFIX).await?;
        let mut fresh = Cache::default();
        for kv in &range.kvs {
            apply_put(&mut fresh, &kv.key, &kv.value, kv.mod_revision);
        }
        fresh.revision = range.revision;
        {
            let mut cache = self.cache_mut();
            *cache = fresh;
            // Agents may have missed changes: give each its full set again.
            let nodes = self.hub.connected().into_iter().map(|n| (n.clone(), n));
            self.hub
                .send_each(nodes.collect(), |n| self.sync_msg(&cache, &n));
        }
        self.cache_rev.send_replace(range.revision);
        self.plans.kick.notify_one();
        Ok(range.revision)
    }

    async fn follow(self: Arc<Self>, mut rev: u64) {
        loop {
            let mut w = match self.store.watch(keys::PREFIX, rev + 1).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("store watch: {e}; reloading");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Ok(r) = self.reload().await {
                        rev = r;
                    }
                    continue;
                }
            };
            while let Some(first) = w.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = w.try_recv() {
                    batch.push(more);
                }
                let mut failed = None;
                // What the agents connected here must hear, in order.
                let mut out: Vec<(String, Delivery)> = Vec::new();
                {
                    let mut cache = self.cache_mut();
                    // Whole revisions only (see `motley_store::Watch`): the cache never
                    // claims a revision it has seen half of.
                    let mut events = Vec::new();
                    for item in batch {
                        match item {
                            Ok(group) => events.extend(group),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    for ev in events {
                        rev = rev.max(ev.revision());
                        let key = ev.kv.key.clone();
                        match ev.kind {
                            EventKind::Put => {
                                apply_put(&mut cache, &key, &ev.kv.value, ev.kv.mod_revision);
                                if let Parsed::Alloc(id) = keys::parse(&key)
                                    && let Some(a) = cache.allocs.get(id)
                                {
                                    out.push((
                                        a.node.clone(),
                                        Delivery::Upsert(Box::new(a.clone())),
                                    ));
                                }
                            }
                            EventKind::Delete => {
                                if let Some((node, id)) = apply_delete(&mut cache, &key) {
                                    out.push((node, Delivery::Remove(id)));
                                }
                            }
                        }
                    }
                    cache.revision = rev;
                }
                // Delivery, outside the write lock: readers (the API, the controller) do
                // not wait for secrets to be decrypted. The cache cannot move meanwhile
                // (this task is its only writer); an agent that connects in between gets
                // its full set and then these again, which it applies idempotently.
                if !out.is_empty() {
                    self.deliver(out);
                }
                self.cache_rev.send_replace(rev);
                self.plans.kick.notify_one();
                if let Some(e) = failed {
                    tracing::warn!("store watch failed: {e}; reloading");
                    break;
                }
            }
            match self.reload().await {
                Ok(r) => rev = r,
                Err(e) => {
                    tracing::warn!("reloading the cache: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Sends what changed to the agents connected here; a new allocation carries its
    /// secrets (the agent keeps them for restarts in place), decrypted only for a node
    /// connected to this server.
    fn deliver(&self, out: Vec<(String, Delivery)>) {
        let cache = self.cache();
        let ring = read(&self.trust.keyring);
        self.hub.send_each(out, |d| match d {
            Delivery::Upsert(a) => {
                let secrets = (a.state == AllocState::Pending)
                    .then(|| crate::secrets::deliver(&ring, &cache.workloads, &a))
                    .flatten();
                ServerMsg::Upsert { alloc: a, secrets }
            }
            Delivery::Remove(id) => ServerMsg::Remove { id },
        });
    }

    /// Waits until the cache reflects at least `rev`.
    pub async fn wait_for_rev(&self, rev: u64) {
        let mut rx = self.cache_rev.subscribe();
        let _ = rx.wait_for(|r| *r >= rev).await;
    }
}

/// A change an agent must hear of.
enum Delivery {
    /// An allocation of its node was created or changed.
    Upsert(Box<Allocation>),
    /// An allocation of its node is gone.
    Remove(String),
}

fn apply_put(cache: &mut Cache, key: &str, value: &[u8], rev: u64) {
    let ok = match keys::parse(key) {
        Parsed::Workload(r) => serde_json::from_slice::<Workload>(value)
            .map(|w| {
                cache.workloads.insert(r, w);
            })
            .is_ok(),
        Parsed::Node(n) => serde_json::from_slice::<Node>(value)
            .map(|node| {
                cache.nodes.insert(n.to_string(), node);
            })
            .is_ok(),
        Parsed::Alloc(id) => serde_json::from_slice::<Allocation>(value)
            .map(|a| {
                cache.allocs.insert(id.to_string(), a);
            })
            .is_ok(),
        Parsed::Token(h) => serde_json::from_slice::<TokenRecord>(value)
            .map(|t| {
                cache.tokens.insert(h.to_string(), t);
            })
            .is_ok(),
        Parsed::Other => true,
    };
    if !ok {
        tracing::error!("cannot decode stored record {key}; ignoring it");
    }
    cache.mod_revs.insert(key.to_string(), rev);
}

/// Removes a key; for an allocation returns (node, id) so its agent can be told.
fn apply_delete(cache: &mut Cache, key: &str) -> Option<(String, String)> {
    cache.mod_revs.remove(key);
    match keys::parse(key) {
        Parsed::Workload(r) => {
            cache.workloads.remove(&r);
            None
        }
        Parsed::Node(n) => {
            cache.nodes.remove(n);
            None
        }
        Parsed::Alloc(id) => cache.allocs.remove(id).map(|a| (a.node, a.id)),
        Parsed::Token(h) => {
            cache.tokens.remove(h);
            None
        }
        Parsed::Other => None,
    }
}
