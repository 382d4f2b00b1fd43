//! Workloads by kind, one workload (with the refusal matrix of what waits), and one
//! allocation with its live log.

use maud::{Markup, html};
use motley_core::api::{WorkloadDetail, WorkloadView};
use motley_core::events::Event;
use motley_core::hwview::{age, mem};
use motley_core::model::{Allocation, Kind, Spec};
use motley_core::reconcile::Unplaced;
use motley_core::rollout::State;

use crate::nodes::alloc_table;
use crate::{Ctx, Page, action, alloc_href, badge, node_href, percent, table, workload_href};

/// The page of one kind's list: path and title.
pub fn kind_page(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Service => ("/ui/services", "Services"),
        Kind::Job => ("/ui/jobs", "Jobs"),
        Kind::Daemon => ("/ui/daemons", "Daemons"),
        Kind::Volume => ("/ui/volumes", "Volumes"),
        Kind::Secret => ("/ui/secrets", "Secrets"),
        Kind::Source => ("/ui/sources", "Sources"),
        Kind::Namespace => ("/ui/namespaces", "Namespaces"),
        Kind::Config => ("/ui/configs", "Configs"),
    }
}

/// `GET /ui/services|jobs|daemons|volumes`: one kind's workloads.
pub fn list(_ctx: &Ctx<'_>, kind: Kind, views: &[WorkloadView]) -> Page {
    let (_, title) = kind_page(kind);
    let body = match kind {
        Kind::Service => services(views),
        Kind::Job => jobs(views),
        Kind::Volume => volumes(views),
        _ => crate::nodes::workload_rows(title, views),
    };
    let body = html! {
        @if views.is_empty() { p.muted { "None." } }
        (body)
    };
    Page::live(title, body)
}

fn services(views: &[WorkloadView]) -> Markup {
    table(
        "Services",
        &[
            "service",
            "phase",
            "ready",
            "desired",
            "update",
            "availability 24 h",
        ],
        html! {
            @for v in views {
                @let r = v.workload.spec.reference();
                tr {
                    td { a href=(workload_href(&r)) { (r) } }
                    td { (badge(&v.status.phase)) @if v.blocked.is_some() { " " (badge("blocked")) } }
                    td { (v.status.ready) }
                    td { (v.status.desired) }
                    td { @if let Some(ro) = &v.rollout { (rollout_state(ro.state)) } @else { "-" } }
                    td { (percent(v.uptime.as_ref().and_then(|u| u.h24))) }
                }
            }
        },
    )
}

fn rollout_state(s: State) -> &'static str {
    match s {
        State::Progressing => "progressing",
        State::WaitingForPromotion => "waiting for promotion",
        State::Complete => "complete",
        State::Failed => "failed",
    }
}

fn jobs(views: &[WorkloadView]) -> Markup {
    let mut queue: Vec<&WorkloadView> = views
        .iter()
        .filter(|v| v.queue_position.is_some())
        .collect();
    queue.sort_by_key(|v| v.queue_position);
    html! {
        h2 { "Queue" }
        @if queue.is_empty() { p.muted { "No job waits for room." } }
        ol {
            @for v in &queue {
                @let r = v.workload.spec.reference();
                li { a href=(workload_href(&r)) { (r) }
                    @if let Some(b) = &v.blocked { span.muted { " — " (b.why.summary) } } }
            }
        }
        (table(
            "Jobs",
            &["job", "phase", "queue", "complete", "desired", "failed", "running"],
            html! {
                @for v in views {
                    @let r = v.workload.spec.reference();
                    tr {
                        td { a href=(workload_href(&r)) { (r) } }
                        td { (badge(&v.status.phase)) }
                        td { @if let Some(p) = v.queue_position { "#" (p) } @else { "-" } }
                        td { (v.status.complete) }
                        td { (v.status.desired) }
                        td { (v.status.failed) }
                        td { (v.status.running) }
                    }
                }
            },
        ))
    }
}

fn volumes(views: &[WorkloadView]) -> Markup {
    table(
        "Volumes",
        &["volume", "class", "size", "bound to"],
        html! {
            @for v in views {
                @let r = v.workload.spec.reference();
                tr {
                    td { a href=(workload_href(&r)) { (r) } }
                    @if let Spec::Volume(vol) = &v.workload.spec {
                        td { (format!("{:?}", vol.class).to_lowercase()) }
                        td { (mem(vol.size.0)) }
                    } @else { td {} td {} }
                    td { @match &v.workload.binding {
                        Some(b) => { a href=(node_href(&b.node)) { (b.node) } " " (b.mount) }
                        None => { span.muted { "not yet bound" } }
                    } }
                }
            }
        },
    )
}

/// The refusal matrix: one row per node, one column per reason, the refused cell
/// holding what is particular to that node.
pub fn refusal_matrix(why: &Unplaced) -> Markup {
    let m = motley_scheduler::explain::matrix(&why.nodes);
    let mut heads: Vec<String> = vec!["node".into()];
    heads.extend(m.reasons.iter().map(|(r, n)| format!("{r} ({n})")));
    html! {
        div.scroll {
            table.matrix {
                caption { "Why no node takes it: " (why.summary) }
                thead { tr { @for h in &heads { th scope="col" { (h) } } } }
                tbody {
                    @for (node, col, detail) in &m.rows {
                        tr {
                            th scope="row" { a href=(node_href(node)) { (node) } }
                            @for i in 0..m.reasons.len() {
                                @if i == *col {
                                    td.refused { span.sr { "refused: " } (detail) }
                                } @else {
                                    td { span.muted aria-label="no" { "·" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/w/{kind}/{name}`: a workload's status, what waits and why, its update,
/// availability, allocations and events; delete and promote for admins.
pub fn workload(ctx: &Ctx<'_>, d: &WorkloadDetail, events: &[Event]) -> Page {
    let v = &d.view;
    let r = v.workload.spec.reference();
    let s = &v.status;
    let body = html! {
        p { (badge(&s.phase)) " generation " (v.workload.generation) ", created "
            (age(v.workload.created_at, ctx.now)) " ago"
            @if let Some(src) = &v.workload.source { ", from source " (src) } }
        p { (action(ctx, "delete", &format!("{}/{}", r.kind.as_str(), r.name), &r.namespace, "Delete")) }
        dl.facts {
            dt { "desired" } dd { (s.desired) }
            dt { "running" } dd { (s.running) }
            dt { "ready" } dd { (s.ready) }
            dt { "pending" } dd { (s.pending) }
            dt { "complete" } dd { (s.complete) }
            dt { "failed" } dd { (s.failed) }
            dt { "restarts" } dd { (s.restarts) }
            @if let Some(p) = v.queue_position { dt { "queue position" } dd { "#" (p) } }
            @if !matches!(v.workload.spec, Spec::Secret(_)) && !v.workload.spec.task().command.is_empty() {
                dt { "command" } dd { code { (v.workload.spec.task().command.join(" ")) } }
            }
            @if let Some(img) = &v.workload.spec.task().image { dt { "image" } dd { code { (img) } } }
        }
        @if let Some(b) = &v.blocked {
            h2 { "Waiting: " (b.count) " not placed" }
            (refusal_matrix(&b.why))
        }
        @if let Some(ro) = &v.rollout {
            h2 { "Update" }
            p { "generation " (ro.generation) ": " (rollout_state(ro.state)) ", "
                (ro.updated) " of " (ro.desired) " updated, " (ro.healthy) " healthy"
                @if !ro.reason.is_empty() { " — " (ro.reason) } }
            @if ro.state == State::WaitingForPromotion {
                p { (action(ctx, "promote", &format!("{}/{}", r.kind.as_str(), r.name), &r.namespace, "Promote the canaries")) }
            }
        }
        @if let Some(u) = &v.uptime {
            h2 { "Availability" }
            dl.facts {
                dt { "last hour" } dd { (percent(u.h1)) }
                dt { "last 24 h" } dd { (percent(u.h24)) }
                dt { "last 30 days" } dd { (percent(u.d30)) }
                @if let Some(t) = u.target {
                    dt { "objective" } dd { (percent(Some(t))) }
                    dt { "error budget left" } dd { (percent(u.budget_remaining)) }
                    dt { "burn rate (1 h)" } dd { (u.burn_rate.map_or_else(|| "-".into(), |b| format!("{b:.2}"))) }
                }
            }
        }
        @if let Spec::Secret(sec) = &v.workload.spec {
            h2 { "Keys" }
            p.muted { "Values are never shown here." }
            ul.list { @for k in sec.data.keys() { li { code { (k) } } } }
        }
        h2 { "Allocations" }
        (alloc_table("Allocations, newest first", &d.allocations[..d.allocations.len().min(50)], ctx))
        h2 { "Events" }
        (crate::pages::event_table(events, ctx))
    };
    Page::live(r.to_string(), body)
}

/// `GET /ui/allocs/{id}`: an allocation, and its log followed live below.
pub fn alloc(ctx: &Ctx<'_>, a: &Allocation, events: &[Event], log_src: &str) -> Page {
    let body = html! {
        p { (badge(a.state.as_str()))
            @if a.desired == motley_core::model::Desired::Stop && a.is_live() { " stopping" }
            " on " a href=(node_href(&a.node)) { (a.node) } " · "
            a href=(workload_href(&a.workload)) { (a.workload) "#" (a.index) } }
        @if a.is_live() && a.desired == motley_core::model::Desired::Run {
            p { (action(ctx, "restart", &a.id, &a.workload.namespace, "Restart")) }
        }
        dl.facts {
            dt { "created" } dd { (age(a.created_at, ctx.now)) " ago" }
            dt { "restarts" } dd { (a.restarts) }
            @if let Some(pid) = a.pid { dt { "pid" } dd { (pid) } }
            @if let Some(c) = a.exit_code { dt { "last exit" } dd { (c) } }
            @if let Some(h) = a.health { dt { "check" } dd { (badge(h.as_str())) } }
            @for (name, port) in &a.ports { dt { "port " (name) } dd { (port) } }
            @if let Some(p) = &a.progress { dt { "progress" } dd { (p) } }
            dt { "reasons" } dd { ul.list { @for r in &a.reasons { li { (r) } } } }
        }
        h2 { "Events" }
        (crate::pages::event_table(events, ctx))
    };
    let after = html! {
        h2 #log-h { "Log" }
        p #log-status.muted role="status" aria-live="polite" { "connecting…" }
        pre.log data-log-src=(log_src) data-status="log-status" aria-labelledby="log-h" tabindex="0" {}
    };
    Page {
        after: Some(after),
        ..Page::live(format!("Allocation {}", a.id), body)
    }
}

/// A link to an allocation, for other pages.
pub fn alloc_link(a: &Allocation) -> Markup {
    html! { a href=(alloc_href(&a.id, &a.workload.namespace)) { (a.id) } }
}
