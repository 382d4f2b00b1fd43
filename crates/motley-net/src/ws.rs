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
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// A connected WebSocket.
pub type WsStream = WebSocketStream<TlsStream<TcpStream>>;

/// Read buffer of a client socket (tungstenite's default is 128 KiB). A larger frame
/// grows it to its own length and arrives in more reads out of the TLS layer's buffer.
pub const READ_BUFFER: usize = 1 << 10;

/// Largest frame of a message an agent sends. A receiver's read buffer grows to the
/// largest frame it was given and keeps that size: an agent's hello (its facts, about 3
/// KiB) left every connection's buffer on the server at 3 KiB for as long as it stayed
/// connected (issue 25: 3.05 MB of 40.5 MB live with 1,000 nodes). In fragments of 1
/// KiB, the server's buffer stays at 1 KiB; the receiver joins the fragments into one
/// message (RFC 6455, section 5.4), a string that is freed once it is decoded.
pub const FRAGMENT: usize = 1 << 10;

/// A text message as the frames to send: the message itself when it fits in
/// [`FRAGMENT`] bytes, otherwise fragments of at most that many bytes, split between
/// characters, the first a text frame, the others continuations, the last final. An
/// iterator, not a list: every message an agent sends goes through it.
pub fn text_frames(text: String) -> TextFrames {
    if text.len() <= FRAGMENT {
        TextFrames::Whole(Some(text))
    } else {
        TextFrames::Cut {
            text: Bytes::from(text),
            at: 0,
        }
    }
}

/// The frames of one text message ([`text_frames`]).
#[derive(Debug)]
pub enum TextFrames {
    /// A message that fits in one frame, until it is taken.
    Whole(Option<String>),
    /// A long message, sent up to byte `at`.
    Cut {
        /// The message.
        text: Bytes,
        /// Where the next fragment starts.
        at: usize,
    },
}

impl Iterator for TextFrames {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        match self {
            TextFrames::Whole(text) => text.take().map(|t| Message::Text(t.into())),
            TextFrames::Cut { text, at } => {
                let from = *at;
                if from >= text.len() {
                    return None;
                }
                let mut to = (from + FRAGMENT).min(text.len());
                // Back to a character's first byte (a UTF-8 continuation byte is
                // 0b10xx_xxxx; a character is at most 4 bytes, so at most 3 steps).
                while text.get(to).is_some_and(|b| b & 0xC0 == 0x80) {
                    to -= 1;
                }
                *at = to;
                let kind = if from == 0 {
                    Data::Text
                } else {
                    Data::Continue
                };
                Some(Message::Frame(Frame::message(
                    text.slice(from..to),
                    OpCode::Data(kind),
                    to == text.len(),
                )))
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload and kind of each frame.
    fn parts(frames: &[Message]) -> Vec<(Vec<u8>, OpCode, bool)> {
        frames
            .iter()
            .map(|m| match m {
                Message::Frame(f) => (f.payload().to_vec(), f.header().opcode, f.header().is_final),
                Message::Text(t) => (t.as_bytes().to_vec(), OpCode::Data(Data::Text), true),
                other => panic!("not a data frame: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_short_message_is_one_text_frame() {
        let text = "x".repeat(FRAGMENT);
        let frames: Vec<Message> = text_frames(text.clone()).collect();
        assert_eq!(frames, vec![Message::Text(text.into())]);
    }

    /// Long messages go in fragments no longer than `FRAGMENT`, a text frame then
    /// continuations, only the last final; joined, they are the message; no character
    /// is cut in two.
    #[test]
    fn a_long_message_goes_in_fragments_between_characters() {
        // ASCII with two-, three- and four-byte characters across every boundary.
        let text: String = (0..3000).map(|i| ['a', 'é', '€', '🦀'][i % 4]).collect();
        let frames = parts(&text_frames(text.clone()).collect::<Vec<_>>());
        assert!(frames.len() >= 7, "{} frames", frames.len());
        let mut joined = Vec::new();
        for (i, (payload, opcode, last)) in frames.iter().enumerate() {
            assert!(payload.len() <= FRAGMENT && !payload.is_empty());
            assert!(
                std::str::from_utf8(payload).is_ok(),
                "frame {i} cuts a character"
            );
            let kind = if i == 0 { Data::Text } else { Data::Continue };
            assert_eq!(*opcode, OpCode::Data(kind));
            assert_eq!(*last, i == frames.len() - 1);
            joined.extend_from_slice(payload);
        }
        assert_eq!(joined, text.as_bytes());
    }
}
