//! The ingress: HTTP/1.1 on `--ingress-listen`, each request routed by its host and
//! path to a service's port ([`motley_core::catalog::Catalog::route`]) and sent to a
//! healthy endpoint, with `X-Forwarded-For`, `-Host` and `-Proto`. An endpoint that
//! refuses the connection is skipped for the next one: the request was not sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Mesh;

/// What the ingress answers with.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Serves the ingress on `l` until the task is dropped: plain HTTP, or HTTPS with
/// `tls` (certificates by SNI from the catalog).
pub async fn serve(mesh: Mesh, l: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((conn, peer)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let _ = conn.set_nodelay(true);
        let (mesh, tls) = (mesh.clone(), tls.clone());
        motley_rt::spawn(async move {
            let proto = if tls.is_some() { "https" } else { "http" };
            let svc = hyper::service::service_fn(move |req| {
                let mesh = mesh.clone();
                async move { Ok::<_, Infallible>(handle(&mesh, peer, req, proto).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(conn), svc).await;
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(conn),
                    );
                    if let Ok(Ok(stream)) = handshake.await {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            }
        });
    }
}

/// Serves HTTP on `l` for one service's port (the node proxy's `protocol: http`
/// ports): every request goes to that port, whatever its host.
pub async fn serve_fixed(mesh: Mesh, l: TcpListener, service: String, port: String) {
    let route: std::sync::Arc<(String, String)> = std::sync::Arc::new((service, port));
    loop {
        let Ok((conn, peer)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let _ = conn.set_nodelay(true);
        let (mesh, route) = (mesh.clone(), route.clone());
        motley_rt::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (mesh, route) = (mesh.clone(), route.clone());
                async move {
                    let fixed = Some((route.0.as_str(), route.1.as_str()));
                    Ok::<_, Infallible>(forward(&mesh, peer, req, "http", fixed).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(conn), svc)
                .await;
        });
    }
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(text + "\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers that belong to one connection, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

async fn handle(
    mesh: &Mesh,
    peer: SocketAddr,
    req: Request<Incoming>,
    proto: &'static str,
) -> Response<Body> {
    forward(mesh, peer, req, proto, None).await
}

/// Sends `req` to a healthy endpoint of `fixed` (the node proxy), or of the route its
/// host and path match (the ingress).
async fn forward(
    mesh: &Mesh,
    peer: SocketAddr,
    req: Request<Incoming>,
    proto: &'static str,
    fixed: Option<(&str, &str)>,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string))
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let route = match fixed {
        Some((s, p)) => Some((s.to_string(), p.to_string())),
        None => {
            let cat = mesh.catalog();
            cat.route(&host, &path)
                .map(|(s, p)| (s.to_string(), p.to_string()))
        }
    };
    let Some((service, port)) = route else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no service is exposed at {host}{path}"),
        );
    };
    let candidates = mesh.candidates(&service, &port);
    if candidates.is_empty() {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service {service} has no healthy endpoint"),
        );
    }
    let Some((stream, label)) = crate::connect(mesh, &candidates).await else {
        return plain(
            StatusCode::BAD_GATEWAY,
            format!("no endpoint of service {service} accepted a connection"),
        );
    };
    let started = Instant::now();
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            mesh.metrics().errors.get_or_create(&label).inc();
            return plain(StatusCode::BAD_GATEWAY, format!("{}: {e}", label.endpoint));
        }
    };
    motley_rt::spawn(async move {
        let _ = conn.await;
    });
    let (mut parts, body) = req.into_parts();
    for h in &HOP_BY_HOP {
        parts.headers.remove(h);
    }
    let client = peer.ip().to_string();
    let xff = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => format!("{prev}, {client}"),
        None => client,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Ok(v) = HeaderValue::from_str(&host) {
        parts.headers.insert("x-forwarded-host", v);
    }
    if let Some(pq) = parts.uri.path_and_query().cloned() {
        parts.uri = http::Uri::from(pq);
    }
    parts.version = http::Version::HTTP_11;
    let m = mesh.metrics();
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            if fixed.is_some() {
                m.proxied.get_or_create(&label).inc();
            } else {
                m.requests.get_or_create(&label).inc();
            }
            m.latency
                .get_or_create(&label)
                .observe(started.elapsed().as_secs_f64());
            if resp.status().is_server_error() {
                m.errors.get_or_create(&label).inc();
            }
            let (mut parts, body) = resp.into_parts();
            for h in &HOP_BY_HOP {
                parts.headers.remove(h);
            }
            Response::from_parts(parts, Either::Left(body))
        }
        Err(e) => {
            m.errors.get_or_create(&label).inc();
            plain(
                StatusCode::BAD_GATEWAY,
                format!("{service} via {}: {e}", label.endpoint),
            )
        }
    }
}
