//! One simulated cluster: the real servers (`motley_server::state::Shared`, its cache,
//! watch follower, controller, health loop, HA campaign and agent sessions) and the real
//! agents (`motley_agent::Agent` with the simulated driver), each in a [`Process`], on
//! the [`SimStore`] and the [`Net`], on tokio's paused clock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use motley_agent::drivers::simulated::Simulated;
use motley_agent::{Agent, AgentConfig};
use motley_core::api::ServerInfo;
use motley_rt::Process;
use motley_server::auth::Role;
use motley_server::state::{Guards, Shared};
use motley_server::{audit, ha, secrets};
use motley_store::Leases;

use crate::net::{Endpoint, Net};
use crate::rng::Rng;
use crate::store::SimStore;

/// How long a simulated job instance runs.
pub const JOB_TIME: Duration = Duration::from_secs(2);

/// A server slot: its URL, and its process and state while up.
pub struct SimServer {
    /// `https://127.0.0.N:9`: never dialed for real (the network is simulated).
    pub url: String,
    /// The running process, if up.
    pub up: Option<Endpoint>,
    /// How many times it has started.
    pub starts: u32,
}

/// An agent slot: its node, its driver (the node's "processes", which outlive the
/// agent process but not a power cut) and its process while up.
pub struct SimAgent {
    /// Node name.
    pub name: String,
    /// Its credential.
    pub token: String,
    /// The agent's directory.
    pub dir: PathBuf,
    /// The node's tasks.
    pub driver: Simulated,
    /// The running agent and its process, if up.
    pub up: Option<(Agent, Arc<Process>)>,
    /// Clock skew of this node (ms).
    pub skew_ms: i64,
    /// Powered off for good: it never comes back (its work must move).
    pub gone: bool,
}

/// The cluster.
pub struct World {
    /// The seed's generator.
    pub rng: Rng,
    /// The store (outlives servers).
    pub store: SimStore,
    /// The network.
    pub net: Net,
    /// Servers.
    pub servers: Vec<SimServer>,
    /// Agents.
    pub agents: Vec<SimAgent>,
    /// The admin token.
    pub admin: String,
    /// Allocations whose records a power cut of the store took back (their completion
    /// may not have been on the disk: such a job instance may run again).
    pub cut: std::collections::BTreeSet<String>,
    /// Failure detection of every server: in half the seeds a heartbeat budget of one or
    /// two a second, so agents are paced and re-paced as they come and go.
    pub failure: motley_core::failure::FailureConfig,
    ca_pem: String,
    ca_hash: String,
    keyfile: PathBuf,
    /// Keeps the directories alive.
    _dir: tempfile::TempDir,
}

impl World {
    /// Builds the cluster of this seed's world and starts every process.
    pub async fn build(
        rng: Rng,
        n_servers: usize,
        n_agents: usize,
        latency: Duration,
    ) -> anyhow::Result<World> {
        let dir = tempfile::tempdir()?;
        let ca = motley_net::Ca::load_or_create(&dir.path().join("ca"))?;
        let store = SimStore::new(rng.fork());
        let net = Net::new(rng.fork(), latency);
        let mut failure = motley_core::failure::FailureConfig::default();
        if rng.chance(0.5) {
            failure.heartbeat_budget = 1 + rng.below(2) as u32;
        }
        let mut world = World {
            failure,
            servers: (0..n_servers)
                .map(|i| SimServer {
                    url: format!("https://127.0.0.{}:9", i + 1),
                    up: None,
                    starts: 0,
                })
                .collect(),
            agents: Vec::new(),
            admin: String::new(),
            cut: Default::default(),
            ca_pem: ca.cert_pem().to_string(),
            ca_hash: ca.hash()?,
            keyfile: dir.path().join("secrets.key"),
            store,
            net,
            rng,
            _dir: dir,
        };
        for i in 0..n_servers {
            world.start_server(i).await?;
        }
        let first = world.servers[0]
            .up
            .as_ref()
            .map(|e| e.shared.clone())
            .ok_or_else(|| anyhow::anyhow!("the first server did not start"))?;
        world.admin = first.create_token(Role::Admin, None, "simulator").await?.1;
        for i in 0..n_agents {
            let name = format!("n{i}");
            let token = first
                .create_token(Role::Node { node: name.clone() }, None, "simulator")
                .await?
                .1;
            let dir = world._dir.path().join("agents").join(&name);
            world.agents.push(SimAgent {
                name,
                token,
                dir,
                driver: Simulated::new(JOB_TIME),
                up: None,
                skew_ms: 0,
                gone: false,
            });
        }
        // Every server's cache must know the node tokens before agents dial.
        let rev = world.store.revision_now();
        for s in world.servers.iter().filter_map(|s| s.up.as_ref()) {
            let mut seen = s.shared.cache_rev.subscribe();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|r| *r >= rev)).await;
        }
        for i in 0..n_agents {
            world.start_agent(i).await?;
        }
        Ok(world)
    }

    /// Starts server `i` (a new process, a new id, the same store and URL).
    pub async fn start_server(&mut self, i: usize) -> anyhow::Result<()> {
        let several = self.servers.len() > 1;
        let slot = &mut self.servers[i];
        slot.starts += 1;
        let process = Process::new(format!("server s{i}"));
        let me = ServerInfo {
            id: format!("s{i}-{}", slot.starts),
            name: format!("s{i}"),
            url: slot.url.clone(),
            started_at: motley_rt::now_ms(),
            leader: false,
            leading_since: None,
            version: motley_core::version::THIS.into(),
        };
        let leases = several.then(|| Arc::new(self.store.clone()) as Arc<dyn Leases>);
        let ha = ha::Ha::new(me, leases, ha::DEFAULT_LEASE, &self.ca_pem)?;
        let shared = Shared::new(
            Arc::new(self.store.clone()),
            self.ca_pem.clone(),
            self.ca_hash.clone(),
            self.failure,
            motley_core::hw::TaintPolicy::default(),
            ha,
            Guards {
                audit: audit::Audit::new(None),
                keyring: secrets::Keyring::load_or_create(&self.keyfile)?,
            },
        );
        // Every pass over the workloads not settled is checked against a full pass.
        shared
            .plans
            .check_full
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let s2 = shared.clone();
        let started = process
            .enter(async move {
                s2.start_cache().await?;
                motley_server::state::leading::start(&s2).await?;
                motley_rt::spawn(s2.clone().run_controller());
                motley_rt::spawn(s2.clone().run_health());
                Ok::<(), motley_store::StoreError>(())
            })
            .await;
        if let Err(e) = started {
            process.kill();
            anyhow::bail!("server s{i} did not start: {e}");
        }
        let ep = Endpoint { shared, process };
        self.net.serve(&slot.url, ep.clone());
        slot.up = Some(ep);
        Ok(())
    }

    /// Kills server `i` (SIGKILL: its tasks end, its connections reset).
    pub fn kill_server(&mut self, i: usize) {
        let slot = &mut self.servers[i];
        if let Some(ep) = slot.up.take() {
            self.net.unserve(&slot.url);
            ep.process.kill();
        }
    }

    /// Starts agent `i` (a new process, the same directory and driver).
    pub async fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let servers: Vec<String> = self.servers.iter().map(|s| s.url.clone()).collect();
        let a = &mut self.agents[i];
        let process = Process::new(format!("agent {}", a.name));
        process.set_skew(a.skew_ms);
        let mut facts = motley_agent::facts::FactsConfig::host(a.dir.clone());
        facts.cpu_score = Some(1000);
        facts.interval = Duration::from_secs(3600);
        let cfg = AgentConfig {
            mesh: None,
            advertise: None,
            name: a.name.clone(),
            servers,
            token: a.token.clone(),
            ca_pem: self.ca_pem.clone(),
            dir: a.dir.clone(),
            facts,
            labels: BTreeMap::new(),
            task_user: motley_agent::driver::TaskUser {
                switch_to: None,
                allow_root: false,
            },
            driver: Arc::new(a.driver.clone()),
            dialer: Some(self.net.dialer(&a.name)),
        };
        let agent = process.enter(Agent::start(cfg)).await;
        match agent {
            Ok(agent) => {
                a.up = Some((agent, process));
                Ok(())
            }
            Err(e) => {
                process.kill();
                anyhow::bail!("agent {} did not start: {e}", a.name)
            }
        }
    }

    /// Kills agent `i`'s process; with `power`, the node loses power and its tasks too.
    pub fn kill_agent(&mut self, i: usize, power: bool) {
        let a = &mut self.agents[i];
        if let Some((_, p)) = a.up.take() {
            p.kill();
        }
        if power {
            a.driver.power_off();
        } else {
            // Fenced tasks die with their agent (the exec driver's PR_SET_PDEATHSIG).
            a.driver.agent_died();
        }
    }

    /// The server that leads now, if one does (and is not paused).
    pub fn leader(&self) -> Option<&Endpoint> {
        self.servers
            .iter()
            .filter_map(|s| s.up.as_ref())
            .find(|e| e.shared.ha.leading().is_some() && !e.process.paused())
    }
}

/// `POST /v1/apply` through the real router of a server, in that server's process (so a
/// paused or killed server answers as one would: late, or never). Returns the HTTP
/// status, or `None` when no answer came within the client's deadline.
pub async fn apply(server: &Endpoint, admin: &str, yaml: &str) -> Option<u16> {
    let set = motley_core::api::ManifestSet {
        files: vec![motley_core::api::ManifestFile {
            name: "sim.yaml".into(),
            content: yaml.to_string(),
        }],
        dry_run: false,
        inputs: Vec::new(),
    };
    post(server, admin, "/v1/apply", serde_json::to_vec(&set).ok()?).await
}

/// `POST path` with a JSON body through the real router of a server, in its process.
pub async fn post(server: &Endpoint, admin: &str, path: &str, body: Vec<u8>) -> Option<u16> {
    use tower::ServiceExt;
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .ok()?;
    let router = motley_server::api::router(server.shared.clone());
    let call = server.process.spawn(async move {
        let resp = router.oneshot(req).await.ok()?;
        let status = resp.status().as_u16();
        // The answer is complete only once its body is.
        axum::body::to_bytes(resp.into_body(), 1 << 20).await.ok()?;
        Some(status)
    });
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(status)) => status,
        _ => None,
    }
}
