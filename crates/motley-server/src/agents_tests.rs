//! Tests of [`super`]: agent sessions over in-memory links.

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

/// Waits until `done` holds, polling every 10 ms; fails the test with `what` after
/// `within`.
async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// pi2's session on `s`, over a link whose frames and answers the test holds.
fn start_pi2(
    s: &Arc<Shared>,
    out: mpsc::Sender<crate::state::Queued>,
) -> (mpsc::UnboundedSender<Frame>, tokio::task::JoinHandle<()>) {
    start_agent(s, "pi2", "token n2 (node)", "10.0.0.2:5000", out)
}

/// `node`'s session on `s` for a caller `who` at `peer`, over a link whose frames and
/// answers the test holds.
fn start_agent(
    s: &Arc<Shared>,
    node: &str,
    who: &str,
    peer: &str,
    out: mpsc::Sender<crate::state::Queued>,
) -> (mpsc::UnboundedSender<Frame>, tokio::task::JoinHandle<()>) {
    let (frames, rx) = mpsc::unbounded_channel();
    let caller = AgentCaller {
        who: who.into(),
        peer: peer.into(),
    };
    let session = tokio::spawn(session(
        s.clone(),
        node.into(),
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
                    matches!(
                        first.as_ref().map(|m| m.as_deref()),
                        Ok(Some(ServerMsg::Welcome { .. }))
                    ),
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
        matches!(
            welcome.as_ref().map(|m| m.as_deref()),
            Ok(Some(ServerMsg::Welcome { .. }))
        ),
        "{welcome:?}"
    );
    eventually("nothing audited", Duration::from_secs(10), || {
        !s.trust.audit.recent().is_empty()
    })
    .await;
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
    eventually("cache never saw web-1", Duration::from_secs(10), || {
        s.cache().allocs.contains_key("web-1")
    })
    .await;
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
    eventually("cache never saw pi2", Duration::from_secs(10), || {
        s.cache().nodes.contains_key("pi2")
    })
    .await;
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
    eventually("cache never saw both", Duration::from_secs(10), || {
        s.cache().allocs.len() >= 2
    })
    .await;
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
    eventually("progress never cleared", Duration::from_secs(10), || {
        !crate::util::lock(&s.progress).contains_key("web-1")
    })
    .await;
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
            inner: motley_store::embedded::Embedded::open(&dir.join("store.redb")).expect("store"),
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
    async fn range(&self, prefix: &str) -> Result<motley_store::Range, motley_store::StoreError> {
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
    eventually("pi2 never registered", Duration::from_secs(10), || {
        s.cache().nodes.contains_key("pi2")
    })
    .await;
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
            if beats
                .send(Frame::Msg(AgentMsg::Heartbeat { seq, quiet: false }))
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let acked = tokio::time::timeout(Duration::from_millis(2500), async {
        while let Some(m) = from_server.recv().await {
            if let ServerMsg::Ack { .. } = *m {
                return true;
            }
        }
        false
    })
    .await;
    beating.abort();
    assert_eq!(acked, Ok(true), "the heartbeat waited for the facts' write");
    // And the facts are registered once the store answers.
    eventually("the new facts were lost", Duration::from_secs(20), || {
        s.cache()
            .nodes
            .get("pi2")
            .is_some_and(|n| n.facts.cpus == 4)
    })
    .await;
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
    eventually("pi2 never connected", Duration::from_secs(10), || {
        s.hub.connected().contains("pi2")
    })
    .await;
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

/// The next message from the server that `want` picks, within 5 s.
async fn next_from<T>(
    from: &mut mpsc::Receiver<crate::state::Queued>,
    want: impl Fn(&ServerMsg) -> Option<T>,
) -> T {
    let picked = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = from.recv().await {
            if let Some(t) = want(&m) {
                return Some(t);
            }
        }
        None
    })
    .await;
    match picked {
        Ok(Some(t)) => t,
        Ok(None) => panic!("the session ended first"),
        Err(_) => panic!("no such message within 5 s"),
    }
}

/// Agents are paced by how many are connected (`failure::paced_heartbeat_ms`; a budget
/// of one heartbeat a second here): the second agent is welcomed at the slower pace, the
/// first is told it in the acknowledgement of its next heartbeat and only then; when the
/// second leaves, the first is told the faster pace again. A quiet heartbeat (a node
/// without fenced work) is answered only to tell a new pace, the budget's alone.
#[tokio::test]
async fn agents_are_told_a_slower_pace_as_more_connect_and_a_faster_one_as_they_leave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn motley_store::Store> = Arc::new(
        motley_store::embedded::Embedded::open(&dir.path().join("store.redb")).expect("store"),
    );
    let failure = motley_core::failure::FailureConfig {
        heartbeat_budget: 1,
        ..Default::default()
    };
    let s = crate::state::tests::shared_with(dir.path(), store, failure);
    s.start_cache().await.expect("cache");
    let start = |node: &str| {
        let (out, from) = mpsc::channel(crate::state::OUTBOX_LIMIT);
        let who = format!("token {node} (node)");
        let (frames, session) = start_agent(&s, node, &who, "10.0.0.9:5000", out);
        assert!(frames.send(Frame::Msg(hello(node))).is_ok());
        (frames, from, session)
    };
    let welcome = |m: &ServerMsg| match m {
        ServerMsg::Welcome { heartbeat_ms, .. } => Some(*heartbeat_ms),
        _ => None,
    };
    let ack = |m: &ServerMsg| match m {
        ServerMsg::Ack { seq, heartbeat_ms } => Some((*seq, *heartbeat_ms)),
        _ => None,
    };
    let (pi1, mut from1, _s1) = start("pi1");
    assert_eq!(next_from(&mut from1, welcome).await, 1_000, "one agent");
    let (pi2, mut from2, s2) = start("pi2");
    assert_eq!(
        next_from(&mut from2, welcome).await,
        1_500,
        "two, at most lease/3"
    );
    let beat = |seq, quiet| Frame::Msg(AgentMsg::Heartbeat { seq, quiet });
    // A quiet heartbeat (no fenced work) is answered when the pace changed, and a
    // quiet node is held to the budget alone: two nodes at one a second, 2 s.
    assert!(pi1.send(beat(1, true)).is_ok());
    assert_eq!(next_from(&mut from1, ack).await, (1, Some(2_000)));
    // Otherwise a quiet heartbeat is not answered: the next acknowledgement is of the
    // one that asked (fenced work), told the pace of a node with a lease.
    tokio::time::sleep(ACK_INTERVAL).await;
    assert!(pi1.send(beat(2, true)).is_ok());
    assert!(pi1.send(beat(3, false)).is_ok());
    assert_eq!(next_from(&mut from1, ack).await, (3, Some(1_500)));
    // Told once: the next acknowledgement (a second later) carries no pace.
    tokio::time::sleep(ACK_INTERVAL).await;
    assert!(pi1.send(beat(4, false)).is_ok());
    assert_eq!(next_from(&mut from1, ack).await, (4, None));
    drop(pi2);
    let _ = tokio::time::timeout(Duration::from_secs(5), s2).await;
    assert_eq!(s.hub.count(), 1, "pi2's session ended");
    assert!(pi1.send(beat(5, false)).is_ok());
    assert_eq!(next_from(&mut from1, ack).await, (5, Some(1_000)));
}

/// The size of what `f` returns (here: an async fn's future, whose type has no name).
fn size_of_output<A, B, C, D, R>(_: impl Fn(A, B, C, D) -> R) -> usize {
    std::mem::size_of::<R>()
}

/// A connected node costs the server mostly its session's task, which holds the
/// session's future for as long as the node is connected, and a future is as large as
/// its largest state. The hello and registration are boxed, the reports' and facts'
/// store writes too (in tasks of their own), and a message is handled before a log
/// piece's hand-off is awaited: the idle wait sizes it (docs/decisions.md, "A
/// connection's memory"). Over a WebSocket 3,168 bytes before, 1,840 after; over memory
/// 2,144 before, 816 after.
#[test]
fn an_idle_session_is_a_small_task() {
    let ws = size_of_output(session::<crate::api::agent_ws::WsLink>);
    assert!(
        ws <= 2048,
        "a session over a WebSocket is a future of {ws} bytes"
    );
    let mem = size_of_output(session::<ChanLink>);
    assert!(
        mem <= 1024,
        "a session over memory is a future of {mem} bytes"
    );
}
