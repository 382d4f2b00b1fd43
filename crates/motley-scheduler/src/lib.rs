//! The scheduler: filter ▸ score ▸ select, with a reason for every refusal.
//!
//! Sans-IO like the core: no runtime, no IO, no clock. [`Minimal`] is the
//! skeleton's implementation of [`motley_core::reconcile::Placer`]: it filters
//! on readiness, cordons, selectors, taints (no-schedule, evict) and free CPU and
//! memory, puts nodes with untolerated prefer-no-schedule taints last, then spreads
//! (services, daemons) or bin-packs (jobs), breaking ties by node name so the
//! same state always gives the same placement.
#![warn(missing_docs)]

use std::collections::BTreeMap;

use motley_core::hw::{TaintEffect, tolerated};
use motley_core::quantity::{Bytes, MilliCpu};
use motley_core::reconcile::{Candidate, Placer, Request, Strategy, Unplaced, node_mismatch};

/// The minimal placer: feasibility on resources and selectors, then spread or bin-pack.
#[derive(Debug, Default, Clone)]
pub struct Minimal;

/// Why one node cannot take a request, or `None` when it can.
pub fn infeasible(req: &Request<'_>, c: &Candidate<'_>) -> Option<String> {
    if !c.ready {
        return Some("not ready".into());
    }
    if c.node.cordoned && req.only_node.is_none() {
        return Some("cordoned".into());
    }
    if let Some(sel) = req.selector
        && let Some(m) = node_mismatch(c.node, sel)
    {
        return Some(format!("does not match {m}"));
    }
    if let Some(t) = c
        .node
        .taints
        .iter()
        .find(|t| t.effect != TaintEffect::PreferNoSchedule && !tolerated(req.tolerations, t))
    {
        return Some(format!("tainted {} ({})", t.key, t.effect.as_str()));
    }
    let free_cpu = c.node.capacity.cpu.0.saturating_sub(c.used_cpu);
    if free_cpu < req.cpu {
        return Some(format!(
            "insufficient cpu ({} free < {} requested)",
            MilliCpu(free_cpu),
            MilliCpu(req.cpu)
        ));
    }
    let free_mem = c.node.capacity.memory.0.saturating_sub(c.used_memory);
    if free_mem < req.memory {
        return Some(format!(
            "insufficient memory ({} free < {} requested)",
            Bytes(free_mem),
            Bytes(req.memory)
        ));
    }
    None
}

/// Load after placing `req` on `c`, in parts per million of the node (mean of cpu and memory).
fn load_after(req: &Request<'_>, c: &Candidate<'_>) -> u64 {
    let cpu_cap = c.node.capacity.cpu.0.max(1) as u128;
    let mem_cap = c.node.capacity.memory.0.max(1) as u128;
    let cpu = (c.used_cpu + req.cpu) as u128 * 1_000_000 / cpu_cap;
    let mem = (c.used_memory + req.memory) as u128 * 1_000_000 / mem_cap;
    ((cpu + mem) / 2) as u64
}

/// Summarizes refusals: `0/3 nodes: 2 insufficient memory, 1 not ready`.
pub fn summarize(total: usize, reasons: &[(String, String)]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in reasons {
        // Group by the reason's head ("insufficient memory (...)" → "insufficient memory").
        let head = r.split(" (").next().unwrap_or(r);
        *counts.entry(head).or_default() += 1;
    }
    let mut parts: Vec<(usize, &str)> = counts.into_iter().map(|(k, v)| (v, k)).collect();
    parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let parts: Vec<String> = parts.iter().map(|(n, r)| format!("{n} {r}")).collect();
    if parts.is_empty() {
        format!("0/{total} nodes available")
    } else {
        format!("0/{total} nodes: {}", parts.join(", "))
    }
}

impl Placer for Minimal {
    fn place(
        &mut self,
        req: &Request<'_>,
        candidates: &[Candidate<'_>],
    ) -> Result<usize, Unplaced> {
        let mut best: Option<(usize, u32, u64, u32, usize)> = None;
        let mut refused = Vec::new();
        let mut considered = 0;
        for (i, c) in candidates.iter().enumerate() {
            if req.only_node.is_some_and(|n| n != c.node.name) {
                continue;
            }
            considered += 1;
            if let Some(why) = infeasible(req, c) {
                refused.push((c.node.name.clone(), why));
                continue;
            }
            let load = load_after(req, c);
            // Nodes with prefer-no-schedule taints the workload does not tolerate come
            // last, whatever the strategy.
            let avoid = c
                .node
                .taints
                .iter()
                .filter(|t| {
                    t.effect == TaintEffect::PreferNoSchedule && !tolerated(req.tolerations, t)
                })
                .count();
            let key = match req.strategy {
                Strategy::Spread => (avoid, c.same, load, c.count, i),
                Strategy::BinPack => (avoid, 0, u64::MAX - load, u32::MAX - c.count, i),
            };
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        match best {
            Some((_, _, _, _, i)) => Ok(i),
            None => Err(Unplaced {
                summary: summarize(considered, &refused),
                nodes: refused,
            }),
        }
    }
}
