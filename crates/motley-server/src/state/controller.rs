//! The controller: reconcile on every change, schedule, and commit each plan in the
//! write groups `motley_core::writes` decides.

use super::*;
use motley_core::periodic::job_of_run;
use motley_core::writes::Group;

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
                    wait_rev = 0;
                    continue;
                }
            };
            // Plan from a cache that has seen what the last commit changed. A change of
            // term ends the wait: a commit refused for its fence alone changed nothing the
            // cache follows, and a new term plans from whatever the cache holds (its
            // compares keep that safe).
            tokio::select! {
                _ = self.wait_for_rev(wait_rev) => {}
                _ = term_rx.changed() => {
                    wait_rev = 0;
                    continue;
                }
            }
            let sleep = match wake_at {
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms()).max(1)),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = self.plans.kick.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = term_rx.changed() => continue,
            }
            let started = Instant::now();
            let (plan, revs, planned_at) = {
                let cache = self.cache();
                // Only the workloads not settled; what this pass finds settled is skipped
                // until it changes, settled here under the read lock the cache's changes
                // wait for (`motley_core::active`).
                let mut active = lock(&cache.active);
                let plan = self.plan_pass(
                    &cache,
                    &cache.workloads,
                    now_ms(),
                    &mut RandomIds,
                    Some(&active),
                );
                active.settle(&plan.settled);
                drop(active);
                // The revisions this plan was made from, for its compares.
                let mut revs = HashMap::default();
                for a in &plan.create {
                    let k = keys::workload(&a.workload);
                    revs.insert(k.clone(), cache.rev(&k));
                }
                for w in &plan.revert {
                    let k = keys::workload(&w.spec.reference());
                    revs.insert(k.clone(), cache.rev(&k));
                }
                for (w, configs) in &plan.restamp {
                    for r in std::iter::once(&w.spec.reference()).chain(configs) {
                        let k = keys::workload(r);
                        revs.insert(k.clone(), cache.rev(&k));
                    }
                }
                for job in plan.runs.iter().filter_map(job_of_run) {
                    let k = keys::workload(&job);
                    revs.insert(k.clone(), cache.rev(&k));
                }
                let dropped = plan.drop_runs.iter().map(|(r, _)| r);
                for r in plan
                    .bind
                    .iter()
                    .map(|(r, _)| r)
                    .chain(&plan.collect)
                    .chain(dropped)
                {
                    let k = keys::workload(r);
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
                (plan, revs, cache.revision)
            };
            self.metrics
                .reconcile_seconds
                .observe(started.elapsed().as_secs_f64());
            wake_at = plan.wake_at;
            let was = std::mem::replace(&mut *lock(&self.plans.blocked), plan.blocked.clone());
            self.events
                .push_all(motley_core::events::blocked_change(&was, &plan.blocked));
            *lock(&self.plans.queue) = plan.queue.clone();
            if plan.is_empty() {
                continue;
            }
            match self.commit(plan, &revs, term.fence).await {
                // Nothing committed (every compare lost): plan again once the cache has
                // changed, instead of spinning on a stale view. Not "once the cache has
                // reached the store's revision": that may be a write the cache does not
                // follow (the leader key), and the wait would never end (the simulator's
                // seed 202216).
                Ok(0) => wait_rev = planned_at + 1,
                Ok(rev) => wait_rev = rev,
                Err(e) => {
                    tracing::warn!("committing a plan: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            self.plans.kick.notify_one();
        }
    }

    /// Commits a plan in its write groups ([`motley_core::writes`]: stops and losses
    /// first, a workload's creates only after its stops; deletes last), each group one
    /// transaction guarded by the revisions the plan was made from. Returns the highest
    /// revision committed (0: nothing).
    pub(super) async fn commit(
        &self,
        plan: reconcile::Plan,
        revs: &HashMap<String, u64>,
        fence: u64,
    ) -> Result<u64, StoreError> {
        let rev_of = |k: &str| revs.get(k).copied().unwrap_or(0);
        let (groups, bound) = {
            let cache = self.cache();
            let groups = motley_core::writes::groups(&plan, |id| cache.allocs.get(id), now_ms());
            // Volumes bound by this plan, as stored records with their binding.
            let mut bound: BTreeMap<WorkloadRef, (String, Vec<u8>)> = BTreeMap::new();
            for (r, b) in &plan.bind {
                if let Some(v) = cache.workloads.get(r) {
                    let mut v = v.clone();
                    v.binding = Some(b.clone());
                    bound.insert(r.clone(), (keys::workload(r), encode(&v)?));
                }
            }
            (groups, bound)
        };
        let mut max_rev = 0;
        // A failed update going back to its last good spec: the workload record, only
        // if nobody changed it since the plan was made.
        for w in &plan.revert {
            let k = keys::workload(&w.spec.reference());
            tracing::warn!(
                "{}: {}",
                w.spec.reference(),
                w.rollout
                    .as_ref()
                    .and_then(|r| r.reason.as_deref())
                    .unwrap_or("reverted")
            );
            let t = Txn::new().when(&k, rev_of(&k)).put(k.clone(), encode(w)?);
            if let Some(rev) = self.run_plan_txn(t, fence).await? {
                max_rev = max_rev.max(rev);
            }
        }
        // A Config's users it changed without them (an apply through a server that had
        // not seen them): restamped if neither they nor their Configs changed since.
        for (w, configs) in &plan.restamp {
            let k = keys::workload(&w.spec.reference());
            tracing::info!("{}: its Configs changed; rolling", w.spec.reference());
            let mut t = Txn::new().when(&k, rev_of(&k));
            for c in configs {
                let ck = keys::workload(c);
                t = t.when(&ck, rev_of(&ck));
            }
            let t = t.put(k.clone(), encode(w)?);
            if let Some(rev) = self.run_plan_txn(t, fence).await? {
                max_rev = max_rev.max(rev);
            }
        }
        // Finished jobs past their TTL: deleted if unchanged since the plan (a job
        // applied again meanwhile is kept); their allocations follow as orphans.
        for r in &plan.collect {
            let k = keys::workload(r);
            tracing::info!("{r}: finished longer than its ttl_after_finished ago; deleted");
            let t = Txn::new().when(&k, rev_of(&k)).delete(k.clone()).lazy(true);
            if let Some(rev) = self.run_plan_txn(t, fence).await? {
                max_rev = max_rev.max(rev);
            }
        }
        // Runs of periodic jobs: each created only if absent (one run per due time,
        // whichever server or pass gets there) and only while its job is unchanged.
        for w in &plan.runs {
            let Some(job) = job_of_run(w) else { continue };
            let r = w.spec.reference();
            let parent = keys::workload(&job);
            let k = keys::workload(&r);
            tracing::info!("{job}: started run {r}");
            let t = Txn::new()
                .when(&parent, rev_of(&parent))
                .when(&k, 0)
                .put(k.clone(), encode(w)?);
            if let Some(rev) = self.run_plan_txn(t, fence).await? {
                max_rev = max_rev.max(rev);
            }
        }
        // Runs replaced or beyond their job's history: deleted if
        // unchanged since the plan; their allocations follow as orphans.
        for (r, why) in &plan.drop_runs {
            let k = keys::workload(r);
            tracing::info!("{r}: {why}; deleted");
            let t = Txn::new().when(&k, rev_of(&k)).delete(k.clone());
            if let Some(rev) = self.run_plan_txn(t, fence).await? {
                max_rev = max_rev.max(rev);
            }
        }
        let mut commit = motley_core::writes::Commit::default();
        for g in &groups {
            if !commit.may_run(g) {
                continue;
            }
            let mut t = Txn::new().lazy(motley_core::writes::may_wait(g));
            match g {
                Group::Stop { records, .. } => {
                    for a in records {
                        let k = keys::alloc(&a.id);
                        t = t.when(&k, rev_of(&k)).put(k, encode(a)?);
                    }
                }
                Group::Create {
                    workload,
                    allocs,
                    binds,
                } => {
                    // The group that binds a volume writes the binding, guarded by the
                    // volume's revision: if another workload's transaction bound it
                    // first, this one fails and is planned again.
                    let wkey = keys::workload(workload);
                    t = t.when(&wkey, rev_of(&wkey));
                    for name in binds {
                        let vref = workload.sibling(motley_core::model::Kind::Volume, name);
                        if let Some((vkey, bytes)) = bound.get(&vref) {
                            t = t.when(vkey, rev_of(vkey)).put(vkey.clone(), bytes.clone());
                        }
                    }
                    for a in allocs {
                        let k = keys::alloc(&a.id);
                        t = t.when(&k, 0).put(k, encode(a)?);
                    }
                }
                Group::Delete { ids } => {
                    for id in ids {
                        let k = keys::alloc(id);
                        t = t.when(&k, rev_of(&k)).delete(k);
                    }
                }
            }
            match self.run_plan_txn(t, fence).await? {
                Some(rev) => max_rev = max_rev.max(rev),
                None => commit.failed(g),
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

/// A record as the store keeps it.
fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Allocation ids: the workload's name and 8 hex digits, the first four the time in
/// seconds (modulo 2^16, about 18 hours), the rest random (the pass never repeats one:
/// `reconcile::UniqueIds`). Allocations made close in time sit close in the store's
/// key order, so a group commit rewrites a few B-tree pages for a burst of them, not
/// pages all over a large job's allocations (decisions.md, "Allocation ids in time
/// order").
struct RandomIds;

impl Ids for RandomIds {
    fn next_id(&mut self, w: &WorkloadRef) -> String {
        let secs = (now_ms() / 1000) & 0xffff;
        let random = motley_net::random_u64() & 0xffff;
        format!("{}-{secs:04x}{random:04x}", w.name)
    }
}
