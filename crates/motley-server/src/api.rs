//! The HTTP API under `/v1`, plus `/metrics` and `/healthz`.
//!
//! Every route but `/healthz` needs a bearer token. Admin tokens may use every
//! route; node tokens only `/v1/agent/connect`. Bodies are capped at
//! [`MAX_BODY`] (413 beyond it).

use std::collections::{BTreeMap, HashMap};
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
    CreatedToken, ErrorBody, JoinRequest, JoinResponse, ManifestSet, NodeView, ObjectResult,
    ObjectResults, TokenInfo, TokenRequest, VersionInfo, WorkloadDetail, WorkloadView,
};
use motley_core::failure::Health;
use motley_core::manifest::{self, ClusterLimits};
use motley_core::model::{Allocation, Kind, Spec, Workload, WorkloadRef};
use motley_core::proto::ServerMsg;
use motley_core::reconcile::{self, node_matches};
use motley_core::selector::Selector;
use motley_store::Txn;
use serde::Deserialize;

use crate::auth::{Access, Role};
use crate::keys;
use crate::state::{Shared, lock, now_ms};

/// Largest accepted request body.
pub const MAX_BODY: usize = 4 << 20;

/// An API error: a status and a JSON body.
pub struct ApiError(pub StatusCode, pub ErrorBody);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(
            status,
            ErrorBody {
                error: msg.into(),
                details: vec![],
            },
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<motley_store::StoreError> for ApiError {
    fn from(e: motley_store::StoreError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError::new(e.status(), e.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Who is calling, attached by the auth middleware.
#[derive(Clone, Debug)]
pub struct Caller(pub Role);

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
    Router::new()
        .merge(authed)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/v1/{*rest}",
            delete(not_found).get(not_found).post(not_found),
        )
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
        ("POST", "/v1/apply") => post(apply),
        ("POST", "/v1/delete") => post(delete_set),
        ("POST", "/v1/plan") => post(plan),
        ("GET", "/v1/workloads") => get(list_workloads),
        ("GET", "/v1/workloads/{kind}/{name}") => get(get_workload),
        ("DELETE", "/v1/workloads/{kind}/{name}") => delete(delete_workload),
        ("GET", "/v1/nodes") => get(list_nodes),
        ("GET", "/v1/nodes/{name}") => get(get_node),
        ("POST", "/v1/nodes/{name}/{action}") => post(node_action),
        ("GET", "/v1/allocs") => get(list_allocs),
        ("GET", "/v1/allocs/{id}") => get(get_alloc),
        ("GET", "/v1/allocs/{id}/logs") => get(logs),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/v1/tokens") => get(list_tokens),
        ("POST", "/v1/tokens") => post(create_token),
        ("DELETE", "/v1/tokens/{id}") => delete(revoke_token),
        ("GET", "/v1/snapshot") => get(snapshot),
        ("GET", "/v1/servers") => get(list_servers),
        ("GET", "/v1/audit") => get(list_audit),
        ("GET", "/v1/secrets/{name}/reveal") => get(reveal_secret),
        ("POST", "/v1/secrets/rotate-key") => post(rotate_key),
        ("GET", "/v1/agent/connect") => get(crate::agents::connect),
        ("POST", "/v1/join") => post(join),
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
    let code = resp.status().as_u16().to_string();
    s.metrics
        .api_requests
        .get_or_create(&vec![
            ("method".into(), method),
            ("route".into(), route.clone()),
            ("code".into(), code),
        ])
        .inc();
    s.metrics
        .api_latency
        .get_or_create(&vec![("route".into(), route)])
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
    s.audit.record(motley_core::api::AuditEntry {
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
    if let Some(wait) = ip.and_then(|ip| s.audit.locked_out(ip, now)) {
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
            Some(t) if !t.expired(now) => Some((t.role.clone(), t.id.clone())),
            _ => None,
        }
    });
    match found {
        Some(Some((role, id))) => {
            let who = format!("token {id} ({})", role.name());
            req.extensions_mut().insert(Caller(role));
            req.extensions_mut().insert(Who(who));
            next.run(req).await
        }
        other => {
            if let Some(ip) = ip {
                s.audit.failed(ip, now);
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

/// `GET /v1/audit`: the latest denied requests, oldest first.
async fn list_audit(State(s): State<Arc<Shared>>) -> Json<Vec<motley_core::api::AuditEntry>> {
    Json(s.audit.recent())
}

fn token_info(t: &crate::auth::TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        role: t.role.name().into(),
        node: match &t.role {
            Role::Node { node } => Some(node.clone()),
            _ => None,
        },
        created_at: t.created_at,
        expires_at: t.expires_at,
        description: t.description.clone(),
    }
}

/// `GET /v1/secrets/{name}/reveal` (admin): a secret's values in plaintext. Recorded in
/// the audit log like a refusal, so every reveal is on file.
async fn reveal_secret(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Json<motley_core::api::RevealedSecret>> {
    let r = WorkloadRef {
        kind: Kind::Secret,
        name: name.clone(),
    };
    let spec = match s.cache().workloads.get(&r).map(|w| w.spec.clone()) {
        Some(Spec::Secret(spec)) => spec,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{r} not found"),
            ));
        }
    };
    let mut data = BTreeMap::new();
    {
        let ring = crate::state::read(&s.keyring);
        for (k, v) in &spec.data {
            let sealed = v.sealed.as_deref().unwrap_or_default();
            let plain = ring.open(&name, k, sealed).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("key {k}: {e}"))
            })?;
            data.insert(k.clone(), String::from_utf8_lossy(&plain).into_owned());
        }
    }
    let who = req
        .extensions()
        .get::<Who>()
        .map_or_else(|| "-".to_string(), |w| w.0.clone());
    audit(
        &s,
        &req,
        &who,
        StatusCode::OK,
        &format!("secret {name} revealed"),
    );
    Ok(Json(motley_core::api::RevealedSecret { name, data }))
}

/// `POST /v1/secrets/rotate-key` (admin): a new key; every stored value sealed again
/// with it; then the old key is forgotten.
async fn rotate_key(State(s): State<Arc<Shared>>) -> ApiResult<Json<motley_core::api::KeyRotated>> {
    let _one_at_a_time = s.rotating.lock().await;
    let internal = |e: crate::secrets::SecretError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    };
    let key_id = crate::state::write(&s.keyring)
        .begin_rotation()
        .map_err(internal)?;
    let prefix = format!("{}secret/", keys::WORKLOADS);
    let (st, prefix_ref, internal_ref) = (&*s, &prefix, &internal);
    let outcome = motley_store::update(
        &*s.store,
        || async move {
            let (s, prefix, internal) = (st, prefix_ref, internal_ref);
            let range = s.store.range(prefix).await?;
            let mut txn = Txn::new();
            let mut count = 0;
            let ring = crate::state::read(&s.keyring);
            for kv in &range.kvs {
                let Ok(mut w) = serde_json::from_slice::<Workload>(&kv.value) else {
                    continue;
                };
                let Spec::Secret(sec) = &mut w.spec else {
                    continue;
                };
                let mut changed = false;
                for (k, v) in sec.data.iter_mut() {
                    let Some(old) = v.sealed.as_deref() else {
                        continue;
                    };
                    if ring.is_current(old) {
                        continue;
                    }
                    let plain = ring.open(&sec.name, k, old).map_err(internal)?;
                    v.sealed = Some(ring.seal(&sec.name, k, &plain).map_err(internal)?);
                    changed = true;
                    count += 1;
                }
                if changed {
                    let value = serde_json::to_vec(&w).map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?;
                    txn = txn
                        .when(&kv.key, kv.mod_revision)
                        .put(kv.key.clone(), value);
                }
            }
            Ok::<_, ApiError>(if count == 0 {
                motley_store::Attempt::Done(0)
            } else {
                motley_store::Attempt::Write(txn, count)
            })
        },
        || {},
    )
    .await?;
    let resealed = match outcome {
        motley_store::Updated::Committed(n, _) | motley_store::Updated::Unchanged(n) => n,
        motley_store::Updated::Conflicted => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the secrets kept changing during the rotation; run it again to finish",
            ));
        }
    };
    crate::state::write(&s.keyring)
        .finish_rotation()
        .map_err(internal)?;
    tracing::info!("secrets key rotated to {key_id}; {resealed} value(s) sealed again");
    Ok(Json(motley_core::api::KeyRotated { key_id, resealed }))
}

async fn list_tokens(State(s): State<Arc<Shared>>) -> Json<Vec<TokenInfo>> {
    let mut out: Vec<TokenInfo> = s.cache().tokens.values().map(token_info).collect();
    out.sort_by_key(|t| t.created_at);
    Json(out)
}

async fn create_token(
    State(s): State<Arc<Shared>>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> ApiResult<Json<CreatedToken>> {
    let Json(req) = body?;
    let role = match req.role.as_str() {
        "join" => Role::Join,
        "admin" => Role::Admin,
        "viewer" => Role::Viewer,
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "role {other:?}: use join, viewer or admin (node credentials are issued by joining)"
                ),
            ));
        }
    };
    let ttl = req.ttl_seconds.map(|s| s.saturating_mul(1000));
    let (rec, token) = s.create_token(role, ttl, &req.description).await?;
    Ok(Json(CreatedToken {
        info: token_info(&rec),
        token,
    }))
}

async fn revoke_token(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    let info = s
        .cache()
        .tokens
        .values()
        .find(|t| t.id == id)
        .map(token_info);
    let Some(info) = info else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("token {id} not found"),
        ));
    };
    if !s.revoke_token(&id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("token {id} changed concurrently"),
        ));
    }
    Ok(Json(info))
}

/// `POST /v1/join`: a join token is exchanged for a credential bound to one node name.
/// A name that already has a credential cannot be joined again (that would let any
/// holder of a join token impersonate an existing node).
async fn join(
    State(s): State<Arc<Shared>>,
    axum::Extension(Caller(role)): axum::Extension<Caller>,
    body: Result<Json<JoinRequest>, JsonRejection>,
) -> ApiResult<Json<JoinResponse>> {
    if role != Role::Join {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "joining needs a join token",
        ));
    }
    let Json(req) = body?;
    motley_core::model::validate_name(&req.node)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let taken = s.cache().tokens.values().any(|t| {
        t.role
            == (Role::Node {
                node: req.node.clone(),
            })
    });
    if taken {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "node {:?} has already joined; start its agent with its existing data dir, or revoke its credential first",
                req.node
            ),
        ));
    }
    let (_, credential) = s
        .create_token(
            Role::Node {
                node: req.node.clone(),
            },
            None,
            "node credential issued at join",
        )
        .await?;
    Ok(Json(JoinResponse {
        credential,
        ca: s.ca_pem.clone(),
    }))
}

async fn version(State(s): State<Arc<Shared>>) -> Json<VersionInfo> {
    let _ = &s;
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: motley_core::proto::PROTOCOL_VERSION,
        datastore: "embedded".into(),
    })
}

/// 422 with every field error: nothing was applied.
fn invalid(details: Vec<manifest::ManifestError>) -> ApiError {
    ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorBody {
            error: format!("{} invalid field(s); nothing was applied", details.len()),
            details,
        },
    )
}

fn parse_manifests(set: &ManifestSet) -> ApiResult<Vec<manifest::Document>> {
    let mut docs = manifest::parse_set(&set.sources()).map_err(invalid)?;
    resolve_secret_inputs(set, &mut docs).map_err(invalid)?;
    Ok(docs)
}

/// Replaces every Secret value given `fromFile` or `fromEnv` by what the client read
/// (the set's inputs), and checks each secret's total size.
fn resolve_secret_inputs(
    set: &ManifestSet,
    docs: &mut [manifest::Document],
) -> Result<(), Vec<manifest::ManifestError>> {
    let mut errors = Vec::new();
    for d in docs.iter_mut() {
        let file = d.file.clone();
        let mut found = Vec::new();
        let Spec::Secret(sec) = &d.spec else { continue };
        for (k, v) in &sec.data {
            let Some((from, name, field)) = v.input() else {
                continue;
            };
            match set
                .inputs
                .iter()
                .find(|i| i.source == file && i.from == from && i.name == name)
            {
                Some(i) => found.push((k.clone(), i.value.clone())),
                None => errors.push(d.error_at(
                    &format!("data.{k}.{field}"),
                    format!(
                        "{name} was not read at apply time: `motley apply` reads {field} values and sends them along"
                    ),
                )),
            }
        }
        let mut total = 0;
        if let Spec::Secret(sec) = &mut d.spec {
            for (k, value) in found {
                if let Some(v) = sec.data.get_mut(&k) {
                    *v = motley_core::model::SecretValue {
                        value: Some(value),
                        ..Default::default()
                    };
                }
            }
            total = sec
                .data
                .values()
                .map(|v| v.value.as_ref().map_or(0, String::len))
                .sum::<usize>();
        }
        if total > manifest::MAX_SECRET_BYTES {
            errors.push(d.error_at(
                "data",
                format!(
                    "the values add up to {total} bytes; at most {}",
                    manifest::MAX_SECRET_BYTES
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Every task's secret references must name a secret of the set or the cluster, and a
/// key it has.
fn check_secret_refs(
    cache: &crate::state::Cache,
    docs: &[manifest::Document],
) -> Vec<manifest::ManifestError> {
    let mut errors = Vec::new();
    let keys_of = |name: &str| -> Option<Vec<String>> {
        let in_set = docs.iter().find_map(|d| match &d.spec {
            Spec::Secret(s) if s.name == name => Some(s.data.keys().cloned().collect()),
            _ => None,
        });
        in_set.or_else(|| {
            let r = WorkloadRef {
                kind: Kind::Secret,
                name: name.to_string(),
            };
            match cache.workloads.get(&r).map(|w| &w.spec) {
                Some(Spec::Secret(s)) => Some(s.data.keys().cloned().collect()),
                _ => None,
            }
        })
    };
    for d in docs {
        for (i, r) in d.spec.task().secrets.iter().enumerate() {
            match keys_of(&r.secret) {
                None => errors.push(d.error_at(
                    &format!("task.secrets[{i}].secret"),
                    format!(
                        "secret {} is neither in this set nor in the cluster",
                        r.secret
                    ),
                )),
                Some(keys) if !keys.contains(&r.key) => errors.push(d.error_at(
                    &format!("task.secrets[{i}].key"),
                    format!(
                        "secret {} has no key {} (it has: {})",
                        r.secret,
                        r.key,
                        keys.join(", ")
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    errors
}

/// Seals every Secret value of the set. A value whose plaintext equals the stored one
/// keeps its stored sealed form, so an unchanged secret compares equal and is not
/// rewritten.
fn seal_secrets(
    s: &Shared,
    cache: &crate::state::Cache,
    docs: &mut [manifest::Document],
) -> ApiResult<()> {
    let ring = crate::state::read(&s.keyring);
    for d in docs.iter_mut() {
        let r = d.spec.reference();
        let Spec::Secret(sec) = &mut d.spec else {
            continue;
        };
        let old = match cache.workloads.get(&r).map(|w| &w.spec) {
            Some(Spec::Secret(o)) => Some(o),
            _ => None,
        };
        for (k, v) in sec.data.iter_mut() {
            let Some(plain) = v.value.take() else {
                continue;
            };
            let reuse = old
                .and_then(|o| o.data.get(k))
                .and_then(|o| o.sealed.as_ref())
                .filter(|sealed| {
                    ring.is_current(sealed)
                        && ring
                            .open(&sec.name, k, sealed)
                            .is_ok_and(|p| p == plain.as_bytes())
                })
                .cloned();
            let sealed = match reuse {
                Some(x) => x,
                None => ring.seal(&sec.name, k, plain.as_bytes()).map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("sealing: {e}"))
                })?,
            };
            *v = motley_core::model::SecretValue {
                sealed: Some(sealed),
                ..Default::default()
            };
        }
    }
    Ok(())
}

/// A workload as shown: a secret's values hidden.
pub fn redacted(mut w: Workload) -> Workload {
    if let Spec::Secret(s) = &mut w.spec {
        for v in s.data.values_mut() {
            *v = motley_core::model::SecretValue::redacted();
        }
    }
    w
}

async fn apply(
    State(s): State<Arc<Shared>>,
    body: Result<Json<ManifestSet>, JsonRejection>,
) -> ApiResult<Json<ObjectResults>> {
    let Json(set) = body?;
    let mut docs = parse_manifests(&set)?;
    {
        let cache = s.cache();
        let details = check_secret_refs(&cache, &docs);
        if !details.is_empty() {
            return Err(invalid(details));
        }
        seal_secrets(&s, &cache, &mut docs)?;
    }
    let limits = {
        let c = s.cache();
        c.nodes
            .values()
            .fold(None, |acc: Option<ClusterLimits>, n| {
                let mut l = acc.unwrap_or_default();
                l.max_cpu = l.max_cpu.max(n.capacity.cpu.0);
                l.max_memory = l.max_memory.max(n.capacity.memory.0);
                Some(l)
            })
    };
    if let Some(limits) = limits {
        let details = manifest::check_against_cluster(&docs, &limits);
        if !details.is_empty() {
            return Err(invalid(details));
        }
    }
    // A bound volume keeps its class and never shrinks: its data is on that disk.
    {
        let c = s.cache();
        let mut details = Vec::new();
        for d in &docs {
            let (Spec::Volume(new), Some(old)) = (&d.spec, c.workloads.get(&d.spec.reference()))
            else {
                continue;
            };
            let (Spec::Volume(prev), Some(b)) = (&old.spec, &old.binding) else {
                continue;
            };
            if new.class != prev.class {
                details.push(d.error_at(
                    "class",
                    format!(
                        "volume {} is bound to {} ({} on {}); its class stays {}",
                        new.name,
                        b.node,
                        b.mount,
                        b.media.as_str(),
                        prev.class.as_str()
                    ),
                ));
            }
            if new.size < prev.size {
                details.push(d.error_at(
                    "size",
                    format!(
                        "volume {} is bound to {}; it may grow but not shrink below {}",
                        new.name, b.node, prev.size
                    ),
                ));
            }
        }
        if !details.is_empty() {
            return Err(invalid(details));
        }
    }
    use motley_core::admit::{Current, revise};
    let (st, docs, dry_run) = (&*s, &docs, set.dry_run);
    let outcome = motley_store::update(
        &*s.store,
        || async move {
            let s = st;
            let now = now_ms();
            let mut txn = Txn::new();
            let mut results = Vec::new();
            for d in docs {
                let r = d.spec.reference();
                let key = keys::workload(&r);
                let current = s.store.get(&key).await?;
                let stored = current
                    .as_ref()
                    .map(|kv| serde_json::from_slice::<Workload>(&kv.value));
                let (action, next) = match &stored {
                    None => revise(Current::Absent, &d.spec, now, motley_net::new_id),
                    Some(Err(_)) => revise(Current::Unreadable, &d.spec, now, motley_net::new_id),
                    Some(Ok(w)) => revise(Current::Stored(w), &d.spec, now, motley_net::new_id),
                };
                txn = txn.when(&key, current.as_ref().map_or(0, |kv| kv.mod_revision));
                if let Some(w) = next {
                    let v = serde_json::to_vec(&w).map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?;
                    txn = txn.put(key, v);
                }
                results.push(ObjectResult {
                    kind: r.kind.to_string(),
                    name: r.name,
                    action: action.as_str().into(),
                });
            }
            let out = ObjectResults { results };
            Ok::<_, ApiError>(if dry_run {
                motley_store::Attempt::Done(out)
            } else {
                motley_store::Attempt::Write(txn, out)
            })
        },
        || {
            s.metrics
                .conflicts
                .get_or_create(&vec![("caller".into(), "apply".into())])
                .inc();
        },
    )
    .await?;
    match outcome {
        motley_store::Updated::Committed(out, _) | motley_store::Updated::Unchanged(out) => {
            Ok(Json(out))
        }
        motley_store::Updated::Conflicted => Err(ApiError::new(
            StatusCode::CONFLICT,
            "the objects kept changing concurrently; nothing was applied",
        )),
    }
}

/// `POST /v1/plan`: runs one reconcile against the live cluster as if the set were
/// applied, and returns what it would place, stop, bind and queue. Nothing is stored.
async fn plan(
    State(s): State<Arc<Shared>>,
    body: Result<Json<ManifestSet>, JsonRejection>,
) -> ApiResult<Json<motley_core::api::PlanResponse>> {
    use motley_core::api::{PlanResponse, PlannedPlacement, PlannedStop};
    let Json(set) = body?;
    let docs = parse_manifests(&set)?;
    let cache = s.cache();
    let details = check_secret_refs(&cache, &docs);
    if !details.is_empty() {
        return Err(invalid(details));
    }
    let now = now_ms();
    let mut workloads = cache.workloads.clone();
    let mut objects = Vec::new();
    for d in &docs {
        let r = d.spec.reference();
        let action = match workloads.get_mut(&r) {
            // A plan never compares secret values: that would tell a viewer whether a
            // guess is right.
            Some(_) if r.kind == Kind::Secret => "configured",
            Some(w) if w.spec == d.spec => "unchanged",
            Some(w) => {
                w.spec = d.spec.clone();
                w.generation += 1;
                w.updated_at = now;
                "configured"
            }
            None => {
                workloads.insert(
                    r.clone(),
                    Workload {
                        spec: d.spec.clone(),
                        generation: 1,
                        uid: format!("plan-{}", r.name),
                        created_at: now,
                        updated_at: now,
                        binding: None,
                    },
                );
                "created"
            }
        };
        objects.push(ObjectResult {
            kind: r.kind.to_string(),
            name: r.name,
            action: action.into(),
        });
    }
    struct PlanIds(u64);
    impl reconcile::Ids for PlanIds {
        fn next_id(&mut self, _: &WorkloadRef) -> String {
            self.0 += 1;
            format!("planned-{}", self.0)
        }
    }
    let p = s.plan_pass(&cache, &workloads, now, &mut PlanIds(0));
    let stops = p
        .stop
        .iter()
        .chain(p.lost.iter())
        .filter_map(|(id, reason)| {
            let a = cache.allocs.get(id)?;
            Some(PlannedStop {
                alloc: id.clone(),
                workload: a.workload.clone(),
                node: a.node.clone(),
                reason: reason.clone(),
            })
        })
        .collect();
    Ok(Json(PlanResponse {
        objects,
        placements: p
            .create
            .into_iter()
            .map(|a| PlannedPlacement {
                workload: a.workload,
                index: a.index,
                node: a.node,
                gpus: a.gpus,
                volumes: a.volumes,
            })
            .collect(),
        stops,
        bind: p.bind,
        blocked: p.blocked.into_iter().collect(),
        queue: p.queue,
    }))
}

/// `GET /v1/snapshot`: every object at one revision, as a checksummed snapshot file.
async fn snapshot(State(s): State<Arc<Shared>>) -> ApiResult<Response> {
    let snap = motley_store::snapshot::Snapshot::take(&*s.store, keys::PREFIX, now_ms()).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        snap.encode(),
    )
        .into_response())
}

async fn delete_set(
    State(s): State<Arc<Shared>>,
    body: Result<Json<ManifestSet>, JsonRejection>,
) -> ApiResult<Json<ObjectResults>> {
    let Json(set) = body?;
    // Deleting needs names only: secret values named by fromFile/fromEnv are not read.
    let docs = manifest::parse_set(&set.sources()).map_err(invalid)?;
    let refs: Vec<WorkloadRef> = docs.iter().map(|d| d.spec.reference()).collect();
    delete_refs(&s, &refs, set.dry_run).await.map(Json)
}

async fn delete_refs(s: &Shared, refs: &[WorkloadRef], dry_run: bool) -> ApiResult<ObjectResults> {
    let outcome = motley_store::update(
        &*s.store,
        || async move {
            let mut txn = Txn::new();
            let mut results = Vec::new();
            for r in refs {
                let key = keys::workload(r);
                let current = s.store.get(&key).await?;
                let action = match &current {
                    Some(kv) => {
                        txn = txn.when(&key, kv.mod_revision).delete(key);
                        "deleted"
                    }
                    None => "not found",
                };
                results.push(ObjectResult {
                    kind: r.kind.to_string(),
                    name: r.name.clone(),
                    action: action.into(),
                });
            }
            let out = ObjectResults { results };
            Ok::<_, ApiError>(if dry_run {
                motley_store::Attempt::Done(out)
            } else {
                motley_store::Attempt::Write(txn, out)
            })
        },
        || {},
    )
    .await?;
    match outcome {
        motley_store::Updated::Committed(out, _) | motley_store::Updated::Unchanged(out) => Ok(out),
        motley_store::Updated::Conflicted => Err(ApiError::new(
            StatusCode::CONFLICT,
            "the objects kept changing concurrently; nothing was deleted",
        )),
    }
}

fn parse_kind(kind: &str) -> ApiResult<Kind> {
    Kind::parse(kind)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("unknown kind {kind:?}")))
}

fn workload_ref(kind: &str, name: String) -> ApiResult<WorkloadRef> {
    Ok(WorkloadRef {
        kind: parse_kind(kind)?,
        name,
    })
}

async fn delete_workload(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Json<ObjectResults>> {
    let r = workload_ref(&kind, name)?;
    let res = delete_refs(&s, std::slice::from_ref(&r), false).await?;
    if res.results.iter().all(|x| x.action == "not found") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{r} not found"),
        ));
    }
    Ok(Json(res))
}

#[derive(Deserialize)]
struct KindQuery {
    kind: Option<String>,
}

fn ready_matching(s: &Shared, cache: &crate::state::Cache, w: &Workload) -> u32 {
    let ready = s.ready_nodes();
    let sel = w
        .spec
        .placement()
        .require
        .as_deref()
        .and_then(|r| Selector::parse(r).ok());
    cache
        .nodes
        .values()
        .filter(|n| ready.contains(&n.name) && sel.as_ref().is_none_or(|sel| node_matches(n, sel)))
        .count() as u32
}

fn view(
    s: &Shared,
    cache: &crate::state::Cache,
    w: &Workload,
    allocs: &[&Allocation],
) -> WorkloadView {
    let r = w.spec.reference();
    WorkloadView {
        workload: redacted(w.clone()),
        status: reconcile::status(w, allocs, ready_matching(s, cache, w)),
        blocked: lock(&s.blocked).get(&r).cloned(),
        queue_position: lock(&s.queue)
            .iter()
            .position(|q| *q == r)
            .map(|p| p as u32 + 1),
    }
}

async fn list_workloads(
    State(s): State<Arc<Shared>>,
    Query(q): Query<KindQuery>,
) -> ApiResult<Json<Vec<WorkloadView>>> {
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let cache = s.cache();
    let mut by_w: BTreeMap<&WorkloadRef, Vec<&Allocation>> = BTreeMap::new();
    for a in cache.allocs.values() {
        by_w.entry(&a.workload).or_default().push(a);
    }
    let out = cache
        .workloads
        .iter()
        .filter(|(r, _)| kind.is_none_or(|k| r.kind == k))
        .map(|(r, w)| view(&s, &cache, w, by_w.get(r).map(Vec::as_slice).unwrap_or(&[])))
        .collect();
    Ok(Json(out))
}

async fn get_workload(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Json<WorkloadDetail>> {
    let r = workload_ref(&kind, name)?;
    let cache = s.cache();
    let w = cache
        .workloads
        .get(&r)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{r} not found")))?;
    let mut allocs: Vec<&Allocation> = cache.allocs.values().filter(|a| a.workload == r).collect();
    allocs.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    Ok(Json(WorkloadDetail {
        view: view(&s, &cache, w, &allocs),
        allocations: allocs.into_iter().cloned().collect(),
    }))
}

fn node_views(s: &Shared) -> Vec<NodeView> {
    let cache = s.cache();
    // One pass over the allocations, grouped by node: no loop over nodes × allocations.
    let mut by_node: HashMap<&str, Vec<&Allocation>> = HashMap::new();
    for a in cache.allocs.values().filter(|a| a.is_live()) {
        by_node.entry(a.node.as_str()).or_default().push(a);
    }
    cache
        .nodes
        .values()
        .map(|n| {
            let live = by_node.remove(n.name.as_str()).unwrap_or_default();
            let (health, since, reason) = s.node_health(&n.name);
            let readings = lock(&s.readings).get(&n.name).cloned();
            let state = health.as_str();
            NodeView {
                node: n.clone(),
                state: state.into(),
                since,
                reason,
                allocations: live.len() as u32,
                used_cpu: live
                    .iter()
                    .map(|a| a.task.resources.cpu_on(n.facts.cpu_score))
                    .sum(),
                used_memory: live
                    .iter()
                    .map(|a| a.task.resources.memory_or_default().0)
                    .sum(),
                readings_at: readings.as_ref().map(|r| r.1),
                readings: readings.map(|r| r.0),
            }
        })
        .collect()
}

/// `POST /v1/nodes/{name}/cordon|uncordon|drain`.
async fn node_action(
    State(s): State<Arc<Shared>>,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult<Json<NodeView>> {
    let (cordoned, draining) = match action.as_str() {
        "cordon" => (true, false),
        "uncordon" => (false, false),
        "drain" => (true, true),
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no node action {other:?}: use cordon, uncordon or drain"),
            ));
        }
    };
    let key = keys::node(&name);
    let (st, key_ref, name_ref) = (&*s, &key, &name);
    let outcome = motley_store::update(
        &*s.store,
        || async move {
            let (s, key, name) = (st, key_ref, name_ref);
            let kv = s.store.get(key).await?.ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("node {name} not found"))
            })?;
            let mut node: motley_core::model::Node = serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            if node.cordoned == cordoned && node.draining == draining {
                return Ok::<_, ApiError>(motley_store::Attempt::Done(()));
            }
            node.cordoned = cordoned;
            node.draining = draining;
            let v = serde_json::to_vec(&node)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(motley_store::Attempt::Write(
                Txn::new()
                    .when(key.as_str(), kv.mod_revision)
                    .put(key.as_str(), v),
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
                format!("node {name} kept changing concurrently; run it again"),
            ));
        }
    }
    node_views(&s)
        .into_iter()
        .find(|n| n.node.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("node {name} not found")))
}

async fn list_nodes(State(s): State<Arc<Shared>>) -> Json<Vec<NodeView>> {
    Json(node_views(&s))
}

async fn get_node(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<NodeView>> {
    node_views(&s)
        .into_iter()
        .find(|n| n.node.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("node {name} not found")))
}

#[derive(Deserialize)]
struct AllocQuery {
    workload: Option<String>,
    node: Option<String>,
}

async fn list_allocs(
    State(s): State<Arc<Shared>>,
    axum::Extension(Caller(role)): axum::Extension<Caller>,
    Query(mut q): Query<AllocQuery>,
) -> ApiResult<Json<Vec<Allocation>>> {
    // A node sees its own allocations only (`authorize` already refused it asking for
    // anything else; this keeps the handler safe on its own).
    if let Role::Node { node } = role {
        q.node = Some(node);
    }
    let wref = match &q.workload {
        Some(w) => {
            let (k, n) = w.split_once('/').ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "workload must be KIND/NAME")
            })?;
            Some(WorkloadRef {
                kind: parse_kind(k)?,
                name: n.to_string(),
            })
        }
        None => None,
    };
    let cache = s.cache();
    let mut out: Vec<Allocation> = cache
        .allocs
        .values()
        .filter(|a| wref.as_ref().is_none_or(|r| a.workload == *r))
        .filter(|a| q.node.as_ref().is_none_or(|n| a.node == *n))
        .cloned()
        .collect();
    out.sort_by(|a, b| {
        (&a.workload, a.index, a.created_at).cmp(&(&b.workload, b.index, b.created_at))
    });
    Ok(Json(out))
}

async fn get_alloc(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Allocation>> {
    s.cache()
        .allocs
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("allocation {id} not found")))
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    tail: Option<u64>,
}

/// Removes a log stream's registration and tells the agent to stop sending.
struct LogGuard {
    shared: Arc<Shared>,
    req: u64,
    node: String,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        lock(&self.shared.log_streams).remove(&self.req);
        self.shared
            .send_to(&self.node, ServerMsg::LogsCancel { req: self.req });
    }
}

async fn logs(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let node = s
        .cache()
        .allocs
        .get(&id)
        .map(|a| a.node.clone())
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("allocation {id} not found"))
        })?;
    let req = s.id();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    lock(&s.log_streams).insert(req, tx);
    let guard = LogGuard {
        shared: s.clone(),
        req,
        node: node.clone(),
    };
    if !s.send_to(
        &node,
        ServerMsg::Logs {
            req,
            alloc: id,
            tail_bytes: q.tail,
            follow: q.follow,
        },
    ) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {node} is not connected"),
        ));
    }
    // The first piece tells whether the agent can serve the logs at all.
    let first = rx.recv().await;
    let first = match first {
        Some(Ok(data)) => data,
        Some(Err(e)) => return Err(ApiError::new(StatusCode::NOT_FOUND, e)),
        None => String::new(),
    };
    let stream = futures_util::stream::unfold(
        (Some(first), rx, guard),
        |(first, mut rx, guard)| async move {
            if let Some(f) = first {
                return Some((Ok::<_, std::io::Error>(f), (None, rx, guard)));
            }
            match rx.recv().await {
                Some(Ok(data)) => Some((Ok(data), (None, rx, guard))),
                Some(Err(e)) => Some((Ok(format!("\n[motley: {e}]\n")), (None, rx, guard))),
                None => None,
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    {
        let cache = s.cache();
        for st in motley_core::model::AllocState::ALL {
            let n = cache.allocs.values().filter(|a| a.state == st).count();
            s.metrics
                .allocations
                .get_or_create(&vec![("state".into(), st.as_str().into())])
                .set(n as i64);
        }
        for h in [Health::Ready, Health::Suspect, Health::Down] {
            let n = cache
                .nodes
                .keys()
                .filter(|n| s.node_health(n).0 == h)
                .count();
            s.metrics
                .nodes
                .get_or_create(&vec![("state".into(), h.as_str().into())])
                .set(n as i64);
        }
        for k in Kind::ALL {
            let n = cache.workloads.keys().filter(|r| r.kind == k).count();
            s.metrics
                .workloads
                .get_or_create(&vec![("kind".into(), k.as_str().into())])
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
