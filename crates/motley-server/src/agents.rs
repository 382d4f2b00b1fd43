//! Agent sessions: the protocol of one agent's connection, over any [`Link`].
//!
//! The agent dials out; the server never dials agents. The first frame is the
//! agent's `Hello`; the server answers `Welcome` and the full assignment set,
//! then both sides send changes only. Log requests travel over the same socket.
//!
//! The WebSocket at `/v1/agent/connect`, and the relay of a follower to the leader (only
//! the leading server holds agent sessions), are `api::agent_ws`.

use std::sync::Arc;
use std::time::Duration;

use motley_core::proto::{AgentMsg, PROTOCOL_VERSION, ServerMsg};
use tokio::sync::mpsc;

use crate::state::{Shared, now_ms};

/// How long an agent has to say Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one lease renewal (ack) per this interval.
pub const ACK_INTERVAL: Duration = Duration::from_millis(900);
/// Reports of one agent waiting for its writer, at most: a node that sends more than
/// the store takes is flooding (a legitimate agent sends a few per allocation, and its
/// Hello after a reconnection carries them all again). Past this the session ends and
/// is audited, so the server's memory stays bounded (about 200 bytes a report).
pub const REPORT_QUEUE_LIMIT: usize = 65_536;

/// Who opened an agent connection, for the audit log.
#[derive(Debug, Clone)]
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
    fn sender(&mut self) -> mpsc::Sender<crate::state::Queued>;
    /// Turns the agent away for good (close code 4003: it stops reconnecting).
    fn refuse(self, why: String) -> impl std::future::Future<Output = ()> + Send;
}

/// The next frame of a connection held in memory (the simulator's network, `motley
/// up`'s own agent): a message, or the end once the agent's side is gone.
pub async fn recv_in_memory(rx: &mut mpsc::UnboundedReceiver<AgentMsg>) -> Frame {
    rx.recv().await.map_or(Frame::End, Frame::Msg)
}

/// A frame that has already arrived on a connection held in memory, if any.
pub fn try_recv_in_memory(rx: &mut mpsc::UnboundedReceiver<AgentMsg>) -> Option<Frame> {
    match rx.try_recv() {
        Ok(m) => Some(Frame::Msg(m)),
        Err(mpsc::error::TryRecvError::Empty) => None,
        Err(mpsc::error::TryRecvError::Disconnected) => Some(Frame::End),
    }
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

/// Audits what an agent's connection was refused (`method`: the upgrade's `GET`, or
/// `WS` for a message inside the session).
fn refused(s: &Shared, caller: &AgentCaller, method: &str, why: String) {
    s.trust.audit.record(motley_core::api::AuditEntry {
        at: now_ms(),
        who: caller.who.clone(),
        peer: caller.peer.clone(),
        method: method.into(),
        path: "/v1/agent/connect".into(),
        status: 403,
        why,
    });
}

/// How an agent's hello went.
enum Admission {
    /// Registered: what its hello said that the session goes on with.
    In {
        labels: std::collections::BTreeMap<String, String>,
        allocs: Vec<motley_core::proto::AllocReport>,
        address: Option<std::net::IpAddr>,
    },
    /// Turned away for good, for this reason (audited).
    Refused(String),
    /// No valid hello, or the node could not be registered: the connection ends.
    Ended,
}

/// Reads an agent's hello, checks it (its node, the protocol and version skew, the
/// labels it may claim) and registers the node.
async fn admit<L: Link>(s: &Shared, node: &str, caller: &AgentCaller, link: &mut L) -> Admission {
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
        address,
    }) = hello
    else {
        tracing::warn!("agent for {node}: no valid hello");
        return Admission::Ended;
    };
    let skew = motley_core::version::skew(motley_core::version::THIS, &facts.agent_version);
    if said != node || version != PROTOCOL_VERSION || !skew.allowed() {
        let why = if said != node {
            format!("this credential belongs to node {node:?}, not {said:?}")
        } else if version != PROTOCOL_VERSION {
            format!(
                "protocol version {version} is not supported (server speaks {PROTOCOL_VERSION})"
            )
        } else {
            match skew {
                motley_core::version::Skew::Newer(m)
                | motley_core::version::Skew::TooOld(m)
                | motley_core::version::Skew::Unknown(m) => m,
                motley_core::version::Skew::Same | motley_core::version::Skew::Behind => {
                    String::new()
                }
            }
        };
        tracing::warn!("refusing agent: {why}");
        refused(s, caller, "GET", why.clone());
        return Admission::Refused(why);
    }
    // What a node may not say of itself is dropped by the registration; say so in the
    // audit log (a misconfigured node, or one lying to attract work).
    let operator = s
        .cache()
        .nodes
        .get(node)
        .map(|n| n.operator_labels.clone())
        .unwrap_or_default();
    for claim in motley_core::node::label_claims(&labels, &operator) {
        let why = format!("node {node} claimed {claim}: dropped");
        tracing::warn!("{why}");
        refused(s, caller, "WS", why);
    }
    if let Err(e) = s.register_node(node, facts, &labels).await {
        tracing::warn!("registering node {node}: {e}");
        return Admission::Ended;
    }
    if let Some(r) = readings {
        s.liveness.set_readings(node, *r, now_ms());
    }
    Admission::In {
        labels,
        allocs,
        address,
    }
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
    // Admission happens once: boxed, its awaits do not size the session's future (its
    // task, held for as long as the node is connected; docs/decisions.md, "A
    // connection's memory").
    let (labels, allocs, address) = match Box::pin(admit(&s, &node, &caller, &mut link)).await {
        Admission::In {
            labels,
            allocs,
            address,
        } => (labels, allocs, address),
        Admission::Refused(why) => {
            Box::pin(link.refuse(why)).await;
            return;
        }
        Admission::Ended => return,
    };
    let tx = crate::state::Outbox::new(link.sender());
    let addr = address.or_else(|| caller.peer.parse().ok());
    let (conn_id, told) = s.connect_agent(&node, tx.clone(), addr);
    tracing::info!("agent {node} connected");
    // Reports are stored by a writer of their own, so that a slow store (etcd on an SD
    // card) never holds up the heartbeats read here: the detector would see a connected,
    // heartbeating node go silent (found by the simulator). Reports that arrived together
    // go into one transaction. A report that cannot be stored ends the session: the agent
    // reconnects and its Hello carries every report again (dropped, it would be lost
    // while the connection lasts).
    // Boxed: the queue allocates its first block of 32 slots when made, for every
    // connected node, and a node is mostly idle (3.3 KiB of AllocReports, 256 bytes boxed).
    let (reports_tx, mut reports_rx) =
        mpsc::channel::<Box<motley_core::proto::AllocReport>>(REPORT_QUEUE_LIMIT);
    let (unstored_tx, mut unstored) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let (s, node, tx, caller) = (s.clone(), node.clone(), tx.clone(), caller.clone());
        motley_rt::spawn(async move {
            while let Some(first) = reports_rx.recv().await {
                let mut reports = vec![*first];
                while reports.len() < MAX_REPORT_BATCH {
                    match reports_rx.try_recv() {
                        Ok(r) => reports.push(*r),
                        Err(_) => break,
                    }
                }
                // Boxed, as each await below that is not the idle one: a spawned task
                // is as large as its largest state, and is held while the node is
                // connected.
                match Box::pin(s.apply_reports(&node, &reports)).await {
                    Ok(out) => {
                        for id in out.gone {
                            let _ = tx.send(ServerMsg::Remove { id });
                        }
                        // A node speaks only for its own allocations.
                        for (id, owner) in out.foreign {
                            let why = format!(
                                "node {node} sent a report for allocation {id} of node {owner}"
                            );
                            tracing::warn!("{why}");
                            refused(&s, &caller, "WS", why);
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
    // New facts are registered by a task of their own, the latest only: a store write
    // awaited here (etcd failing over, an SD card) would leave heartbeats unread and
    // the node declared down (seen: an agent's calibrated CPU score, sent as facts
    // just as an etcd member was killed, held the session 1.6 s and the node went down).
    let (facts_tx, mut facts_rx) =
        tokio::sync::watch::channel(None::<Box<motley_core::model::NodeFacts>>);
    let registrar = {
        let (s, node, labels) = (s.clone(), node.clone(), labels.clone());
        motley_rt::spawn(async move {
            while facts_rx.changed().await.is_ok() {
                let latest = facts_rx.borrow_and_update().clone();
                if let Some(facts) = latest
                    && let Err(e) = Box::pin(s.register_node(&node, *facts, &labels)).await
                {
                    tracing::warn!("new facts from {node}: {e}");
                }
            }
        })
    };
    if allocs.len() > REPORT_QUEUE_LIMIT {
        let why = format!(
            "node {node} said hello with {} allocations, more than {REPORT_QUEUE_LIMIT}",
            allocs.len()
        );
        tracing::warn!("{why}");
        refused(&s, &caller, "WS", why);
        s.disconnect_agent(&node, conn_id);
        return;
    }
    for report in allocs {
        let _ = reports_tx.try_send(Box::new(report));
    }
    let passes = Passes {
        reports: reports_tx,
        facts: facts_tx,
    };
    let mut beat = Beat {
        told,
        last_ack: tokio::time::Instant::now(),
    };
    loop {
        // The frame and its message live only in this block: a message (304 bytes)
        // in scope across the await below would be a slot of the session's future for
        // as long as the node is connected. `heard` awaits nothing; only a log piece to
        // pass on is awaited.
        let step = {
            let frame = tokio::select! {
                f = link.recv() => f,
                _ = tx.closed() => Frame::End,
                _ = tx.overflowed() => {
                    tracing::warn!("agent {node} fell {} messages behind; disconnecting it", crate::state::OUTBOX_LIMIT);
                    Frame::End
                }
                _ = term.changed() => Frame::End,
                _ = &mut unstored => Frame::End,
            };
            match frame {
                Frame::Msg(msg) => heard(&s, &node, &caller, &tx, &passes, &mut beat, msg),
                Frame::Skip => continue,
                Frame::End => break,
            }
        };
        match step {
            Heard::Done => {}
            Heard::End => break,
            Heard::Log {
                to,
                piece,
                req,
                eof,
            } => {
                let failed = to.send(piece).await.is_err();
                if eof || failed {
                    s.hub.close_log(req, &node);
                }
            }
        }
    }
    s.disconnect_agent(&node, conn_id);
    // What its starting allocations were doing is no longer known (ids gathered first:
    // the cache's lock is never taken while the progress map's is held).
    let mine: Vec<String> = s
        .cache()
        .allocs
        .values()
        .filter(|a| a.node == node)
        .map(|a| a.id.clone())
        .collect();
    {
        let mut p = crate::util::lock(&s.progress);
        for id in mine {
            p.remove(&id);
        }
    }
    // Reports already received are still stored (the writer ends when they are), and
    // the latest facts registered.
    drop(passes);
    drop(writer);
    drop(registrar);
    drop(link);
    tracing::info!("agent {node} disconnected");
}

/// What the session does after a message.
enum Heard {
    /// Nothing more: read the next.
    Done,
    /// The session ends.
    End,
    /// Pass a piece of a log stream on (awaited: the stream's reader sets the pace).
    Log {
        to: mpsc::Sender<crate::state::LogPiece>,
        piece: crate::state::LogPiece,
        req: u64,
        eof: bool,
    },
}

/// Where a session passes what its agent says, beside its outbox: the report writer's
/// queue and the registrar's latest facts.
struct Passes {
    reports: mpsc::Sender<Box<motley_core::proto::AllocReport>>,
    facts: tokio::sync::watch::Sender<Option<Box<motley_core::model::NodeFacts>>>,
}

/// A session's heartbeat bookkeeping: the pace the node was told, the last renewal.
struct Beat {
    told: u64,
    last_ack: tokio::time::Instant,
}

/// Handles one message of a registered agent, without waiting for anything.
fn heard(
    s: &Shared,
    node: &str,
    caller: &AgentCaller,
    tx: &crate::state::Outbox,
    passes: &Passes,
    beat: &mut Beat,
    msg: AgentMsg,
) -> Heard {
    match msg {
        AgentMsg::Hello { .. } => {
            tracing::warn!("agent {node} said hello twice");
            return Heard::End;
        }
        AgentMsg::Facts { facts } => {
            let _ = passes.facts.send(Some(Box::new(facts)));
        }
        AgentMsg::Readings { readings, at } => {
            s.liveness.set_readings(node, readings, at);
        }
        AgentMsg::Heartbeat { seq, quiet } => {
            s.liveness.heartbeat(node, beat.told);
            s.metrics.heartbeats.inc();
            // Renewing the lease once a second is plenty (it lasts seconds) and
            // halves the idle traffic; a quiet heartbeat (a node without fenced
            // work: no lease to renew) gets no answer at all. The number lets the
            // agent count its lease from when it sent this heartbeat
            // (`motley_core::lease`). A new pace (more or fewer agents connected)
            // goes out at once, quiet or not, with the node's detector judging it
            // by the new pace from now; a quiet node is paced by the budget alone
            // (`failure::quiet_heartbeat_ms`), so a node that starts or stops
            // asking is told its pace again.
            let pace = s.pace(0, quiet);
            let repaced = (pace != beat.told).then(|| {
                beat.told = pace;
                s.liveness.repace(node, pace);
                pace
            });
            // Only a renewal counts against the interval: a pace told to a quiet
            // heartbeat must not hold back the renewal its next one asks for.
            let renews = !quiet && beat.last_ack.elapsed() >= ACK_INTERVAL;
            if renews {
                beat.last_ack = tokio::time::Instant::now();
            }
            if renews || repaced.is_some() {
                s.metrics.heartbeat_acks.inc();
                let _ = tx.send(ServerMsg::Ack {
                    seq,
                    heartbeat_ms: repaced,
                });
            }
        }
        // Kept with the node that said it: the run heeds only the nodes it ordered.
        AgentMsg::Fault { id, error } => s.lab.answered(node, id, error),
        // A node speaks only of its own allocations: others' are dropped.
        AgentMsg::Energy { mut mj, estimated } => {
            {
                let cache = s.cache();
                mj.retain(|id, _| cache.allocs.get(id).is_some_and(|a| a.node == node));
            }
            s.liveness.set_energy(node, mj, estimated);
        }
        AgentMsg::Progress { id, text } => {
            // A node speaks only for its own allocations.
            let owner = s.cache().allocs.get(&id).map(|a| a.node.clone());
            if owner.as_deref() != Some(node) {
                let why = format!(
                    "node {node} sent progress for allocation {id} of {}",
                    owner.map_or("no node".to_string(), |o| format!("node {o}"))
                );
                tracing::warn!("{why}");
                refused(s, caller, "WS", why);
                return Heard::Done;
            }
            let mut p = crate::util::lock(&s.progress);
            if text.is_empty() {
                p.remove(&id);
            } else {
                p.insert(id, text.chars().take(80).collect());
            }
        }
        AgentMsg::Update(report) => {
            crate::util::lock(&s.progress).remove(&report.id);
            if let Err(mpsc::error::TrySendError::Full(_)) =
                passes.reports.try_send(Box::new(report))
            {
                let why = format!(
                    "node {node} sent reports faster than they are stored ({REPORT_QUEUE_LIMIT} waiting); disconnected"
                );
                tracing::warn!("{why}");
                refused(s, caller, "WS", why);
                return Heard::End;
            }
        }
        AgentMsg::LogData {
            req,
            data,
            eof,
            error,
        } => {
            match s.hub.log_target(req, node) {
                Ok(to) => {
                    let piece = match error {
                        Some(e) => Err(e),
                        None => Ok(data),
                    };
                    return Heard::Log {
                        to,
                        piece,
                        req,
                        eof,
                    };
                }
                // Another node's stream: refused and audited; the session goes on
                // (what it sent went nowhere).
                Err(true) => {
                    let why =
                        format!("node {node} sent log data for a stream asked of another node");
                    tracing::warn!("{why}");
                    refused(s, caller, "WS", why);
                }
                Err(false) => {
                    let _ = tx.send(ServerMsg::LogsCancel { req });
                }
            }
        }
    }
    Heard::Done
}

/// An agent's connection in memory: frames in, messages out (tests and the
/// `agent_session` fuzz target).
pub struct ChanLink {
    /// Frames from the "agent"; a closed channel ends the connection.
    pub rx: mpsc::UnboundedReceiver<Frame>,
    /// Where the server's messages go.
    pub out: mpsc::Sender<crate::state::Queued>,
}

impl Link for ChanLink {
    async fn recv(&mut self) -> Frame {
        self.rx.recv().await.unwrap_or(Frame::End)
    }
    fn try_recv(&mut self) -> Option<Frame> {
        self.rx.try_recv().ok()
    }
    fn sender(&mut self) -> mpsc::Sender<crate::state::Queued> {
        self.out.clone()
    }
    async fn refuse(self, _why: String) {}
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod tests;
