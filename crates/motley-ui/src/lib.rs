//! motley's web dashboard: pages rendered on the server from the API's own answers.
//!
//! Pure: every page is a function of API bodies ([`motley_core::api`]) and a [`Ctx`]
//! (who is looking, their CSRF token, the namespace chosen, the time) to HTML. The
//! server's `ui` module does the IO: it asks its own API for those bodies with the
//! caller's token, so a page shows exactly what that token may read, and every
//! action goes through the API's authorization and audit (docs/dashboard.md).
//!
//! * [`assets`] — htmx, the stylesheet and the log follower, embedded in the binary.
//! * [`nodes`] — the overview (nodes as cards) and a node's page.
//! * [`workloads`] — lists by kind, a workload with its refusal matrix, an allocation.
//! * [`pages`] — events, uptime, sources, what-if, login, confirmation and error pages.
//!
//! Invariants: everything from the cluster is escaped (maud escapes by default; no
//! `PreEscaped` of cluster data); no Secret value is ever rendered (only names and
//! keys); action buttons are rendered for admins only, and the server checks again.

#![forbid(unsafe_code)]

pub mod assets;
pub mod lab;
pub mod nodes;
pub mod pages;
pub mod workloads;

use maud::{DOCTYPE, Markup, html};
use motley_core::api::Whoami;
use motley_core::model::DEFAULT_NAMESPACE;

/// Who is looking at a page, and at what.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The token, as the API describes it.
    pub who: &'a Whoami,
    /// The token for this session's forms (the server checks it on every action).
    pub csrf: &'a str,
    /// The namespace chosen; `None`: all that the token may see.
    pub namespace: Option<&'a str>,
    /// The namespaces to choose from.
    pub namespaces: &'a [String],
    /// Now, ms since the epoch.
    pub now: u64,
    /// The page's path (`/ui/services`), for the navigation and the namespace picker.
    pub path: &'a str,
}

impl Ctx<'_> {
    /// Whether actions are offered.
    pub fn admin(&self) -> bool {
        self.who.role == "admin"
    }
}

/// A rendered page: its title and its live part, which the browser refreshes in place
/// every few seconds when `live`.
pub struct Page {
    /// The `<title>` and heading.
    pub title: String,
    /// The content.
    pub body: Markup,
    /// Refreshed in place (htmx polling of `#live`).
    pub live: bool,
    /// After the live part, never refreshed (a log being followed).
    pub after: Option<Markup>,
}

impl Page {
    /// A page whose content the browser refreshes every few seconds.
    pub fn live(title: impl Into<String>, body: Markup) -> Page {
        Page {
            title: title.into(),
            body,
            live: true,
            after: None,
        }
    }

    /// A page that stays as loaded (forms, confirmations, errors).
    pub fn fixed(title: impl Into<String>, body: Markup) -> Page {
        Page {
            live: false,
            ..Page::live(title, body)
        }
    }
}

/// The sections of the navigation: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/ui/", "Overview"),
    ("/ui/services", "Services"),
    ("/ui/jobs", "Jobs"),
    ("/ui/daemons", "Daemons"),
    ("/ui/volumes", "Volumes"),
    ("/ui/sources", "Sources"),
    ("/ui/events", "Events"),
    ("/ui/uptime", "Uptime"),
    ("/ui/whatif", "What if"),
    ("/ui/experiments", "Experiments"),
];

/// `?namespace=NS` for a link to an object of `ns` (nothing for the default namespace).
pub fn ns_query(ns: &str) -> String {
    if ns == DEFAULT_NAMESPACE || ns.is_empty() {
        String::new()
    } else {
        format!("?namespace={}", urlencode(ns))
    }
}

/// Percent-encodes a path segment or query value (names are DNS labels, but ids and
/// anything else from the cluster are encoded rather than trusted).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The link to a workload's page.
pub fn workload_href(r: &motley_core::model::WorkloadRef) -> String {
    format!(
        "/ui/w/{}/{}{}",
        r.kind.as_str(),
        urlencode(&r.name),
        ns_query(&r.namespace)
    )
}

/// The link to an allocation's page.
pub fn alloc_href(id: &str, ns: &str) -> String {
    format!("/ui/allocs/{}{}", urlencode(id), ns_query(ns))
}

/// The link to a node's page.
pub fn node_href(name: &str) -> String {
    format!("/ui/nodes/{}", urlencode(name))
}

/// The whole document around a page (or only its live part, for a refresh).
pub fn document(ctx: &Ctx<'_>, page: &Page, fragment: bool) -> Markup {
    let live = live_part(ctx, page);
    if fragment {
        return live;
    }
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&page.title))
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        span.brand { "motley" }
                        ul {
                            @for (href, label) in NAV {
                                li {
                                    @if ctx.path == *href {
                                        a href=(nav_href(ctx, href)) aria-current="page" { (label) }
                                    } @else {
                                        a href=(nav_href(ctx, href)) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span { "token " (ctx.who.id) " (" (ctx.who.role)
                            @if !ctx.who.namespaces.is_empty() { " in " (ctx.who.namespaces.join(", ")) }
                            ")" }
                        form method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main {
                    h1 { (page.title) }
                    (namespace_picker(ctx))
                    (live)
                    @if let Some(after) = &page.after { (after) }
                }
            }
        }
    }
}

fn nav_href(ctx: &Ctx<'_>, href: &str) -> String {
    match ctx.namespace {
        Some(ns) if href != "/ui/" => format!("{href}?namespace={}", urlencode(ns)),
        _ => href.to_string(),
    }
}

fn live_part(ctx: &Ctx<'_>, page: &Page) -> Markup {
    if !page.live {
        return html! { div #live { (page.body) } };
    }
    let url = match ctx.namespace {
        Some(ns) => format!("{}?namespace={}", ctx.path, urlencode(ns)),
        None => ctx.path.to_string(),
    };
    html! {
        div #live hx-get=(url) hx-trigger="every 5s" hx-swap="outerHTML" hx-select="#live" {
            (page.body)
        }
    }
}

/// `<head>`: the stylesheet and scripts, all from this server (the Content-Security-
/// Policy allows nothing else).
pub fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
            title { (title) " · motley" }
            // No icon: a browser would otherwise ask for /favicon.ico without a token
            // (outside /ui, the cookie's path), and each refusal counts toward the
            // address's lockout after failed authentications.
            link rel="icon" href="data:,";
            link rel="stylesheet" href=(assets::href("motley.css"));
            script src=(assets::href("htmx.min.js")) defer {}
            script src=(assets::href("motley.js")) defer {}
        }
    }
}

/// The namespace picker: all (tokens that see the whole cluster) or one.
fn namespace_picker(ctx: &Ctx<'_>) -> Markup {
    if ctx.namespaces.len() < 2 && ctx.who.namespaces.len() < 2 && ctx.namespace.is_none() {
        return html! {};
    }
    html! {
        form.ns method="get" action=(ctx.path) {
            label for="namespace" { "Namespace" }
            select #namespace name="namespace" {
                @if ctx.who.namespaces.is_empty() {
                    option value="" selected[ctx.namespace.is_none()] { "all" }
                }
                @for ns in ctx.namespaces {
                    option value=(ns) selected[ctx.namespace == Some(ns.as_str())] { (ns) }
                }
            }
            button type="submit" { "Show" }
        }
    }
}

/// An admin's action button: a form posting to the confirmation step.
pub fn action(ctx: &Ctx<'_>, action: &str, target: &str, ns: &str, label: &str) -> Markup {
    if !ctx.admin() {
        return html! {};
    }
    html! {
        form.action method="post" action="/ui/act" {
            input type="hidden" name="csrf" value=(ctx.csrf);
            input type="hidden" name="action" value=(action);
            input type="hidden" name="target" value=(target);
            input type="hidden" name="namespace" value=(ns);
            button type="submit" { (label) }
        }
    }
}

/// A state as a badge whose colour class follows what it means.
pub fn badge(state: &str) -> Markup {
    let class = match state {
        "ready" | "running" | "complete" | "healthy" | "ok" | "synced" => "good",
        "suspect" | "pending" | "backoff" | "unknown" | "progressing" | "waiting" | "queued"
        | "cordoned" | "draining" | "stopping" => "warn",
        "down" | "failed" | "lost" | "unhealthy" | "blocked" | "error" | "overspent" => "bad",
        "moved" => "warn",
        _ => "plain",
    };
    html! { span class={ "badge " (class) } { (state) } }
}

/// A fraction as `99.52 %`, or `-`.
pub fn percent(v: Option<f64>) -> String {
    match v {
        Some(f) => format!("{:.2} %", f * 100.0),
        None => "-".into(),
    }
}

/// A table wrapped to scroll sideways on a narrow screen.
pub fn table(caption: &str, heads: &[&str], rows: Markup) -> Markup {
    html! {
        div.scroll {
            table {
                caption { (caption) }
                thead { tr { @for h in heads { th scope="col" { (h) } } } }
                tbody { (rows) }
            }
        }
    }
}

#[cfg(test)]
mod tests;
