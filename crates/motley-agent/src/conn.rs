//! The agent's one outbound connection: TLS pinned to the cluster CA, a
//! WebSocket at `/v1/agent/connect`, reconnecting with jittered exponential
//! backoff and failing over across the server list (the configured servers and those
//! the servers announce).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use motley_core::proto::{AgentMsg, ServerMsg};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::chaos::Delayed;
use crate::{Agent, Fatal};

/// First reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay (before jitter of ×0.5 to ×1.5).
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Connect and handshake timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a channel to a server gave the agent.
#[derive(Debug)]
pub enum Received {
    /// A message.
    Msg(ServerMsg),
    /// Something that is not a message but shows the server is there (a ping).
    Other,
    /// A frame that did not decode.
    Invalid(String),
    /// The server closed the connection, with its close code and reason if it gave one.
    Closed(Option<u16>, String),
    /// The connection failed.
    Failed(String),
}

/// One open connection to a server, in messages.
pub trait Channel: Send {
    /// Sends messages, in order.
    fn send(&mut self, msgs: Vec<AgentMsg>) -> BoxFuture<'_, anyhow::Result<()>>;
    /// The next thing the server sent.
    fn recv(&mut self) -> BoxFuture<'_, Received>;
}

/// Opens connections to servers: a WebSocket over TLS on a real node ([`WsDialer`]), an
/// in-memory network in the simulator.
pub trait Dialer: Send + Sync + std::fmt::Debug {
    /// Opens a connection to the server at `url` with this node's credential. A refusal
    /// retrying cannot fix is an error holding [`Fatal`].
    fn dial<'a>(
        &'a self,
        url: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Channel>>>;
}

/// A boxed future, as the object-safe traits here return them.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Sends `msgs` in order into a connection held in memory (the simulator's network,
/// `motley up`'s agent and its own server); fails once the server's end is gone.
pub fn send_in_memory(
    tx: &tokio::sync::mpsc::UnboundedSender<AgentMsg>,
    msgs: Vec<AgentMsg>,
) -> anyhow::Result<()> {
    for m in msgs {
        tx.send(m)
            .map_err(|_| anyhow::anyhow!("connection reset"))?;
    }
    Ok(())
}

/// The real dialer: a WebSocket at `/v1/agent/connect`, TLS pinned to the cluster CA.
#[derive(Debug)]
pub struct WsDialer {
    tls: Arc<rustls::ClientConfig>,
}

impl WsDialer {
    /// A dialer trusting only the cluster CA `ca_pem`.
    pub fn new(ca_pem: &str) -> anyhow::Result<WsDialer> {
        Ok(WsDialer {
            tls: Arc::new(motley_net::client_tls(ca_pem)?),
        })
    }
}

impl Dialer for WsDialer {
    fn dial<'a>(
        &'a self,
        url: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Channel>>> {
        Box::pin(async move {
            let ws = motley_net::ws::connect(
                url,
                "/v1/agent/connect",
                token,
                &[],
                self.tls.clone(),
                CONNECT_TIMEOUT,
            )
            .await
            .map_err(|e| match e {
                motley_net::ws::WsError::Refused { status, body } => {
                    let msg = format!("the server refused this node's credential: {status} {body}");
                    if status == 401 || status == 403 {
                        anyhow::Error::new(Fatal(msg))
                    } else {
                        anyhow::anyhow!(msg)
                    }
                }
                other => anyhow::anyhow!(other),
            })?;
            Ok(Box::new(WsChannel(ws, record_file())) as Box<dyn Channel>)
        })
    }
}

/// The connection, and where its messages are recorded (`MOTLEY_PROTOCOL_RECORD`).
struct WsChannel(motley_net::ws::WsStream, Option<std::fs::File>);

/// `MOTLEY_PROTOCOL_RECORD=FILE`: every message of the agent's connections is appended
/// to FILE as a JSON line `{"from":"agent"|"server","msg":…}` (a debugging aid, and
/// how `tests/fixtures/protocol/` was recorded). It holds what the messages hold,
/// Secret values delivered to the node included.
fn record_file() -> Option<std::fs::File> {
    let path = std::env::var_os("MOTLEY_PROTOCOL_RECORD")?;
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(
                "MOTLEY_PROTOCOL_RECORD {}: {e}",
                std::path::Path::new(&path).display()
            );
            None
        }
    }
}

fn record(file: &mut Option<std::fs::File>, from: &str, text: &str) {
    if let Some(f) = file {
        let line = format!("{{\"from\":\"{from}\",\"msg\":{text}}}\n");
        if let Err(e) = std::io::Write::write_all(f, line.as_bytes()) {
            tracing::warn!("MOTLEY_PROTOCOL_RECORD: {e}");
        }
    }
}

impl Channel for WsChannel {
    fn send(&mut self, msgs: Vec<AgentMsg>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            for msg in msgs {
                let text = serde_json::to_string(&msg)?;
                record(&mut self.1, "agent", &text);
                // In fragments: the server's read buffer keeps the largest frame's size.
                for frame in motley_net::ws::text_frames(text) {
                    self.0.feed(frame).await?;
                }
            }
            self.0.flush().await?;
            Ok(())
        })
    }

    fn recv(&mut self) -> BoxFuture<'_, Received> {
        Box::pin(async move {
            match self.0.next().await {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMsg>(&{
                    record(&mut self.1, "server", &t);
                    t
                }) {
                    Ok(m) => Received::Msg(m),
                    Err(e) => Received::Invalid(e.to_string()),
                },
                Some(Ok(Message::Close(frame))) => Received::Closed(
                    frame.as_ref().map(|f| u16::from(f.code)),
                    frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                ),
                None => Received::Closed(None, String::new()),
                Some(Err(e)) => Received::Failed(e.to_string()),
                Some(Ok(_)) => Received::Other,
            }
        })
    }
}

/// Runs forever: connect, serve, reconnect.
pub async fn run(agent: Agent) {
    let dialer: Arc<dyn Dialer> = match &agent.inner.cfg.dialer {
        Some(d) => d.clone(),
        None => match WsDialer::new(&agent.inner.cfg.ca_pem) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                tracing::error!("agent TLS setup: {e}");
                return;
            }
        },
    };
    if agent.servers().is_empty() {
        tracing::error!("the agent has no server to connect to");
        return;
    }
    let mut attempt: u32 = 0;
    let mut idx = 0usize;
    loop {
        // Powered off (or cut off from the server with no nftables to do it with): no
        // connection until the fault ends.
        let mut silent = agent.inner.chaos.silent.subscribe();
        let _ = async { silent.wait_for(|s| !*s).await.is_ok() }.await;
        // The list grows as servers announce the others (Welcome), so an agent started
        // with one server fails over to all of them.
        let servers = agent.servers();
        let url = &servers[idx % servers.len()];
        match session(&agent, url, &*dialer).await {
            Ok(()) => {
                attempt = 0;
                tracing::warn!("connection to {url} closed; reconnecting");
            }
            Err(e) => {
                if let Some(Fatal(why)) = e.downcast_ref::<Fatal>() {
                    tracing::error!("{url}: {why}");
                    agent.set_connected(false);
                    agent.inner.contact.set_fatal(format!("{url}: {why}"));
                    return;
                }
                attempt = attempt.saturating_add(1);
                idx += 1;
                tracing::warn!("cannot reach {url}: {e:#}");
            }
        }
        agent.set_connected(false);
        let base = BACKOFF_MIN
            .saturating_mul(1u32 << attempt.min(7))
            .min(BACKOFF_MAX);
        let jitter = match motley_rt::seeded_u64() {
            Some(n) => 0.5 + (n >> 11) as f64 / (1u64 << 53) as f64,
            None => rand::rng().random_range(0.5..1.5),
        };
        tokio::time::sleep(base.mul_f64(jitter)).await;
    }
}

async fn session(agent: &Agent, url: &str, dialer: &dyn Dialer) -> anyhow::Result<()> {
    let mut ch = dialer.dial(url, &agent.inner.cfg.token).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<AgentMsg>();
    let hello = agent.hello(tx.clone());
    let heartbeat: Duration;
    let hello_sent = agent.inner.contact.now_ms();
    ch.send(vec![hello]).await?;
    // The server answers Welcome first.
    match tokio::time::timeout(CONNECT_TIMEOUT, ch.recv()).await {
        Ok(Received::Msg(ServerMsg::Welcome {
            heartbeat_ms,
            lease_ms,
            servers,
            ..
        })) => {
            agent.learn_servers(&servers);
            heartbeat = Duration::from_millis(heartbeat_ms.max(50));
            agent
                .inner
                .contact
                .set_lease(Duration::from_millis(lease_ms));
            agent.inner.contact.renew_lease(hello_sent);
            agent.fence_sync();
        }
        Ok(Received::Msg(other)) => anyhow::bail!("expected Welcome, got {other:?}"),
        Ok(Received::Closed(code, reason)) => {
            let why = format!("server closed the connection: {reason}");
            if code == Some(4003) {
                return Err(Fatal(why).into());
            }
            anyhow::bail!(why)
        }
        Ok(Received::Invalid(e)) => anyhow::bail!("invalid Welcome from the server: {e}"),
        _ => anyhow::bail!("no Welcome from the server"),
    }
    agent.set_connected(true);
    tracing::info!(
        "connected to {url} (heartbeats every {} ms)",
        heartbeat.as_millis()
    );
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Only an acknowledged heartbeat renews the lease, from when it was sent: any other
    // message may have waited out a partition in the connection (`motley_core::lease`).
    let mut beats = motley_core::lease::Heartbeats::new();
    let chaos = &agent.inner.chaos;
    let mut silent = chaos.silent.subscribe();
    // What a latency fault holds back, each way.
    let mut outgoing: Delayed<Vec<AgentMsg>> = Delayed::new();
    let mut incoming: Delayed<ServerMsg> = Delayed::new();
    loop {
        tokio::select! {
            _ = async { let _ = silent.wait_for(|s| *s).await; } => {
                // What was queued (the fault's answer) goes first.
                let mut last: Vec<AgentMsg> = outgoing.take_all().flatten().collect();
                last.extend(drain(&mut rx, Vec::new()));
                let _ = ch.send(last).await;
                tracing::warn!("an experiment's fault silences this agent");
                return Ok(());
            }
            _ = beat.tick() => {
                // Only a node with fenced work needs its lease, and one that asks for
                // no renewal holds none (`motley_core::lease`).
                let asks = motley_core::lease::asks_ack(agent.holds_fenced_work());
                if !asks {
                    agent.inner.contact.forget_lease();
                }
                let seq = beats.send(agent.inner.contact.now_ms(), asks);
                if chaos.drop_heartbeat() {
                    continue;
                }
                let hb = AgentMsg::Heartbeat { seq, quiet: !asks };
                if let Some(m) = outgoing.hold(chaos.delay(), vec![hb]) {
                    ch.send(m).await?;
                }
            }
            got = ch.recv() => {
                match got {
                    Received::Msg(msg) => {
                        if let Some(msg) = incoming.hold(chaos.delay(), msg) {
                            received(agent, &mut beats, &tx, &mut beat, msg);
                        }
                    }
                    Received::Other => {}
                    Received::Invalid(e) => {
                        tracing::warn!("invalid message from the server: {e}");
                    }
                    Received::Closed(..) => return Ok(()),
                    Received::Failed(e) => anyhow::bail!(e),
                }
            }
            msg = incoming.due() => received(agent, &mut beats, &tx, &mut beat, msg),
            msgs = outgoing.due() => ch.send(msgs).await?,
            msg = rx.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                let queued = superseded_dropped(drain(&mut rx, vec![msg]));
                if let Some(m) = outgoing.hold(chaos.delay(), queued) {
                    ch.send(m).await?;
                }
            }
        }
    }
}

/// What the agent does with a message from its server (once a latency fault let it
/// through): an acknowledged heartbeat renews the lease and may set a new pace
/// (`beat`), the rest is `Agent::handle`'s. Fenced work given while the lease has run
/// out (a node without fenced work asks for no acknowledgements) makes the next beat
/// go at once, asking: the work waits a round trip for its lease, not a whole pace.
fn received(
    agent: &Agent,
    beats: &mut motley_core::lease::Heartbeats<u64>,
    tx: &mpsc::UnboundedSender<AgentMsg>,
    beat: &mut tokio::time::Interval,
    msg: ServerMsg,
) {
    match msg {
        ServerMsg::Ack { seq, heartbeat_ms } => {
            if let Some(sent) = beats.acked(seq) {
                agent.inner.contact.renew_lease(sent);
                agent.fence_sync();
            }
            repace(
                beat,
                heartbeat_ms.map(|ms| Duration::from_millis(ms.max(50))),
            );
        }
        msg => {
            let assigns = matches!(msg, ServerMsg::Sync { .. } | ServerMsg::Upsert { .. });
            agent.handle(msg, tx);
            if assigns
                && motley_core::lease::beat_now(agent.holds_fenced_work(), agent.lease_valid())
            {
                beat.reset_immediately();
            }
        }
    }
}

/// Beats every `pace` from now on, if the server asked for a new one; the next beat is
/// a whole `pace` away (the server judges the node by it from when it asked).
fn repace(beat: &mut tokio::time::Interval, pace: Option<Duration>) {
    if let Some(pace) = pace
        && pace != beat.period()
    {
        *beat = tokio::time::interval_at(tokio::time::Instant::now() + pace, pace);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            "the server paces heartbeats: every {} ms from now",
            pace.as_millis()
        );
    }
}

/// `queued` and every message waiting in `rx` after it.
fn drain(rx: &mut mpsc::UnboundedReceiver<AgentMsg>, mut queued: Vec<AgentMsg>) -> Vec<AgentMsg> {
    while let Ok(more) = rx.try_recv() {
        queued.push(more);
    }
    queued
}

/// Queued messages less the reports a later report of the same allocation replaces
/// (a task that started and ended before its start was sent is reported ended only).
fn superseded_dropped(mut queued: Vec<AgentMsg>) -> Vec<AgentMsg> {
    if queued.len() < 2 {
        return queued;
    }
    // From the newest back: keep the first report seen of each allocation.
    let mut seen = motley_rt::HashSet::default();
    queued.reverse();
    queued.retain(|m| match m {
        AgentMsg::Update(r) => seen.insert(r.id.clone()),
        _ => true,
    });
    queued.reverse();
    queued
}

#[cfg(test)]
mod tests {
    use super::*;
    use motley_core::model::AllocState;
    use motley_core::proto::AllocReport;

    fn update(id: &str, state: AllocState) -> AgentMsg {
        AgentMsg::Update(AllocReport {
            id: id.into(),
            state,
            pid: None,
            exit_code: None,
            restarts: 0,
            reason: None,
            health: None,
            ports: Default::default(),
            at: 0,
        })
    }

    #[tokio::test]
    async fn a_pace_from_the_server_replaces_the_heartbeat_interval() {
        let mut beat = tokio::time::interval(Duration::from_millis(500));
        repace(&mut beat, None);
        assert_eq!(beat.period(), Duration::from_millis(500));
        let asked = std::time::Instant::now();
        repace(&mut beat, Some(Duration::from_millis(60)));
        assert_eq!(beat.period(), Duration::from_millis(60));
        // The first beat at the new pace is a whole period after it was asked for.
        beat.tick().await;
        assert!(asked.elapsed() >= Duration::from_millis(60));
        beat.tick().await;
        assert!(asked.elapsed() >= Duration::from_millis(120));
    }

    #[test]
    fn a_later_report_of_the_same_allocation_replaces_an_earlier_one() {
        let out = superseded_dropped(vec![
            update("a", AllocState::Running),
            AgentMsg::Heartbeat {
                seq: 0,
                quiet: false,
            },
            update("b", AllocState::Running),
            update("a", AllocState::Complete),
        ]);
        let seen: Vec<(String, AllocState)> = out
            .iter()
            .filter_map(|m| match m {
                AgentMsg::Update(r) => Some((r.id.clone(), r.state)),
                _ => None,
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("b".to_string(), AllocState::Running),
                ("a".to_string(), AllocState::Complete)
            ]
        );
        assert_eq!(out.len(), 3, "the heartbeat stays");
    }
}
