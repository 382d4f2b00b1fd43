//! Reports and registrations from agents: node facts, labels and taints; allocation
//! reports folded into the stored allocations (alone or in one transaction per batch).

use super::*;

/// The write of what an agent said (a registration, a report) over the record at `rev`:
/// group-committed ([`Txn::lazy`]), since the agent says it again in its next Hello if a
/// power cut takes it.
fn agent_said(key: &str, rev: u64, value: Vec<u8>) -> Txn {
    Txn::new().when(key, rev).put(key, value).lazy(true)
}

impl Shared {
    /// Records a node's registration or new facts ([`motley_core::node::registration`]:
    /// capacity, labels, taints), merged with what the operator set, and writes only
    /// when something changed.
    pub async fn register_node(
        &self,
        name: &str,
        facts: motley_core::model::NodeFacts,
        user_labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let node =
            motley_core::node::registration(name, facts, user_labels, &self.taint_policy, now_ms());
        let key = keys::node(name);
        let (key_ref, node_ref) = (&key, &node);
        let outcome = motley_store::update(
            &*self.store,
            || async move {
                let (key, node) = (key_ref, node_ref);
                let current = self.store.get(key).await?;
                // An unreadable record is replaced by the registration.
                let stored = current
                    .as_ref()
                    .and_then(|kv| serde_json::from_slice::<Node>(&kv.value).ok());
                let Some(merged) = motley_core::node::merge_registration(node, stored.as_ref())
                else {
                    return Ok(motley_store::Attempt::Done(()));
                };
                let rev = current.as_ref().map_or(0, |kv| kv.mod_revision);
                let value =
                    serde_json::to_vec(&merged).map_err(|e| StoreError::Backend(e.to_string()))?;
                Ok(motley_store::Attempt::Write(
                    agent_said(key, rev, value),
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
    pub async fn apply_report(
        &self,
        node: &str,
        report: &AllocReport,
    ) -> Result<Reported, StoreError> {
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
                        None => return Ok(motley_store::Attempt::Done(Reported::Unknown)),
                    },
                };
                if alloc.node != node {
                    // Changes nothing: a node speaks only for its own allocations.
                    return Ok(motley_store::Attempt::Done(Reported::Foreign(
                        alloc.node.clone(),
                    )));
                }
                let mut next = alloc.clone();
                if !motley_core::node::merge_report(&mut next, report, now_ms()) {
                    return Ok(motley_store::Attempt::Done(Reported::Applied));
                }
                let value =
                    serde_json::to_vec(&next).map_err(|e| StoreError::Backend(e.to_string()))?;
                Ok(motley_store::Attempt::Write(
                    agent_said(key, rev, value),
                    Reported::Applied,
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
            motley_store::Updated::Committed(what, _) | motley_store::Updated::Unchanged(what) => {
                Ok(what)
            }
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
    /// them) and the reports about other nodes' allocations (refused).
    pub async fn apply_reports(
        &self,
        node: &str,
        reports: &[AllocReport],
    ) -> Result<ReportsOutcome, StoreError> {
        let mut out = ReportsOutcome::default();
        if let [one] = reports {
            out.add(one, self.apply_report(node, one).await?);
            return Ok(out);
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
                    && motley_core::node::merge_report(a, r, now)
                {
                    *dirty = true;
                }
            }
        }
        if !unknown {
            let mut t = Txn::new().lazy(true);
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
                return Ok(out);
            }
            self.metrics
                .conflicts
                .get_or_create(&crate::metrics::CallerLabel { caller: "report" })
                .inc();
        }
        for r in reports {
            out.add(r, self.apply_report(node, r).await?);
        }
        Ok(out)
    }
}

/// What became of one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// Merged (or it changed nothing).
    Applied,
    /// No such allocation: the agent should forget it.
    Unknown,
    /// The allocation is this other node's: refused, nothing changed.
    Foreign(String),
}

/// What became of a batch of reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportsOutcome {
    /// Allocations the server does not know.
    pub gone: Vec<String>,
    /// Reports about other nodes' allocations: (allocation, its node).
    pub foreign: Vec<(String, String)>,
}

impl ReportsOutcome {
    fn add(&mut self, r: &AllocReport, what: Reported) {
        match what {
            Reported::Applied => {}
            Reported::Unknown => self.gone.push(r.id.clone()),
            Reported::Foreign(owner) => self.foreign.push((r.id.clone(), owner)),
        }
    }
}
