//! `motley up`: a server and an agent in one process on the embedded store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use motley_agent::{Agent, AgentConfig};
use motley_cli::args::UpArgs;
use motley_cli::client::Client;
use motley_server::auth::Role;
use motley_server::{Server, ServerConfig};

/// The default data directory: `/var/lib/motley` for root (unless `XDG_DATA_HOME` is
/// set), else `$XDG_DATA_HOME/motley` or `~/.local/share/motley`.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    default_dir("motley")
}

/// `/var/lib/<leaf>` for root, as k3s keeps `/var/lib/rancher`: tasks run as `nobody`
/// and must pass through the directories above their own, and root's home is 0700 on
/// most systems. An explicit `XDG_DATA_HOME` still wins. Others: the XDG data dir.
pub fn default_dir(leaf: &str) -> anyhow::Result<PathBuf> {
    if nix::unistd::geteuid().is_root() && std::env::var_os("XDG_DATA_HOME").is_none() {
        return Ok(PathBuf::from("/var/lib").join(leaf));
    }
    dirs::data_dir().map(|d| d.join(leaf)).ok_or_else(|| {
        anyhow::anyhow!("no data directory (set HOME or XDG_DATA_HOME, or pass --data-dir)")
    })
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| motley_core::model::validate_name(h).is_ok())
        .unwrap_or_else(|| "local".into())
}

/// The agent's credential, created once and kept in its directory.
async fn node_credential(server: &Server, dir: &Path, node: &str) -> anyhow::Result<String> {
    let path = dir.join("credential");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if server.token_valid(&t) {
            return Ok(t);
        }
    }
    let token = server
        .create_token(
            Role::Node {
                node: node.to_string(),
            },
            "node credential of motley up",
        )
        .await?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    motley_net::write_private(&path, token.as_bytes(), 0o600)?;
    Ok(token)
}

pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Runs until Ctrl-C or SIGTERM, then stops every task before exiting.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let default_dir = args.data_dir.is_none();
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let node = match args.name {
        Some(n) => {
            motley_core::model::validate_name(&n).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            n
        }
        None => host_name(),
    };
    let server = Server::start(ServerConfig {
        registries: crate::roles::registries(
            &args.tasks.insecure_registries,
            &args.tasks.registry_mirrors,
        )?,
        data_dir: data_dir.clone(),
        listen: args.listen,
        tls_san: args.tls_san,
        write_join_token: false,
        failure: Default::default(),
        taint_policy: Default::default(),
        datastore: None,
        etcd_tls: Default::default(),
        snapshots: None,
        events_forward: args.events_forward.clone(),
        advertise_url: None,
        name: None,
        leader_lease: motley_server::ha::DEFAULT_LEASE,
        secrets_key: None,
    })
    .await?;
    if default_dir && let Some(user) = motley_cli::client::default_config_path() {
        // For the default data dir, the user's default client config points here too.
        if motley_net::ClientConfig::load(&user).ok().as_ref() != Some(&server.client) {
            server
                .client
                .save(&user)
                .with_context(|| format!("writing {}", user.display()))?;
        }
    }
    let agent_dir = data_dir.join("agent");
    let token = node_credential(&server, &agent_dir, &node).await?;
    let agent = Agent::start(AgentConfig {
        name: node.clone(),
        servers: server.client.servers.clone(),
        token,
        ca_pem: server.client.ca.clone(),
        facts: motley_agent::facts::FactsConfig {
            log_budget: crate::roles::size_flag("log-budget", &args.tasks.log_budget)?,
            power_model: args
                .watts
                .as_deref()
                .map(motley_core::energy::PowerModel::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--watts {e}"))?,
            ..motley_agent::facts::FactsConfig::host(data_dir.clone())
        },
        dir: agent_dir,
        labels: Default::default(),
        task_user: motley_agent::driver::TaskUser::resolve(
            &args.tasks.task_user,
            args.tasks.allow_root_tasks,
        )
        .map_err(|e| anyhow::anyhow!("--task-user: {e}"))?,
        driver: std::sync::Arc::new(crate::roles::exec_driver(&args.tasks, node.clone())?),
        // In memory to this process's server (`local_link`).
        dialer: Some(std::sync::Arc::new(crate::local_link::LocalDialer::new(
            server.shared.clone(),
            server.client.servers.clone(),
            &server.client.ca,
        )?)),
        mesh: Some(args.mesh.config(&node)),
        advertise: None,
    })
    .await?;
    motley_server::state::lock(&server.shared.registries).push(agent.registry());
    if !agent.wait_connected(Duration::from_secs(30)).await {
        anyhow::bail!("the local agent could not connect to its server");
    }
    // The node record is written by the agent's registration; wait until the cache has it.
    for _ in 0..300 {
        if server.shared.cache().nodes.contains_key(&node) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "motley is up: {} (node {node}, data {}, client config {})",
        server.client.servers[0],
        data_dir.display(),
        server.client_path.display()
    );
    if !args.files.is_empty() {
        let client = Client::new(&server.client)?;
        let code = motley_cli::commands::apply(&client, &args.files, false, false).await?;
        if code != 0 {
            eprintln!("the manifests were not applied; the cluster keeps running");
        }
    }
    println!("ready");
    shutdown_signal().await;
    server.shutdown().await;
    eprintln!("stopping every task...");
    agent.stop_all().await;
    eprintln!("stopped");
    Ok(())
}
