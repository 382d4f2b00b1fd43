//! The HTTP API under `/v1`, plus `/metrics` and `/healthz`.
//!
//! Every route but `/healthz` needs a bearer token. Admin tokens may use every
//! route; node tokens only `/v1/agent/connect`. Bodies are capped at
//! [`MAX_BODY`] (413 beyond it).

use motley_rt::HashMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use motley_core::api::{
    CreatedToken, JoinRequest, JoinResponse, ManifestSet, NodeView, ObjectResults, TokenInfo,
    TokenRequest, VersionInfo, WorkloadDetail, WorkloadView,
};
use motley_core::failure::Health;
use motley_core::manifest;
use motley_core::model::{Allocation, Kind, Spec, Workload, WorkloadRef};
use motley_core::proto::ServerMsg;
use motley_core::reconcile::{self, node_matches};
use motley_core::selector::Selector;
use motley_store::Txn;
use serde::Deserialize;

use crate::auth::{Access, Role};
use crate::keys;
use crate::state::{Shared, lock, now_ms};

mod admin;
pub mod agent_ws;
mod events;
mod experiments;
mod nodes;
mod sources;
mod whatif;
pub(crate) mod workloads;

use admin::*;
use nodes::*;
pub use workloads::redacted;
use workloads::*;

/// Largest accepted request body.
pub const MAX_BODY: usize = 4 << 20;

pub use crate::error::{ApiError, ApiResult};

/// Who is calling, attached by the auth middleware.
#[derive(Clone, Debug)]
pub struct Caller(pub Role);

/// The calling token's public id, attached by the auth middleware.
#[derive(Clone, Debug)]
pub struct TokenId(pub String);

/// The namespaces the caller's token is limited to (empty: the whole cluster).
#[derive(Clone, Debug, Default)]
pub struct Limited(pub Vec<String>);

/// Builds the router.
pub fn router(shared: Arc<Shared>) -> Router {
    // Every route but /healthz: authenticate, authorize (auth::access), then forward to
    // the leader when this server does not lead.
    let mut authed = Router::new();
    for r in crate::routes::ROUTES {
        match handler(r) {
            Some(h) => authed = authed.route(r.path, h),
            None => tracing::error!("no handler for {} {}", r.method, r.path),
        }
    }
    let authed = authed
        .route_layer(middleware::from_fn_with_state(shared.clone(), forward))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authenticate));
    // Any other path: authenticated first, so that routes are not disclosed before
    // authentication (401 without a valid token, 404 with one).
    let unknown = Router::new()
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate));
    // A git server's push notice: no token (it only moves a poll forward), answered
    // by the leader.
    let hooks = Router::new()
        .route("/hooks/sources/{name}", post(sources::hook))
        .route_layer(middleware::from_fn_with_state(shared.clone(), forward));
    Router::new()
        .merge(authed)
        .merge(hooks)
        .route("/healthz", get(|| async { "ok" }))
        .merge(unknown)
        .layer(middleware::from_fn(declared_size))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(deadline))
        .with_state(shared)
}

/// How long a request may take to arrive and be answered, up to its response's head
/// (streams such as `logs -f` and agent connections go on after that): a client that
/// sends its body slowly, or not at all, is answered 408 and its connection freed.
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} s to arrive and be answered",
                REQUEST_DEADLINE.as_secs()
            ),
        )
        .into_response(),
    }
}

/// Header of a request one server forwarded to another (never forwarded again).
pub const FORWARDED: &str = "x-motley-forwarded";

/// The handler of a route of [`crate::routes::ROUTES`] (a test checks every route has
/// one).
fn handler(r: &crate::routes::Route) -> Option<axum::routing::MethodRouter<Arc<Shared>>> {
    Some(match (r.method, r.path) {
        ("GET", "/v1/version") => get(version),
        ("GET", "/v1/whoami") => get(whoami),
        ("POST", "/v1/apply") => post(apply),
        ("POST", "/v1/delete") => post(delete_set),
        ("POST", "/v1/plan") => post(plan),
        ("POST", "/v1/what-if") => post(whatif::what_if),
        ("POST", "/v1/experiments") => post(experiments::run_experiment),
        ("GET", "/v1/experiments") => get(experiments::list_experiments),
        ("GET", "/v1/experiments/{name}") => get(experiments::get_experiment),
        ("POST", "/v1/experiments/{name}/abort") => post(experiments::abort_experiment),
        ("GET", "/v1/workloads") => get(list_workloads),
        ("GET", "/v1/workloads/{kind}/{name}") => get(get_workload),
        ("DELETE", "/v1/workloads/{kind}/{name}") => delete(delete_workload),
        ("POST", "/v1/workloads/{kind}/{name}/promote") => post(workloads::promote),
        ("POST", "/v1/workloads/{kind}/{name}/run") => post(workloads::run_now),
        ("GET", "/v1/nodes") => get(list_nodes),
        ("GET", "/v1/nodes/{name}") => get(get_node),
        ("POST", "/v1/nodes/{name}/labels") => post(relabel_node),
        ("POST", "/v1/nodes/{name}/{action}") => post(node_action),
        ("GET", "/v1/allocs") => get(list_allocs),
        ("GET", "/v1/allocs/{id}") => get(get_alloc),
        ("GET", "/v1/allocs/{id}/logs") => get(logs),
        ("POST", "/v1/allocs/{id}/restart") => post(restart_alloc),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/v1/tokens") => get(list_tokens),
        ("POST", "/v1/tokens") => post(create_token),
        ("DELETE", "/v1/tokens/{id}") => delete(revoke_token),
        ("GET", "/v1/snapshot") => get(snapshot),
        ("GET", "/v1/servers") => get(list_servers),
        ("GET", "/v1/catalog") => get(catalog),
        ("GET", "/v1/audit") => get(list_audit),
        ("GET", "/v1/secrets/{name}/reveal") => get(reveal_secret),
        ("POST", "/v1/secrets/rotate-key") => post(rotate_key),
        ("GET", "/v1/agent/connect") => get(agent_ws::connect),
        ("POST", "/v1/join") => post(join),
        ("GET", "/v1/events") => get(events::list_events),
        ("GET", "/v1/sources") => get(sources::list_sources),
        ("GET", "/v1/sources/{name}") => get(sources::get_source),
        ("POST", "/v1/sources/{name}/sync") => post(sources::sync_source),
        _ => return None,
    })
}

use crate::routes::answered_here;

/// Forwards a request to the leading server when this one does not lead. When the
/// leader cannot be reached (it just died, or there is none), the request is answered
/// here, from this server's cache and the store.
async fn forward(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if answered_here(req.uri().path()) || req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let Some(leader) = s.ha.leader_elsewhere() else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response();
        }
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", leader.url.trim_end_matches('/'));
    let mut rb =
        s.ha.http
            .request(parts.method.clone(), &url)
            .header(FORWARDED, s.ha.me.id.as_str())
            .body(bytes.clone());
    for h in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&h) {
            rb = rb.header(h, v);
        }
    }
    match rb.send().await {
        Ok(resp) => {
            let mut out = Response::builder().status(resp.status());
            if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
                out = out.header(header::CONTENT_TYPE, ct);
            }
            out.body(Body::from_stream(resp.bytes_stream()))
                .unwrap_or_else(|e| {
                    ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()).into_response()
                })
        }
        Err(e) if e.is_connect() => {
            tracing::debug!("leader {} unreachable ({e}); answering here", leader.url);
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
        Err(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "the leading server {} failed during the request ({}); it may or may not have been carried out",
                leader.url,
                motley_net::error_chain(&e)
            ),
        )
        .into_response(),
    }
}

/// `GET /v1/catalog`: every service that can be reached, its address and its
/// endpoints in rotation, as last sent to the agents.
async fn catalog(State(s): State<Arc<Shared>>) -> Json<motley_core::catalog::Catalog> {
    let mut c = (*s.catalog.current()).clone();
    // Certificates and their keys go to agents only.
    c.certs.clear();
    Json(c)
}

/// `GET /v1/servers`: the servers of the control plane and which one leads.
async fn list_servers(State(s): State<Arc<Shared>>) -> Json<Vec<motley_core::api::ServerInfo>> {
    Json(s.ha.view())
}

/// Refuses a body whose declared length is over the limit before reading any of it
/// (bodies without a length are still capped while read).
async fn declared_size(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn observe(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let code = resp.status().as_u16();
    s.metrics
        .api_requests
        .get_or_create(&crate::metrics::RequestLabels {
            method,
            route: route.clone(),
            code,
        })
        .inc();
    s.metrics
        .api_latency
        .get_or_create(&crate::metrics::RouteLabel { route })
        .observe(started.elapsed().as_secs_f64());
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Who called, for the audit log: `token <id> (<role>)`.
#[derive(Clone, Debug)]
pub struct Who(pub String);

fn peer_of(req: &Request) -> Option<std::net::SocketAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
}

/// Records `req` in the audit log: who, from where, what, the status and why.
fn audit(s: &Shared, req: &Request, who: &str, status: StatusCode, why: &str) {
    s.trust.audit.record(motley_core::api::AuditEntry {
        at: now_ms(),
        who: who.to_string(),
        peer: peer_of(req).map_or_else(|| "-".into(), |p| p.ip().to_string()),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        status: status.as_u16(),
        why: why.to_string(),
    });
}

/// Refuses, and records the refusal in the audit log.
fn deny(s: &Shared, req: &Request, who: &str, status: StatusCode, why: &str) -> Response {
    audit(s, req, who, status, why);
    ApiError::new(status, why).into_response()
}

async fn authenticate(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let now = now_ms();
    let ip = peer_of(&req).map(|p| p.ip());
    if let Some(wait) = ip.and_then(|ip| s.trust.audit.locked_out(ip, now)) {
        let why = format!(
            "too many failed authentications from this address; try again in {} s",
            wait.div_ceil(1000)
        );
        let mut resp = deny(&s, &req, "anonymous", StatusCode::TOO_MANY_REQUESTS, &why);
        if let Ok(v) = wait.div_ceil(1000).to_string().parse() {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let found = bearer(req.headers()).map(|token| {
        let hash = motley_net::token_hash(token);
        let cache = s.cache();
        match cache.tokens.get(&hash) {
            Some(t) if !t.expired(now) => {
                Some((t.role.clone(), t.id.clone(), t.namespaces.clone()))
            }
            _ => None,
        }
    });
    match found {
        Some(Some((role, id, namespaces))) => {
            let who = if namespaces.is_empty() {
                format!("token {id} ({})", role.name())
            } else {
                format!("token {id} ({} in {})", role.name(), namespaces.join(","))
            };
            req.extensions_mut().insert(Caller(role));
            req.extensions_mut().insert(TokenId(id));
            req.extensions_mut().insert(Limited(namespaces));
            req.extensions_mut().insert(Who(who));
            next.run(req).await
        }
        other => {
            if let Some(ip) = ip {
                s.trust.audit.failed(ip, now);
            }
            let (who, why) = match other {
                None => ("anonymous", "missing bearer token"),
                _ => ("invalid token", "invalid or expired token"),
            };
            deny(&s, &req, who, StatusCode::UNAUTHORIZED, why)
        }
    }
}

/// Applies [`crate::auth::access`] to the matched route; for node credentials, also
/// checks that what is asked for belongs to the node.
async fn authorize(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let (Some(Caller(role)), who) = (
        req.extensions().get::<Caller>().cloned(),
        req.extensions()
            .get::<Who>()
            .map_or_else(String::new, |w| w.0.clone()),
    ) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "not authenticated").into_response();
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let refuse = |why: &str| deny(&s, &req, &who, StatusCode::FORBIDDEN, why);
    if let Some(Limited(namespaces)) = req.extensions().get::<Limited>()
        && !namespaces.is_empty()
        && let Err(why) = within(&s, &req, &route, namespaces)
    {
        return refuse(&why);
    }
    match crate::auth::access(&role, req.method().as_str(), &route) {
        Access::All => {}
        Access::Denied => {
            return refuse(&format!(
                "a {} token may not {} {route}",
                role.name(),
                req.method()
            ));
        }
        Access::OwnNode => {
            let Role::Node { node } = &role else {
                return refuse("only node credentials have node scope");
            };
            // /v1/nodes/{name}, /v1/allocs/{id}[/logs]: the name or id is segment 3.
            let target = req.uri().path().split('/').nth(3).unwrap_or_default();
            let own = match route.as_str() {
                "/v1/nodes/{name}" => target == node,
                "/v1/allocs/{id}" | "/v1/allocs/{id}/logs" => s
                    .cache()
                    .allocs
                    .get(target)
                    .is_some_and(|a| &a.node == node),
                // A node lists its own allocations only, and says so (`?node=<itself>`):
                // asking for everything is refused, not quietly narrowed.
                "/v1/allocs" => req
                    .uri()
                    .query()
                    .unwrap_or_default()
                    .split('&')
                    .any(|kv| kv == format!("node={node}")),
                // The agent session checks the name the agent gives.
                _ => true,
            };
            if !own {
                return refuse(&format!(
                    "node {node} may only see its own node and allocations"
                ));
            }
        }
    }
    next.run(req).await
}

/// Whether a token limited to `namespaces` may make this request: a namespaced route
/// naming one of them (`?namespace=NS`), for an allocation only one of that namespace;
/// never a cluster-wide route. The refusal says why.
fn within(s: &Shared, req: &Request, route: &str, namespaces: &[String]) -> Result<(), String> {
    use crate::routes::Scope;
    let method = req.method().as_str();
    let list = namespaces.join(", ");
    let scope = crate::routes::find(method, route).map_or(Scope::Cluster, |r| r.scope);
    match scope {
        Scope::Any => Ok(()),
        Scope::Cluster => Err(format!(
            "a token limited to namespace(s) {list} may not {method} {route}: it is cluster-wide"
        )),
        Scope::Namespaced => {
            let ns = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("namespace="));
            let Some(ns) = ns else {
                return Err(format!(
                    "a token limited to namespace(s) {list} must name one (-n NAMESPACE)"
                ));
            };
            if !namespaces.iter().any(|n| n == ns) {
                return Err(format!(
                    "a token limited to namespace(s) {list} may not reach namespace {ns}"
                ));
            }
            if let "/v1/allocs/{id}" | "/v1/allocs/{id}/logs" | "/v1/allocs/{id}/restart" = route {
                let id = req.uri().path().split('/').nth(3).unwrap_or_default();
                let theirs = s
                    .cache()
                    .allocs
                    .get(id)
                    .is_some_and(|a| a.workload.namespace == ns);
                if !theirs {
                    return Err(format!("allocation {id} is not in namespace {ns}"));
                }
            }
            Ok(())
        }
    }
}

/// `GET /v1/whoami`: the calling token's id, role and namespaces.
async fn whoami(
    axum::Extension(Caller(role)): axum::Extension<Caller>,
    axum::Extension(TokenId(id)): axum::Extension<TokenId>,
    axum::Extension(Limited(namespaces)): axum::Extension<Limited>,
) -> Json<motley_core::api::Whoami> {
    Json(motley_core::api::Whoami {
        id,
        role: role.name().into(),
        namespaces,
    })
}

async fn version(State(s): State<Arc<Shared>>) -> Json<VersionInfo> {
    let _ = &s;
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: motley_core::proto::PROTOCOL_VERSION,
        datastore: "embedded".into(),
    })
}

/// `motley_service_replicas`: every service's running replicas by health, zeros
/// included (a service whose replicas all failed shows `healthy 0`, not nothing).
/// `motley_service_availability` and `motley_service_error_budget_remaining`, from
/// the leader's records (a follower has none, and shows none).
fn service_availability(s: &Shared, cache: &crate::state::Cache) {
    use crate::metrics::{AvailabilityLabel, ServiceLabel};
    s.metrics.service_availability.clear();
    s.metrics.service_budget.clear();
    let target = |r: &WorkloadRef| match cache.workloads.get(r).map(|w| &w.spec) {
        Some(Spec::Service(svc)) => svc.slo.map(|slo| slo.availability.fraction()),
        _ => None,
    };
    for (r, v) in s.uptime.all(now_ms(), target) {
        for (&(window, _), a) in motley_core::uptime::WINDOWS
            .iter()
            .zip([v.h1, v.h24, v.d30])
        {
            let Some(a) = a else { continue };
            let label = AvailabilityLabel {
                namespace: r.namespace.clone(),
                service: r.name.clone(),
                window,
            };
            s.metrics.service_availability.get_or_create(&label).set(a);
        }
        if let Some(left) = v.budget_remaining {
            let label = ServiceLabel {
                namespace: r.namespace,
                service: r.name,
            };
            s.metrics.service_budget.get_or_create(&label).set(left);
        }
    }
}

fn service_replicas(
    family: &prometheus_client::metrics::family::Family<
        crate::metrics::ServiceHealthLabel,
        prometheus_client::metrics::gauge::Gauge,
    >,
    cache: &crate::state::Cache,
) {
    use motley_core::health::Health as H;
    let mut counts: BTreeMap<(String, String, &'static str), i64> = BTreeMap::new();
    for (r, w) in cache
        .workloads
        .iter()
        .filter(|(r, _)| r.kind == Kind::Service)
    {
        let Spec::Service(svc) = &w.spec else {
            continue;
        };
        let kinds: &[&'static str] = if svc.check.is_some() {
            &["healthy", "unhealthy", "unknown"]
        } else {
            &["none"]
        };
        for k in kinds {
            counts.insert((r.namespace.clone(), r.name.clone(), k), 0);
        }
    }
    for a in cache.allocs.values().filter(|a| {
        a.workload.kind == Kind::Service
            && a.state == motley_core::model::AllocState::Running
            && a.desired == motley_core::model::Desired::Run
    }) {
        let health = match (&a.check, a.health) {
            (None, _) => "none",
            (Some(_), Some(h)) => h.as_str(),
            (Some(_), None) => H::Unknown.as_str(),
        };
        let w = &a.workload;
        *counts
            .entry((w.namespace.clone(), w.name.clone(), health))
            .or_insert(0) += 1;
    }
    family.clear();
    for ((namespace, service, health), n) in counts {
        let label = crate::metrics::ServiceHealthLabel {
            namespace,
            service,
            health,
        };
        family.get_or_create(&label).set(n);
    }
}

async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    {
        let cache = s.cache();
        for st in motley_core::model::AllocState::ALL {
            let n = cache.allocs.values().filter(|a| a.state == st).count();
            s.metrics
                .allocations
                .get_or_create(&crate::metrics::StateLabel { state: st.as_str() })
                .set(n as i64);
        }
        for h in [Health::Ready, Health::Suspect, Health::Down] {
            let n = cache
                .nodes
                .keys()
                .filter(|n| s.liveness.node_health(n).0 == h)
                .count();
            s.metrics
                .nodes
                .get_or_create(&crate::metrics::StateLabel { state: h.as_str() })
                .set(n as i64);
        }
        service_replicas(&s.metrics.service_replicas, &cache);
        service_availability(&s, &cache);
        s.metrics.workload_energy.clear();
        let (mj, _) = s.liveness.energy_of(
            cache
                .allocs
                .values()
                .map(|a| (a.node.as_str(), a.id.as_str())),
        );
        let mut by_workload: BTreeMap<&WorkloadRef, u64> = BTreeMap::new();
        for (id, e) in &mj {
            if let Some(a) = cache.allocs.get(id) {
                *by_workload.entry(&a.workload).or_default() += e;
            }
        }
        for (r, e) in by_workload {
            let label = crate::metrics::WorkloadLabel {
                namespace: r.namespace.clone(),
                workload: format!("{}/{}", r.kind, r.name),
            };
            s.metrics
                .workload_energy
                .get_or_create(&label)
                .set(e as f64 / 1000.0);
        }
        for k in Kind::ALL {
            let n = cache.workloads.keys().filter(|r| r.kind == k).count();
            s.metrics
                .workloads
                .get_or_create(&crate::metrics::KindLabel { kind: k.as_str() })
                .set(n as i64);
        }
    }
    let mut out = String::new();
    let mut ok =
        prometheus_client::encoding::text::encode_registry(&mut out, &lock(&s.registry)).is_ok();
    for extra in lock(&s.registries).iter() {
        ok &= prometheus_client::encoding::text::encode_registry(&mut out, &lock(extra)).is_ok();
    }
    ok &= prometheus_client::encoding::text::encode_eof(&mut out).is_ok();
    if !ok {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed")
            .into_response();
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            motley_core::promtext::openmetrics_to_prometheus(&out),
        )
            .into_response()
    }
}

/// Changes the stored JSON record at `key` (`what` names it in errors) by `change`
/// (`None`: nothing to change), with compare-and-swap retries, and waits until the
/// cache has the change.
pub(crate) async fn update_record<T: serde::Serialize + serde::de::DeserializeOwned>(
    s: &Shared,
    key: &str,
    what: &str,
    change: impl Fn(&T) -> Result<Option<T>, ApiError>,
) -> ApiResult<()> {
    let change = &change;
    let outcome = motley_store::update(
        &*s.store,
        || async move {
            let kv =
                s.store.get(key).await?.ok_or_else(|| {
                    ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
                })?;
            let old: T = serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let Some(new) = change(&old)? else {
                return Ok::<_, ApiError>(motley_store::Attempt::Done(()));
            };
            let v = serde_json::to_vec(&new)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(motley_store::Attempt::Write(
                Txn::new().when(key, kv.mod_revision).put(key, v),
                (),
            ))
        },
        || {},
    )
    .await?;
    match outcome {
        motley_store::Updated::Committed((), rev) => s.wait_for_rev(rev).await,
        motley_store::Updated::Unchanged(()) => {}
        motley_store::Updated::Conflicted => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("{what} kept changing concurrently; run it again"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod route_table_tests {
    #[test]
    fn every_route_of_the_table_has_a_handler_and_a_policy_for_every_role() {
        use crate::auth::{Access, Role, access};
        for r in crate::routes::ROUTES {
            assert!(super::handler(r).is_some(), "{} {}", r.method, r.path);
            // The policy answers for every role from the table, never by default.
            let p = r.policy;
            let node = Role::Node { node: "n".into() };
            let want = |yes: bool, how: Access| if yes { how } else { Access::Denied };
            assert_eq!(
                access(&Role::Admin, r.method, r.path),
                want(p.admin, Access::All)
            );
            assert_eq!(
                access(&Role::Viewer, r.method, r.path),
                want(p.viewer, Access::All)
            );
            assert_eq!(
                access(&node, r.method, r.path),
                want(p.node, Access::OwnNode)
            );
            assert_eq!(
                access(&Role::Join, r.method, r.path),
                want(p.join, Access::All)
            );
        }
    }
}
