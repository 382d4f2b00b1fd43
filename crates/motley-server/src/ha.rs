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
//!
//! This module holds a server's view ([`Ha`]); the loops that register, campaign and
//! follow, and act on the server when it wins or loses, are `state::leading`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use motley_core::api::ServerInfo;
use motley_net::ClientConfig;
use motley_store::Leases;
use tokio::sync::watch;

use crate::util::lock;

/// Keys of the control plane itself (leases; never in snapshots).
pub const PREFIX: &str = "/motley-ha/";
/// The leader's record.
pub const LEADER: &str = "/motley-ha/leader";
/// Default time to live of a server's lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

pub(crate) fn server_key(id: &str) -> String {
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
    pub(crate) lease: Mutex<Option<i64>>,
    pub(crate) etcd: Option<Arc<dyn Leases>>,
    /// Set on shutdown: campaign no more.
    pub(crate) resigned: std::sync::atomic::AtomicBool,
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
    pub(crate) fn update_client_file(&self) {
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
