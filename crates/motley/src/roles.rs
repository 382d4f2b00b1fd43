//! `motley server` and `motley agent`: the two halves of `motley up`, as separate
//! processes on separate machines.

use std::path::{Path, PathBuf};

use anyhow::Context;
use motley_agent::{Agent, AgentConfig};
use motley_cli::args::{AgentArgs, ServerArgs};
use motley_server::{Server, ServerConfig};

use crate::up::{host_name, shutdown_signal};

fn duration(flag: &str, v: &str) -> anyhow::Result<u64> {
    Ok(motley_core::quantity::Duration::parse(v)
        .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?
        .as_millis())
}

/// Failure detection settings from flags.
/// Reads the etcd TLS files named by the flags.
pub fn etcd_tls(a: &motley_cli::args::EtcdArgs) -> anyhow::Result<motley_store::etcd::EtcdTls> {
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(motley_store::etcd::EtcdTls {
        ca_pem: a.etcd_ca.as_deref().map(read).transpose()?,
        client: match (&a.etcd_cert, &a.etcd_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        },
    })
}

/// `motley snapshot restore FILE --data-dir DIR | --datastore etcd://…`: verifies the
/// whole file, then writes it into an empty store that no server is using.
pub async fn snapshot_restore(
    file: &std::path::Path,
    data_dir: Option<&std::path::Path>,
    datastore: Option<&str>,
    etcd: &motley_cli::args::EtcdArgs,
) -> anyhow::Result<i32> {
    use motley_store::Store;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let snap = motley_store::snapshot::Snapshot::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was restored", file.display()))?;
    let store: std::sync::Arc<dyn Store> = match (data_dir, datastore) {
        (Some(dir), None) => {
            let server = dir.join("server");
            std::fs::create_dir_all(&server)
                .with_context(|| format!("creating {}", server.display()))?;
            let path = server.join("store.redb");
            std::sync::Arc::new(motley_store::embedded::Embedded::open(&path).with_context(
                || format!("opening {} (is a server running on it?)", path.display()),
            )?)
        }
        (None, Some(url)) => std::sync::Arc::new(
            motley_store::etcd::Etcd::connect(url, etcd_tls(etcd)?)
                .await
                .with_context(|| format!("connecting to {url}"))?,
        ),
        _ => anyhow::bail!("give --data-dir DIR or --datastore etcd://HOST:PORT"),
    };
    let n = snap
        .restore(&*store, motley_server::keys::PREFIX)
        .await
        .context("restoring")?;
    println!(
        "restored {n} objects from revision {} of {}",
        snap.revision,
        file.display()
    );
    Ok(0)
}

pub fn failure_config(
    a: &motley_cli::args::FailureArgs,
) -> anyhow::Result<motley_core::failure::FailureConfig> {
    let cfg = motley_core::failure::FailureConfig {
        heartbeat_ms: duration("heartbeat-interval", &a.heartbeat_interval)?.max(50),
        suspect_phi: a.suspect_phi,
        down_phi: a.down_phi,
        min_down_ms: duration("min-down", &a.min_down)?,
        lease_ms: duration("lease", &a.lease)?,
        fence_margin_ms: duration("fence-margin", &a.fence_margin)?,
        heartbeat_budget: a.max_heartbeats_per_second,
        ..Default::default()
    };
    anyhow::ensure!(
        cfg.suspect_phi > 0.0 && cfg.down_phi >= cfg.suspect_phi,
        "--down-phi must be at least --suspect-phi, both above 0"
    );
    anyhow::ensure!(
        cfg.min_down_ms >= cfg.heartbeat_ms,
        "--min-down must be at least --heartbeat-interval"
    );
    Ok(cfg)
}

/// The taint policy from `--condition-taint` flags.
pub fn taint_policy(flags: &[String]) -> anyhow::Result<motley_core::hw::TaintPolicy> {
    let mut p = motley_core::hw::TaintPolicy::default();
    for f in flags {
        p.set(f)
            .map_err(|e| anyhow::anyhow!("--condition-taint {e}"))?;
    }
    Ok(p)
}

/// A `--NAME SIZE` flag (`2Gi`) in bytes.
pub(crate) fn size_flag(name: &str, value: &Option<String>) -> anyhow::Result<Option<u64>> {
    value
        .as_ref()
        .map(|s| {
            motley_core::quantity::Bytes::parse(s)
                .map(|b| b.0)
                .map_err(|e| anyhow::anyhow!("--{name} {s}: {e}"))
        })
        .transpose()
}

/// The agent's facts settings from its flags.
pub fn facts_config(
    args: &AgentArgs,
    data_dir: &Path,
) -> anyhow::Result<motley_agent::facts::FactsConfig> {
    let mut fc = motley_agent::facts::FactsConfig::host(data_dir.to_path_buf());
    if let Some(root) = &args.facts_root {
        anyhow::ensure!(
            root.join("proc").is_dir() || root.join("sys").is_dir(),
            "--facts-root {}: no proc/ or sys/ directory there",
            root.display()
        );
        fc.root = root.clone();
    }
    fc.interval = std::time::Duration::from_millis(
        duration("facts-interval", &args.facts_interval)?.max(100),
    );
    fc.cpu_score = args.cpu_score;
    fc.power_model = args
        .watts
        .as_deref()
        .map(motley_core::energy::PowerModel::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--watts {e}"))?;
    fc.log_budget = size_flag("log-budget", &args.tasks.log_budget)?;
    fc.task_logs = match args.task_logs.as_str() {
        "auto" => None,
        "disk" => Some(motley_core::model::LogTarget::Disk),
        "memory" => Some(motley_core::model::LogTarget::Memory),
        other => anyhow::bail!("--task-logs {other:?}: expected auto, disk or memory"),
    };
    anyhow::ensure!(
        args.disk_pressure_pct <= 100 && args.memory_available_pct <= 100,
        "--disk-pressure-pct and --memory-available-pct are percentages (0-100)"
    );
    fc.thresholds = motley_core::hw::Thresholds {
        thermal_margin_mc: args.thermal_margin as i32 * 1000,
        disk_full_pct: args.disk_pressure_pct,
        memory_available_pct: args.memory_available_pct,
        ..Default::default()
    };
    Ok(fc)
}

/// `--label KEY=VALUE` flags as a map; keys under `motley.io/` are refused.
pub fn labels(flags: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for f in flags {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--label {f:?}: expected KEY=VALUE"))?;
        anyhow::ensure!(
            !k.starts_with(motley_core::hw::LABEL_PREFIX),
            "--label {f:?}: keys under {} are reserved for discovered facts",
            motley_core::hw::LABEL_PREFIX
        );
        motley_core::model::validate_label(k, v)
            .map_err(|e| anyhow::anyhow!("--label {f:?}: {e}"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Runs a control-plane server until Ctrl-C or SIGTERM.
pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir.clone() {
        Some(d) => d,
        None => crate::up::default_data_dir()?,
    };
    let server = Server::start(ServerConfig {
        registries: registries(&args.insecure_registries, &args.registry_mirrors)?,
        data_dir: data_dir.clone(),
        listen: args.listen,
        tls_san: args.tls_san,
        write_join_token: true,
        failure: failure_config(&args.failure)?,
        taint_policy: taint_policy(&args.condition_taints)?,
        datastore: args.datastore.clone(),
        etcd_tls: etcd_tls(&args.etcd)?,
        snapshots: match (&args.snapshot_interval, &args.snapshot_dir) {
            (Some(i), Some(dir)) => Some(motley_server::SnapshotSchedule {
                interval: std::time::Duration::from_millis(
                    duration("snapshot-interval", i)?.max(1000),
                ),
                dir: dir.clone(),
                retain: args.snapshot_retain,
            }),
            _ => None,
        },
        events_forward: args.events_forward.clone(),
        advertise_url: args.advertise_url.clone(),
        name: args.name.clone(),
        leader_lease: leader_lease(&args.leader_lease)?,
        secrets_key: args.secrets_key.clone(),
    })
    .await?;
    eprintln!(
        "motley server is up: {} (data {}, admin config {}, join token in {})",
        server.client.servers[0],
        data_dir.display(),
        server.client_path.display(),
        data_dir.join("server/join-token").display()
    );
    println!("ready");
    shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

/// `--leader-lease`: whole seconds, at least 2 (etcd's shortest lease with its default
/// timing).
fn leader_lease(text: &str) -> anyhow::Result<std::time::Duration> {
    let ms = duration("leader-lease", text)?;
    anyhow::ensure!(
        ms >= 2000 && ms % 1000 == 0,
        "--leader-lease {text}: whole seconds, at least 2s (etcd leases count in seconds)"
    );
    Ok(std::time::Duration::from_millis(ms))
}

/// Runs an agent until Ctrl-C or SIGTERM (its tasks keep running and are adopted by the
/// next agent start), or until the cluster refuses its credential (exit 1).
pub async fn agent(args: AgentArgs) -> anyhow::Result<i32> {
    let data_dir = match args.data_dir.clone() {
        Some(d) => d,
        None => crate::up::default_dir("motley-agent")?,
    };
    let name = match args.name.clone() {
        Some(n) => {
            motley_core::model::validate_name(&n).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            n
        }
        None => host_name(),
    };
    let facts = facts_config(&args, &data_dir)?;
    let node_labels = labels(&args.labels)?;
    if let Some(count) = args.simulate {
        return simulate(&args, count, name, data_dir, facts, node_labels).await;
    }
    let dir = data_dir.join("agent");
    let (token, ca_pem) =
        motley_agent::join::credentials(&dir, &args.server, args.token.as_deref(), &name)
            .await
            .context("joining the cluster")?;
    let agent = Agent::start(AgentConfig {
        name: name.clone(),
        servers: args.server.clone(),
        token,
        ca_pem,
        dir,
        facts,
        labels: node_labels,
        task_user: motley_agent::driver::TaskUser::resolve(
            &args.tasks.task_user,
            args.tasks.allow_root_tasks,
        )
        .map_err(|e| anyhow::anyhow!("--task-user: {e}"))?,
        driver: std::sync::Arc::new(crate::roles::exec_driver(&args.tasks, name.clone())?),
        dialer: None,
        mesh: Some(args.mesh.config(&name)),
        advertise: args.advertise,
    })
    .await?;
    if let Some(addr) = args.metrics_listen {
        serve_metrics(agent.clone(), addr).await?;
    }
    tokio::select! {
        connected = agent.wait_connected(std::time::Duration::from_secs(30)) => {
            if connected {
                eprintln!("motley agent {name} connected");
                println!("ready");
                        }
        }
        why = agent.wait_fatal() => {
            eprintln!("error: {why}");
            return Ok(1);
        }
    }
    tokio::select! {
        _ = shutdown_signal() => Ok(0),
        why = agent.wait_fatal() => {
            eprintln!("error: {why}");
            Ok(1)
        }
    }
}

/// `motley agent --simulate N`: N virtual nodes in this process.
async fn simulate(
    args: &AgentArgs,
    count: u32,
    prefix: String,
    data_dir: PathBuf,
    mut facts: motley_agent::facts::FactsConfig,
    labels: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<i32> {
    anyhow::ensure!(count > 0, "--simulate needs at least one node");
    // One score for all: no node calibrates.
    facts.cpu_score = Some(facts.cpu_score.unwrap_or(1000));
    let job_time = std::time::Duration::from_millis(duration("sim-job-time", &args.sim_job_time)?);
    let task_user =
        motley_agent::driver::TaskUser::resolve(&args.tasks.task_user, args.tasks.allow_root_tasks)
            .map_err(|e| anyhow::anyhow!("--task-user: {e}"))?;
    // Every node is a real agent (its own join, credential, connection, state file and
    // supervisors), whose driver runs tasks on the clock only.
    let mut agents = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        motley_core::model::validate_name(&name)
            .map_err(|e| anyhow::anyhow!("simulated node name {name:?}: {e}"))?;
        let dir = data_dir.join("sim").join(&name).join("agent");
        let (token, ca_pem) =
            motley_agent::join::credentials(&dir, &args.server, args.token.as_deref(), &name)
                .await
                .with_context(|| format!("joining simulated node {name}"))?;
        let agent = Agent::start(AgentConfig {
            name,
            servers: args.server.clone(),
            token,
            ca_pem,
            dir,
            facts: facts.clone(),
            labels: labels.clone(),
            task_user: task_user.clone(),
            driver: std::sync::Arc::new(motley_agent::drivers::simulated::Simulated::new(job_time)),
            dialer: None,
            mesh: None,
            advertise: args.advertise,
        })
        .await?;
        agents.push(agent);
    }
    let waits = agents
        .iter()
        .map(|a| a.wait_connected(std::time::Duration::from_secs(120)));
    let connected = futures_util::future::join_all(waits)
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    if connected == agents.len() {
        eprintln!(
            "{count} simulated nodes {prefix}-0 … {prefix}-{} connected",
            count - 1
        );
        println!("ready");
    } else {
        eprintln!("only {connected} of {count} simulated nodes connected");
    }
    shutdown_signal().await;
    Ok(0)
}

/// Serves `GET /metrics` over plain HTTP (hyper, no TLS: bind it to a private address).
async fn serve_metrics(agent: Agent, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let agent = agent.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let agent = agent.clone();
                        async move {
                            if req.uri().path() == "/metrics" {
                                hyper::Response::builder()
                                    .header(
                                        "content-type",
                                        "text/plain; version=0.0.4; charset=utf-8",
                                    )
                                    .body(agent.metrics_text())
                            } else {
                                hyper::Response::builder()
                                    .status(404)
                                    .body("not found\n".to_string())
                            }
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Ok(())
}

/// `--insecure-registry` and `--registry-mirror` as one setting.
pub(crate) fn registries(
    insecure: &[String],
    mirrors: &[String],
) -> anyhow::Result<motley_containerd::registry::Registries> {
    let mut r = motley_containerd::registry::Registries::from(insecure.to_vec());
    for m in mirrors {
        r.add_mirror(m)
            .map_err(|e| anyhow::anyhow!("--registry-mirror {e}"))?;
    }
    Ok(r)
}

/// The exec driver, running tasks with `image:` through the containerd of `--containerd`
/// for this node's userland platform.
pub(crate) fn exec_driver(
    tasks: &motley_cli::args::TaskUserArgs,
    node: String,
) -> anyhow::Result<motley_agent::drivers::Exec> {
    let budget = size_flag("image-budget", &tasks.image_budget)?;
    let platform = motley_discovery::userland::platform_cached(std::path::Path::new("/"), None)
        .map(|(p, _)| p);
    let mut containers = motley_agent::drivers::container::Containers::new(
        tasks.containerd.clone(),
        registries(&tasks.insecure_registries, &tasks.registry_mirrors)?,
        node,
        platform,
    );
    containers.budget = budget;
    Ok(motley_agent::drivers::Exec::default().with_containers(containers))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn flag_defaults_are_the_documented_defaults() {
        let cli = motley_cli::args::Cli::parse_from(["motley", "server"]);
        let motley_cli::args::Command::Server(args) = cli.command else {
            panic!("parsed as another command");
        };
        let cfg = super::failure_config(&args.failure).expect("valid defaults");
        assert_eq!(cfg, motley_core::failure::FailureConfig::default());
        let bad = motley_cli::args::Cli::parse_from([
            "motley",
            "server",
            "--down-phi",
            "1",
            "--suspect-phi",
            "2",
        ]);
        let motley_cli::args::Command::Server(args) = bad.command else {
            panic!("parsed as another command");
        };
        assert!(super::failure_config(&args.failure).is_err());
    }
}
