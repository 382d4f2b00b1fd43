//! The simulated network between agents and servers.
//!
//! The real protocol runs over TCP (a WebSocket), so the network fails the way TCP
//! fails, never in ways TCP hides: messages of one connection arrive in order, each late
//! by a random latency; a partition holds them (TCP retransmits) and refuses new
//! connections; a reset ends a connection and loses whatever was in flight both ways.
//! Messages are duplicated and reordered where TCP lets that happen: across connections
//! (an agent's Hello carries every report again; a held old connection delivers after a
//! new one has opened).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use motley_agent::conn::{BoxFuture, Channel, Dialer, Received};
use motley_core::proto::{AgentMsg, ServerMsg};
use motley_rt::Process;
use motley_server::agents::{self, AgentCaller, Frame, Link};
use motley_server::state::Shared;
use tokio::sync::{mpsc, watch};

use crate::rng::Rng;

/// A server as the network reaches it.
#[derive(Clone)]
pub struct Endpoint {
    /// Its state.
    pub shared: Arc<Shared>,
    /// Its process (sessions run in it).
    pub process: Arc<Process>,
}

#[derive(Default)]
struct State {
    /// Up servers by URL.
    servers: BTreeMap<String, Endpoint>,
    /// Nodes cut off from every server.
    partitioned: BTreeSet<String>,
    /// Open connections: node and the switch that resets it.
    links: Vec<(String, watch::Sender<bool>)>,
}

/// The network.
#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<State>>,
    /// New heartbeat paces agents were told (`ServerMsg::Ack::heartbeat_ms`), counted as
    /// they arrive.
    paces: Arc<std::sync::atomic::AtomicU64>,
    rng: Rng,
    /// Most one message is delayed by.
    pub latency: Duration,
}

impl Net {
    /// A network whose messages take up to `latency`.
    pub fn new(rng: Rng, latency: Duration) -> Net {
        Net {
            state: Arc::new(Mutex::new(State::default())),
            paces: Default::default(),
            rng,
            latency,
        }
    }

    /// New heartbeat paces agents were told so far.
    pub fn paces_told(&self) -> u64 {
        self.paces.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A server is up at `url`.
    pub fn serve(&self, url: &str, ep: Endpoint) {
        self.state().servers.insert(url.to_string(), ep);
    }

    /// The server at `url` is gone (its connections end with its process).
    pub fn unserve(&self, url: &str) {
        self.state().servers.remove(url);
    }

    /// Cuts `node` off from every server, or joins it again.
    pub fn partition(&self, node: &str, cut: bool) {
        let mut s = self.state();
        if cut {
            s.partitioned.insert(node.to_string());
        } else {
            s.partitioned.remove(node);
        }
    }

    /// True while `node` is cut off.
    pub fn partitioned(&self, node: &str) -> bool {
        self.state().partitioned.contains(node)
    }

    /// Resets every open connection of `node`; returns how many.
    pub fn reset(&self, node: &str) -> usize {
        let mut s = self.state();
        s.links.retain(|(_, cut)| !cut.is_closed());
        let mut n = 0;
        for (who, cut) in &s.links {
            if who == node {
                cut.send_replace(true);
                n += 1;
            }
        }
        n
    }

    /// The dialer agent `node` uses.
    pub fn dialer(&self, node: &str) -> Arc<dyn Dialer> {
        Arc::new(SimDialer {
            net: self.clone(),
            node: node.to_string(),
        })
    }

    /// Carries messages from `input` to `output` in order, each late by up to the
    /// latency, held while `node` is partitioned; ends (dropping what is in flight) on a
    /// reset or when either end is gone.
    fn pipe<T: Send + 'static>(
        &self,
        node: String,
        mut input: mpsc::UnboundedReceiver<T>,
        output: mpsc::UnboundedSender<T>,
        mut cut: watch::Receiver<bool>,
    ) {
        let net = self.clone();
        tokio::spawn(async move {
            let mut due = tokio::time::Instant::now();
            loop {
                let msg = tokio::select! {
                    m = input.recv() => match m { Some(m) => m, None => return },
                    _ = cut.changed() => return,
                    _ = output.closed() => return,
                };
                let at = tokio::time::Instant::now() + net.rng.duration(net.latency);
                due = due.max(at);
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = cut.changed() => return,
                }
                while net.partitioned(&node) {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = cut.changed() => return,
                    }
                }
                if output.send(msg).is_err() {
                    return;
                }
            }
        });
    }
}

#[derive(Debug)]
struct SimDialer {
    net: Net,
    node: String,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Net")
    }
}

/// How long a connection attempt into a partition waits before it fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a follower waits for a leader to relay an agent to (as `motley_server::api::agent_ws::RELAY_WAIT`).
const RELAY_WAIT: Duration = motley_server::api::agent_ws::RELAY_WAIT;

impl Dialer for SimDialer {
    fn dial<'a>(
        &'a self,
        url: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Channel>>> {
        Box::pin(async move {
            tokio::time::sleep(self.net.rng.duration(self.net.latency)).await;
            if self.net.partitioned(&self.node) {
                tokio::time::sleep(CONNECT_TIMEOUT).await;
                anyhow::bail!("connect timed out");
            }
            let Some(first) = self.net.state().servers.get(url).cloned() else {
                anyhow::bail!("connection refused");
            };
            // The credential, as the server's authentication checks it.
            let hash = motley_net::token_hash(token);
            let known = first
                .shared
                .cache()
                .tokens
                .get(&hash)
                .map(|t| (t.role.clone(), t.expired(motley_rt::now_ms())));
            match known {
                Some((motley_server::auth::Role::Node { node }, false)) if node == self.node => {}
                _ => {
                    return Err(anyhow::Error::new(motley_agent::Fatal(
                        "the server refused this node's credential: 401".into(),
                    )));
                }
            }
            // A follower relays the agent to the leader (frame by frame in the real
            // server: the same messages, one hop longer).
            let deadline = tokio::time::Instant::now() + RELAY_WAIT;
            let ep = loop {
                let leader = {
                    let s = self.net.state();
                    if first.shared.ha.leading().is_some() && s.servers.contains_key(url) {
                        Some(first.clone())
                    } else {
                        s.servers
                            .values()
                            .find(|e| e.shared.ha.leading().is_some() && !e.process.paused())
                            .cloned()
                    }
                };
                if let Some(l) = leader {
                    break l;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Box::new(Refused) as Box<dyn Channel>);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let (cut_tx, cut_rx) = watch::channel(false);
            self.net.state().links.push((self.node.clone(), cut_tx));
            let (up_in, up_pipe) = mpsc::unbounded_channel::<AgentMsg>();
            let (up_pipe_out, server_rx) = mpsc::unbounded_channel::<AgentMsg>();
            let (server_tx, down_pipe) = mpsc::unbounded_channel::<ServerMsg>();
            let (down_pipe_out, agent_rx) = mpsc::unbounded_channel::<ServerMsg>();
            self.net
                .pipe(self.node.clone(), up_pipe, up_pipe_out, cut_rx.clone());
            self.net
                .pipe(self.node.clone(), down_pipe, down_pipe_out, cut_rx);
            let link = SimLink {
                rx: server_rx,
                tx: server_tx,
            };
            let caller = AgentCaller {
                who: format!("node {}", self.node),
                peer: self.node.clone(),
            };
            ep.process.spawn(agents::session(
                ep.shared.clone(),
                self.node.clone(),
                caller,
                link,
            ));
            Ok(Box::new(SimChannel {
                tx: up_in,
                rx: agent_rx,
                paces: self.net.paces.clone(),
            }) as Box<dyn Channel>)
        })
    }
}

/// A relay that found no leader closes the connection at once (code 1013).
struct Refused;

impl Channel for Refused {
    fn send(&mut self, _msgs: Vec<AgentMsg>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn recv(&mut self) -> BoxFuture<'_, Received> {
        Box::pin(async {
            Received::Closed(
                Some(1013),
                "no leading server can be reached yet; try again".into(),
            )
        })
    }
}

/// The agent's end of a connection.
struct SimChannel {
    tx: mpsc::UnboundedSender<AgentMsg>,
    rx: mpsc::UnboundedReceiver<ServerMsg>,
    paces: Arc<std::sync::atomic::AtomicU64>,
}

impl Channel for SimChannel {
    fn send(&mut self, msgs: Vec<AgentMsg>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { motley_agent::conn::send_in_memory(&self.tx, msgs) })
    }
    fn recv(&mut self) -> BoxFuture<'_, Received> {
        Box::pin(async move {
            let m = self.rx.recv().await;
            if let Some(ServerMsg::Ack {
                heartbeat_ms: Some(_),
                ..
            }) = &m
            {
                self.paces
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            m.map_or_else(
                || Received::Failed("connection reset".into()),
                Received::Msg,
            )
        })
    }
}

/// The server's end of a connection.
struct SimLink {
    rx: mpsc::UnboundedReceiver<AgentMsg>,
    tx: mpsc::UnboundedSender<ServerMsg>,
}

/// Moves what the session queues (bounded, as on a real server) into the simulated
/// connection.
fn bounded(tx: mpsc::UnboundedSender<ServerMsg>) -> mpsc::Sender<motley_server::state::Queued> {
    let (btx, mut brx) =
        mpsc::channel::<motley_server::state::Queued>(motley_server::state::OUTBOX_LIMIT);
    motley_rt::spawn(async move {
        while let Some(m) = brx.recv().await {
            if tx.send(*m).is_err() {
                break;
            }
        }
    });
    btx
}

impl Link for SimLink {
    async fn recv(&mut self) -> Frame {
        agents::recv_in_memory(&mut self.rx).await
    }
    fn try_recv(&mut self) -> Option<Frame> {
        agents::try_recv_in_memory(&mut self.rx)
    }
    fn sender(&mut self) -> mpsc::Sender<motley_server::state::Queued> {
        bounded(self.tx.clone())
    }
    async fn refuse(self, _why: String) {}
}
