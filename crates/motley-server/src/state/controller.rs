//! The controller: reconcile on every change, schedule, and commit each plan in write
//! groups (stops and losses first, a workload's creates only with them).

use super::*;

impl Shared {
    /// The controller: reconcile on every change, commit plans, repeat.
    pub async fn run_controller(self: Arc<Self>) {
        let mut wait_rev = 0;
        let mut wake_at: Option<u64> = None;
        let mut term_rx = self.ha.term.subscribe();
        loop {
            // Only the leader plans; a server that does not lead waits to.
            let current = *term_rx.borrow_and_update();
            let term = match current {
                Some(t) => t,
                None => {
                    let _ = term_rx.changed().await;
                    continue;
                }
            };
            self.wait_for_rev(wait_rev).await;
            let sleep = match wake_at {
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms()).max(1)),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = term_rx.changed() => continue,
            }
            let started = Instant::now();
            let (plan, revs) = {
                let cache = self.cache();
                let plan = self.plan_pass(&cache, &cache.workloads, now_ms(), &mut RandomIds);
                // The revisions this plan was made from, for its compares.
                let mut revs = HashMap::new();
                for a in &plan.create {
                    let k = keys::workload(&a.workload);
                    revs.insert(k.clone(), cache.rev(&k));
                }
                for (name, _) in &plan.bind {
                    let k = keys::workload(&WorkloadRef {
                        kind: motley_core::model::Kind::Volume,
                        name: name.clone(),
                    });
                    revs.insert(k.clone(), cache.rev(&k));
                }
                for id in plan
                    .stop
                    .iter()
                    .chain(plan.lost.iter())
                    .map(|(id, _)| id)
                    .chain(plan.delete.iter())
                {
                    let k = keys::alloc(id);
                    revs.insert(k.clone(), cache.rev(&k));
                }
                (plan, revs)
            };
            self.metrics
                .reconcile_seconds
                .observe(started.elapsed().as_secs_f64());
            wake_at = plan.wake_at;
            *lock(&self.blocked) = plan.blocked.clone();
            *lock(&self.queue) = plan.queue.clone();
            if plan.is_empty() {
                continue;
            }
            match self.commit(plan, &revs, term.fence).await {
                // Nothing committed (every compare lost): plan again only once the cache
                // has caught up with the store, instead of spinning on a stale view.
                Ok(0) => wait_rev = self.store.revision().await.unwrap_or(wait_rev),
                Ok(rev) => wait_rev = rev,
                Err(e) => {
                    tracing::warn!("committing a plan: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            self.kick.notify_one();
        }
    }

    pub(super) async fn commit(
        &self,
        plan: reconcile::Plan,
        revs: &HashMap<String, u64>,
        fence: u64,
    ) -> Result<u64, StoreError> {
        const CHUNK: usize = 100;
        let mut max_rev = 0;
        let rev_of = |k: &str| revs.get(k).copied().unwrap_or(0);
        // Creates, grouped by workload, guarded by the workload's revision.
        let mut by_workload: BTreeMap<WorkloadRef, Vec<Allocation>> = BTreeMap::new();
        for a in plan.create {
            by_workload.entry(a.workload.clone()).or_default().push(a);
        }
        // Volumes bound by this plan, as stored records with their binding.
        let mut bound: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
        {
            let cache = self.cache();
            for (name, b) in &plan.bind {
                let r = WorkloadRef {
                    kind: motley_core::model::Kind::Volume,
                    name: name.clone(),
                };
                if let Some(v) = cache.workloads.get(&r) {
                    let mut v = v.clone();
                    v.binding = Some(b.clone());
                    let bytes =
                        serde_json::to_vec(&v).map_err(|e| StoreError::Backend(e.to_string()))?;
                    bound.insert(name.clone(), (keys::workload(&r), bytes));
                }
            }
        }
        let mut creates: Vec<(WorkloadRef, Txn)> = Vec::new();
        for (w, allocs) in by_workload {
            let wkey = keys::workload(&w);
            // The first transaction of a workload that uses a volume bound now writes the
            // binding, guarded by the volume's revision: if another workload's
            // transaction bound it first, this one fails and is planned again.
            let uses: BTreeSet<&str> = allocs
                .iter()
                .flat_map(|a| a.volumes.iter().map(|v| v.name.as_str()))
                .filter(|n| bound.contains_key(*n))
                .collect();
            for (k, chunk) in allocs.chunks(CHUNK).enumerate() {
                let mut t = Txn::new().when(&wkey, rev_of(&wkey));
                if k == 0 {
                    for name in &uses {
                        if let Some((vkey, bytes)) = bound.get(*name) {
                            t = t.when(vkey, rev_of(vkey)).put(vkey.clone(), bytes.clone());
                        }
                    }
                }
                for a in chunk {
                    let k = keys::alloc(&a.id);
                    let v =
                        serde_json::to_vec(a).map_err(|e| StoreError::Backend(e.to_string()))?;
                    t = t.when(&k, 0).put(k, v);
                }
                creates.push((w.clone(), t));
            }
        }
        let stops: Vec<(String, String, bool)> = plan
            .stop
            .into_iter()
            .map(|(id, r)| (id, r, false))
            .chain(plan.lost.into_iter().map(|(id, r)| (id, r, true)))
            .collect();
        // Stops and losses go first, each transaction with the workloads it touches: a
        // workload whose stop or loss was not committed (its allocation changed
        // meanwhile) gets no new allocations from this plan either. Its replacements
        // were planned on the allocation being gone; committed alone they would run
        // an instance twice (a job index lost, replaced, and then completed anyway).
        let mut stop_txns: Vec<(BTreeSet<WorkloadRef>, Txn)> = Vec::new();
        {
            let cache = self.cache();
            let now = now_ms();
            for chunk in stops.chunks(CHUNK) {
                let mut t = Txn::new();
                let mut touched = BTreeSet::new();
                for (id, reason, lost) in chunk {
                    let Some(a) = cache.allocs.get(id) else {
                        continue;
                    };
                    touched.insert(a.workload.clone());
                    let mut a = a.clone();
                    a.desired = Desired::Stop;
                    if *lost {
                        a.state = AllocState::Lost;
                        a.pid = None;
                        a.updated_at = now;
                        a.push_reason(format!("lost: {reason}"));
                    } else {
                        a.push_reason(format!("stop: {reason}"));
                    }
                    let k = keys::alloc(id);
                    let v =
                        serde_json::to_vec(&a).map_err(|e| StoreError::Backend(e.to_string()))?;
                    t = t.when(&k, rev_of(&k)).put(k, v);
                }
                stop_txns.push((touched, t));
            }
        }
        let mut held_back: BTreeSet<WorkloadRef> = BTreeSet::new();
        for (touched, t) in stop_txns {
            match self.run_plan_txn(t, fence).await? {
                Some(rev) => max_rev = max_rev.max(rev),
                None => held_back.extend(touched),
            }
        }
        for (w, t) in creates {
            if held_back.contains(&w) {
                continue;
            }
            if let Some(rev) = self.run_plan_txn(t, fence).await? {
                max_rev = max_rev.max(rev);
            }
        }
        let mut txns = Vec::new();
        for chunk in plan.delete.chunks(CHUNK) {
            let mut t = Txn::new();
            for id in chunk {
                let k = keys::alloc(id);
                t = t.when(&k, rev_of(&k)).delete(k);
            }
            txns.push(t);
        }
        for t in txns {
            if let Some(rev) = self.run_plan_txn(t, fence).await? {
                max_rev = max_rev.max(rev);
            }
        }
        Ok(max_rev)
    }

    /// Commits one transaction of a plan, only while this server still leads (see
    /// `ha`). Returns its revision, or `None` when a compare failed.
    async fn run_plan_txn(&self, mut t: Txn, fence: u64) -> Result<Option<u64>, StoreError> {
        if fence > 0 {
            t = t.when(crate::ha::LEADER, fence);
        }
        let r = self.store.txn(t).await?;
        if r.succeeded {
            Ok(Some(r.revision))
        } else {
            self.metrics
                .conflicts
                .get_or_create(&crate::metrics::CallerLabel {
                    caller: "controller",
                })
                .inc();
            Ok(None)
        }
    }
}

/// Allocation ids: the workload's name and 8 random hex digits.
struct RandomIds;

impl Ids for RandomIds {
    fn next_id(&mut self, w: &WorkloadRef) -> String {
        format!("{}-{}", w.name, &motley_net::new_id()[..8])
    }
}
