//! Several servers on one etcd: each registers itself, one leads.
//!
//! Every server holds an etcd lease (renewed every third of its time to live; renewals
//! are not written to etcd's log, so an idle control plane writes nothing). With it a
//! server registers under `/motley-ha/servers/<id>` and campaigns for
//! `/motley-ha/leader`: a put that succeeds only while the key is absent. The server that
//! wrote it leads until its lease runs out (it died, or lost etcd) or it resigns
//! (SIGTERM revokes the lease). The others watch the key and campaign the moment it
//! disappears.
//!
//! Invariants:
//! * Only the leader runs the controllers and the scheduler, and each of its commits
//!   carries a compare on the leader key's revision (its *fence*): a server that lost
//!   the lease without noticing cannot commit anything.
//! * A leader steps down when it has not renewed its lease for five sixths of the time
//!   to live, measured from before the renewal was sent, so it stops acting before etcd
//!   can let another server win.
//! * Agents are served by the leader only: other servers relay agent connections to it
//!   (they hold no node liveness of their own), and a leader that steps down closes its
//!   agent connections so they are relayed to the next one.
//! * Nothing under `/motley-ha/` is in a snapshot (snapshots take `/motley/`): leases do
//!   not survive a restore.
//!
//! With the embedded store there is one server, which leads from the start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use motley_core::api::ServerInfo;
use motley_net::ClientConfig;
use motley_store::Leases;
use motley_store::{EventKind, StoreError};
use tokio::sync::watch;

use crate::state::{Shared, lock, now_ms};

/// Keys of the control plane itself (leases; never in snapshots).
pub const PREFIX: &str = "/motley-ha/";
/// The leader's record.
pub const LEADER: &str = "/motley-ha/leader";
/// Default time to live of a server's lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

fn server_key(id: &str) -> String {
    format!("{PREFIX}servers/{id}")
}

/// This server's term as leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Revision of the leader key this server wrote; every commit of the controller
    /// compares it. 0 with the embedded store (no compare: one server).
    pub fence: u64,
    /// When it began (ms).
    pub since: u64,
}

/// The control plane as this server sees it.
pub struct Ha {
    /// This server.
    pub me: ServerInfo,
    /// Time to live of this server's lease (etcd only).
    pub lease_ttl: Duration,
    /// Registered servers by id (this one alone with the embedded store).
    pub servers: Mutex<BTreeMap<String, ServerInfo>>,
    /// The leader as the store names it.
    pub observed: watch::Sender<Option<ServerInfo>>,
    /// `Some` while this server leads.
    pub term: watch::Sender<Option<Term>>,
    /// HTTPS to the other servers (trusting only the cluster CA).
    pub http: reqwest::Client,
    /// TLS to the other servers, for relayed agent connections.
    pub tls: Arc<rustls::ClientConfig>,
    /// `client.yaml`, rewritten when a server joins so it lists them all.
    pub client_file: Mutex<Option<(PathBuf, ClientConfig)>>,
    lease: Mutex<Option<i64>>,
    etcd: Option<Arc<dyn Leases>>,
    /// Set on shutdown: campaign no more.
    resigned: std::sync::atomic::AtomicBool,
}

impl Ha {
    /// The control plane of this server: alone (`etcd: None`, leading from the start), or
    /// one of several on etcd (leading once elected).
    pub fn new(
        me: ServerInfo,
        etcd: Option<Arc<dyn Leases>>,
        lease_ttl: Duration,
        ca_pem: &str,
    ) -> anyhow::Result<Ha> {
        let tls = motley_net::client_tls(ca_pem)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        let alone = etcd.is_none();
        let term = alone.then_some(Term {
            fence: 0,
            since: me.started_at,
        });
        let mut servers = BTreeMap::new();
        servers.insert(me.id.clone(), me.clone());
        Ok(Ha {
            observed: watch::channel(alone.then(|| me.clone())).0,
            term: watch::channel(term).0,
            me,
            lease_ttl,
            servers: Mutex::new(servers),
            http,
            tls: Arc::new(tls),
            client_file: Mutex::new(None),
            lease: Mutex::new(None),
            etcd,
            resigned: Default::default(),
        })
    }

    /// This server's term, while it leads.
    pub fn leading(&self) -> Option<Term> {
        *self.term.borrow()
    }

    /// The leader, when it is another server.
    pub fn leader_elsewhere(&self) -> Option<ServerInfo> {
        if self.leading().is_some() {
            return None;
        }
        self.observed
            .borrow()
            .clone()
            .filter(|l| l.id != self.me.id)
    }

    /// Every server's URL, this one first.
    pub fn urls(&self) -> Vec<String> {
        let mut urls = vec![self.me.url.clone()];
        for s in lock(&self.servers).values() {
            if !urls.contains(&s.url) {
                urls.push(s.url.clone());
            }
        }
        urls
    }

    /// The registered servers, with which one leads.
    pub fn view(&self) -> Vec<ServerInfo> {
        let leader = self.observed.borrow().clone();
        let mut all: Vec<ServerInfo> = lock(&self.servers).values().cloned().collect();
        for s in &mut all {
            if let Some(l) = leader.as_ref().filter(|l| l.id == s.id) {
                s.leader = true;
                s.leading_since = l.leading_since;
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.url.cmp(&b.url)));
        all
    }

    /// Rewrites `client.yaml` when servers it does not list have joined.
    fn update_client_file(&self) {
        let mut guard = lock(&self.client_file);
        let Some((path, cfg)) = guard.as_mut() else {
            return;
        };
        let mut grew = false;
        for url in self.urls() {
            if !cfg.servers.contains(&url) {
                cfg.servers.push(url);
                grew = true;
            }
        }
        if grew && let Err(e) = cfg.save(path) {
            tracing::warn!("updating {}: {e}", path.display());
        }
    }
}

/// Starts registration, the election and the watch on the other servers (etcd only).
/// Returns once the current registrations are loaded.
pub async fn start(shared: &Arc<Shared>) -> Result<(), StoreError> {
    let Some(etcd) = shared.ha.etcd.clone() else {
        return Ok(());
    };
    let rev = load(shared, &*etcd).await?;
    motley_rt::spawn(follow(shared.clone(), etcd.clone(), rev));
    motley_rt::spawn(campaign(shared.clone(), etcd));
    Ok(())
}

/// Gives up leadership and registration at once (on SIGTERM), so another server leads
/// without waiting for the lease to run out.
pub async fn resign(shared: &Arc<Shared>) {
    let Some(etcd) = shared.ha.etcd.clone() else {
        return;
    };
    shared
        .ha
        .resigned
        .store(true, std::sync::atomic::Ordering::SeqCst);
    step_down(shared, "shutting down");
    let lease = lock(&shared.ha.lease).take();
    if let Some(id) = lease
        && let Err(e) = etcd.lease_revoke(id).await
    {
        tracing::warn!("revoking the server lease: {e}");
    }
}

async fn load(shared: &Arc<Shared>, etcd: &dyn Leases) -> Result<u64, StoreError> {
    let range = etcd.range(PREFIX).await?;
    let mut servers = BTreeMap::new();
    servers.insert(shared.ha.me.id.clone(), shared.ha.me.clone());
    let mut leader = None;
    for kv in &range.kvs {
        let Ok(info) = serde_json::from_slice::<ServerInfo>(&kv.value) else {
            continue;
        };
        if kv.key == LEADER {
            leader = Some(info);
        } else {
            servers.insert(info.id.clone(), info);
        }
    }
    *lock(&shared.ha.servers) = servers;
    shared.ha.observed.send_replace(leader);
    shared.ha.update_client_file();
    Ok(range.revision)
}

/// Follows registrations and the leader key.
async fn follow(shared: Arc<Shared>, etcd: Arc<dyn Leases>, mut rev: u64) {
    loop {
        match etcd.watch(PREFIX, rev + 1).await {
            Ok(mut w) => {
                while let Some(group) = w.recv().await {
                    let Ok(group) = group else { break };
                    for ev in group {
                        rev = rev.max(ev.revision());
                        let info = serde_json::from_slice::<ServerInfo>(&ev.kv.value).ok();
                        let put = ev.kind == EventKind::Put;
                        if ev.kv.key == LEADER {
                            shared.ha.observed.send_replace(info.filter(|_| put));
                        } else if let Some(id) = ev.kv.key.strip_prefix(&server_key("")) {
                            let mut servers = lock(&shared.ha.servers);
                            match info.filter(|_| put) {
                                Some(i) => {
                                    servers.insert(id.to_string(), i);
                                }
                                None if id != shared.ha.me.id => {
                                    servers.remove(id);
                                }
                                None => {}
                            }
                            drop(servers);
                            shared.ha.update_client_file();
                            if put {
                                announce(&shared);
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("watching the servers: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        match load(&shared, &*etcd).await {
            Ok(r) => rev = r,
            Err(e) => tracing::debug!("loading the servers: {e}"),
        }
    }
}

/// Holds a lease, registers, campaigns; forever.
async fn campaign(shared: Arc<Shared>, etcd: Arc<dyn Leases>) {
    let ttl = shared.ha.lease_ttl;
    // Renew three times per lease; step down before it can have run out anywhere.
    let renew_every = ttl / 3;
    let step_down_after = ttl.mul_f64(5.0 / 6.0);
    let me = shared.ha.me.clone();
    let Ok(me_json) = serde_json::to_vec(&me) else {
        return;
    };
    let mut observed = shared.ha.observed.subscribe();
    loop {
        let asked = Instant::now();
        let lease = match etcd.lease_grant(ttl).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot take a server lease: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        *lock(&shared.ha.lease) = Some(lease);
        let mut renewed = asked;
        let mut tried = asked;
        let mut registered = false;
        // The leader key written with this lease, if any: (fence, record).
        let mut won: Option<(u64, ServerInfo)> = None;
        loop {
            if shared.ha.resigned.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if !registered {
                registered = etcd
                    .put_leased(&server_key(&me.id), me_json.clone(), lease, false)
                    .await
                    .is_ok();
            }
            let observed_me = shared
                .ha
                .observed
                .borrow()
                .as_ref()
                .is_some_and(|l| l.id == me.id);
            if shared.ha.leading().is_none()
                && observed_me
                && renewed.elapsed() < step_down_after
                && let Some((fence, record)) = won.clone()
            {
                // Stepped down for want of renewals, but the key (on this same lease)
                // is still ours and the lease is renewed again: lead on.
                become_leader(&shared, fence, record);
            }
            if shared.ha.leading().is_none() && shared.ha.observed.borrow().is_none() {
                let mut record = me.clone();
                record.leader = true;
                record.leading_since = Some(now_ms());
                let value = serde_json::to_vec(&record).unwrap_or_default();
                match etcd.put_leased(LEADER, value, lease, true).await {
                    Ok(Some(fence)) => {
                        won = Some((fence, record.clone()));
                        if renewed.elapsed() < step_down_after {
                            become_leader(&shared, fence, record);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("campaign: {e}"),
                }
            }
            // Wait for the next renewal, or for the leader key to go. After a failed one
            // the next is already due: retry ten times per renewal period, not in a loop.
            let next = (renewed + renew_every).max(tried + renew_every / 10);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = observed.changed() => continue,
            }
            let asked = Instant::now();
            tried = asked;
            match etcd.lease_renew(lease).await {
                Ok(true) => renewed = asked,
                Ok(false) => {
                    step_down(&shared, "the server lease ran out");
                    break;
                }
                Err(e) => tracing::warn!("renewing the server lease: {e}"),
            }
            if renewed.elapsed() >= step_down_after {
                step_down(&shared, "the server lease could not be renewed");
            }
            if renewed.elapsed() >= ttl {
                break;
            }
        }
        lock(&shared.ha.lease).take();
    }
}

/// Tells the agents connected here of every server (only the leader holds agents).
fn announce(shared: &Shared) {
    let servers = shared.ha.urls();
    for conn in lock(&shared.conns).values() {
        let _ = conn.tx.send(motley_core::proto::ServerMsg::Servers {
            servers: servers.clone(),
        });
    }
}

fn become_leader(shared: &Arc<Shared>, fence: u64, record: ServerInfo) {
    let since = record.leading_since.unwrap_or_else(now_ms);
    tracing::info!("leading the control plane (fence revision {fence})");
    // A new leader knows nothing of the nodes' heartbeats: every node gets a full grace
    // period from now before it can be declared down.
    shared.begin_grace(since);
    shared.ha.observed.send_replace(Some(record));
    shared.ha.term.send_replace(Some(Term { fence, since }));
    shared.metrics.leader.set(1);
    shared.metrics.leader_terms.inc();
    shared.kick.notify_one();
}

fn step_down(shared: &Arc<Shared>, why: &str) {
    if shared.ha.term.send_replace(None).is_some() {
        shared.metrics.leader.set(0);
        tracing::warn!("no longer leading: {why}");
        shared.kick.notify_one();
    }
}
