//! Agent connections: one WebSocket per agent at `/v1/agent/connect`.
//!
//! The agent dials out; the server never dials agents. The first frame is the
//! agent's `Hello`; the server answers `Welcome` and the full assignment set,
//! then both sides send changes only. Log requests travel over the same socket.
//!
//! Only the leading server holds agent sessions; the others relay an agent's socket
//! to it frame by frame (see [`crate::ha`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt, StreamExt};
use motley_core::proto::{AgentMsg, PROTOCOL_VERSION, ServerMsg};
use tokio::sync::mpsc;

use crate::api::{ApiError, Caller};
use crate::auth::Role;
use crate::state::{Shared, lock, now_ms};

/// How long an agent has to say Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame accepted from an agent.
pub const MAX_FRAME: usize = 4 << 20;
/// Read buffer of each agent socket. Agent frames are small (a heartbeat is 18 bytes, a
/// report a few hundred); tungstenite's default of 128 KiB per connection was most of
/// the server's memory with 1,000 agents (bench/scale.py). Larger frames still arrive,
/// in more reads.
pub const READ_BUFFER: usize = 8 << 10;
/// At most one lease renewal (ack) per this interval.
pub const ACK_INTERVAL: Duration = Duration::from_millis(900);
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
            .on_upgrade(move |socket| async move { relay(s, node, token, caller, socket).await });
    }
    ws.max_message_size(MAX_FRAME)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let link = WsLink::new(socket, &node);
            session(s, node, caller, link).await
        })
}

/// Who opened an agent connection, for the audit log.
pub struct AgentCaller {
    /// The credential's description.
    pub who: String,
    /// The peer's address.
    pub peer: String,
}

/// One agent's connection as its session sees it: decoded frames in, messages out. A
/// WebSocket on a real server ([`WsLink`]); the simulator's in-memory network otherwise.
pub trait Link: Send + 'static {
    /// The next frame (waits).
    fn recv(&mut self) -> impl std::future::Future<Output = Frame> + Send;
    /// A frame that has already arrived, if any (does not wait).
    fn try_recv(&mut self) -> Option<Frame>;
    /// Where messages to the agent go, in order; closed when the connection is.
    fn sender(&mut self) -> mpsc::UnboundedSender<ServerMsg>;
    /// Turns the agent away for good (close code 4003: it stops reconnecting).
    fn refuse(self, why: String) -> impl std::future::Future<Output = ()> + Send;
}

/// The real link: a WebSocket, written by a task of its own that also pings.
pub struct WsLink {
    stream: futures_util::stream::SplitStream<WebSocket>,
    sink: Option<futures_util::stream::SplitSink<WebSocket, Message>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    node: String,
}

impl WsLink {
    fn new(socket: WebSocket, node: &str) -> WsLink {
        let (sink, stream) = socket.split();
        WsLink {
            stream,
            sink: Some(sink),
            writer: None,
            node: node.to_string(),
        }
    }
}

impl Drop for WsLink {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

impl Link for WsLink {
    async fn recv(&mut self) -> Frame {
        decode(&self.node, self.stream.next().await)
    }

    fn try_recv(&mut self) -> Option<Frame> {
        self.stream
            .next()
            .now_or_never()
            .map(|f| decode(&self.node, f))
    }

    fn sender(&mut self) -> mpsc::UnboundedSender<ServerMsg> {
        let (tx, mut rx) = mpsc::unbounded_channel::<ServerMsg>();
        let Some(mut sink) = self.sink.take() else {
            return tx;
        };
        self.writer = Some(motley_rt::spawn(async move {
            let mut ping = tokio::time::interval(PING_INTERVAL);
            ping.tick().await;
            loop {
                tokio::select! {
                    msg = rx.recv() => {
                        let Some(msg) = msg else { break };
                        let Ok(text) = serde_json::to_string(&msg) else { continue };
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    _ = ping.tick() => {
                        if sink.send(Message::Ping(Default::default())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
        tx
    }

    async fn refuse(mut self, why: String) {
        if let Some(mut sink) = self.sink.take() {
            let _ = sink
                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 4003,
                    reason: why.into(),
                })))
                .await;
        }
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
                    if up_sink.send(Up::Text(t.as_str().into())).await.is_err() { break }
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

/// Most agent reports committed in one transaction.
pub const MAX_REPORT_BATCH: usize = 256;

/// A frame from an agent, decoded.
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived on the stack; boxing would allocate per message"
)]
pub enum Frame {
    /// A message.
    Msg(AgentMsg),
    /// Not a message (ping, pong, binary): read on.
    Skip,
    /// Closed, failed, or not a valid message: the session ends.
    End,
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

/// Serves one agent's connection until it ends: Hello, Welcome and the full set, then
/// reports, heartbeats and log data in, changes out.
pub async fn session<L: Link>(s: Arc<Shared>, node: String, caller: AgentCaller, mut link: L) {
    // Only the leader holds agents, and a server that stops leading lets them go. Watch
    // the term from the start: leadership lost between the upgrade and this point (a
    // paused or slow server) would otherwise go unnoticed, and the agent would heartbeat
    // to a follower while the leader declares its node down (found by the simulator).
    let mut term = s.ha.term.subscribe();
    if term.borrow_and_update().is_none() {
        tracing::info!("agent {node}: this server no longer leads; closing");
        return;
    }
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, link.recv()).await {
        Ok(Frame::Msg(m)) => Some(m),
        _ => None,
    };
    let Some(AgentMsg::Hello {
        version,
        node: said,
        facts,
        labels,
        allocs,
        readings,
    }) = hello
    else {
        tracing::warn!("agent for {node}: no valid hello");
        return;
    };
    if said != node || version != PROTOCOL_VERSION {
        let why = if said != node {
            format!("this credential belongs to node {node:?}, not {said:?}")
        } else {
            format!(
                "protocol version {version} is not supported (server speaks {PROTOCOL_VERSION})"
            )
        };
        tracing::warn!("refusing agent: {why}");
        s.audit.record(motley_core::api::AuditEntry {
            at: crate::state::now_ms(),
            who: caller.who,
            peer: caller.peer,
            method: "GET".into(),
            path: "/v1/agent/connect".into(),
            status: 403,
            why: why.clone(),
        });
        link.refuse(why).await;
        return;
    }
    if let Err(e) = s.register_node(&node, facts, &labels).await {
        tracing::warn!("registering node {node}: {e}");
        return;
    }
    if let Some(r) = readings {
        lock(&s.readings).insert(node.clone(), (r, now_ms()));
    }
    let tx = link.sender();
    let conn_id = s.connect_agent(&node, tx.clone());
    tracing::info!("agent {node} connected");
    // Reports are stored by a writer of their own, so that a slow store (etcd on an SD
    // card) never holds up the heartbeats read here: the detector would see a connected,
    // heartbeating node go silent (found by the simulator). Reports that arrived together
    // go into one transaction. A report that cannot be stored ends the session: the agent
    // reconnects and its Hello carries every report again (dropped, it would be lost
    // while the connection lasts).
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel::<motley_core::proto::AllocReport>();
    let (unstored_tx, mut unstored) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let (s, node, tx) = (s.clone(), node.clone(), tx.clone());
        motley_rt::spawn(async move {
            while let Some(first) = reports_rx.recv().await {
                let mut reports = vec![first];
                while reports.len() < MAX_REPORT_BATCH {
                    match reports_rx.try_recv() {
                        Ok(r) => reports.push(r),
                        Err(_) => break,
                    }
                }
                match s.apply_reports(&node, &reports).await {
                    Ok(gone) => {
                        for id in gone {
                            let _ = tx.send(ServerMsg::Remove { id });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            "reports from {node}: {e}; closing the session so they are sent again"
                        );
                        let _ = unstored_tx.send(());
                        return;
                    }
                }
            }
        })
    };
    for report in allocs {
        let _ = reports_tx.send(report);
    }
    let mut last_ack = tokio::time::Instant::now();
    loop {
        let frame = tokio::select! {
            f = link.recv() => f,
            _ = tx.closed() => Frame::End,
            _ = term.changed() => Frame::End,
            _ = &mut unstored => Frame::End,
        };
        let msg = match frame {
            Frame::Msg(m) => m,
            Frame::Skip => continue,
            Frame::End => break,
        };
        match msg {
            AgentMsg::Hello { .. } => {
                tracing::warn!("agent {node} said hello twice");
                break;
            }
            AgentMsg::Facts { facts } => {
                if let Err(e) = s.register_node(&node, facts, &labels).await {
                    tracing::warn!("new facts from {node}: {e}");
                }
            }
            AgentMsg::Readings { readings, at } => {
                lock(&s.readings).insert(node.clone(), (readings, at));
            }
            AgentMsg::Heartbeat { seq } => {
                s.heartbeat(&node);
                // Renewing the lease once a second is plenty (it lasts seconds) and
                // halves the idle traffic. The number lets the agent count its lease
                // from when it sent this heartbeat (`motley_core::lease`).
                if last_ack.elapsed() >= ACK_INTERVAL {
                    last_ack = tokio::time::Instant::now();
                    let _ = tx.send(ServerMsg::Ack { seq });
                }
            }
            AgentMsg::Update(report) => {
                let _ = reports_tx.send(report);
            }
            AgentMsg::LogData {
                req,
                data,
                eof,
                error,
            } => {
                let target = lock(&s.log_streams).get(&req).cloned();
                match target {
                    Some(t) => {
                        let piece = match error {
                            Some(e) => Err(e),
                            None => Ok(data),
                        };
                        let failed = t.send(piece).await.is_err();
                        if eof || failed {
                            lock(&s.log_streams).remove(&req);
                        }
                    }
                    None => {
                        let _ = tx.send(ServerMsg::LogsCancel { req });
                    }
                }
            }
        }
    }
    s.disconnect_agent(&node, conn_id);
    // Reports already received are still stored (the writer ends when they are).
    drop(reports_tx);
    drop(writer);
    drop(link);
    tracing::info!("agent {node} disconnected");
}
