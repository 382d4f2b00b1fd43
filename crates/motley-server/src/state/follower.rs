//! The cache and its watch follower: load the store, then apply each revision whole,
//! publish the revision reached, and deliver what changed to the agents connected here
//! (after the write lock is released). The cache's records change only here; each
//! change is told to `Cache::active`, which only the controller's pass settles.

use super::*;
use motley_core::periodic::job_of_run;

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
            let _ = apply_put(&mut fresh, &kv.key, &kv.value, kv.mod_revision);
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
                // What happened, read from each change (`motley_core::events`).
                let mut news = Vec::new();
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
                                let old =
                                    apply_put(&mut cache, &key, &ev.kv.value, ev.kv.mod_revision);
                                news.extend(happened(&cache, &key, old));
                                if let Parsed::Alloc(id) = keys::parse(&key)
                                    && let Some(a) = cache.allocs.get(id)
                                {
                                    out.push((
                                        a.node.clone(),
                                        Delivery::Upsert(Box::new(a.clone())),
                                    ));
                                }
                            }
                            EventKind::Delete => match apply_delete(&mut cache, &key) {
                                Replaced::Alloc(Some(a)) => {
                                    out.push((a.node, Delivery::Remove(a.id)));
                                }
                                old => news.extend(happened(&cache, &key, old)),
                            },
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
                self.events.push_all(news);
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
                    .flatten()
                    .map(Box::new);
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

/// What a put or delete replaced, for its events.
enum Replaced {
    Alloc(Option<Box<Allocation>>),
    Node(Option<Box<Node>>),
    Workload(Option<Box<Workload>>),
    Other,
}

/// What a change of `key` (now as in `cache`, `old` before) says happened.
fn happened(cache: &Cache, key: &str, old: Replaced) -> Vec<motley_core::events::New> {
    use motley_core::events as ev;
    match (keys::parse(key), old) {
        (Parsed::Alloc(id), Replaced::Alloc(old)) => {
            ev::alloc_change(old.as_deref(), cache.allocs.get(id))
        }
        (Parsed::Node(n), Replaced::Node(old)) => {
            ev::node_change(old.as_deref(), cache.nodes.get(n))
        }
        (Parsed::Workload(r), Replaced::Workload(old)) => {
            ev::workload_change(old.as_deref(), cache.workloads.get(&r))
        }
        _ => Vec::new(),
    }
}

/// A [`Cache::node_set`] never used before in this process (0 is an empty cache's).
fn new_node_set() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn apply_put(cache: &mut Cache, key: &str, value: &[u8], rev: u64) -> Replaced {
    let active = cache.active.get_mut().unwrap_or_else(|e| e.into_inner());
    let decoded = match keys::parse(key) {
        Parsed::Workload(r) => serde_json::from_slice::<Workload>(value).map(|w| {
            active.touch(&r);
            if let Some(job) = job_of_run(&w) {
                active.touch(&job);
            }
            Replaced::Workload(cache.workloads.insert(r, w).map(Box::new))
        }),
        Parsed::Node(n) => serde_json::from_slice::<Node>(value).map(|node| {
            let old = cache.nodes.insert(n.to_string(), node);
            if old.is_none() {
                cache.node_set = new_node_set();
            }
            Replaced::Node(old.map(Box::new))
        }),
        Parsed::Alloc(id) => serde_json::from_slice::<Allocation>(value).map(|mut a| {
            share_task(&mut cache.tasks, &mut a);
            active.put_alloc(&a);
            if let Some(job) = cache.workloads.get(&a.workload).and_then(job_of_run) {
                active.touch(&job);
            }
            let old = cache.allocs.insert(id.to_string(), a);
            if let Some(o) = &old
                && cache
                    .allocs
                    .get(id)
                    .is_none_or(|a| a.workload != o.workload)
            {
                active.remove_alloc(o);
            }
            Replaced::Alloc(old.map(Box::new))
        }),
        Parsed::Token(h) => serde_json::from_slice::<TokenRecord>(value).map(|t| {
            cache.tokens.insert(h.to_string(), t);
            Replaced::Other
        }),
        Parsed::Other => Ok(Replaced::Other),
    };
    cache.mod_revs.insert(key.to_string(), rev);
    decoded.unwrap_or_else(|_| {
        tracing::error!("cannot decode stored record {key}; ignoring it");
        Replaced::Other
    })
}

/// Gives `a` the copy of its task that its workload's allocations share, when equal;
/// an allocation with another task (a rolling update's new generation) becomes the
/// workload's copy. (A reload decodes allocations before their workloads: key order.)
fn share_task(tasks: &mut HashMap<WorkloadRef, Arc<motley_core::model::Task>>, a: &mut Allocation) {
    match tasks.get(&a.workload) {
        Some(shared) if **shared == *a.task => a.task = shared.clone(),
        _ => {
            tasks.insert(a.workload.clone(), a.task.clone());
        }
    }
}

/// Removes a key; returns what it held (an allocation's agent must be told).
fn apply_delete(cache: &mut Cache, key: &str) -> Replaced {
    cache.mod_revs.remove(key);
    let active = cache.active.get_mut().unwrap_or_else(|e| e.into_inner());
    match keys::parse(key) {
        Parsed::Workload(r) => {
            active.touch(&r);
            cache.tasks.remove(&r);
            let old = cache.workloads.remove(&r);
            if let Some(job) = old.as_ref().and_then(job_of_run) {
                active.touch(&job);
            }
            Replaced::Workload(old.map(Box::new))
        }
        Parsed::Node(n) => {
            let old = cache.nodes.remove(n);
            if old.is_some() {
                cache.node_set = new_node_set();
            }
            Replaced::Node(old.map(Box::new))
        }
        Parsed::Alloc(id) => {
            let old = cache.allocs.remove(id);
            if let Some(a) = &old {
                active.remove_alloc(a);
                if let Some(job) = cache.workloads.get(&a.workload).and_then(job_of_run) {
                    active.touch(&job);
                }
                // The shared task of a deleted workload goes with its last allocation
                // (one deleted here; those left keep their copies).
                if !cache.workloads.contains_key(&a.workload) {
                    cache.tasks.remove(&a.workload);
                }
            }
            Replaced::Alloc(old.map(Box::new))
        }
        Parsed::Token(h) => {
            cache.tokens.remove(h);
            Replaced::Other
        }
        Parsed::Other => Replaced::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(id: &str, workload: &str, command: &str) -> Vec<u8> {
        let json = serde_json::json!({
            "id": id, "workload": workload, "workload_uid": "u1", "generation": 1,
            "index": 0, "node": "n1", "task": { "command": [command] },
            "restart": { "mode": "always", "max_restarts": null, "backoff": {} },
            "desired": "run", "state": "running", "created_at": 1, "updated_at": 1,
        });
        match serde_json::to_vec(&json) {
            Ok(v) => v,
            Err(e) => panic!("encode: {e}"),
        }
    }

    fn task_of(cache: &Cache, id: &str) -> Arc<motley_core::model::Task> {
        match cache.allocs.get(id) {
            Some(a) => a.task.clone(),
            None => panic!("allocation {id} is not in the cache"),
        }
    }

    /// Replicas decoded with the same task hold one copy; another task (a new
    /// generation) is a copy of its own that later equal ones share; another workload's
    /// equal task is not shared with it; the copy goes with a deleted workload's last
    /// allocation.
    #[test]
    fn allocations_of_a_workload_share_one_copy_of_an_equal_task() {
        let mut cache = Cache::default();
        for (i, (id, w, cmd)) in [
            ("a1", "service/web", "serve"),
            ("a2", "service/web", "serve"),
            ("a3", "service/web", "serve-v2"),
            ("a4", "service/web", "serve-v2"),
            ("b1", "service/api", "serve"),
        ]
        .into_iter()
        .enumerate()
        {
            let _ = apply_put(
                &mut cache,
                &keys::alloc(id),
                &alloc(id, w, cmd),
                i as u64 + 1,
            );
        }
        let (a1, a2, a3, a4, b1) = (
            task_of(&cache, "a1"),
            task_of(&cache, "a2"),
            task_of(&cache, "a3"),
            task_of(&cache, "a4"),
            task_of(&cache, "b1"),
        );
        assert!(
            Arc::ptr_eq(&a1, &a2),
            "equal tasks of one workload are one copy"
        );
        assert!(!Arc::ptr_eq(&a1, &a3) && a3.command == ["serve-v2"]);
        assert!(Arc::ptr_eq(&a3, &a4));
        assert!(
            !Arc::ptr_eq(&a1, &b1) && *a1 == *b1,
            "another workload's task is its own"
        );
        assert_eq!(a1.command, ["serve"]);
        // a1 replaced by the new generation's task shares the workload's current copy.
        let _ = apply_put(
            &mut cache,
            &keys::alloc("a1"),
            &alloc("a1", "service/web", "serve-v2"),
            9,
        );
        assert!(Arc::ptr_eq(&task_of(&cache, "a1"), &a4));
        // Workload service/api is not in the cache: its last allocation deleted, its copy goes.
        let api = match cache.allocs.get("b1") {
            Some(b) => b.workload.clone(),
            None => panic!("b1 is not in the cache"),
        };
        assert!(cache.tasks.contains_key(&api));
        let _ = apply_delete(&mut cache, &keys::alloc("b1"));
        assert!(!cache.tasks.contains_key(&api));
    }
}
