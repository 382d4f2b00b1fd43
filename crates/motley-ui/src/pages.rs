//! Events, uptime, sources, and the login, confirmation and error pages.

use maud::{DOCTYPE, Markup, html};
use motley_core::api::{SourceView, WorkloadView};
use motley_core::events::Event;
use motley_core::hwview::age;
use motley_core::model::WorkloadRef;

use crate::{Ctx, Page, action, alloc_href, badge, node_href, percent, table, workload_href};

/// Events, newest first.
pub fn event_table(events: &[Event], ctx: &Ctx<'_>) -> Markup {
    if events.is_empty() {
        return html! { p.muted { "No events." } };
    }
    table(
        "Newest first",
        &["when", "what", "object", "node", "message"],
        html! {
            @for e in events.iter().rev() {
                tr {
                    td { (age(e.at, ctx.now)) " ago" }
                    td { (badge(e.kind.as_str())) }
                    td { (object_link(&e.object))
                        @if let Some(id) = &e.alloc { " " a href=(alloc_href(id, &object_ns(&e.object))) { (id) } } }
                    td { @if let Some(n) = &e.node { a href=(node_href(n)) { (n) } } }
                    td { (e.message) }
                }
            }
        },
    )
}

/// The namespace of an event's object (`dev/service/web` → `dev`).
fn object_ns(object: &str) -> String {
    WorkloadRef::parse(object).map_or_else(String::new, |r| r.namespace)
}

fn object_link(object: &str) -> Markup {
    if let Some(node) = object.strip_prefix("node/") {
        return html! { a href=(node_href(node)) { (object) } };
    }
    match WorkloadRef::parse(object) {
        Some(r) => html! { a href=(workload_href(&r)) { (object) } },
        None => html! { (object) },
    }
}

/// `GET /ui/events`.
pub fn events(ctx: &Ctx<'_>, events: &[Event]) -> Page {
    Page::live("Events", event_table(events, ctx))
}

/// `GET /ui/uptime`: each service's availability and error budget.
pub fn uptime(_ctx: &Ctx<'_>, services: &[WorkloadView]) -> Page {
    let body = table(
        "Availability measured by the leader from replicas in rotation",
        &[
            "service",
            "1 h",
            "24 h",
            "30 days",
            "objective",
            "budget left",
            "burn rate",
        ],
        html! {
            @for v in services {
                @let r = v.workload.spec.reference();
                @let u = v.uptime.as_ref();
                tr {
                    td { a href=(workload_href(&r)) { (r) } }
                    td { (percent(u.and_then(|u| u.h1))) }
                    td { (percent(u.and_then(|u| u.h24))) }
                    td { (percent(u.and_then(|u| u.d30))) }
                    td { (percent(u.and_then(|u| u.target))) }
                    td {
                        @let left = u.and_then(|u| u.budget_remaining);
                        @if left.is_some_and(|l| l < 0.0) { (badge("overspent")) " " }
                        (percent(left))
                    }
                    td { (u.and_then(|u| u.burn_rate).map_or_else(|| "-".into(), |b| format!("{b:.2}"))) }
                }
            }
        },
    );
    Page::live("Uptime", body)
}

/// `GET /ui/sources`: git sources, what they applied, and a sync button for admins.
pub fn sources(ctx: &Ctx<'_>, sources: &[SourceView]) -> Page {
    let body = html! {
        @if sources.is_empty() { p.muted { "None." } }
        (table(
            "Git sources",
            &["source", "repository", "wanted", "applied", "result", "last sync", ""],
            html! {
                @for s in sources {
                    tr {
                        td { (s.name) }
                        td { code { (s.url) } " " (s.path) }
                        td { (s.wanted) }
                        td { (s.applied.as_deref().map_or("-", |c| &c[..c.len().min(12)])) }
                        td { (badge(&s.result)) " " (s.message) }
                        td { @if s.last_sync > 0 { (age(s.last_sync, ctx.now)) " ago" } @else { "never" } }
                        td { (action(ctx, "sync", &s.name, "", "Sync now")) }
                    }
                }
            },
        ))
    };
    Page::live("Sources", body)
}

/// The login page: a token in, a session cookie out.
pub fn login(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (crate::head("Log in"))
            body {
                main.login {
                    h1 { "motley" }
                    p { "Log in with an admin or viewer token (" code { "motley token create --role viewer" } ")." }
                    @if let Some(e) = error { p.notice.bad role="alert" { (e) } }
                    form method="post" action="/ui/login" {
                        label for="token" { "Token" }
                        input #token type="password" name="token" autocomplete="off" required autofocus;
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// What an action does, said before it is confirmed: (question, consequence).
pub fn describe(action: &str, target: &str) -> Option<(String, &'static str)> {
    Some(match action {
        "restart" => (
            format!("Restart allocation {target}?"),
            "It is stopped, and its replacement is placed as for any stopped replica.",
        ),
        "cordon" => (
            format!("Cordon node {target}?"),
            "Nothing new is placed there; what runs there stays.",
        ),
        "uncordon" => (
            format!("Uncordon node {target}?"),
            "New work may be placed there again (this also ends a drain).",
        ),
        "drain" => (
            format!("Drain node {target}?"),
            "It is cordoned and its services and jobs move elsewhere, one replica of a service at a time.",
        ),
        "delete" => (
            format!("Delete {target}?"),
            "Its allocations are stopped and it is removed.",
        ),
        "promote" => (
            format!("Promote the canaries of {target}?"),
            "The rest of its replicas are replaced with the new version.",
        ),
        "abort" => (
            format!("Abort experiment {target}?"),
            "Every fault it holds is undone at once, and its report says it was aborted.",
        ),
        "sync" => (
            format!("Sync source {target} now?"),
            "Its repository is fetched and what changed is applied.",
        ),
        _ => return None,
    })
}

/// The confirmation step of an action: the same form again, confirmed.
pub fn confirm(ctx: &Ctx<'_>, action: &str, target: &str, ns: &str, back: &str) -> Page {
    let Some((question, consequence)) = describe(action, target) else {
        return error(&format!("no such action {action:?}"));
    };
    let body = html! {
        p { (consequence) }
        form method="post" action="/ui/act" {
            input type="hidden" name="csrf" value=(ctx.csrf);
            input type="hidden" name="action" value=(action);
            input type="hidden" name="target" value=(target);
            input type="hidden" name="namespace" value=(ns);
            input type="hidden" name="confirmed" value="yes";
            button.danger type="submit" { "Yes, " (action) }
            " "
            a href=(back) { "Cancel" }
        }
    };
    Page::fixed(question, body)
}

/// A page saying what went wrong (the API's own words).
pub fn error(message: &str) -> Page {
    Page::fixed(
        "Not done",
        html! { p.notice.bad role="alert" { (message) } p { a href="/ui/" { "Back to the overview" } } },
    )
}

/// `GET /ui/whatif?lose=NODE`: what the control plane would do if the node died.
pub fn whatif(_ctx: &Ctx<'_>, node: &str, o: &motley_scheduler::whatif::Outcome) -> Page {
    use motley_scheduler::whatif::Verdict;
    let affected: Vec<_> = o
        .workloads
        .iter()
        .filter(|e| e.verdict != Verdict::Unaffected)
        .collect();
    let body = html! {
        p { "The real controllers and scheduler, run on a copy of the cluster without "
            a href=(node_href(node)) { (node) } ": nothing is changed by asking. Settled in "
            (o.passes) " passes (" (format!("{:.1}", o.settled_ms as f64 / 1000.0)) " s of cluster time)." }
        @if affected.is_empty() { p { "Nothing runs there: every workload is unaffected." } }
        @else {
            (table(
                "Workloads it touches",
                &["workload", "verdict", "before", "after", "where after", "why"],
                html! {
                    @for e in &affected {
                        tr {
                            td { a href=(workload_href(&e.workload)) { (e.workload) } }
                            td { (badge(verdict(&e.verdict))) }
                            td { (e.before) " of " (e.desired) }
                            td { (e.after) " of " (e.desired) }
                            td { (e.nodes_after.join(", ")) }
                            td { (e.why.as_deref().unwrap_or("")) }
                        }
                    }
                },
            ))
        }
        p { a href="/ui/whatif" { "Every node in turn" } }
    };
    Page::fixed(format!("What if {node} dies?"), body)
}

/// `GET /ui/whatif`: every node's loss in turn: single points of failure.
pub fn each_node(_ctx: &Ctx<'_>, losses: &[motley_scheduler::whatif::NodeLoss]) -> Page {
    let names = |v: &[WorkloadRef]| -> Markup {
        html! { @for (i, r) in v.iter().enumerate() { @if i > 0 { ", " } a href=(workload_href(r)) { (r) } } }
    };
    let spof: Vec<_> = losses.iter().filter(|l| !l.down.is_empty()).collect();
    let body = html! {
        @if spof.is_empty() { p { "No node is a single point of failure: losing any one leaves every workload running." } }
        @for l in &spof {
            p.notice.bad { a href=(node_href(&l.node)) { (l.node) } " is a single point of failure for " (names(&l.down)) }
        }
        (table(
            "Each node's loss, one at a time",
            &["node", "down", "degraded", "moved", ""],
            html! {
                @for l in losses {
                    tr {
                        th scope="row" { a href=(node_href(&l.node)) { (l.node) } }
                        td { (names(&l.down)) }
                        td { (names(&l.degraded)) }
                        td { (l.moved.len()) }
                        td { a href={ "/ui/whatif?lose=" (crate::urlencode(&l.node)) } { "details" } }
                    }
                }
            },
        ))
    };
    Page::fixed("What if a node dies?", body)
}

fn verdict(v: &motley_scheduler::whatif::Verdict) -> &'static str {
    use motley_scheduler::whatif::Verdict;
    match v {
        Verdict::Unaffected => "unaffected",
        Verdict::Moved => "moved",
        Verdict::Degraded => "degraded",
        Verdict::Down => "down",
        Verdict::New => "new",
    }
}
