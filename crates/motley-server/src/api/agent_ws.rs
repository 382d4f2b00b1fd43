//! `GET /v1/agent/connect`: the agent's WebSocket ([`WsLink`], a [`Link`] for
//! [`crate::agents::session`]), and the relay of a server that does not lead to the
//! leader, frame by frame (see [`crate::ha`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt, StreamExt};
use motley_core::proto::{AgentMsg, ServerMsg};
use tokio::sync::mpsc;

use crate::agents::{AgentCaller, Frame, Link, session};
use crate::api::{ApiError, Caller};
use crate::auth::Role;
use crate::state::Shared;

/// Largest frame accepted from an agent.
pub const MAX_FRAME: usize = 4 << 20;
/// Read buffer of each agent socket. Agent frames are small (a heartbeat is 18 bytes, a
/// report a few hundred); tungstenite's default of 128 KiB per connection was most of
/// the server's memory with 1,000 agents (bench/scale.py), and 8 KiB was still the
/// largest part of a connection's memory with 10,000 (a heap profile, issue 25). A
/// larger frame grows the buffer to its own length and arrives in more reads, each a copy
/// out of the TLS layer's buffer, not a system call.
pub const READ_BUFFER: usize = 1 << 10;
/// How much an agent socket gathers before it writes to the TLS layer: nothing. The
/// outbox is written as a batch of frames, and tungstenite gathered a whole batch (128
/// KiB allowed) and kept the buffer at the largest batch's size for as long as the node
/// was connected: 3.9 KiB a node at rest (a heap profile with ten agents, issue 25).
/// Written one frame at a time, the buffer is the largest frame's size. The frames of a
/// batch then reach the socket in one write each (a heartbeat's answer is a batch of
/// one: at rest nothing changes).
pub const WRITE_BUFFER: usize = 0;

/// WebSocket ping interval, to notice dead TCP connections (memory only; nothing is stored).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// `GET /v1/agent/connect`.
pub async fn connect(
    State(s): State<Arc<Shared>>,
    Extension(Caller(role)): Extension<Caller>,
    who: Option<Extension<crate::api::Who>>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let caller = AgentCaller {
        who: who.map_or_else(|| "-".into(), |w| w.0.0),
        peer: peer.map_or_else(|| "-".into(), |p| p.0.0.ip().to_string()),
    };
    let Role::Node { node } = role else {
        return ApiError(
            StatusCode::FORBIDDEN,
            motley_core::api::ErrorBody {
                error: "only node credentials may connect as an agent".into(),
                details: vec![],
            },
        )
        .into_response();
    };
    if s.ha.leading().is_none() {
        // Node liveness lives with the leader: relay this agent to it.
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string();
        return ws
            .max_message_size(MAX_FRAME)
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .on_upgrade(move |socket| relay(s, node, token, caller, socket));
    }
    ws.max_message_size(MAX_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // The session's future itself, not an `async` block around it: the block kept
        // slots of its own for the socket and the link beside the session's, in a task
        // held for as long as the node is connected.
        .on_upgrade(move |socket| {
            let link = WsLink::new(socket, &node);
            session(s, node, caller, link)
        })
}

/// The real link: a WebSocket, read and written by the session's own task. What the
/// outbox holds is written whenever the session waits for the agent's next frame, so an
/// acknowledgement goes out in the same wake-up as the heartbeat it answers (a writer
/// task of its own cost a second wake-up, often on the other worker, for every
/// acknowledgement: most of the server's CPU with 1,000 idle agents, issue 25).
pub struct WsLink {
    socket: WebSocket,
    outbox: Option<mpsc::Receiver<crate::state::Queued>>,
    ping: tokio::time::Interval,
    node: String,
}

impl WsLink {
    fn new(socket: WebSocket, node: &str) -> WsLink {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        WsLink {
            socket,
            outbox: None,
            ping,
            node: node.to_string(),
        }
    }

    /// Writes what the outbox holds now, without waiting; false when the socket failed.
    async fn flush_outbox(&mut self) -> bool {
        let Some(outbox) = self.outbox.as_mut() else {
            return true;
        };
        let mut wrote = false;
        while let Ok(msg) = outbox.try_recv() {
            if !feed(&mut self.socket, &msg).await {
                return false;
            }
            wrote = true;
        }
        !wrote || self.socket.flush().await.is_ok()
    }
}

/// Queues `msg` on the socket as JSON, unflushed; false when the socket failed (a
/// message that cannot be serialized is skipped).
async fn feed(socket: &mut WebSocket, msg: &ServerMsg) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => socket.feed(Message::Text(text.into())).await.is_ok(),
        Err(_) => true,
    }
}

impl Link for WsLink {
    async fn recv(&mut self) -> Frame {
        loop {
            if !self.flush_outbox().await {
                return Frame::End;
            }
            let outbox = async {
                match self.outbox.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = self.socket.next() => return decode(&self.node, frame),
                msg = outbox => match msg {
                    // Written at the top of the loop, with whatever came with it.
                    Some(msg) => {
                        if !feed(&mut self.socket, &msg).await {
                            return Frame::End;
                        }
                    }
                    // Every sender is gone: the session is ending.
                    None => return Frame::End,
                },
                _ = self.ping.tick() => {
                    if self.socket.feed(Message::Ping(Default::default())).await.is_err() {
                        return Frame::End;
                    }
                }
            }
            if self.socket.flush().await.is_err() {
                return Frame::End;
            }
        }
    }

    fn try_recv(&mut self) -> Option<Frame> {
        self.socket
            .next()
            .now_or_never()
            .map(|f| decode(&self.node, f))
    }

    fn sender(&mut self) -> mpsc::Sender<crate::state::Queued> {
        let (tx, rx) = mpsc::channel::<crate::state::Queued>(crate::state::OUTBOX_LIMIT);
        self.outbox = Some(rx);
        tx
    }

    async fn refuse(mut self, why: String) {
        let _ = self
            .socket
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: 4003,
                reason: why.into(),
            })))
            .await;
    }
}

/// How long a relayed agent waits for a leader before its connection is closed (it then
/// reconnects): less than the agent's wait for Welcome.
pub const RELAY_WAIT: Duration = Duration::from_secs(4);

/// Relays an agent connection to the leading server, frame by frame, until either side
/// closes or the leader changes. Becoming the leader meanwhile serves the agent here.
async fn relay(
    s: Arc<Shared>,
    node: String,
    token: String,
    caller: AgentCaller,
    mut down: WebSocket,
) {
    let mut observed = s.ha.observed.subscribe();
    let mut term = s.ha.term.subscribe();
    let deadline = tokio::time::Instant::now() + RELAY_WAIT;
    // The leader the store names may have just died (its key lasts until its lease runs
    // out): on failure, wait for the next one rather than turning the agent away.
    let mut failed: Option<String> = None;
    let (leader, up) = loop {
        if s.ha.leading().is_some() {
            let link = WsLink::new(down, &node);
            return session(s, node, caller, link).await;
        }
        if let Some(l) = s.ha.leader_elsewhere()
            && failed.as_ref() != Some(&l.id)
        {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match motley_net::ws::connect(
                &l.url,
                "/v1/agent/connect",
                &token,
                &[(crate::api::FORWARDED, s.ha.me.id.clone())],
                s.ha.tls.clone(),
                left.max(Duration::from_millis(100)),
            )
            .await
            {
                Ok(up) => break (l, up),
                Err(e) => {
                    tracing::debug!("agent {node}: relaying to {}: {e}", l.url);
                    failed = Some(l.id.clone());
                    continue;
                }
            }
        }
        tokio::select! {
            _ = observed.changed() => {}
            _ = term.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!("agent {node}: no leader to relay to");
                let _ = down.send(close(1013, "no leading server can be reached yet; try again")).await;
                return;
            }
        }
    };
    tracing::info!("agent {node} relayed to the leader {}", leader.url);
    observed.borrow_and_update();
    term.borrow_and_update();
    let (mut up_sink, mut up_stream) = up.split();
    let (mut down_sink, mut down_stream) = down.split();
    use tokio_tungstenite::tungstenite::Message as Up;
    loop {
        tokio::select! {
            m = down_stream.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    // In fragments, as the agent sent it: the leader's read buffer for
                    // this socket keeps the largest frame's size (`ws::FRAGMENT`).
                    let mut sent = true;
                    for frame in motley_net::ws::text_frames(t.as_str().to_string()) {
                        sent = sent && up_sink.feed(frame).await.is_ok();
                    }
                    if !sent || up_sink.flush().await.is_err() { break }
                }
                Some(Ok(Message::Binary(b))) => {
                    if up_sink.send(Up::Binary(b)).await.is_err() { break }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            m = up_stream.next() => match m {
                Some(Ok(Up::Text(t))) => {
                    if down_sink.send(Message::Text(t.as_str().into())).await.is_err() { break }
                }
                Some(Ok(Up::Binary(b))) => {
                    if down_sink.send(Message::Binary(b)).await.is_err() { break }
                }
                Some(Ok(Up::Close(f))) => {
                    if let Some(f) = f {
                        let _ = down_sink.send(close(f.code.into(), f.reason.as_str())).await;
                    }
                    break;
                }
                None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = observed.changed() => break,
            _ = term.changed() => break,
        }
    }
    let _ = up_sink.close().await;
    let _ = down_sink.close().await;
    tracing::info!("agent {node}: relay to {} ended", leader.url);
}

fn decode(node: &str, frame: Option<Result<Message, axum::Error>>) -> Frame {
    let text = match frame {
        Some(Ok(Message::Text(t))) => t,
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Frame::End,
        Some(Ok(_)) => return Frame::Skip,
    };
    match serde_json::from_str::<AgentMsg>(&text) {
        Ok(m) => Frame::Msg(m),
        Err(e) => {
            tracing::warn!("agent {node} sent an invalid message: {e}");
            Frame::End
        }
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code,
        reason: reason.to_string().into(),
    }))
}
