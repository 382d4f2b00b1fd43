//! Reports and registrations from agents: node facts, labels and taints; allocation
//! reports folded into the stored allocations (alone or in one transaction per batch).

use super::*;

impl Shared {
    /// Records a node's registration or new facts: derives its labels (the agent's own
    /// plus those under `motley.io/` from its facts) and its taints (from its conditions
    /// and the taint policy), and writes only when something changed.
    pub async fn register_node(
        &self,
        mut node: Node,
        user_labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        node.labels = user_labels
            .iter()
            .filter(|(k, _)| !k.starts_with(motley_core::hw::LABEL_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(hw) = &node.facts.hw {
            let logs = node.facts.task_logs.map_or("disk", |l| l.as_str());
            node.labels
                .extend(motley_core::hw::labels(hw, node.facts.cpu_score, logs));
        }
        node.taints = self.taint_policy.taints(&node.facts.conditions);
        let key = keys::node(&node.name);
        let (key_ref, node_ref) = (&key, &node);
        let outcome = motley_store::update(
            &*self.store,
            || async move {
                let (key, node) = (key_ref, node_ref);
                let current = self.store.get(key).await?;
                let (merged, rev) = match &current {
                    Some(kv) => match serde_json::from_slice::<Node>(&kv.value) {
                        Ok(old) => {
                            let mut n = node.clone();
                            n.cordoned = old.cordoned;
                            n.draining = old.draining;
                            n.registered_at = old.registered_at;
                            if n == old {
                                return Ok(motley_store::Attempt::Done(()));
                            }
                            (n, kv.mod_revision)
                        }
                        Err(_) => (node.clone(), kv.mod_revision),
                    },
                    None => (node.clone(), 0),
                };
                let value =
                    serde_json::to_vec(&merged).map_err(|e| StoreError::Backend(e.to_string()))?;
                Ok(motley_store::Attempt::Write(
                    Txn::new().when(key.as_str(), rev).put(key.as_str(), value),
                    (),
                ))
            },
            || {},
        )
        .await?;
        match outcome {
            motley_store::Updated::Conflicted => Err(StoreError::Backend(
                "node registration kept conflicting".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Applies an agent's report to the stored allocation. Writes only on change.
    /// Returns false when the allocation is unknown (the agent should forget it).
    pub async fn apply_report(&self, node: &str, report: &AllocReport) -> Result<bool, StoreError> {
        self.metrics.reports_alone.inc();
        let key = keys::alloc(&report.id);
        // The first attempt reads the cache; after a conflict, the store.
        let from_cache = std::sync::atomic::AtomicBool::new(true);
        let (key_ref, from_cache_ref) = (&key, &from_cache);
        let outcome = motley_store::update(
            &*self.store,
            || async move {
                let (key, from_cache) = (key_ref, from_cache_ref);
                let cached = if from_cache.load(std::sync::atomic::Ordering::Relaxed) {
                    let c = self.cache();
                    c.allocs.get(&report.id).map(|a| (a.clone(), c.rev(key)))
                } else {
                    None
                };
                let (alloc, rev) = match cached {
                    Some(found) => found,
                    None => match self.store.get(key).await? {
                        Some(kv) => match serde_json::from_slice::<Allocation>(&kv.value) {
                            Ok(a) => (a, kv.mod_revision),
                            Err(e) => {
                                return Err(StoreError::Corrupt {
                                    key: key.clone(),
                                    why: e.to_string(),
                                });
                            }
                        },
                        None => return Ok(motley_store::Attempt::Done(false)),
                    },
                };
                if alloc.node != node {
                    tracing::warn!(
                        "node {node} reported allocation {} of node {}",
                        alloc.id,
                        alloc.node
                    );
                    return Ok(motley_store::Attempt::Done(true));
                }
                let mut next = alloc.clone();
                if !merge_report(&mut next, report, now_ms()) {
                    return Ok(motley_store::Attempt::Done(true));
                }
                let value =
                    serde_json::to_vec(&next).map_err(|e| StoreError::Backend(e.to_string()))?;
                Ok(motley_store::Attempt::Write(
                    Txn::new().when(key.as_str(), rev).put(key.as_str(), value),
                    true,
                ))
            },
            || {
                self.metrics
                    .conflicts
                    .get_or_create(&crate::metrics::CallerLabel { caller: "report" })
                    .inc();
                from_cache.store(false, std::sync::atomic::Ordering::Relaxed);
            },
        )
        .await?;
        match outcome {
            motley_store::Updated::Committed(known, _)
            | motley_store::Updated::Unchanged(known) => Ok(known),
            motley_store::Updated::Conflicted => Err(StoreError::Backend(format!(
                "allocation {} kept conflicting",
                report.id
            ))),
        }
    }

    /// Applies several reports of one agent in one transaction (what arrived together:
    /// under load this turns many small commits into one). Reports of the same
    /// allocation are folded in order. Falls back to one transaction per report when any
    /// compare fails. Returns the ids the server does not know (the agent should forget
    /// them).
    pub async fn apply_reports(
        &self,
        node: &str,
        reports: &[AllocReport],
    ) -> Result<Vec<String>, StoreError> {
        if let [one] = reports {
            return Ok(if self.apply_report(node, one).await? {
                vec![]
            } else {
                vec![one.id.clone()]
            });
        }
        let mut changed: BTreeMap<&str, (Allocation, u64, bool)> = BTreeMap::new();
        let mut unknown = false;
        {
            let c = self.cache();
            let now = now_ms();
            for r in reports {
                if !changed.contains_key(r.id.as_str()) {
                    match c.allocs.get(&r.id) {
                        Some(a) if a.node == node => {
                            changed.insert(&r.id, (a.clone(), c.rev(&keys::alloc(&r.id)), false));
                        }
                        // Unknown to the cache, or another node's: the one-by-one path
                        // sorts those out (and says which).
                        _ => {
                            unknown = true;
                            break;
                        }
                    }
                }
                if let Some((a, _, dirty)) = changed.get_mut(r.id.as_str())
                    && merge_report(a, r, now)
                {
                    *dirty = true;
                }
            }
        }
        if !unknown {
            let mut t = Txn::new();
            for (id, (a, rev, dirty)) in &changed {
                if *dirty {
                    let k = keys::alloc(id);
                    let v =
                        serde_json::to_vec(a).map_err(|e| StoreError::Backend(e.to_string()))?;
                    t = t.when(&k, *rev).put(k, v);
                }
            }
            if t.ops.is_empty() || self.store.txn(t).await?.succeeded {
                self.metrics.reports_batched.inc_by(reports.len() as u64);
                return Ok(vec![]);
            }
            self.metrics
                .conflicts
                .get_or_create(&crate::metrics::CallerLabel { caller: "report" })
                .inc();
        }
        let mut gone = Vec::new();
        for r in reports {
            if !self.apply_report(node, r).await? {
                gone.push(r.id.clone());
            }
        }
        Ok(gone)
    }
}

/// Folds an agent's report into an allocation; returns whether anything changed.
pub fn merge_report(a: &mut Allocation, r: &AllocReport, now: u64) -> bool {
    // Terminal states are final: a late report cannot bring an allocation back.
    if a.state.is_terminal() {
        return false;
    }
    let before = a.clone();
    a.state = r.state;
    a.pid = r.pid;
    if r.exit_code.is_some() {
        a.exit_code = r.exit_code;
    }
    a.restarts = a.restarts.max(r.restarts);
    if let Some(reason) = &r.reason
        && a.reasons.last() != Some(reason)
    {
        a.push_reason(reason.clone());
    }
    if *a != before {
        a.updated_at = now;
        true
    } else {
        false
    }
}
