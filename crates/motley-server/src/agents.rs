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
    fn sender(&mut self) -> mpsc::Sender<ServerMsg>;
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
        address,
    }) = hello
    else {
        tracing::warn!("agent for {node}: no valid hello");
        return;
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
        refused(&s, &caller, "GET", why.clone());
        link.refuse(why).await;
        return;
    }
    // What a node may not say of itself is dropped by the registration; say so in the
    // audit log (a misconfigured node, or one lying to attract work).
    let operator = s
        .cache()
        .nodes
        .get(&node)
        .map(|n| n.operator_labels.clone())
        .unwrap_or_default();
    for claim in motley_core::node::label_claims(&labels, &operator) {
        let why = format!("node {node} claimed {claim}: dropped");
        tracing::warn!("{why}");
        refused(&s, &caller, "WS", why);
    }
    if let Err(e) = s.register_node(&node, facts, &labels).await {
        tracing::warn!("registering node {node}: {e}");
        return;
    }
    if let Some(r) = readings {
        s.liveness.set_readings(&node, *r, now_ms());
    }
    let tx = crate::state::Outbox::new(link.sender());
    let addr = address.or_else(|| caller.peer.parse().ok());
    let conn_id = s.connect_agent(&node, tx.clone(), addr);
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
                match s.apply_reports(&node, &reports).await {
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
                    && let Err(e) = s.register_node(&node, *facts, &labels).await
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
    let mut last_ack = tokio::time::Instant::now();
    loop {
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
                let _ = facts_tx.send(Some(Box::new(facts)));
            }
            AgentMsg::Readings { readings, at } => {
                s.liveness.set_readings(&node, readings, at);
            }
            AgentMsg::Heartbeat { seq } => {
                s.liveness.heartbeat(&node);
                // Renewing the lease once a second is plenty (it lasts seconds) and
                // halves the idle traffic. The number lets the agent count its lease
                // from when it sent this heartbeat (`motley_core::lease`).
                if last_ack.elapsed() >= ACK_INTERVAL {
                    last_ack = tokio::time::Instant::now();
                    let _ = tx.send(ServerMsg::Ack { seq });
                }
            }
            // Kept with the node that said it: the run heeds only the nodes it ordered.
            AgentMsg::Fault { id, error } => s.lab.answered(&node, id, error),
            // A node speaks only of its own allocations: others' are dropped.
            AgentMsg::Energy { mut mj, estimated } => {
                {
                    let cache = s.cache();
                    mj.retain(|id, _| cache.allocs.get(id).is_some_and(|a| a.node == node));
                }
                s.liveness.set_energy(&node, mj, estimated);
            }
            AgentMsg::Progress { id, text } => {
                // A node speaks only for its own allocations.
                let owner = s.cache().allocs.get(&id).map(|a| a.node.clone());
                if owner.as_deref() != Some(node.as_str()) {
                    let why = format!(
                        "node {node} sent progress for allocation {id} of {}",
                        owner.map_or("no node".to_string(), |o| format!("node {o}"))
                    );
                    tracing::warn!("{why}");
                    refused(&s, &caller, "WS", why);
                    continue;
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
                    reports_tx.try_send(Box::new(report))
                {
                    let why = format!(
                        "node {node} sent reports faster than they are stored ({REPORT_QUEUE_LIMIT} waiting); disconnected"
                    );
                    tracing::warn!("{why}");
                    refused(&s, &caller, "WS", why);
                    break;
                }
            }
            AgentMsg::LogData {
                req,
                data,
                eof,
                error,
            } => {
                match s.hub.log_target(req, &node) {
                    Ok(t) => {
                        let piece = match error {
                            Some(e) => Err(e),
                            None => Ok(data),
                        };
                        let failed = t.send(piece).await.is_err();
                        if eof || failed {
                            s.hub.close_log(req, &node);
                        }
                    }
                    // Another node's stream: refused and audited; the session goes on
                    // (what it sent went nowhere).
                    Err(true) => {
                        let why =
                            format!("node {node} sent log data for a stream asked of another node");
                        tracing::warn!("{why}");
                        refused(&s, &caller, "WS", why);
                    }
                    Err(false) => {
                        let _ = tx.send(ServerMsg::LogsCancel { req });
                    }
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
    drop(reports_tx);
    drop(writer);
    drop(facts_tx);
    drop(registrar);
    drop(link);
    tracing::info!("agent {node} disconnected");
}

/// An agent's connection in memory: frames in, messages out (tests and the
/// `agent_session` fuzz target).
pub struct ChanLink {
    /// Frames from the "agent"; a closed channel ends the connection.
    pub rx: mpsc::UnboundedReceiver<Frame>,
    /// Where the server's messages go.
    pub out: mpsc::Sender<ServerMsg>,
}

impl Link for ChanLink {
    async fn recv(&mut self) -> Frame {
        self.rx.recv().await.unwrap_or(Frame::End)
    }
    fn try_recv(&mut self) -> Option<Frame> {
        self.rx.try_recv().ok()
    }
    fn sender(&mut self) -> mpsc::Sender<ServerMsg> {
        self.out.clone()
    }
    async fn refuse(self, _why: String) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use motley_core::model::AllocState;
    use std::collections::BTreeMap;

    fn hello(node: &str) -> AgentMsg {
        AgentMsg::Hello {
            version: PROTOCOL_VERSION,
            node: node.into(),
            facts: motley_core::model::NodeFacts {
                agent_version: motley_core::version::THIS.into(),
                ..Default::default()
            },
            labels: Default::default(),
            allocs: vec![],
            readings: None,
            address: None,
        }
    }

    /// pi2's session on `s`, over a link whose frames and answers the test holds.
    fn start_pi2(
        s: &Arc<Shared>,
        out: mpsc::Sender<ServerMsg>,
    ) -> (mpsc::UnboundedSender<Frame>, tokio::task::JoinHandle<()>) {
        let (frames, rx) = mpsc::unbounded_channel();
        let caller = AgentCaller {
            who: "token n2 (node)".into(),
            peer: "10.0.0.2:5000".into(),
        };
        let session = tokio::spawn(session(
            s.clone(),
            "pi2".into(),
            caller,
            ChanLink { rx, out },
        ));
        (frames, session)
    }

    /// The skew policy at the door: an agent newer than the server (or too old) is
    /// turned away, audited, and never welcomed; one minor version behind is let in.
    #[tokio::test]
    async fn agents_outside_the_version_skew_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::state::tests::shared(dir.path());
        s.start_cache().await.expect("cache");
        let this =
            motley_core::version::Version::parse(motley_core::version::THIS).expect("this version");
        let mut versions = vec![
            (
                format!("{}.{}.0", this.major, this.minor + 1),
                Some("upgrade the servers first"),
            ),
            (
                format!("{}.0.0", this.major + 1),
                Some("upgrade the servers first"),
            ),
            ("not-a-version".to_string(), Some("not MAJOR.MINOR.PATCH")),
            (motley_core::version::THIS.to_string(), None),
        ];
        if this.minor > 0 {
            // One minor version behind: in.
            versions.push((format!("{}.{}.9", this.major, this.minor - 1), None));
        }
        for (v, refusal) in versions {
            let (out, mut from_server) = mpsc::channel(crate::state::OUTBOX_LIMIT);
            let (frames, session) = start_pi2(&s, out);
            let mut h = hello("pi2");
            if let AgentMsg::Hello { facts, .. } = &mut h {
                facts.agent_version = v.clone();
            }
            assert!(frames.send(Frame::Msg(h)).is_ok());
            let first = tokio::time::timeout(Duration::from_secs(10), from_server.recv()).await;
            match refusal {
                Some(says) => {
                    assert!(matches!(first, Ok(None)), "{v}: {first:?}");
                    let audited = s.trust.audit.recent();
                    assert!(
                        audited.iter().any(|e| e.why.contains(says)),
                        "{v}: {audited:?}"
                    );
                    let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
                }
                None => {
                    assert!(
                        matches!(first, Ok(Some(ServerMsg::Welcome { .. }))),
                        "{v}: {first:?}"
                    );
                    drop(frames);
                    let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_node_cannot_write_into_another_nodes_log_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::state::tests::shared(dir.path());
        s.start_cache().await.expect("cache");
        // An operator follows a log on pi1.
        let (log_tx, mut log_rx) = mpsc::channel(4);
        let req = s.hub.open_log("pi1", log_tx);
        // pi2's agent connects and sends data for that stream.
        let (out, mut from_server) = mpsc::channel(crate::state::OUTBOX_LIMIT);
        let (frames, session) = start_pi2(&s, out);
        let hello = hello("pi2");
        let forged = AgentMsg::LogData {
            req,
            data: "forged".into(),
            eof: true,
            error: None,
        };
        for m in [hello, forged] {
            assert!(frames.send(Frame::Msg(m)).is_ok(), "session ended early");
        }
        // The server answers Welcome first: the hello was taken.
        let welcome = tokio::time::timeout(Duration::from_secs(10), from_server.recv()).await;
        assert!(
            matches!(welcome, Ok(Some(ServerMsg::Welcome { .. }))),
            "{welcome:?}"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while s.trust.audit.recent().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "nothing audited");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let entry = &s.trust.audit.recent()[0];
        assert!(entry.why.contains("another node"), "{entry:?}");
        assert_eq!(entry.peer, "10.0.0.2:5000");
        assert!(
            log_rx.try_recv().is_err(),
            "forged data reached pi1's stream"
        );
        assert!(s.hub.log_target(req, "pi1").is_ok(), "pi1's stream was cut");
        drop(frames);
        let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
    }

    /// Waits until the audit log holds an entry whose reason contains `what`.
    async fn audited(s: &Shared, what: &str) -> motley_core::api::AuditEntry {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = s
                .trust
                .audit
                .recent()
                .into_iter()
                .find(|e| e.why.contains(what))
            {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing audited with {what:?}: {:?}",
                s.trust.audit.recent()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_node_cannot_report_for_another_nodes_allocation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::state::tests::shared(dir.path());
        s.start_cache().await.expect("cache");
        // pi1 runs web-1.
        let stored = serde_json::json!({
            "id": "web-1", "workload": "service/web", "workload_uid": "u", "generation": 1,
            "index": 0, "node": "pi1", "task": {"command": ["true"]},
            "restart": {"mode": "always", "max_restarts": null, "backoff": {}},
            "desired": "run", "state": "running", "pid": 4242, "created_at": 0, "updated_at": 0
        });
        let value = serde_json::to_vec(&stored).expect("json");
        s.store
            .txn(motley_store::Txn::new().put(crate::keys::alloc("web-1"), value))
            .await
            .expect("put");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !s.cache().allocs.contains_key("web-1") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache never saw web-1"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // pi2 says web-1 failed: alone, and in a batch with another report.
        let (out, _from_server) = mpsc::channel(crate::state::OUTBOX_LIMIT);
        let (frames, session) = start_pi2(&s, out);
        let lie = |id: &str| {
            AgentMsg::Update(motley_core::proto::AllocReport {
                id: id.into(),
                state: AllocState::Failed,
                pid: None,
                exit_code: Some(1),
                restarts: 0,
                reason: Some("forged".into()),
                health: None,
                ports: Default::default(),
                at: 0,
            })
        };
        for m in [hello("pi2"), lie("web-1"), lie("nobody-9"), lie("web-1")] {
            assert!(frames.send(Frame::Msg(m)).is_ok(), "session ended early");
        }
        let entry = audited(&s, "allocation web-1 of node pi1").await;
        assert_eq!(entry.peer, "10.0.0.2:5000");
        assert_eq!(entry.status, 403);
        let kv = s
            .store
            .get(&crate::keys::alloc("web-1"))
            .await
            .expect("get");
        let now: serde_json::Value =
            serde_json::from_slice(&kv.expect("still stored").value).expect("json");
        assert_eq!(
            now["state"], "running",
            "the lie changed pi1's allocation: {now}"
        );
        assert_eq!(now["pid"], 4242);
        drop(frames);
        let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
    }

    #[tokio::test]
    async fn a_node_cannot_claim_server_or_operator_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::state::tests::shared(dir.path());
        s.start_cache().await.expect("cache");
        // The operator pinned pi2 as untrusted.
        let mut operator = BTreeMap::new();
        operator.insert("trusted".to_string(), "no".to_string());
        let mut node = motley_core::node::registration(
            "pi2",
            Default::default(),
            &BTreeMap::new(),
            &Default::default(),
            0,
        );
        node.labels.extend(operator.clone());
        node.operator_labels = operator;
        let value = serde_json::to_vec(&node).expect("json");
        s.store
            .txn(motley_store::Txn::new().put(crate::keys::node("pi2"), value))
            .await
            .expect("put");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !s.cache().nodes.contains_key("pi2") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache never saw pi2"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // pi2 says hello claiming to be trusted and to have eight GPUs.
        let (out, _from_server) = mpsc::channel(crate::state::OUTBOX_LIMIT);
        let (frames, session) = start_pi2(&s, out);
        let mut claimed = BTreeMap::new();
        claimed.insert("trusted".to_string(), "yes".to_string());
        claimed.insert("motley.io/gpu-count".to_string(), "8".to_string());
        claimed.insert("zone".to_string(), "attic".to_string());
        let AgentMsg::Hello {
            version,
            node: said,
            facts,
            allocs,
            readings,
            ..
        } = hello("pi2")
        else {
            unreachable!("hello() builds a Hello");
        };
        let lying = AgentMsg::Hello {
            version,
            node: said,
            facts,
            labels: claimed,
            allocs,
            readings,
            address: None,
        };
        assert!(
            frames.send(Frame::Msg(lying)).is_ok(),
            "session ended early"
        );
        let entry = audited(&s, "label trusted=yes (the operator set trusted=no").await;
        assert_eq!(entry.peer, "10.0.0.2:5000");
        assert_eq!(entry.status, 403);
        audited(&s, "label motley.io/gpu-count").await;
        // The node's own harmless label is registered; the claims are not.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let stored = loop {
            let kv = s
                .store
                .get(&crate::keys::node("pi2"))
                .await
                .expect("get")
                .expect("stored");
            let n: motley_core::model::Node = serde_json::from_slice(&kv.value).expect("json");
            if n.labels.contains_key("zone") {
                break n;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pi2 never registered: {n:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(stored.labels["trusted"], "no", "{:?}", stored.labels);
        assert!(
            !stored.labels.contains_key("motley.io/gpu-count"),
            "{:?}",
            stored.labels
        );
        drop(frames);
        let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
    }

    #[tokio::test]
    async fn progress_is_kept_in_memory_for_the_nodes_own_allocations_until_its_next_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::state::tests::shared(dir.path());
        s.start_cache().await.expect("cache");
        for (id, node) in [("web-1", "pi2"), ("db-1", "pi1")] {
            let stored = serde_json::json!({
                "id": id, "workload": "service/web", "workload_uid": "u", "generation": 1,
                "index": 0, "node": node, "task": {"image": "busybox"},
                "restart": {"mode": "always", "max_restarts": null, "backoff": {}},
                "desired": "run", "state": "pending", "created_at": 0, "updated_at": 0
            });
            let value = serde_json::to_vec(&stored).expect("json");
            s.store
                .txn(motley_store::Txn::new().put(crate::keys::alloc(id), value))
                .await
                .expect("put");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while s.cache().allocs.len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache never saw both"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (out, _from_server) = mpsc::channel(crate::state::OUTBOX_LIMIT);
        let (frames, session) = start_pi2(&s, out);
        let progress = |id: &str, text: &str| AgentMsg::Progress {
            id: id.into(),
            text: text.into(),
        };
        for m in [
            hello("pi2"),
            progress("web-1", "pulling busybox: 41 % of 1.0 MiB"),
            progress("db-1", "pulling busybox: 99 % of 1.0 MiB"),
        ] {
            assert!(frames.send(Frame::Msg(m)).is_ok(), "session ended early");
        }
        audited(&s, "node pi2 sent progress for allocation db-1 of node pi1").await;
        assert_eq!(
            crate::util::lock(&s.progress)
                .get("web-1")
                .map(String::as_str),
            Some("pulling busybox: 41 % of 1.0 MiB")
        );
        assert!(!crate::util::lock(&s.progress).contains_key("db-1"));
        // Its next report ends it.
        let running = AgentMsg::Update(motley_core::proto::AllocReport {
            id: "web-1".into(),
            state: AllocState::Running,
            pid: Some(7),
            exit_code: None,
            restarts: 0,
            reason: Some("started".into()),
            health: None,
            ports: Default::default(),
            at: 0,
        });
        assert!(frames.send(Frame::Msg(running)).is_ok());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while crate::util::lock(&s.progress).contains_key("web-1") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "progress never cleared"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(frames);
        let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
    }

    /// The embedded store, slowed: every `get` by `get_delay` (an SD card under load),
    /// and every write by 5 s while `slow_writes` is set (etcd failing over).
    struct Slow {
        inner: motley_store::embedded::Embedded,
        get_delay: Duration,
        slow_writes: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Slow {
        fn new(dir: &std::path::Path, get_delay: Duration) -> Slow {
            Slow {
                inner: motley_store::embedded::Embedded::open(&dir.join("store.redb"))
                    .expect("store"),
                get_delay,
                slow_writes: Default::default(),
            }
        }
    }

    #[async_trait::async_trait]
    impl motley_store::Store for Slow {
        async fn get(
            &self,
            key: &str,
        ) -> Result<Option<motley_store::KeyValue>, motley_store::StoreError> {
            tokio::time::sleep(self.get_delay).await;
            self.inner.get(key).await
        }
        async fn range(
            &self,
            prefix: &str,
        ) -> Result<motley_store::Range, motley_store::StoreError> {
            self.inner.range(prefix).await
        }
        async fn txn(
            &self,
            txn: motley_store::Txn,
        ) -> Result<motley_store::TxnResult, motley_store::StoreError> {
            if self.slow_writes.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            self.inner.txn(txn).await
        }
        async fn watch(
            &self,
            prefix: &str,
            from: u64,
        ) -> Result<motley_store::Watch, motley_store::StoreError> {
            self.inner.watch(prefix, from).await
        }
        async fn compact(&self, revision: u64) -> Result<(), motley_store::StoreError> {
            self.inner.compact(revision).await
        }
        async fn revision(&self) -> Result<u64, motley_store::StoreError> {
            self.inner.revision().await
        }
    }

    #[tokio::test]
    async fn heartbeats_are_answered_while_new_facts_wait_for_a_slow_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Slow::new(dir.path(), Duration::ZERO);
        let slow = store.slow_writes.clone();
        let s = crate::state::tests::shared_on(dir.path(), Arc::new(store));
        s.start_cache().await.expect("cache");
        let (out, mut from_server) = mpsc::channel(crate::state::OUTBOX_LIMIT);
        let (frames, session) = start_pi2(&s, out);
        assert!(frames.send(Frame::Msg(hello("pi2"))).is_ok());
        // Registered and welcomed before the store slows down.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !s.cache().nodes.contains_key("pi2") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pi2 never registered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        slow.store(true, std::sync::atomic::Ordering::SeqCst);
        let facts = motley_core::model::NodeFacts {
            cpus: 4,
            cpu_score: Some(69),
            ..Default::default()
        };
        assert!(frames.send(Frame::Msg(AgentMsg::Facts { facts })).is_ok());
        // Heartbeats every 100 ms (acknowledged at most once a second): one is
        // acknowledged long before the 5 s write ends.
        let beats = frames.clone();
        let beating = tokio::spawn(async move {
            for seq in 1..50 {
                if beats.send(Frame::Msg(AgentMsg::Heartbeat { seq })).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let acked = tokio::time::timeout(Duration::from_millis(2500), async {
            while let Some(m) = from_server.recv().await {
                if let ServerMsg::Ack { .. } = m {
                    return true;
                }
            }
            false
        })
        .await;
        beating.abort();
        assert_eq!(acked, Ok(true), "the heartbeat waited for the facts' write");
        // And the facts are registered once the store answers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while s.cache().nodes.get("pi2").is_none_or(|n| n.facts.cpus != 4) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new facts were lost"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(frames);
        let _ = tokio::time::timeout(Duration::from_secs(10), session).await;
    }

    #[tokio::test]
    async fn a_node_flooding_reports_is_disconnected_and_audited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Slow::new(dir.path(), Duration::from_millis(20));
        let s = crate::state::tests::shared_on(dir.path(), Arc::new(store));
        s.start_cache().await.expect("cache");
        let (out, mut from_server) = mpsc::channel(crate::state::OUTBOX_LIMIT);
        // The agent reads what it is sent (a full outbox would end the session first).
        tokio::spawn(async move { while from_server.recv().await.is_some() {} });
        let (frames, session) = start_pi2(&s, out);
        assert!(frames.send(Frame::Msg(hello("pi2"))).is_ok());
        // Reports for allocations nobody has, faster than the store takes them (each is
        // looked up alone): the queue fills.
        for i in 0..REPORT_QUEUE_LIMIT * 2 {
            let r = AgentMsg::Update(motley_core::proto::AllocReport {
                id: format!("x-{i}"),
                state: AllocState::Running,
                pid: Some(1),
                exit_code: None,
                restarts: 0,
                reason: None,
                health: None,
                ports: Default::default(),
                at: 0,
            });
            if frames.send(Frame::Msg(r)).is_err() {
                break;
            }
        }
        let ended = tokio::time::timeout(Duration::from_secs(60), session).await;
        assert!(ended.is_ok(), "the session outlived its flood");
        let entry = audited(&s, "faster than they are stored").await;
        assert_eq!(entry.peer, "10.0.0.2:5000");
        assert!(
            !s.hub.connected().contains("pi2"),
            "still held after the flood"
        );
    }

    #[tokio::test]
    async fn an_agent_that_stops_reading_is_disconnected_not_queued_for_without_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = crate::state::tests::shared(dir.path());
        s.start_cache().await.expect("cache");
        // The agent never reads what the server sends.
        let (out, _never_read) = mpsc::channel(crate::state::OUTBOX_LIMIT);
        let (frames, session) = start_pi2(&s, out);
        let hello = hello("pi2");
        assert!(frames.send(Frame::Msg(hello)).is_ok());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !s.hub.connected().contains("pi2") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pi2 never connected"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut refused = 0;
        for i in 0..=crate::state::OUTBOX_LIMIT {
            if !s.hub.send_to(
                "pi2",
                ServerMsg::Remove {
                    id: format!("a{i}"),
                },
            ) {
                refused += 1;
            }
        }
        assert!(refused >= 1, "the outbox took more than its limit");
        let ended = tokio::time::timeout(Duration::from_secs(10), session).await;
        assert!(ended.is_ok(), "the session outlived its overflow");
        assert!(
            !s.hub.connected().contains("pi2"),
            "still held after overflow"
        );
        drop(frames);
    }
}
