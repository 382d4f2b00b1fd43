//! The server's in-memory view of the store, the agents connected to it, and
//! the controller loop that drives the core.
//!
//! Invariants:
//! * The cache is only ever changed by the watch applier, in revision order;
//!   everything else writes to the store and waits to see its own write.
//! * Agent liveness lives here, in memory, never in the store.
//! * The controller commits a plan only with compares on the revisions it
//!   planned from, and does not plan again until the cache has caught up with
//!   its own commits, so it never acts twice on a stale view.
//! * Only the leader plans, and its commits are fenced by its term (see [`crate::ha`]).

use motley_rt::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use motley_core::failure::FailureConfig;
use motley_core::hw::TaintPolicy;
use motley_core::model::{AllocState, Allocation, Node, Workload, WorkloadRef};
use motley_core::proto::{AllocReport, ServerMsg};
use motley_core::reconcile::{self, Blocked, Ids, Input};
use motley_scheduler::Scheduler;
use motley_store::{EventKind, Store, StoreError, Txn};
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};

use crate::auth::TokenRecord;
use crate::keys::{self, Parsed};
use crate::metrics::Metrics;

pub mod catalog;
mod controller;
mod follower;
pub mod hub;
pub mod lab;
pub mod leading;
pub mod liveness;
mod reports;
pub mod sources;
pub mod uptime;

pub use crate::util::{lock, now_ms, read, write};
pub use hub::{AgentConn, Hub, LogPiece, OUTBOX_LIMIT, Outbox, Queued};
pub use liveness::{Liveness, NodeHealth};

/// The store's contents as last seen by the watch, decoded.
#[derive(Debug, Default)]
pub struct Cache {
    /// Workloads.
    pub workloads: BTreeMap<WorkloadRef, Workload>,
    /// Nodes.
    pub nodes: BTreeMap<String, Node>,
    /// Allocations.
    pub allocs: BTreeMap<String, Allocation>,
    /// Tokens by hash.
    pub tokens: HashMap<String, TokenRecord>,
    /// The task each workload's allocations last decoded with: an allocation decoded
    /// with an equal task shares this copy (10,000 replicas hold one task, not 10,000).
    pub tasks: HashMap<WorkloadRef, Arc<motley_core::model::Task>>,
    /// Mod revision of every cached key.
    pub mod_revs: HashMap<String, u64>,
    /// Store revision the cache reflects.
    pub revision: u64,
    /// Changes whenever a node is added or removed (a number never used before, so a
    /// reloaded cache never matches an old one): the health pass reads the names again
    /// only then.
    pub node_set: u64,
    /// Which workloads the controller's pass visits (`motley_core::active`): told every
    /// change applied here; the controller settles what its pass found settled, under
    /// this cache's read lock (so no change comes between).
    pub active: Mutex<motley_core::active::Active>,
}

impl Cache {
    /// Mod revision of a key (0 if absent).
    pub fn rev(&self, key: &str) -> u64 {
        self.mod_revs.get(key).copied().unwrap_or(0)
    }
}

/// State shared by the API, the agent connections and the controller.
pub struct Shared {
    /// The store.
    pub store: Arc<dyn Store>,
    cache: RwLock<Cache>,
    /// Agents connected here and the log streams open through them.
    pub hub: Hub,
    /// Every node's failure detector, verdict and readings (memory only).
    pub liveness: Liveness,
    /// What the controller last concluded, and its wake-up.
    pub plans: Plans,
    /// Scheduler tuning (the seed for tie-breaking).
    pub scheduler: motley_scheduler::Config,
    /// Revision the cache has reached.
    pub cache_rev: watch::Sender<u64>,
    /// Metrics.
    pub metrics: Metrics,
    /// Extra registries to include in `/metrics` (e.g. an in-process agent's).
    pub registries: Mutex<Vec<Arc<Mutex<Registry>>>>,
    /// The server's own registry.
    pub registry: Mutex<Registry>,
    /// Request and connection ids.
    pub next_id: AtomicU64,
    /// When the server started (ms).
    pub started_at: u64,
    /// The effect of each condition's taint.
    pub taint_policy: TaintPolicy,
    /// The servers of the control plane and who leads.
    pub ha: crate::ha::Ha,
    /// The CA, the audit log and the secrets keys.
    pub trust: Trust,
    /// The platforms of images, read from their registries.
    pub images: crate::images::Images,
    /// What starting allocations are doing (`pulling 41 %`), by allocation id, as their
    /// agents last said (memory only; cleared by the allocation's next report).
    pub progress: Mutex<HashMap<String, String>>,
    /// The service catalog last sent to the agents (memory only).
    pub catalog: catalog::CatalogState,
    /// Git sources: status, the sync loop's wake-up (the leader's, memory only).
    pub sources: sources::Sources,
    /// What happened, the last [`crate::events::CAP`] of it (memory only).
    pub events: crate::events::Events,
    /// Services' availability (the leader's; checkpointed hourly).
    pub uptime: crate::uptime::Uptime,
    /// What the health pass read last: the nodes' names and which are connected here,
    /// read again only when the cache's node set or the hub's connections change.
    roster: Mutex<Roster>,
    /// The experiment under way (the leader's, memory only).
    pub lab: lab::Lab,
}

/// What the controller last concluded (for `describe`, `get jobs`, `plan`), and how
/// it is woken.
pub struct Plans {
    /// Demand that could not be placed, from the last reconcile.
    pub blocked: Mutex<BTreeMap<WorkloadRef, Blocked>>,
    /// The job queue from the last reconcile, head first.
    pub queue: Mutex<Vec<WorkloadRef>>,
    /// Wakes the controller.
    pub kick: Notify,
    /// After every pass over the workloads not settled, run a full pass too and record
    /// the first difference (the simulator turns it on: the two must agree).
    pub check_full: std::sync::atomic::AtomicBool,
    /// The first difference found between a pass and the full one.
    pub difference: Mutex<Option<String>>,
}

/// What the cluster's trust rests on: its CA, the audit of what was refused, and the
/// keys Secret values are sealed with.
pub struct Trust {
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
    /// The CA itself, to sign the ingress's certificates (set by `Server::start`).
    pub signer: std::sync::OnceLock<motley_net::Ca>,
    /// Its hash, `sha256:<hex>`, as join tokens carry it.
    pub ca_hash: String,
    /// Denied requests and the failed-authentication limit.
    pub audit: crate::audit::Audit,
    /// The keys Secret values are sealed with.
    pub keyring: RwLock<crate::secrets::Keyring>,
    /// Held while the secrets key rotates.
    pub rotating: tokio::sync::Mutex<()>,
}

/// The health pass's last read of the nodes ([`Shared::evaluate_health`]).
#[derive(Clone, Default)]
struct Roster {
    names: Arc<[String]>,
    /// [`Cache::node_set`] when `names` were read.
    node_set: u64,
    /// Whether each of `names` is connected here, as of the hub's `connections`.
    connected: Arc<[bool]>,
    connections: Option<u64>,
}

/// What guards the cluster's data: the audit log and the secrets keys.
pub struct Guards {
    /// Denied requests and the failed-authentication limit.
    pub audit: crate::audit::Audit,
    /// The keys Secret values are sealed with.
    pub keyring: crate::secrets::Keyring,
}

impl Shared {
    /// Creates the shared state around a store.
    pub fn new(
        store: Arc<dyn Store>,
        ca_pem: String,
        ca_hash: String,
        failure: FailureConfig,
        taint_policy: TaintPolicy,
        ha: crate::ha::Ha,
        guards: Guards,
    ) -> Arc<Shared> {
        let Guards { audit, keyring } = guards;
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        if ha.leading().is_some() {
            metrics.leader.set(1);
            metrics.leader_terms.inc();
        }
        Arc::new(Shared {
            store,
            cache: RwLock::new(Cache::default()),
            hub: Hub::default(),
            liveness: Liveness::new(failure, ha.me.started_at),
            plans: Plans {
                blocked: Mutex::new(BTreeMap::new()),
                queue: Mutex::new(Vec::new()),
                kick: Notify::new(),
                check_full: Default::default(),
                difference: Mutex::new(None),
            },
            scheduler: motley_scheduler::Config::default(),
            cache_rev: watch::channel(0).0,
            metrics,
            registries: Mutex::new(Vec::new()),
            registry: Mutex::new(registry),
            next_id: AtomicU64::new(1),
            started_at: ha.me.started_at,
            ha,
            trust: Trust {
                signer: std::sync::OnceLock::new(),
                ca_pem,
                ca_hash,
                audit,
                keyring: RwLock::new(keyring),
                rotating: tokio::sync::Mutex::new(()),
            },
            images: Default::default(),
            progress: Mutex::new(HashMap::default()),
            catalog: Default::default(),
            sources: Default::default(),
            events: Default::default(),
            uptime: Default::default(),
            roster: Default::default(),
            lab: Default::default(),
            taint_policy,
        })
    }

    /// Re-judges every node's health; kicks the controller when any verdict changed.
    pub fn evaluate_health(&self) {
        let Roster {
            names,
            node_set,
            connected,
            ..
        } = self.roster();
        let changed = self.liveness.evaluate(&names, node_set, &connected);
        if !changed.is_empty() {
            use motley_core::events::{EventKind as K, New};
            use motley_core::failure::Health;
            self.events.push_all(
                changed
                    .into_iter()
                    .map(|(node, h, why)| {
                        let kind = match h {
                            Health::Ready => K::NodeReady,
                            Health::Suspect => K::NodeSuspect,
                            Health::Down => K::NodeDown,
                        };
                        New::node(kind, &node, why)
                    })
                    .collect(),
            );
            self.plans.kick.notify_one();
            self.catalog.touch();
        }
    }

    /// Every node's name, in the cache's order, and which are connected here: the last
    /// read while neither changed (four times a second, at 1,000 nodes the copies and
    /// lookups were most of the pass).
    fn roster(&self) -> Roster {
        let connections = self.hub.changes();
        let cache = self.cache();
        let mut memo = lock(&self.roster);
        if memo.node_set != cache.node_set {
            memo.names = cache.nodes.keys().cloned().collect();
            memo.node_set = cache.node_set;
            memo.connections = None;
        }
        drop(cache);
        if memo.connections != Some(connections) {
            memo.connected = self.hub.connected_among(&memo.names).into();
            memo.connections = Some(connections);
        }
        memo.clone()
    }

    /// Runs [`Shared::evaluate_health`] twice per heartbeat interval.
    pub async fn run_health(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.liveness.config.heartbeat_ms / 2).max(20),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            // Only the leader hears heartbeats (the others relay agents to it).
            if self.ha.leading().is_some() {
                self.evaluate_health();
                uptime::tick(&self).await;
            } else if self.uptime.loaded() {
                self.uptime.reset();
            }
        }
    }

    /// Creates a token and stores its hash; returns its record and the token itself
    /// (shown once, never stored). Join tokens carry the CA's hash.
    pub async fn create_token(
        &self,
        role: crate::auth::Role,
        ttl_ms: Option<u64>,
        description: &str,
    ) -> Result<(TokenRecord, String), StoreError> {
        self.create_token_in(role, ttl_ms, description, Vec::new())
            .await
    }

    /// [`Shared::create_token`] limited to `namespaces` (empty: the whole cluster).
    pub async fn create_token_in(
        &self,
        role: crate::auth::Role,
        ttl_ms: Option<u64>,
        description: &str,
        namespaces: Vec<String>,
    ) -> Result<(TokenRecord, String), StoreError> {
        let token = match role {
            crate::auth::Role::Join => motley_net::join_token(&self.trust.ca_hash),
            _ => motley_net::new_secret(),
        };
        let now = now_ms();
        let rec = TokenRecord {
            id: motley_net::new_id()[..8].to_string(),
            role,
            created_at: now,
            expires_at: ttl_ms.map(|t| now + t),
            description: description.into(),
            namespaces,
        };
        let key = keys::token(&motley_net::token_hash(&token));
        let value = serde_json::to_vec(&rec).map_err(|e| StoreError::Backend(e.to_string()))?;
        let r = self
            .store
            .txn(Txn::new().when(&key, 0).put(&key, value))
            .await?;
        if !r.succeeded {
            return Err(StoreError::Backend("token collision".into()));
        }
        self.wait_for_rev(r.revision).await;
        Ok((rec, token))
    }

    /// Deletes the token with this public id. Returns false if there is none.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let found = {
            let c = self.cache();
            c.tokens
                .iter()
                .find(|(_, t)| t.id == id)
                .map(|(h, _)| (keys::token(h), c.rev(&keys::token(h))))
        };
        let Some((key, rev)) = found else {
            return Ok(false);
        };
        let r = self
            .store
            .txn(Txn::new().when(&key, rev).delete(&key))
            .await?;
        if r.succeeded {
            self.wait_for_rev(r.revision).await;
        }
        Ok(r.succeeded)
    }

    /// Reads the cache.
    pub fn cache(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn cache_mut(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A new id for requests and connections.
    pub fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// One reconcile pass over the cache's nodes and allocations and `workloads` (the
    /// cache's, or those a dry run would apply), with live health and readings, through
    /// the scheduler. The controller commits the plan; `POST /v1/plan` only shows it.
    pub fn plan_pass(
        &self,
        cache: &Cache,
        workloads: &BTreeMap<WorkloadRef, Workload>,
        now: u64,
        ids: &mut dyn Ids,
        active: Option<&motley_core::active::Active>,
    ) -> reconcile::Plan {
        let ready = self.ready_nodes();
        let down = self.liveness.down_nodes();
        let readings = self.liveness.readings_snapshot();
        let input = Input {
            workloads,
            nodes: &cache.nodes,
            ready: &ready,
            down: &down,
            fence_after_ms: self.liveness.config.fence_after_ms(),
            allocs: &cache.allocs,
            readings: &readings,
            now,
            active,
        };
        let mut scheduler = Scheduler::new(self.scheduler.clone());
        let plan = reconcile::reconcile(&input, &mut scheduler, ids);
        if active.is_some() && self.plans.check_full.load(Ordering::Relaxed) {
            let full = Input {
                active: None,
                ..input
            };
            let mut scheduler = Scheduler::new(self.scheduler.clone());
            // Its own ids: the check draws nothing from the ids the cluster uses.
            struct Unnamed;
            impl Ids for Unnamed {
                fn next_id(&mut self, _: &WorkloadRef) -> String {
                    String::new()
                }
            }
            let other = reconcile::reconcile(&full, &mut scheduler, &mut Unnamed);
            if let Err(d) = motley_core::active::same_plan(&plan, &other) {
                lock(&self.plans.difference).get_or_insert(format!(
                    "a pass over the workloads not settled and a full pass planned different {d}"
                ));
            }
        }
        plan
    }

    /// Nodes that are ready now: connected here and judged ready.
    pub fn ready_nodes(&self) -> BTreeSet<String> {
        self.liveness.ready_of(self.hub.connected())
    }

    /// Registers an agent connection: the agent gets Welcome and its full assignment set
    /// before any change, because both happen under the cache lock the watch applier takes.
    /// Returns the connection's id and the pace the agent was told.
    pub fn connect_agent(
        &self,
        node: &str,
        tx: Outbox,
        addr: Option<std::net::IpAddr>,
    ) -> (u64, u64) {
        let conn_id = self.id();
        // As for a node holding fenced work (it may, after a reconnection): its first
        // quiet heartbeat is told the quiet pace.
        let pace = self.pace(1, false);
        {
            let cache = self.cache();
            let _ = tx.send(ServerMsg::Welcome {
                version: motley_core::proto::PROTOCOL_VERSION,
                heartbeat_ms: pace,
                lease_ms: self.liveness.config.lease_ms,
                servers: self.ha.urls(),
            });
            let _ = tx.send(self.sync_msg(&cache, node));
            let _ = tx.send(ServerMsg::Catalog {
                catalog: (*self.catalog.current()).clone(),
            });
            let held = self.hub.insert(node, AgentConn { tx, conn_id, addr });
            self.metrics.agents_connected.set(held as i64);
        }
        self.liveness.heartbeat(node, pace);
        self.evaluate_health();
        self.plans.kick.notify_one();
        self.catalog.touch();
        (conn_id, pace)
    }

    /// How often agents should beat with the agents connected here and `joining` more
    /// (`failure::paced_heartbeat_ms`).
    /// `quiet`: for a node that asks for no acknowledgements (`failure::quiet_heartbeat_ms`).
    pub fn pace(&self, joining: usize, quiet: bool) -> u64 {
        let (cfg, nodes) = (&self.liveness.config, self.hub.count() + joining);
        if quiet {
            motley_core::failure::quiet_heartbeat_ms(cfg, nodes)
        } else {
            motley_core::failure::paced_heartbeat_ms(cfg, nodes)
        }
    }

    /// Forgets an agent connection (unless it was already replaced by a newer one).
    pub fn disconnect_agent(&self, node: &str, conn_id: u64) {
        let held = self.hub.remove(node, conn_id);
        self.metrics.agents_connected.set(held as i64);
        self.plans.kick.notify_one();
        self.catalog.touch();
    }
}

impl Shared {
    /// Every allocation of `node`, with the secrets of those that reference any.
    fn sync_msg(&self, cache: &Cache, node: &str) -> ServerMsg {
        let allocs = allocs_of(cache, node);
        let ring = read(&self.trust.keyring);
        let secrets = allocs
            .iter()
            .filter_map(|a| {
                crate::secrets::deliver(&ring, &cache.workloads, a).map(|d| (a.id.clone(), d))
            })
            .collect();
        ServerMsg::Sync { allocs, secrets }
    }
}

/// The allocations assigned to `node`.
pub fn allocs_of(cache: &Cache, node: &str) -> Vec<Allocation> {
    cache
        .allocs
        .values()
        .filter(|a| a.node == node)
        .cloned()
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use motley_store::embedded::Embedded;

    pub(crate) fn shared(dir: &std::path::Path) -> Arc<Shared> {
        let store: Arc<dyn Store> =
            Arc::new(Embedded::open(&dir.join("store.redb")).expect("open the store"));
        shared_on(dir, store)
    }

    /// [`shared`] on a store of the test's choosing.
    pub(crate) fn shared_on(dir: &std::path::Path, store: Arc<dyn Store>) -> Arc<Shared> {
        shared_with(dir, store, FailureConfig::default())
    }

    /// [`shared_on`] with failure detection of the test's choosing.
    pub(crate) fn shared_with(
        dir: &std::path::Path,
        store: Arc<dyn Store>,
        failure: FailureConfig,
    ) -> Arc<Shared> {
        let ca = motley_net::Ca::load_or_create(dir).expect("CA");
        let me = motley_core::api::ServerInfo {
            id: "s1".into(),
            name: "s1".into(),
            url: "https://127.0.0.1:1".into(),
            started_at: now_ms(),
            leader: false,
            leading_since: None,
            version: motley_core::version::THIS.into(),
        };
        let ha = crate::ha::Ha::new(me, None, Duration::from_secs(10), ca.cert_pem()).expect("ha");
        Shared::new(
            store,
            ca.cert_pem().to_string(),
            String::new(),
            failure,
            TaintPolicy::default(),
            ha,
            Guards {
                audit: crate::audit::Audit::new(None),
                keyring: crate::secrets::Keyring::load_or_create(&dir.join("secrets.key"))
                    .expect("keyring"),
            },
        )
    }

    fn job_alloc(id: &str, index: u32, state: &str) -> Allocation {
        serde_json::from_value(serde_json::json!({
            "id": id, "workload": "job/burst", "workload_uid": "u1", "generation": 1,
            "index": index, "node": "n1", "task": { "command": ["/bin/true"] },
            "restart": { "mode": "never", "max_restarts": null, "backoff": {} },
            "desired": "run", "state": state, "created_at": 1, "updated_at": 1,
        }))
        .expect("allocation")
    }

    async fn put(s: &Shared, a: &Allocation) -> u64 {
        let k = keys::alloc(&a.id);
        let v = serde_json::to_vec(a).expect("encode");
        let r = s.store.txn(Txn::new().put(k, v)).await.expect("put");
        s.wait_for_rev(r.revision).await;
        r.revision
    }

    async fn stored(s: &Shared, id: &str) -> Option<Allocation> {
        let kv = s.store.get(&keys::alloc(id)).await.expect("get")?;
        Some(serde_json::from_slice(&kv.value).expect("decode"))
    }

    /// A plan that marks an allocation lost and places its replacement commits both or
    /// neither: when the allocation changed after the plan was made (here: its job
    /// instance completed), the replacement is not created, or the instance would run
    /// twice.
    #[test]
    fn a_replacement_is_created_only_with_the_loss_it_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let s = shared(dir.path());
            s.start_cache().await.expect("cache");
            let planned_rev = put(&s, &job_alloc("burst-a", 0, "running")).await;
            let plan = |revs_at: u64| {
                let plan = reconcile::Plan {
                    lost: vec![("burst-a".into(), "node n1 is down".into())],
                    create: vec![job_alloc("burst-b", 0, "pending")],
                    ..Default::default()
                };
                (
                    plan,
                    HashMap::from_iter([(keys::alloc("burst-a"), revs_at)]),
                )
            };
            // The agent's report lands between planning and committing.
            let now_rev = put(&s, &job_alloc("burst-a", 0, "complete")).await;
            let (p, revs) = plan(planned_rev);
            s.commit(p, &revs, 0).await.expect("commit");
            assert_eq!(
                stored(&s, "burst-b").await,
                None,
                "replacement created alone"
            );
            let a = stored(&s, "burst-a").await.expect("burst-a");
            assert_eq!(a.state, AllocState::Complete);

            // Planned from the current revision: the loss and the replacement commit.
            let (p, revs) = plan(now_rev);
            s.commit(p, &revs, 0).await.expect("commit");
            let a = stored(&s, "burst-a").await.expect("burst-a");
            assert_eq!(a.state, AllocState::Lost);
            assert!(stored(&s, "burst-b").await.is_some(), "replacement created");
        });
    }
}
