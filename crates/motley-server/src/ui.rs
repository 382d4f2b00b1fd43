//! The dashboard at `/ui` (docs/dashboard.md): the session cookie, CSRF, and the
//! calls to this server's own API that feed [`motley_ui`]'s pages.
//!
//! The dashboard holds no authority of its own. A page asks the API router in
//! process, with the session's token as the bearer, for exactly the bodies the CLI
//! would get; an action is one API request. So the same route table decides what a
//! token may see and do (a viewer's page cannot show what `/v1` would not give it),
//! refusals and changes are audited as for the CLI, and a follower forwards to the
//! leader as it does for the CLI.
//!
//! Sessions: the login form's token is checked (`GET /v1/whoami`) and kept in a
//! `Secure; HttpOnly; SameSite=Strict` cookie scoped to `/ui`, so any server of the
//! cluster accepts it and a revoked or expired token ends the session at once. Every
//! form carries a CSRF token derived from the session's token (a page of another
//! site can read neither), and a POST whose `Origin` names another host is refused.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use motley_core::api::Whoami;
use motley_core::model::{DEFAULT_NAMESPACE, Kind};
use motley_ui::{Ctx, Page};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::state::now_ms;

mod pages;

/// The session cookie's name.
pub const COOKIE: &str = "motley_session";
/// How long a session lasts (the token's own expiry ends it sooner).
const SESSION_SECONDS: u64 = 8 * 3600;

/// What the dashboard's handlers share: the API they ask, in process.
#[derive(Clone)]
pub(crate) struct Ui {
    api: Router,
}

/// The dashboard's routes, to merge beside the API's (`api` is that router).
pub fn router(api: Router) -> Router {
    let ui = Ui { api };
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/{version}/{name}", get(asset))
        .route("/ui/services", get(pages::services))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/daemons", get(pages::daemons))
        .route("/ui/volumes", get(pages::volumes))
        .route("/ui/sources", get(pages::sources))
        .route("/ui/events", get(pages::events))
        .route("/ui/uptime", get(pages::uptime))
        .route("/ui/w/{kind}/{name}", get(pages::workload))
        .route("/ui/allocs/{id}", get(pages::alloc))
        .route("/ui/allocs/{id}/log", get(pages::log))
        .route("/ui/nodes/{name}", get(pages::node))
        .route("/ui/whatif", get(pages::whatif))
        .route("/ui/experiments", get(pages::experiments))
        .route("/ui/experiments/{name}", get(pages::experiment))
        .route("/ui/act", post(pages::act))
        .layer(middleware::from_fn(security_headers))
        .with_state(ui)
}

/// Every dashboard answer: scripts and styles from this server only, never framed,
/// no referrer to other sites (a form's `Origin` is then its own, not `null`), not
/// kept by caches (but for the versioned assets). A POST from a page
/// of another site is refused here, before any handler.
async fn security_headers(req: Request, next: Next) -> Response {
    let asset = req.uri().path().starts_with("/ui/assets/");
    let mut resp = if req.method() == Method::POST && !same_origin(req.headers(), req.uri()) {
        (
            StatusCode::FORBIDDEN,
            "refused: the form was sent from a page of another site",
        )
            .into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn asset(headers: HeaderMap, Path((version, name)): Path<(String, String)>) -> Response {
    static GZIPPED: std::sync::OnceLock<Vec<(&'static str, Vec<u8>)>> = std::sync::OnceLock::new();
    let Some((ct, body)) = motley_ui::assets::get(&name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    if version != env!("CARGO_PKG_VERSION") {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    let cache = [
        (header::CONTENT_TYPE, ct),
        (header::CACHE_CONTROL, "public, max-age=604800, immutable"),
        (header::VARY, "accept-encoding"),
    ];
    if !accepts_gzip(&headers) {
        return (cache, body).into_response();
    }
    // Compressed once, at the best level, and kept: 52 KB of htmx goes out as 16 KB.
    let all = GZIPPED.get_or_init(|| {
        motley_ui::assets::NAMES
            .iter()
            .filter_map(|n| {
                let (_, b) = motley_ui::assets::get(n)?;
                Some((*n, gzip(b.as_bytes(), flate2::Compression::best())))
            })
            .collect()
    });
    match all.iter().find(|(n, _)| *n == name) {
        Some((_, z)) => (
            cache,
            [(header::CONTENT_ENCODING, "gzip")],
            Bytes::from_static(z.as_slice()),
        )
            .into_response(),
        None => (cache, body).into_response(),
    }
}

/// Whether the client takes gzip (`Accept-Encoding`; a browser always does).
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name == "gzip" || name == "*") && !refused
        })
}

/// `body` gzipped (a write into a `Vec` cannot fail; an empty answer if it did).
pub(crate) fn gzip(body: &[u8], level: flate2::Compression) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), level);
    z.write_all(body)
        .and_then(|()| z.finish())
        .unwrap_or_default()
}

/// The CSRF token of a session: a hash of its token, so every server derives the same
/// one and nothing is stored; another site can know neither.
pub fn csrf_of(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"motley dashboard csrf\0");
    h.update(token.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session's token, from the cookie.
fn session(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Whether a POST comes from a page of this server: its `Origin`, when the browser
/// sends one, names the host it was sent to (`Host` in HTTP/1.1, the URI's authority
/// in HTTP/2).
fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

/// The caller's address, when the listener recorded it: passed on to the API so that
/// failed logins count toward the address's lockout and audit entries name it.
#[derive(Clone, Copy)]
pub(crate) struct Peer(pub(crate) Option<ConnectInfo<SocketAddr>>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts.extensions.get::<ConnectInfo<SocketAddr>>().copied(),
        ))
    }
}

/// An API answer that was not a success: its status and its message.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

/// One request on behalf of the session: method, path and query, optional JSON body.
pub(crate) struct Call<'a> {
    pub(crate) ui: &'a Ui,
    pub(crate) token: &'a str,
    pub(crate) peer: Option<ConnectInfo<SocketAddr>>,
}

impl Call<'_> {
    /// The API's answer, whatever it is.
    pub(crate) async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Response, Refused> {
        use tower::ServiceExt;
        let mut b = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let body = match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        let mut req = b.body(body).map_err(|e| Refused {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
        })?;
        if let Some(p) = self.peer {
            req.extensions_mut().insert(p);
        }
        match self.ui.api.clone().oneshot(req).await {
            Ok(r) => Ok(r),
            Err(never) => match never {},
        }
    }

    /// A successful answer's JSON body, or the refusal in the API's words.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, Refused> {
        let resp = self.send(method, uri, body).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .map_err(|e| Refused {
                status: StatusCode::BAD_GATEWAY,
                message: e.to_string(),
            })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<motley_core::api::ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Refused { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| Refused {
            status: StatusCode::BAD_GATEWAY,
            message: format!("the API answered {uri} with what the dashboard cannot read: {e}"),
        })
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, uri: &str) -> Result<T, Refused> {
        self.json(Method::GET, uri, None).await
    }
}

/// A request's session, checked: the token, who it is, the namespace chosen.
pub(crate) struct Session {
    pub(crate) token: String,
    pub(crate) csrf: String,
    pub(crate) who: Whoami,
    pub(crate) peer: Option<ConnectInfo<SocketAddr>>,
    /// `?namespace=` as asked, or a limited token's first namespace.
    pub(crate) namespace: Option<String>,
    pub(crate) namespaces: Vec<String>,
    /// Only the live part is asked for (an htmx refresh).
    pub(crate) fragment: bool,
    /// The client takes gzip.
    pub(crate) gzip: bool,
    pub(crate) path: String,
}

impl Session {
    pub(crate) fn call<'a>(&'a self, ui: &'a Ui) -> Call<'a> {
        Call {
            ui,
            token: &self.token,
            peer: self.peer,
        }
    }

    /// `namespace=NS&` for a namespaced list route (nothing for all namespaces).
    pub(crate) fn ns_param(&self) -> String {
        self.namespace.as_deref().map_or_else(String::new, |ns| {
            format!("namespace={}&", motley_ui::urlencode(ns))
        })
    }

    /// The page, whole or (for a refresh) its live part.
    pub(crate) fn render(&self, page: &Page, status: StatusCode) -> Response {
        let ctx = Ctx {
            who: &self.who,
            csrf: &self.csrf,
            namespace: self.namespace.as_deref(),
            namespaces: &self.namespaces,
            now: now_ms(),
            path: &self.path,
        };
        let html = motley_ui::document(&ctx, page, self.fragment).into_string();
        let ct = [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::VARY, "accept-encoding"),
        ];
        if self.gzip {
            // A fast level: 100 nodes' overview, 140 KiB, goes out as about 10 KiB.
            let z = gzip(html.as_bytes(), flate2::Compression::fast());
            (status, ct, [(header::CONTENT_ENCODING, "gzip")], z).into_response()
        } else {
            (status, ct, html).into_response()
        }
    }

    /// A refusal as a page, with the API's status.
    pub(crate) fn refused(&self, r: Refused) -> Response {
        self.render(&motley_ui::pages::error(&r.message), r.status)
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct NsParam {
    #[serde(default)]
    namespace: Option<String>,
}

/// Checks the request's session. `Err` is the answer to give instead: the login page
/// (by redirect, or for an htmx refresh by its `HX-Redirect`).
pub(crate) async fn checked(
    ui: &Ui,
    req_headers: &HeaderMap,
    peer: Option<ConnectInfo<SocketAddr>>,
    path: &str,
    q: &NsParam,
) -> Result<Session, Response> {
    let fragment = req_headers.contains_key("hx-request");
    let to_login = |fragment: bool| {
        if fragment {
            ([("hx-redirect", "/ui/login")], StatusCode::UNAUTHORIZED).into_response()
        } else {
            (
                [(header::SET_COOKIE, clear_cookie())],
                Redirect::to("/ui/login"),
            )
                .into_response()
        }
    };
    let Some(token) = session(req_headers) else {
        return Err(to_login(fragment));
    };
    let call = Call {
        ui,
        token: &token,
        peer,
    };
    let who: Whoami = match call.get("/v1/whoami").await {
        Ok(w) => w,
        Err(r) if r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::FORBIDDEN => {
            return Err(to_login(fragment));
        }
        Err(r) => {
            return Err((r.status, r.message).into_response());
        }
    };
    let namespace = q
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| who.namespaces.first().cloned());
    let namespaces = if fragment {
        // A refresh renders the live part only, never the picker: no list to fetch
        // every 5 s per open page.
        Vec::new()
    } else if who.namespaces.is_empty() {
        // Every namespace there is: `default` and each `kind: Namespace` (the
        // picker only; a refusal leaves `default` alone to choose).
        let listed: Vec<motley_core::api::WorkloadView> = call
            .get("/v1/workloads?kind=namespace")
            .await
            .unwrap_or_default();
        std::iter::once(DEFAULT_NAMESPACE.to_string())
            .chain(listed.iter().map(|v| v.workload.spec.name().to_string()))
            .collect()
    } else {
        who.namespaces.clone()
    };
    Ok(Session {
        csrf: csrf_of(&token),
        token,
        who,
        peer,
        namespace,
        namespaces,
        fragment,
        gzip: accepts_gzip(req_headers),
        path: path.to_string(),
    })
}

fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; Max-Age=0; Secure; HttpOnly; SameSite=Strict")
}

/// The login form (a stale cookie is simply replaced at the next login).
async fn login_page() -> Response {
    html(StatusCode::OK, motley_ui::pages::login(None).into_string())
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /ui/login`: the token is asked about (`/v1/whoami`, so failures count toward
/// the address's lockout as any other failed authentication), then kept in the cookie.
async fn login(State(ui): State<Ui>, Peer(peer): Peer, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim();
    let call = Call {
        ui: &ui,
        token,
        peer,
    };
    match call.get::<Whoami>("/v1/whoami").await {
        Ok(_) => {
            let cookie = format!(
                "{COOKIE}={token}; Path=/ui; Max-Age={SESSION_SECONDS}; Secure; HttpOnly; SameSite=Strict"
            );
            match HeaderValue::from_str(&cookie) {
                Ok(v) => ([(header::SET_COOKIE, v)], Redirect::to("/ui/")).into_response(),
                Err(_) => html(
                    StatusCode::BAD_REQUEST,
                    motley_ui::pages::login(Some("that is not a token")).into_string(),
                ),
            }
        }
        Err(r) => {
            let why = match r.status {
                StatusCode::UNAUTHORIZED => "invalid or expired token".to_string(),
                StatusCode::FORBIDDEN => {
                    "only admin and viewer tokens may use the dashboard".to_string()
                }
                _ => r.message,
            };
            html(r.status, motley_ui::pages::login(Some(&why)).into_string())
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let ok = session(&headers).is_some_and(|t| same(&csrf_of(&t), &f.csrf));
    if !ok {
        return (StatusCode::FORBIDDEN, "refused: not this session's form").into_response();
    }
    (
        [(header::SET_COOKIE, clear_cookie())],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

/// Splits valid UTF-8 off the front of `buf`, keeping an incomplete character at its
/// end for the next piece of a stream.
pub(crate) fn utf8_prefix(buf: &mut Vec<u8>) -> String {
    let cut = match std::str::from_utf8(buf) {
        Ok(_) => buf.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => buf.len(),
    };
    let rest = buf.split_off(cut);
    let text = String::from_utf8_lossy(buf).into_owned();
    *buf = rest;
    text
}

/// One server-sent event.
pub(crate) fn sse(event: Option<&str>, data: &str) -> Bytes {
    let data = serde_json::Value::String(data.to_string()).to_string();
    Bytes::from(match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_read_among_others_and_csrf_is_per_token() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; motley_session=tok-1; b=2"),
        );
        assert_eq!(session(&h).as_deref(), Some("tok-1"));
        h.insert(header::COOKIE, HeaderValue::from_static("motley_session="));
        assert_eq!(session(&h), None);
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert_eq!(csrf_of("a").len(), 32);
        assert!(same(&csrf_of("a"), &csrf_of("a")));
        assert!(!same(&csrf_of("a"), &csrf_of("b")));
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let mut h = HeaderMap::new();
        let path: axum::http::Uri = "/ui/act".parse().expect("uri");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7000"));
        assert!(
            same_origin(&h, &path),
            "no Origin: a browser that sends none"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:7000"),
        );
        assert!(same_origin(&h, &path));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, &path));
        // HTTP/2: no Host header; the authority is the URI's.
        h.remove(header::HOST);
        let h2: axum::http::Uri = "https://127.0.0.1:7000/ui/act".parse().expect("uri");
        assert!(!same_origin(&h, &h2));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:7000"),
        );
        assert!(same_origin(&h, &h2));
        assert!(!same_origin(&h, &path), "no host known: refused");
    }

    #[test]
    fn a_character_split_between_pieces_is_kept_whole() {
        let mut buf = "é".as_bytes()[..1].to_vec();
        assert_eq!(utf8_prefix(&mut buf), "");
        buf.extend_from_slice(&"é".as_bytes()[1..]);
        buf.extend_from_slice(b"x\n");
        assert_eq!(utf8_prefix(&mut buf), "éx\n");
        assert!(buf.is_empty());
        assert_eq!(
            sse(Some("end"), "a\"b\n"),
            "event: end\ndata: \"a\\\"b\\n\"\n\n"
        );
    }

    #[test]
    fn gzip_when_asked_and_not_when_refused() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br, zstd"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br;q=1, gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
        let text = "<li>node</li>".repeat(1000);
        let z = gzip(text.as_bytes(), flate2::Compression::fast());
        assert!(z.len() < text.len() / 20, "{} of {}", z.len(), text.len());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&z[..]), &mut back)
            .expect("gunzip");
        assert_eq!(back, text);
    }
}
