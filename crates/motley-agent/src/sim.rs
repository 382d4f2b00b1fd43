//! Simulated nodes (`motley agent --simulate N`): N virtual agents in one process, each
//! a real node of the cluster — its own join, credential, WebSocket, heartbeats and
//! reports — whose driver only pretends to run tasks: an allocation is reported running
//! as soon as it arrives, a job's instance completes (exit 0) after `job_time`, and a
//! stop is reported at once. For scale benchmarks (one server, a thousand nodes) and
//! demos; the control plane cannot tell them from real agents.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use motley_core::model::{AllocState, Allocation, Desired, Kind, NodeFacts};
use motley_core::proto::{AgentMsg, AllocReport, PROTOCOL_VERSION, ServerMsg};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Node names are `<prefix>-0` … `<prefix>-<count-1>`.
    pub prefix: String,
    /// How many nodes.
    pub count: u32,
    /// Server URLs.
    pub servers: Vec<String>,
    /// A join token, for nodes that have no credential yet.
    pub join_token: Option<String>,
    /// Where each node keeps its credential (`<dir>/<node>/agent/`).
    pub dir: PathBuf,
    /// The facts every node reports (its host name is its node name).
    pub facts: NodeFacts,
    /// The owner's labels for every node.
    pub labels: std::collections::BTreeMap<String, String>,
    /// How long a job's instance "runs" before it completes.
    pub job_time: Duration,
}

/// The running simulation.
pub struct Sim {
    connected: Arc<AtomicUsize>,
    changed: watch::Receiver<usize>,
    /// How many nodes there are.
    pub count: usize,
}

impl Sim {
    /// Nodes connected now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
    }

    /// Waits until every node is connected, or `timeout`.
    pub async fn wait_all(&mut self, timeout: Duration) -> bool {
        let n = self.count;
        tokio::time::timeout(timeout, self.changed.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Joins every node (those without a credential) and starts them.
pub async fn start(cfg: SimConfig) -> anyhow::Result<Sim> {
    anyhow::ensure!(cfg.count > 0, "--simulate needs at least one node");
    let mut nodes = Vec::new();
    for i in 0..cfg.count {
        let name = format!("{}-{i}", cfg.prefix);
        motley_core::model::validate_name(&name)
            .map_err(|e| anyhow::anyhow!("simulated node name {name:?}: {e}"))?;
        let dir = cfg.dir.join(&name).join("agent");
        let (token, ca) =
            crate::join::credentials(&dir, &cfg.servers, cfg.join_token.as_deref(), &name).await?;
        nodes.push((name, token, ca));
    }
    let connected = Arc::new(AtomicUsize::new(0));
    let (tx, changed) = watch::channel(0usize);
    let tx = Arc::new(tx);
    for (name, token, ca) in nodes {
        let tls = Arc::new(motley_net::client_tls(&ca)?);
        let mut facts = cfg.facts.clone();
        facts.hostname = name.clone();
        let node = Node {
            name,
            token,
            tls,
            servers: cfg.servers.clone(),
            facts,
            labels: cfg.labels.clone(),
            job_time: cfg.job_time,
            allocs: HashMap::new(),
            connected: connected.clone(),
            changed: tx.clone(),
        };
        tokio::spawn(node.run());
    }
    Ok(Sim {
        connected,
        changed,
        count: cfg.count as usize,
    })
}

/// One simulated node.
struct Node {
    name: String,
    token: String,
    tls: Arc<rustls::ClientConfig>,
    servers: Vec<String>,
    facts: NodeFacts,
    labels: std::collections::BTreeMap<String, String>,
    job_time: Duration,
    /// What it holds: the last report of each allocation, and whether it is a job's.
    allocs: HashMap<String, (AllocReport, bool)>,
    connected: Arc<AtomicUsize>,
    changed: Arc<watch::Sender<usize>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    async fn run(mut self) {
        let mut i = 0usize;
        loop {
            let url = self.servers[i % self.servers.len()].clone();
            match self.session(&url).await {
                Ok(()) => tracing::debug!("{}: connection to {url} closed", self.name),
                Err(e) => {
                    tracing::debug!("{}: {url}: {e:#}", self.name);
                    i += 1;
                }
            }
            let jitter = 0.5 + rand::random::<f64>();
            tokio::time::sleep(Duration::from_millis(500).mul_f64(jitter)).await;
        }
    }

    async fn session(&mut self, url: &str) -> anyhow::Result<()> {
        let ws = motley_net::ws::connect(
            url,
            "/v1/agent/connect",
            &self.token,
            &[],
            self.tls.clone(),
            Duration::from_secs(10),
        )
        .await?;
        let (mut sink, mut stream) = ws.split();
        let hello = AgentMsg::Hello {
            version: PROTOCOL_VERSION,
            node: self.name.clone(),
            facts: self.facts.clone(),
            labels: self.labels.clone(),
            allocs: self.allocs.values().map(|(r, _)| r.clone()).collect(),
            readings: None,
        };
        sink.send(Message::Text(serde_json::to_string(&hello)?.into()))
            .await?;
        let heartbeat = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ServerMsg>(&t)? {
                ServerMsg::Welcome { heartbeat_ms, .. } => {
                    Duration::from_millis(heartbeat_ms.max(50))
                }
                other => anyhow::bail!("expected Welcome, got {other:?}"),
            },
            _ => anyhow::bail!("no Welcome from the server"),
        };
        // Counted as connected only after Welcome; the guard undoes it on any exit.
        let n = self.connected.fetch_add(1, Ordering::SeqCst) + 1;
        self.changed.send_replace(n);
        struct Up<'a>(&'a Arc<AtomicUsize>, &'a Arc<watch::Sender<usize>>);
        impl Drop for Up<'_> {
            fn drop(&mut self) {
                let n = self.0.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
                self.1.send_replace(n);
            }
        }
        let connected = self.connected.clone();
        let changed = self.changed.clone();
        let _up = Up(&connected, &changed);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut out = Vec::new();
            tokio::select! {
                _ = beat.tick() => out.push(AgentMsg::Heartbeat {}),
                id = done_rx.recv() => {
                    if let Some(id) = id
                        && let Some((r, _)) = self.allocs.get_mut(&id)
                        && r.state == AllocState::Running
                    {
                        r.state = AllocState::Complete;
                        r.exit_code = Some(0);
                        r.reason = Some("completed (simulated)".into());
                        r.at = now_ms();
                        out.push(AgentMsg::Update(r.clone()));
                    }
                }
                frame = stream.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None => return Ok(()),
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(_)) => continue,
                    };
                    match serde_json::from_str::<ServerMsg>(&text)? {
                        ServerMsg::Sync { allocs, .. } => {
                            let keep: std::collections::HashSet<&str> =
                                allocs.iter().map(|a| a.id.as_str()).collect();
                            self.allocs.retain(|id, _| keep.contains(id.as_str()));
                            for a in &allocs {
                                out.extend(self.upsert(a, &done_tx));
                            }
                        }
                        ServerMsg::Upsert { alloc, .. } => out.extend(self.upsert(&alloc, &done_tx)),
                        ServerMsg::Remove { id } => {
                            self.allocs.remove(&id);
                        }
                        ServerMsg::Logs { req, .. } => out.push(AgentMsg::LogData {
                            req,
                            data: String::new(),
                            eof: true,
                            error: Some(format!("{} is a simulated node: its tasks write nothing", self.name)),
                        }),
                        _ => {}
                    }
                }
            }
            for m in out {
                sink.send(Message::Text(serde_json::to_string(&m)?.into()))
                    .await?;
            }
        }
    }

    /// An allocation arrived or changed: pretend to start or stop it.
    fn upsert(&mut self, a: &Allocation, done: &mpsc::UnboundedSender<String>) -> Option<AgentMsg> {
        let job = a.workload.kind == Kind::Job;
        let entry = self.allocs.entry(a.id.clone()).or_insert_with(|| {
            (
                AllocReport {
                    id: a.id.clone(),
                    state: if a.state.is_terminal() {
                        a.state
                    } else {
                        AllocState::Pending
                    },
                    pid: None,
                    exit_code: a.exit_code,
                    restarts: a.restarts,
                    reason: None,
                    at: now_ms(),
                },
                job,
            )
        });
        let r = &mut entry.0;
        if r.state.is_terminal() {
            return None;
        }
        match a.desired {
            Desired::Stop => {
                r.state = AllocState::Stopped;
                r.reason = Some("stopped on request (simulated)".into());
            }
            Desired::Run if r.state == AllocState::Pending => {
                r.state = AllocState::Running;
                r.reason = Some("started (simulated)".into());
                if job {
                    let (id, done, after) = (a.id.clone(), done.clone(), self.job_time);
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = done.send(id);
                    });
                }
            }
            Desired::Run => return None,
        }
        r.at = now_ms();
        Some(AgentMsg::Update(r.clone()))
    }
}
