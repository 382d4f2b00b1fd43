//! The overview (nodes as cards, with what runs on each) and a node's page.

use maud::{Markup, html};
use motley_core::api::{NodeView, WorkloadView};
use motley_core::events::Event;
use motley_core::hwview::{self, age, cpu, mem};
use motley_core::model::Allocation;

use crate::{Ctx, Page, action, alloc_href, badge, node_href, table, workload_href};

/// The hardware rows a card shows, by their name in [`hwview::rows`].
fn card_row(key: &str) -> bool {
    matches!(key, "board" | "data dir" | "throttled")
        || key.starts_with("gpu ")
        || key.starts_with("thermal ")
}

/// `GET /ui/`: nodes as cards (or why they cannot be shown: a token limited to
/// namespaces may not list nodes), then the workloads at a glance.
pub fn overview(
    ctx: &Ctx<'_>,
    nodes: Result<&[NodeView], &str>,
    allocs: &[Allocation],
    workloads: &[WorkloadView],
) -> Page {
    let running = workloads
        .iter()
        .filter(|w| w.status.phase == "running")
        .count();
    let body = html! {
        @match nodes {
            Ok(nodes) => {
                h2 #nodes-h { "Nodes (" (nodes.iter().filter(|n| n.state == "ready").count())
                    " of " (nodes.len()) " ready)" }
                ul.cards aria-labelledby="nodes-h" {
                    @for n in nodes { (card(ctx, n, allocs)) }
                }
            }
            Err(why) => { p.notice.warn { "Nodes are not shown: " (why) } }
        }
        h2 { "Workloads (" (running) " of " (workloads.len()) " running)" }
        (workload_rows("Every workload", workloads))
    };
    Page::live("Overview", body)
}

fn card(ctx: &Ctx<'_>, n: &NodeView, allocs: &[Allocation]) -> Markup {
    let node = &n.node;
    let facts = &node.facts;
    let here: Vec<&Allocation> = allocs
        .iter()
        .filter(|a| a.node == node.name && a.is_live())
        .collect();
    let rows: Vec<(String, String)> = facts
        .hw
        .as_deref()
        .map(hwview::rows)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| card_row(k))
        .collect();
    let hottest = n
        .readings
        .as_ref()
        .and_then(|r| r.temps_c.iter().max_by_key(|(_, v)| **v));
    html! {
        li.card aria-label={ "node " (node.name) } {
            h3 { a href=(node_href(&node.name)) { (node.name) } " " (badge(&n.state))
                @if node.draining { " " (badge("draining")) } @else if node.cordoned { " " (badge("cordoned")) } }
            @if n.state != "ready" && !n.reason.is_empty() { p.muted { (n.reason) } }
            dl.facts {
                dt { "arch" } dd { (facts.arch) " · " (facts.os) }
                dt { "CPU" } dd { (facts.cpus) " cpus"
                    @if let Some(s) = facts.cpu_score { ", score " (s) }
                    "; " (cpu(n.used_cpu)) " of " (node.capacity.cpu) " used" }
                dt { "memory" } dd { (mem(n.used_memory)) " of " (mem(node.capacity.memory.0)) " used" }
                @if let Some((zone, c)) = hottest { dt { "temperature" } dd { (c) " °C (" (zone) ")" } }
                @for (k, v) in &rows { dt { (k) } dd { (v) } }
                @for c in &facts.conditions {
                    dt { "condition" } dd { (badge(c.kind.as_str())) " " (c.reason) }
                }
                dt { "runs" } dd {
                    @if here.is_empty() { span.muted { "nothing" } }
                    @for a in &here {
                        a href=(alloc_href(&a.id, &a.workload.namespace)) { (a.workload) "#" (a.index) } " "
                    }
                }
            }
            (action(ctx, if node.cordoned { "uncordon" } else { "cordon" }, &node.name, "",
                if node.cordoned { "Uncordon" } else { "Cordon" }))
            @if !node.draining { (action(ctx, "drain", &node.name, "", "Drain")) }
        }
    }
}

/// A table of workloads: kind/name, phase, counts.
pub fn workload_rows(caption: &str, workloads: &[WorkloadView]) -> Markup {
    table(
        caption,
        &[
            "workload", "phase", "running", "desired", "ready", "restarts",
        ],
        html! {
            @for v in workloads {
                @let r = v.workload.spec.reference();
                tr {
                    td { a href=(workload_href(&r)) { (r) } }
                    td { (badge(&v.status.phase)) }
                    td { (v.status.running) }
                    td { (v.status.desired) }
                    td { (v.status.ready) }
                    td { (v.status.restarts) }
                }
            }
        },
    )
}

/// `GET /ui/nodes/{name}`: facts, readings, conditions, taints, labels, what runs
/// there, its events; cordon, uncordon and drain for admins.
pub fn node_page(ctx: &Ctx<'_>, n: &NodeView, allocs: &[Allocation], events: &[Event]) -> Page {
    let node = &n.node;
    let hw = node
        .facts
        .hw
        .as_deref()
        .map(hwview::rows)
        .unwrap_or_default();
    let readings = n
        .readings
        .as_ref()
        .map(hwview::reading_rows)
        .unwrap_or_default();
    let body = html! {
        p { (badge(&n.state)) " since " (age(n.since, ctx.now)) " ago"
            @if !n.reason.is_empty() { ": " (n.reason) }
            @if node.draining { " · draining" } @else if node.cordoned { " · cordoned" } }
        p {
            (action(ctx, if node.cordoned { "uncordon" } else { "cordon" }, &node.name, "",
                if node.cordoned { "Uncordon" } else { "Cordon" }))
            @if !node.draining { (action(ctx, "drain", &node.name, "", "Drain")) }
            a href={ "/ui/whatif?lose=" (crate::urlencode(&node.name)) } { "What if it dies?" }
        }
        h2 { "Hardware" }
        dl.facts {
            dt { "CPU used" } dd { (cpu(n.used_cpu)) " of " (node.capacity.cpu) }
            dt { "memory used" } dd { (mem(n.used_memory)) " of " (mem(node.capacity.memory.0)) }
            dt { "agent" } dd { (node.facts.agent_version) }
            @for (k, v) in &hw { dt { (k) } dd { (v) } }
            @for (k, v) in &readings { dt { (k) } dd { (v) } }
        }
        h2 { "Conditions and taints" }
        ul.list {
            @for l in hwview::condition_lines(&node.facts.conditions, ctx.now) { li { (l) } }
            li { "taints: " (hwview::taint_text(&node.taints)) }
        }
        h2 { "Labels" }
        ul.list { @for (k, v) in &node.labels { li { code { (k) "=" (v) } } } }
        h2 { "Allocations" }
        (alloc_table("Allocations on this node, newest first", allocs, ctx))
        h2 { "Events" }
        (crate::pages::event_table(events, ctx))
    };
    Page::live(format!("Node {}", node.name), body)
}

/// A table of allocations, with a restart button for admins.
pub fn alloc_table(caption: &str, allocs: &[Allocation], ctx: &Ctx<'_>) -> Markup {
    table(
        caption,
        &[
            "allocation",
            "workload",
            "node",
            "state",
            "restarts",
            "age",
            "",
        ],
        html! {
            @for a in allocs {
                tr {
                    td { a href=(alloc_href(&a.id, &a.workload.namespace)) { (a.id) } }
                    td { a href=(workload_href(&a.workload)) { (a.workload) "#" (a.index) } }
                    td { a href=(node_href(&a.node)) { (a.node) } }
                    td { (badge(a.state.as_str()))
                        @if a.desired == motley_core::model::Desired::Stop && a.is_live() { " stopping" } }
                    td { (a.restarts) }
                    td { (age(a.created_at, ctx.now)) }
                    td { @if a.is_live() && a.desired == motley_core::model::Desired::Run {
                        (action(ctx, "restart", &a.id, &a.workload.namespace, "Restart")) } }
                }
            }
        },
    )
}
