//! One seed: draw a world and a fault schedule, run the real code under them, check the
//! invariants at every step, heal everything, and require convergence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::net::Endpoint;
use crate::rng::Rng;
use crate::verdict::{check_acknowledged, check_reruns, converged, fingerprint, recorded_allocs};
use crate::world::World;

/// Every fault the simulator injects.
pub const FAULTS: &[&str] = &[
    "power_off",
    "agent_crash",
    "server_crash",
    "agent_pause",
    "server_pause",
    "partition",
    "connection_reset",
    "store_outage",
    "slow_disk",
    "clock_skew",
    "store_power_cut",
];

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long faults are injected (virtual time).
    pub faults_for: Duration,
    /// How long the cluster gets after the last fault heals to converge.
    pub settle: Duration,
    /// Check interval (one step).
    pub step: Duration,
    /// Let agent pauses last past the lease (on by default). A paused agent stops
    /// nothing: its node's fence guard must (`motley_core::fence`). Off (pauses under
    /// 4 s, shorter than the lease) replays seeds found before the guard existed.
    pub long_agent_pauses: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            faults_for: Duration::from_secs(40),
            settle: Duration::from_secs(90),
            step: Duration::from_millis(100),
            long_agent_pauses: true,
        }
    }
}

/// What one seed did and found.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Servers and agents of its world.
    pub servers: usize,
    /// Agents.
    pub agents: usize,
    /// Invariant violations, each described.
    pub violations: Vec<String>,
    /// Checks made (one per step).
    pub steps: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Virtual milliseconds simulated.
    pub sim_ms: u64,
    /// Applies acknowledged (200) and not (refused, failed or unanswered).
    pub applies_acked: u64,
    /// Applies with another answer or none.
    pub applies_other: u64,
    /// Secret deliveries checked (allocations holding secrets, summed over steps).
    pub secrets_checked: u64,
    /// Keys whose records power cuts of the store took back (lazy transactions not on
    /// the disk yet).
    pub cut_keys: u64,
    /// Runs of periodic jobs the store created (each checked to be the only one for its
    /// due time).
    pub periodic_runs: u64,
    /// Whether the seed's servers pace agents (a heartbeat budget of one or two a second),
    /// and how many new paces agents were told.
    pub paced: bool,
    /// New heartbeat paces agents were told.
    pub paces_told: u64,
    /// A hash of the run's outcome: the store's final revision, every allocation as
    /// stored, the workloads' names, and the tasks each node ran. Two runs of one seed give the same (the
    /// replay is exact: `tests/seeds.rs`).
    pub fingerprint: u64,
}

impl SeedReport {
    fn new(seed: u64, servers: usize, agents: usize) -> SeedReport {
        SeedReport {
            seed,
            servers,
            agents,
            violations: Vec::new(),
            steps: 0,
            faults: BTreeMap::new(),
            sim_ms: 0,
            applies_acked: 0,
            applies_other: 0,
            secrets_checked: 0,
            cut_keys: 0,
            periodic_runs: 0,
            paced: false,
            paces_told: 0,
            fingerprint: 0,
        }
    }
}

/// A time after which an agent is no longer excused from heartbeating.
const SLACK: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(crate) struct ApplyRecord {
    pub(crate) name: String,
    pub(crate) value: u32,
    /// The HTTP status, if an answer came.
    pub(crate) status: Option<u16>,
    /// The client is done waiting (answered, or gave up).
    pub(crate) finished: bool,
    /// When it was sent and when it was done.
    pub(crate) sent: Instant,
    pub(crate) done: Option<Instant>,
}

enum Heal {
    RestartAgent(usize),
    RestartServer(usize),
    ResumeAgent(usize),
    ResumeServer(usize),
    Unpartition(usize),
    StoreBack,
    DiskFast,
}

/// Most wall time one seed may take. Virtual time only moves when every task waits, so a
/// task that never yields (a livelock) stops the clock: that is reported as a violation.
pub const WALL_LIMIT: Duration = Duration::from_secs(60);

/// Runs seed `seed` in a fresh runtime on tokio's paused clock, on a thread of its own.
pub fn run_seed(seed: u64, opts: &Options) -> anyhow::Result<SeedReport> {
    let (tx, rx) = std::sync::mpsc::channel();
    let opts2 = opts.clone();
    std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_all().start_paused(true);
            // Which ready branch of a `select!` goes first follows the seed too.
            #[cfg(tokio_unstable)]
            builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
            let r = builder
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run(seed, &opts2)));
            let _ = tx.send(r);
        })?;
    match rx.recv_timeout(WALL_LIMIT) {
        Ok(r) => r,
        Err(_) => {
            let mut r = SeedReport::new(seed, 0, 0);
            r.violations.push(format!(
                "no progress: the seed did not finish within {} s of wall time (a task that never yields stops the virtual clock: a livelock)",
                WALL_LIMIT.as_secs()
            ));
            Ok(r)
        }
    }
}

async fn run(seed: u64, opts: &Options) -> anyhow::Result<SeedReport> {
    // The clock, ids, jitter and blocking work of every process follow the seed.
    motley_rt::simulate(1_800_000_000_000, seed);
    let rng = Rng::new(seed);
    // Swarm testing: the seed also draws the world and which faults it suffers.
    let n_servers = 1 + rng.below(3) as usize;
    let n_agents = 2 + rng.below(3) as usize;
    let latency = rng.between(Duration::from_millis(1), Duration::from_millis(40));
    let enabled: Vec<&'static str> = FAULTS.iter().copied().filter(|_| rng.chance(0.5)).collect();
    let fault_every = rng.between(Duration::from_secs(2), Duration::from_secs(8));
    let mut world = World::build(rng.fork(), n_servers, n_agents, latency).await?;
    if rng.chance(0.5) {
        world.store.faults().watch_lag = rng.between(Duration::ZERO, Duration::from_millis(300));
    }
    let mut report = SeedReport::new(seed, n_servers, n_agents);
    let start = Instant::now();
    let history: Arc<Mutex<Vec<ApplyRecord>>> = Arc::default();
    let mut heals: Vec<(Instant, Heal)> = Vec::new();
    let mut impaired: Vec<Instant> = vec![start + SLACK; n_agents];
    let mut next_fault = start + fault_every;
    let mut next_op = start;
    let mut jobs = 0u32;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let faults_end = start + opts.faults_for;
    // An experiment in half the seeds, drawn from a generator of its own (`lab`).
    let lab_rng = Rng::new(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut experiment_at = lab_rng
        .chance(0.5)
        .then(|| start + lab_rng.between(Duration::from_secs(3), Duration::from_secs(20)))
        .filter(|at| *at < faults_end);
    let periodic_rng = Rng::new(seed ^ 0xC2B2_AE3D_27D4_EB4F);
    let mut periodic_at = crate::periodic::when(&periodic_rng, start, faults_end);
    let configs_rng = Rng::new(seed ^ 0x1656_67B1_9E37_79F9);
    let mut configs_at = crate::configs::schedule(&configs_rng, start, faults_end).into_iter();
    let (mut config_next, mut config_n) = (configs_at.next(), 0);
    let deadline = faults_end + opts.settle;
    let mut healed = false;
    loop {
        let now = Instant::now();
        // The operator: applies through whichever server it finds leading.
        if now >= next_op && now < faults_end {
            next_op = now + rng.between(Duration::from_secs(1), Duration::from_secs(5));
            let op = workload(&rng, &mut jobs);
            submit(&world, &rng, &history, op);
        }
        // A periodic job in half the seeds, from a generator of its own (`periodic`).
        if let Some(at) = periodic_at
            && now >= at
        {
            periodic_at = None;
            submit(
                &world,
                &periodic_rng,
                &history,
                crate::periodic::job(&periodic_rng),
            );
        }
        // A Config and its reader in half the seeds, the Config changed a few times.
        if config_next.is_some_and(|at| now >= at) {
            config_next = configs_at.next();
            config_n += 1;
            submit(
                &world,
                &configs_rng,
                &history,
                crate::configs::apply(config_n),
            );
        }
        if let Some(at) = experiment_at
            && now >= at
        {
            experiment_at = None;
            let (yaml, span, touched) = crate::lab::experiment(&world, &lab_rng, 1);
            if let Some(ep) = target(&world, &lab_rng) {
                for i in touched {
                    // Its own start waits for a tick of the run loop: a few seconds.
                    impaired[i] = impaired[i].max(now + span + Duration::from_secs(5) + SLACK);
                }
                *report.faults.entry("experiment").or_default() += 1;
                let body = serde_json::to_vec(&motley_core::api::ExperimentRequest {
                    file: motley_core::api::ManifestFile {
                        name: "sim.yaml".into(),
                        content: yaml,
                    },
                    dry_run: false,
                })?;
                let admin = world.admin.clone();
                tokio::spawn(async move {
                    crate::world::post(&ep, &admin, "/v1/experiments", body).await
                });
            }
        }
        // Faults.
        if now >= next_fault && now < faults_end && !enabled.is_empty() {
            next_fault = now + rng.between(fault_every / 2, fault_every * 3 / 2);
            if let Some(kind) = rng.pick(&enabled).copied() {
                inject(
                    kind,
                    &mut world,
                    &rng,
                    &mut heals,
                    &mut impaired,
                    now,
                    opts.long_agent_pauses,
                    &mut report,
                )
                .await;
            }
        }
        // Heals that are due (all of them once the fault phase is over).
        if now >= faults_end && !healed {
            healed = true;
            for h in &mut heals {
                h.0 = now;
            }
            world.store.faults().watch_lag = Duration::ZERO;
        }
        let due: Vec<Heal> = {
            let (due, later): (Vec<_>, Vec<_>) = heals.drain(..).partition(|(t, _)| *t <= now);
            heals = later;
            due.into_iter().map(|(_, h)| h).collect()
        };
        for h in due {
            heal(h, &mut world, &mut heals, &mut impaired, now).await;
        }
        // Invariants, every step.
        report.steps += 1;
        let t = now.duration_since(start).as_millis() as u64;
        if t % 1000 < opts.step.as_millis() as u64 {
            tracing::debug!("t={t} ms");
        }
        check_step(&world, &impaired, now, t, &mut seen, &mut report);
        if healed && heals.is_empty() {
            let pending = history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|r| !r.finished);
            // An experiment's faults end by themselves (a late one, its POST held up by
            // a paused server, may still run): waited for, like convergence.
            let held = world
                .agents
                .iter()
                .filter_map(|a| a.up.as_ref())
                .any(|(agent, _)| agent.faults_held() > 0);
            if !pending && !held && converged(&world).is_ok() {
                break;
            }
            if now >= deadline {
                let why = converged(&world).err().unwrap_or_default();
                report.violations.push(format!(
                    "no convergence {} s after the last fault healed: {why}",
                    opts.settle.as_secs()
                ));
                break;
            }
        }
        tokio::time::sleep(opts.step).await;
    }
    let history = history.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report.applies_acked = history.iter().filter(|r| r.status == Some(200)).count() as u64;
    report.applies_other = history.len() as u64 - report.applies_acked;
    check_acknowledged(&world, &history, &mut report);
    check_reruns(&world, &mut report);
    crate::periodic::check_runs(&world, &mut report);
    // Every experiment fault ended on its agent, whatever happened to the run.
    for a in &world.agents {
        if let Some((agent, _)) = &a.up
            && agent.faults_held() > 0
        {
            report.violations.push(format!(
                "{} still holds {} experiment fault(s) at the end",
                a.name,
                agent.faults_held()
            ));
        }
    }
    report.sim_ms = Instant::now().duration_since(start).as_millis() as u64;
    report.fingerprint = fingerprint(&world, report.steps);
    report.paced = world.failure.heartbeat_budget
        != motley_core::failure::FailureConfig::default().heartbeat_budget;
    report.paces_told = world.net.paces_told();
    for s in 0..world.servers.len() {
        world.kill_server(s);
    }
    for a in 0..world.agents.len() {
        world.kill_agent(a, true);
    }
    Ok(report)
}

/// The operator's next change: scale or update a fenced service (in namespace dev),
/// scale or update a
/// replaced one with a service port (a new version is a rolling update:
/// `reconcile_roll.rs`; its replicas are catalog endpoints, drained before they stop:
/// `motley_core::supervisor`), or add a job.
fn workload(rng: &Rng, jobs: &mut u32) -> (String, String, u32) {
    let version = rng.below(2);
    let task = format!(
        "task: {{ command: [\"sim\", \"v{version}\"], resources: {{ cpu: 100m, memory: 16Mi }} }}"
    );
    match rng.below(3) {
        0 => {
            let r = rng.below(4) as u32;
            // With a secret its replicas get as a variable: delivered to their nodes only.
            // In namespace dev, with a quota it fits exactly (a lower one would refuse
            // its 3 replicas and make the fence mutants rarer: measured, 2–9× more seeds).
            let with_secret = task.replace(
                "resources:",
                "secrets: [{ secret: web-key, key: key, env: KEY }], resources:",
            );
            (
                "dev/service/web".into(),
                format!(
                    "kind: Namespace\nname: dev\nquota: {{ allocations: 3 }}\n---\nkind: Secret\nname: web-key\nnamespace: dev\ndata: {{ key: s3cret }}\n---\nkind: Service\nname: web\nnamespace: dev\nreplicas: {r}\non_node_loss: fence\n{with_secret}\n"
                ),
                r,
            )
        }
        1 => {
            let r = rng.below(4) as u32;
            (
                "service/cache".into(),
                format!(
                    "kind: Service\nname: cache\nreplicas: {r}\non_node_loss: replace\nports: [{{ name: http, service_port: 80 }}]\n{task}\n"
                ),
                r,
            )
        }
        _ => {
            *jobs += 1;
            let c = 1 + rng.below(6) as u32;
            let name = format!("batch-{}", *jobs % 3);
            (
                format!("job/{name}"),
                format!("kind: Job\nname: {name}\ncompletions: {c}\nparallelism: 2\n{task}\n"),
                c,
            )
        }
    }
}

/// Sends `(name, yaml, value)` as an apply through a server `rng` picks, recorded in
/// `history` with its answer.
fn submit(
    world: &World,
    rng: &Rng,
    history: &Arc<Mutex<Vec<ApplyRecord>>>,
    (name, yaml, value): (String, String, u32),
) {
    let Some(ep) = target(world, rng) else {
        return;
    };
    let h = history.clone();
    let admin = world.admin.clone();
    let idx = {
        let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
        h.push(ApplyRecord {
            name,
            value,
            status: None,
            finished: false,
            sent: Instant::now(),
            done: None,
        });
        h.len() - 1
    };
    tokio::spawn(async move {
        let status = crate::world::apply(&ep, &admin, &yaml).await;
        let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
        h[idx].status = status;
        h[idx].finished = true;
        h[idx].done = Some(Instant::now());
    });
}

/// The server a client reaches: the leader if it knows one, else any that is up.
fn target(world: &World, rng: &Rng) -> Option<Endpoint> {
    if let Some(l) = world.leader().filter(|_| rng.chance(0.8)) {
        return Some(l.clone());
    }
    let up: Vec<&Endpoint> = world.servers.iter().filter_map(|s| s.up.as_ref()).collect();
    rng.pick(&up).map(|e| (*e).clone())
}

#[allow(clippy::too_many_arguments)]
async fn inject(
    kind: &'static str,
    world: &mut World,
    rng: &Rng,
    heals: &mut Vec<(Instant, Heal)>,
    impaired: &mut [Instant],
    now: Instant,
    long_pauses: bool,
    report: &mut SeedReport,
) {
    let n_agents = world.agents.len() as u64;
    let n_servers = world.servers.len() as u64;
    let a = rng.below(n_agents) as usize;
    let s = rng.below(n_servers) as usize;
    // Most faults are short; one in five lasts long enough for the node-loss paths
    // (declared down, fenced replacement after lease + grace + margin) to run.
    let lasting = if rng.chance(0.2) {
        rng.between(Duration::from_secs(12), Duration::from_secs(40))
    } else {
        rng.between(Duration::from_millis(200), Duration::from_secs(12))
    };
    let until = now + lasting;
    let mut excuse = |which: Option<usize>, until: Instant| match which {
        Some(i) => impaired[i] = impaired[i].max(until + SLACK),
        None => impaired
            .iter_mut()
            .for_each(|t| *t = (*t).max(until + SLACK)),
    };
    let done = match kind {
        "power_off" | "agent_crash" if world.agents[a].up.is_some() => {
            world.kill_agent(a, kind == "power_off");
            // Now and then a node never comes back (with three or more, and one at most):
            // its work must move for the cluster to converge.
            let others_stay = world.agents.iter().filter(|x| !x.gone).count() >= 3;
            if kind == "power_off"
                && others_stay
                && !world.agents.iter().any(|x| x.gone)
                && rng.chance(0.3)
            {
                world.agents[a].gone = true;
                excuse(Some(a), now + Duration::from_secs(3600));
            } else {
                heals.push((until, Heal::RestartAgent(a)));
                excuse(Some(a), until);
            }
            true
        }
        "server_crash" if world.servers[s].up.is_some() => {
            world.kill_server(s);
            heals.push((until, Heal::RestartServer(s)));
            excuse(None, until + ha_settle());
            true
        }
        "agent_pause" => match &world.agents[a].up {
            Some((_, p)) if !p.paused() => {
                // Up to past the lease unless asked: see `Options::long_agent_pauses`.
                let until = if long_pauses {
                    until
                } else {
                    now + lasting.min(Duration::from_secs(4))
                };
                p.pause();
                heals.push((until, Heal::ResumeAgent(a)));
                excuse(Some(a), until);
                true
            }
            _ => false,
        },
        "server_pause" => match &world.servers[s].up {
            Some(ep) if !ep.process.paused() => {
                ep.process.pause();
                heals.push((until, Heal::ResumeServer(s)));
                excuse(None, until + ha_settle());
                true
            }
            _ => false,
        },
        "partition" if !world.net.partitioned(&world.agents[a].name) => {
            world.net.partition(&world.agents[a].name, true);
            heals.push((until, Heal::Unpartition(a)));
            excuse(Some(a), until);
            true
        }
        "connection_reset" => {
            world.net.reset(&world.agents[a].name);
            excuse(Some(a), now);
            true
        }
        "store_power_cut" => {
            // The store's machine loses power: every server goes down with it (a
            // server on etcd would not, but the rule under test is the embedded
            // store's), and lazy transactions not on the disk yet are taken.
            for i in 0..world.servers.len() {
                if world.servers[i].up.is_some() {
                    world.kill_server(i);
                    heals.push((until, Heal::RestartServer(i)));
                }
            }
            let taken = world.store.power_cut();
            report.cut_keys += taken.len() as u64;
            world.cut.extend(
                taken
                    .iter()
                    .filter_map(|k| k.strip_prefix(motley_server::keys::ALLOCS))
                    .map(str::to_string),
            );
            excuse(None, until + ha_settle());
            true
        }
        "store_outage" => {
            world.store.faults().unavailable_until = Some(until);
            heals.push((until, Heal::StoreBack));
            excuse(None, until + ha_settle());
            true
        }
        "slow_disk" => {
            world.store.faults().commit_delay =
                rng.between(Duration::from_millis(10), Duration::from_millis(500));
            heals.push((until, Heal::DiskFast));
            true
        }
        "clock_skew" => {
            let skew = rng.below(4_001) as i64 - 2_000;
            world.agents[a].skew_ms = skew;
            if let Some((_, p)) = &world.agents[a].up {
                p.set_skew(skew);
            }
            true
        }
        _ => false,
    };
    if done {
        tracing::debug!("fault {kind}: agent n{a} / server s{s}, lasting {lasting:?}");
        *report.faults.entry(kind).or_default() += 1;
    }
}

/// How long a new leader may take: the old leader's lease runs out, then a campaign.
fn ha_settle() -> Duration {
    motley_server::ha::DEFAULT_LEASE * 2
}

async fn heal(
    h: Heal,
    world: &mut World,
    heals: &mut Vec<(Instant, Heal)>,
    impaired: &mut [Instant],
    now: Instant,
) {
    let retry = now + Duration::from_secs(1);
    match h {
        Heal::RestartAgent(i) => {
            if world.agents[i].up.is_none() && world.start_agent(i).await.is_err() {
                heals.push((retry, Heal::RestartAgent(i)));
            }
            impaired[i] = impaired[i].max(now + SLACK);
        }
        Heal::RestartServer(i) => {
            if world.servers[i].up.is_none() && world.start_server(i).await.is_err() {
                heals.push((retry, Heal::RestartServer(i)));
            }
            impaired
                .iter_mut()
                .for_each(|t| *t = (*t).max(now + SLACK + ha_settle()));
        }
        Heal::ResumeAgent(i) => {
            if let Some((_, p)) = &world.agents[i].up {
                p.resume();
            }
            impaired[i] = impaired[i].max(now + SLACK);
        }
        Heal::ResumeServer(i) => {
            if let Some(ep) = &world.servers[i].up {
                ep.process.resume();
            }
            impaired
                .iter_mut()
                .for_each(|t| *t = (*t).max(now + SLACK + ha_settle()));
        }
        Heal::Unpartition(i) => {
            world.net.partition(&world.agents[i].name, false);
            impaired[i] = impaired[i].max(now + SLACK);
        }
        Heal::StoreBack => {
            world.store.faults().unavailable_until = None;
            impaired
                .iter_mut()
                .for_each(|t| *t = (*t).max(now + SLACK + ha_settle()));
        }
        Heal::DiskFast => world.store.faults().commit_delay = Duration::ZERO,
    }
}

/// The invariants that must hold at every instant.
fn check_step(
    world: &World,
    impaired: &[Instant],
    now: Instant,
    t: u64,
    seen: &mut BTreeSet<String>,
    report: &mut SeedReport,
) {
    let mut flag = |why: String, report: &mut SeedReport| {
        // Report each distinct violation once, at the first step it shows.
        let key = why.split(" at t=").next().unwrap_or_default().to_string();
        if seen.insert(key) {
            report.violations.push(why);
        }
    };
    // Never two copies of a fenced allocation (the nodes' ground truth, not the store's).
    let mut fenced: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
    let mut done: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
    for a in &world.agents {
        for task in a.driver.tasks() {
            if task.fenced {
                fenced
                    .entry((
                        format!("{} ({})", task.workload, task.workload_uid),
                        task.index,
                    ))
                    .or_default()
                    .push(format!("{} on {}", task.alloc, a.name));
            }
        }
        for task in a.driver.completed() {
            done.entry((
                format!("{} ({})", task.workload, task.workload_uid),
                task.index,
            ))
            .or_default()
            .push(task.alloc);
        }
    }
    for ((w, i), copies) in fenced {
        if copies.len() > 1 {
            flag(
                format!(
                    "two copies of fenced {w} #{i}: {} at t={t} ms",
                    copies.join(", ")
                ),
                report,
            );
        }
    }
    // Every job instance completes at most once, unless it ran again after a recorded
    // failure: an instance whose completion the store never recorded (its node lost
    // power, or was declared lost, before the report was committed) may run again; two
    // allocations of one instance both recorded complete may not.
    let recorded = recorded_allocs(world);
    for ((w, i), allocs) in done {
        let distinct: BTreeSet<&String> = allocs.iter().collect();
        let complete: Vec<&&String> = distinct
            .iter()
            .filter(|a| recorded.get(a.as_str()).is_some_and(|r| r.0))
            .collect();
        if complete.len() > 1 {
            flag(
                format!(
                    "{w} #{i} completed by {} allocations, each recorded complete ({}) at t={t} ms",
                    complete.len(),
                    complete
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                report,
            );
        }
    }

    // No secret delivered to a node that does not run its allocation.
    for a in &world.agents {
        let Some((agent, _)) = &a.up else { continue };
        for id in agent.secrets_held() {
            report.secrets_checked += 1;
            if let Some((_, _, node)) = recorded.get(&id)
                && *node != a.name
            {
                flag(
                    format!(
                        "the secrets of {id} (on {node}) were delivered to {} at t={t} ms",
                        a.name
                    ),
                    report,
                );
            }
        }
    }
    // A pass over the workloads not settled plans what a full pass would.
    for s in world.servers.iter().filter_map(|s| s.up.as_ref()) {
        let difference = s
            .shared
            .plans
            .difference
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(d) = difference {
            flag(format!("{d} at t={t} ms"), report);
        }
    }
    // No node declared down while it is connected and heartbeating.
    if let Some(l) = world.leader() {
        let down = l.shared.liveness.down_nodes();
        for (i, a) in world.agents.iter().enumerate() {
            let connected =
                a.up.as_ref()
                    .is_some_and(|(ag, p)| ag.is_connected() && !p.paused());
            if connected && now > impaired[i] && down.contains_key(&a.name) {
                flag(
                    format!(
                        "node {} declared down while connected and heartbeating at t={t} ms",
                        a.name
                    ),
                    report,
                );
            }
        }
    }
}
