//! The dashboard's pages and actions: each asks the API for what its page shows.

use super::*;
use motley_core::api::{NodeView, SourceView, WorkloadDetail, WorkloadView};
use motley_core::events::Event;
use motley_core::model::Allocation;
use motley_ui::urlencode;

/// The session for a page at `path`, or the answer that sends the browser to log in.
macro_rules! session {
    ($ui:expr, $peer:expr, $headers:expr, $path:expr, $q:expr) => {
        match checked(&$ui, &$headers, $peer, $path, &$q).await {
            Ok(s) => s,
            Err(resp) => return resp,
        }
    };
}

/// `Ok` data or the refusal as the page.
macro_rules! or_refused {
    ($s:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return $s.refused(r),
        }
    };
}

pub(crate) async fn overview(
    State(ui): State<Ui>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<NsParam>,
) -> Response {
    let s = session!(ui, peer, headers, "/ui/", q);
    let c = s.call(&ui);
    let ns = s.ns_param();
    let nodes: Result<Vec<NodeView>, Refused> = c.get("/v1/nodes").await;
    let allocs: Vec<Allocation> = or_refused!(s, c.get(&format!("/v1/allocs?{ns}")).await);
    let workloads: Vec<WorkloadView> = or_refused!(s, c.get(&format!("/v1/workloads?{ns}")).await);
    let workloads: Vec<WorkloadView> = workloads
        .into_iter()
        .filter(|w| {
            matches!(
                w.workload.spec.kind(),
                Kind::Service | Kind::Job | Kind::Daemon
            )
        })
        .collect();
    let live: Vec<Allocation> = allocs.into_iter().filter(|a| a.is_live()).collect();
    let ctx_nodes = match &nodes {
        Ok(n) => Ok(n.as_slice()),
        Err(r) => Err(r.message.as_str()),
    };
    let page = render_with(&s, |ctx| {
        motley_ui::nodes::overview(ctx, ctx_nodes, &live, &workloads)
    });
    s.render(&page, StatusCode::OK)
}

/// Builds a page with the session's context.
fn render_with(s: &Session, f: impl FnOnce(&Ctx<'_>) -> Page) -> Page {
    let ctx = Ctx {
        who: &s.who,
        csrf: &s.csrf,
        namespace: s.namespace.as_deref(),
        namespaces: &s.namespaces,
        now: now_ms(),
        path: &s.path,
    };
    f(&ctx)
}

/// A page made of one API answer: the session for `path`, `GET` of the URI `uri`
/// makes from it (with the session's namespace), then `page` of the body.
async fn from_one<T: DeserializeOwned>(
    ui: Ui,
    peer: Option<ConnectInfo<SocketAddr>>,
    headers: HeaderMap,
    q: NsParam,
    path: &str,
    uri: impl FnOnce(&Session) -> String,
    page: impl FnOnce(&Ctx<'_>, &T) -> Page,
) -> Response {
    let s = session!(ui, peer, headers, path, q);
    let body: T = or_refused!(s, s.call(&ui).get(&uri(&s)).await);
    let page = render_with(&s, |ctx| page(ctx, &body));
    s.render(&page, StatusCode::OK)
}

macro_rules! page_of_one {
    ($name:ident, $path:expr, $t:ty, |$s:ident| $uri:expr, $page:expr) => {
        pub(crate) async fn $name(
            State(ui): State<Ui>,
            Peer(peer): Peer,
            headers: HeaderMap,
            Query(q): Query<NsParam>,
        ) -> Response {
            from_one::<$t>(
                ui,
                peer,
                headers,
                q,
                $path,
                |$s| $uri,
                |ctx, b: &$t| $page(ctx, b),
            )
            .await
        }
    };
}

macro_rules! list_page {
    ($name:ident, $kind:expr) => {
        page_of_one!(
            $name,
            motley_ui::workloads::kind_page($kind).0,
            Vec<WorkloadView>,
            |s| format!("/v1/workloads?{}kind={}", s.ns_param(), $kind.as_str()),
            |ctx, views| motley_ui::workloads::list(ctx, $kind, views)
        );
    };
}

list_page!(services, Kind::Service);
list_page!(jobs, Kind::Job);
list_page!(daemons, Kind::Daemon);
list_page!(volumes, Kind::Volume);
page_of_one!(
    sources,
    "/ui/sources",
    Vec<SourceView>,
    |s| format!("/v1/sources?{}", s.ns_param()),
    motley_ui::pages::sources
);
page_of_one!(
    experiments,
    "/ui/experiments",
    Vec<motley_core::api::ExperimentSummary>,
    |_s| "/v1/experiments".to_string(),
    motley_ui::lab::experiments
);

/// `GET /ui/experiments/{name}`: one report.
pub(crate) async fn experiment(
    State(ui): State<Ui>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<NsParam>,
) -> Response {
    let n = urlencode(&name);
    from_one(
        ui,
        peer,
        headers,
        q,
        &format!("/ui/experiments/{n}"),
        |_| format!("/v1/experiments/{n}"),
        motley_ui::lab::experiment,
    )
    .await
}

page_of_one!(
    events,
    "/ui/events",
    Vec<Event>,
    |s| format!("/v1/events?{}limit=200", s.ns_param()),
    motley_ui::pages::events
);
page_of_one!(
    uptime,
    "/ui/uptime",
    Vec<WorkloadView>,
    |s| format!("/v1/workloads?{}kind=service", s.ns_param()),
    motley_ui::pages::uptime
);

/// An object page's last 50 events; `object` is the encoded `for=` value (with its
/// `&namespace=` when it has one).
async fn recent_events(c: &Call<'_>, object: &str) -> Result<Vec<Event>, Refused> {
    c.get(&format!("/v1/events?for={object}&limit=50")).await
}

/// The namespace an object page is about: `?namespace=`, else `default`.
fn object_ns(q: &NsParam) -> String {
    q.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

pub(crate) async fn workload(
    State(ui): State<Ui>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<NsParam>,
) -> Response {
    let path = format!("/ui/w/{}/{}", urlencode(&kind), urlencode(&name));
    let s = session!(ui, peer, headers, &path, q);
    let ns = urlencode(&object_ns(&q));
    let c = s.call(&ui);
    let (k, n) = (urlencode(&kind), urlencode(&name));
    let d: WorkloadDetail = or_refused!(
        s,
        c.get(&format!("/v1/workloads/{k}/{n}?namespace={ns}"))
            .await
    );
    let ev = or_refused!(
        s,
        recent_events(&c, &format!("{k}/{n}&namespace={ns}")).await
    );
    let page = render_with(&s, |ctx| motley_ui::workloads::workload(ctx, &d, &ev));
    s.render(&page, StatusCode::OK)
}

pub(crate) async fn alloc(
    State(ui): State<Ui>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<NsParam>,
) -> Response {
    let path = format!("/ui/allocs/{}", urlencode(&id));
    let s = session!(ui, peer, headers, &path, q);
    let ns = urlencode(&object_ns(&q));
    let c = s.call(&ui);
    let i = urlencode(&id);
    let a: Allocation = or_refused!(s, c.get(&format!("/v1/allocs/{i}?namespace={ns}")).await);
    let ev = or_refused!(
        s,
        recent_events(&c, &format!("alloc/{i}&namespace={ns}")).await
    );
    let src = format!("/ui/allocs/{i}/log?namespace={ns}");
    let page = render_with(&s, |ctx| motley_ui::workloads::alloc(ctx, &a, &ev, &src));
    s.render(&page, StatusCode::OK)
}

/// `GET /ui/allocs/{id}/log`: the allocation's log as server-sent events: what is kept
/// (the last 64 KiB), then each new piece; `end` says why it stopped.
pub(crate) async fn log(
    State(ui): State<Ui>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<NsParam>,
) -> Response {
    let Some(token) = session(&headers) else {
        return (StatusCode::UNAUTHORIZED, "log in first").into_response();
    };
    let call = Call {
        ui: &ui,
        token: &token,
        peer,
    };
    let uri = format!(
        "/v1/allocs/{}/logs?follow=true&tail=65536&namespace={}",
        urlencode(&id),
        urlencode(&object_ns(&q))
    );
    let events: futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>> =
        match call.send(Method::GET, &uri, None).await {
            Ok(resp) if resp.status().is_success() => {
                use futures_util::StreamExt;
                let body = resp.into_body().into_data_stream();
                let state = (body, Vec::new(), false);
                futures_util::stream::unfold(state, |(mut body, mut buf, done)| async move {
                    if done {
                        return None;
                    }
                    loop {
                        match body.next().await {
                            Some(Ok(piece)) => {
                                buf.extend_from_slice(&piece);
                                let text = utf8_prefix(&mut buf);
                                if !text.is_empty() {
                                    return Some((Ok(sse(None, &text)), (body, buf, false)));
                                }
                            }
                            Some(Err(e)) => {
                                let end = sse(Some("end"), &format!("the log broke off: {e}"));
                                return Some((Ok(end), (body, buf, true)));
                            }
                            None => {
                                let end = sse(Some("end"), "the log ended");
                                return Some((Ok(end), (body, buf, true)));
                            }
                        }
                    }
                })
                .boxed()
            }
            Ok(resp) => {
                let status = resp.status();
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                let message = serde_json::from_slice::<motley_core::api::ErrorBody>(&bytes)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| format!("{status}"));
                once_end(message)
            }
            Err(r) => once_end(r.message),
        };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

fn once_end(
    message: String,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
    use futures_util::StreamExt;
    futures_util::stream::once(async move { Ok(sse(Some("end"), &message)) }).boxed()
}

pub(crate) async fn node(
    State(ui): State<Ui>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<NsParam>,
) -> Response {
    let path = format!("/ui/nodes/{}", urlencode(&name));
    let s = session!(ui, peer, headers, &path, q);
    let c = s.call(&ui);
    let n = urlencode(&name);
    let view: NodeView = or_refused!(s, c.get(&format!("/v1/nodes/{n}")).await);
    let mut allocs: Vec<Allocation> = or_refused!(s, c.get(&format!("/v1/allocs?node={n}")).await);
    allocs.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    allocs.truncate(100);
    let ev = or_refused!(s, recent_events(&c, &format!("node/{n}")).await);
    let page = render_with(&s, |ctx| {
        motley_ui::nodes::node_page(ctx, &view, &allocs, &ev)
    });
    s.render(&page, StatusCode::OK)
}

#[derive(Deserialize)]
pub(crate) struct ActForm {
    csrf: String,
    action: String,
    target: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    confirmed: String,
}

/// `POST /ui/act`: first a confirmation page, then (confirmed) the one API request the
/// action is, and back to the object's page; a refusal is shown in the API's words.
pub(crate) async fn act(
    State(ui): State<Ui>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(f): Form<ActForm>,
) -> Response {
    let q = NsParam {
        namespace: Some(f.namespace.clone()).filter(|n| !n.is_empty()),
    };
    let s = session!(ui, peer, headers, "/ui/act", q);
    if !same(&s.csrf, &f.csrf) {
        return s.render(
            &motley_ui::pages::error(
                "refused: this form was not sent from this session's page (reload it and try again)",
            ),
            StatusCode::FORBIDDEN,
        );
    }
    let ns = if f.namespace.is_empty() {
        DEFAULT_NAMESPACE.to_string()
    } else {
        f.namespace.clone()
    };
    let Some((method, uri, body, back)) = request_of(&f.action, &f.target, &ns) else {
        return s.render(
            &motley_ui::pages::error(&format!("no such action {:?}", f.action)),
            StatusCode::BAD_REQUEST,
        );
    };
    if f.confirmed != "yes" {
        let page = render_with(&s, |ctx| {
            motley_ui::pages::confirm(ctx, &f.action, &f.target, &f.namespace, &back)
        });
        return s.render(&page, StatusCode::OK);
    }
    match s
        .call(&ui)
        .json::<serde_json::Value>(method, &uri, body)
        .await
    {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(r) => s.refused(r),
    }
}

/// An action's API request: method, path, body, and the page to go back to.
fn request_of(
    action: &str,
    target: &str,
    ns: &str,
) -> Option<(Method, String, Option<serde_json::Value>, String)> {
    let t = urlencode(target);
    let n = urlencode(ns);
    let empty = Some(serde_json::json!({}));
    let workload = || {
        let (kind, name) = target.split_once('/')?;
        Some((urlencode(kind), urlencode(name)))
    };
    let back_ns = motley_ui::ns_query(ns);
    Some(match action {
        "restart" => (
            Method::POST,
            format!("/v1/allocs/{t}/restart?namespace={n}"),
            empty,
            format!("/ui/allocs/{t}{back_ns}"),
        ),
        "cordon" | "uncordon" | "drain" => (
            Method::POST,
            format!("/v1/nodes/{t}/{action}"),
            empty,
            format!("/ui/nodes/{t}"),
        ),
        "delete" => {
            let (k, name) = workload()?;
            (
                Method::DELETE,
                format!("/v1/workloads/{k}/{name}?namespace={n}"),
                None,
                format!(
                    "/ui/{}{back_ns}",
                    if k == "job" { "jobs" } else { "services" }
                ),
            )
        }
        "promote" => {
            let (k, name) = workload()?;
            (
                Method::POST,
                format!("/v1/workloads/{k}/{name}/promote?namespace={n}"),
                None,
                format!("/ui/w/{k}/{name}{back_ns}"),
            )
        }
        "abort" => (
            Method::POST,
            format!("/v1/experiments/{t}/abort"),
            empty,
            format!("/ui/experiments/{t}"),
        ),
        "sync" => (
            Method::POST,
            format!("/v1/sources/{t}/sync?namespace={n}"),
            Some(serde_json::json!({ "allow_empty": false })),
            "/ui/sources".to_string(),
        ),
        _ => return None,
    })
}

#[derive(Deserialize)]
pub(crate) struct WhatIfQuery {
    #[serde(default)]
    lose: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// `GET /ui/whatif[?lose=NODE]`: a node's loss, or every node's in turn, as
/// `POST /v1/what-if` answers it for this session's token.
pub(crate) async fn whatif(
    State(ui): State<Ui>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<WhatIfQuery>,
) -> Response {
    use motley_scheduler::whatif::{NodeLoss, Outcome};
    #[derive(Deserialize)]
    struct Answer {
        outcome: Option<Outcome>,
        each_node: Option<Vec<NodeLoss>>,
    }
    let ns = NsParam {
        namespace: q.namespace.clone(),
    };
    let s = session!(ui, peer, headers, "/ui/whatif", ns);
    let body = match &q.lose {
        Some(n) => serde_json::json!({ "lose": [n] }),
        None => serde_json::json!({ "each_node": true }),
    };
    let a: Answer = or_refused!(
        s,
        s.call(&ui)
            .json(Method::POST, "/v1/what-if", Some(body))
            .await
    );
    let page = match (&q.lose, a.outcome, a.each_node) {
        (Some(n), Some(o), _) => render_with(&s, |ctx| motley_ui::pages::whatif(ctx, n, &o)),
        (None, _, Some(l)) => render_with(&s, |ctx| motley_ui::pages::each_node(ctx, &l)),
        _ => motley_ui::pages::error("the server gave no answer"),
    };
    s.render(&page, StatusCode::OK)
}
