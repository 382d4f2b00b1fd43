//! Outbound WebSocket connections to a server over TLS pinned to the cluster CA: agents
//! to a server, and a server relaying an agent to the leading server.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A connected WebSocket.
pub type WsStream = WebSocketStream<TlsStream<TcpStream>>;

/// Read buffer of a client socket (tungstenite's default is 128 KiB). A larger frame
/// grows it to its own length and arrives in more reads out of the TLS layer's buffer.
pub const READ_BUFFER: usize = 1 << 10;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The server answered the upgrade with an HTTP error.
    #[error("the server refused the connection: {status} {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its body, as text.
        body: String,
    },
    /// The URL, TCP, TLS or the WebSocket handshake failed.
    #[error("{0}")]
    Failed(String),
}

/// Host and port of an `https://host:port` server URL.
pub fn target(url: &str) -> Result<(String, u16), WsError> {
    let bad = |why: String| WsError::Failed(format!("server URL {url:?}: {why}"));
    let uri: http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must start with https://".into()));
    }
    let host = uri.host().ok_or_else(|| bad("has no host".into()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// Opens `wss://<server><path>` with a bearer token and extra headers; each step (TCP,
/// TLS, upgrade) may take at most `timeout`.
pub async fn connect(
    url: &str,
    path: &str,
    token: &str,
    extra_headers: &[(&'static str, String)],
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<WsStream, WsError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| WsError::Failed(format!("{what}: {e}"));
    let (host, port) = target(url)?;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| WsError::Failed("connect timed out".into()))?
        .map_err(|e| failed("connect", &e))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.clone()).map_err(|e| failed("server name", &e))?;
    let stream = tokio::time::timeout(timeout, TlsConnector::from(tls).connect(name, tcp))
        .await
        .map_err(|_| WsError::Failed("TLS handshake timed out".into()))?
        .map_err(|e| {
            WsError::Failed(format!(
                "TLS: {e} (is this server part of the cluster whose CA is trusted here?)"
            ))
        })?;
    let ws_url = format!(
        "wss://{}{path}",
        url.trim_start_matches("https://").trim_end_matches('/')
    );
    let mut req = ws_url
        .into_client_request()
        .map_err(|e| failed("request", &e))?;
    let auth = format!("Bearer {token}")
        .parse()
        .map_err(|e| failed("token", &e))?;
    req.headers_mut().insert(http::header::AUTHORIZATION, auth);
    for (name, value) in extra_headers {
        let v = value.parse().map_err(|e| failed(name, &e))?;
        req.headers_mut().insert(*name, v);
    }
    // Frames from a server are small (acks, assignments); the library's 128 KiB read
    // buffer per socket would be most of a small agent's memory.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER);
    let (ws, _) = tokio::time::timeout(
        timeout,
        tokio_tungstenite::client_async_with_config(req, stream, Some(config)),
    )
    .await
    .map_err(|_| WsError::Failed("WebSocket handshake timed out".into()))?
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => WsError::Refused {
            status: resp.status().as_u16(),
            body: resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default(),
        },
        other => failed("WebSocket", &other),
    })?;
    Ok(ws)
}
