//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// motley: one binary that turns mismatched machines into one self-healing cluster.
#[derive(Debug, Parser)]
#[command(name = "motley", version, about, propagate_version = true)]
pub struct Cli {
    /// Client config file (default: $MOTLEY_CONFIG, then ~/.config/motley/config.yaml).
    #[arg(long, global = true, env = "MOTLEY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The namespace to act in (default: `default`; a manifest's own `namespace:` when
    /// applying without it).
    #[arg(short = 'n', long, global = true, env = "MOTLEY_NAMESPACE")]
    pub namespace: Option<String>,
    /// List across every namespace (`get`), with a NAMESPACE column.
    #[arg(short = 'A', long, global = true, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// More columns.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Manifest inputs.
#[derive(Debug, Args, Clone)]
pub struct FileArgs {
    /// A manifest file, a directory of them (*.yaml, *.yml), or - for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a single-node cluster (server and agent in one process, embedded store).
    Up(UpArgs),
    /// Run a control-plane server (no local agent).
    Server(Box<ServerArgs>),
    /// Run an agent that joins a cluster and runs its work on this machine.
    Agent(AgentArgs),
    /// Create, list and revoke tokens.
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Create or update workloads from manifests (all or nothing). On a terminal it
    /// then follows each changed service's rollout with a bar until it ends.
    Apply {
        /// Inputs.
        #[command(flatten)]
        files: FileArgs,
        /// Validate against the cluster without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Return once applied, without following rollouts.
        #[arg(long, conflicts_with = "wait")]
        detach: bool,
        /// Follow rollouts even when the output is not a terminal.
        #[arg(long)]
        wait: bool,
    },
    /// A service's updates: `status` follows the current one, `history` lists the
    /// generations kept, `undo` applies an earlier one again.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Git sources: `sync` one now, show the `plan` of its latest commit.
    Source {
        /// What to do.
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// Chaos experiments (`kind: Experiment`): faults on a schedule carried out by the
    /// agents, a steady state, a guard, and a report (docs/lab.md). Admin only.
    Experiment {
        /// What to do.
        #[command(subcommand)]
        command: ExperimentCommand,
    },
    /// Periodic jobs (a Job with `schedule`): `run NAME` starts a run now.
    Job {
        /// What to do.
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Let a service's update go on past its canaries (`update.canary`).
    Promote {
        /// The service.
        name: String,
    },
    /// Dry run against the live cluster: where each instance would go and why, what
    /// it would preempt or stop, and what would wait. Changes nothing.
    Plan {
        /// Inputs.
        #[command(flatten)]
        files: FileArgs,
        /// Output format (table prints the plan as text).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// What would happen if nodes died or were drained: the live cluster run through
    /// the real controllers and scheduler, changing nothing.
    #[command(name = "what-if")]
    WhatIf {
        /// A node that dies (power off); repeat for several.
        #[arg(long = "lose", value_name = "NODE")]
        lose: Vec<String>,
        /// A node that is drained; repeat for several.
        #[arg(long = "drain", value_name = "NODE")]
        drain: Vec<String>,
        /// Every node's loss, one at a time: which node is a single point of failure
        /// for what.
        #[arg(long, conflicts_with_all = ["lose", "drain"])]
        each_node: bool,
        /// A machine added first: NAME=FILE, FILE the output of `motley facts -o json`
        /// on it; repeat for several.
        #[arg(long = "add-node", value_name = "NAME=FILE")]
        add_node: Vec<String>,
        /// Manifests applied first (a file, a directory, or -), as `motley plan` takes them.
        #[arg(short = 'f', long = "filename", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// Ask a snapshot (`motley snapshot save`) instead of the live cluster: no
        /// server is needed; every node in it is taken as ready.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["add_node", "files"])]
        snapshot: Option<PathBuf>,
        /// Replay a recorded history (`motley events -o json`) of jobs and services
        /// against the cluster as changed: how much longer each waits and takes.
        #[arg(long, value_name = "HISTORY", conflicts_with_all = ["each_node", "add_node", "files"])]
        trace: Option<PathBuf>,
        /// With --trace: also print the replay's timeline, paced at this many times
        /// real time (the answer itself is computed as fast as it can be).
        #[arg(long, value_name = "N", requires = "trace")]
        speed: Option<f64>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Whether workloads fit an inventory of machines (`kind: Inventory`) or the live
    /// cluster, with N of them failed: headroom, power and cost, and the cheapest
    /// machine to add. Without --cluster it runs here alone. Exit 3 when it does not fit.
    Capacity {
        /// The inventory and the workloads (a file, a directory, or -). Repeatable.
        #[arg(short = 'f', long = "filename", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// The live cluster's nodes (and, without workload files, its workloads), with
        /// the power each measures; an inventory then adds candidates to buy.
        #[arg(long)]
        cluster: bool,
        /// Node failures to tolerate (every combination is checked).
        #[arg(long, default_value_t = 0)]
        tolerate: u32,
        /// "NODE: HH:MM-HH:MM": the machine runs only in these hours; says what
        /// waits for it (a job's queue delay) or is short while it is off. Repeatable.
        #[arg(long, value_name = "NODE: HH:MM-HH:MM")]
        schedule: Vec<String>,
        /// The power of each model (or measured node) too, beside the total (watts and
        /// kWh a month at the placed load, and their cost with `price_per_kwh`).
        #[arg(long)]
        power: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Print the motley manifests a docker-compose.yml or Kubernetes manifests become
    /// (what `apply -f` applies), for review and for git; warnings on standard error.
    Convert {
        /// Inputs.
        #[command(flatten)]
        files: FileArgs,
    },
    /// Check manifests without a cluster.
    Validate {
        /// Inputs.
        #[command(flatten)]
        files: FileArgs,
    },
    /// List objects: nodes, services, jobs, daemons, allocs.
    Get {
        /// What to list.
        resource: String,
        /// One object by name (or id).
        name: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        /// Only allocations of this workload (KIND/NAME).
        #[arg(long)]
        workload: Option<String>,
        /// `get secret NAME --reveal`: its values in plaintext (admins only; audited).
        #[arg(long)]
        reveal: bool,
    },
    /// What happened and why: scheduled, started, exited, restarted, preempted,
    /// blocked, nodes ready/suspect/down, conditions, drains, leader changes, syncs.
    Events {
        /// Follow: print events as they happen.
        #[arg(short = 'w', long)]
        watch: bool,
        /// Only those of one object: KIND/NAME (with its allocations), node/NAME,
        /// alloc/ID, source/NAME.
        #[arg(long = "for")]
        object: Option<String>,
        /// Only those of the last DURATION (`10m`, `1h`).
        #[arg(long)]
        since: Option<String>,
        /// Output format (`-w -o json`: one JSON object per line).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Show one object in detail, with its allocations and reasons.
    Describe {
        /// KIND NAME, or KIND/NAME (node, service, job, daemon, alloc).
        target: Vec<String>,
    },
    /// Delete workloads: KIND/NAME, KIND NAME, or -f manifests.
    Delete {
        /// KIND/NAME or KIND NAME.
        target: Vec<String>,
        /// Delete what these manifests define.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
    },
    /// Set or remove a node's operator labels: `KEY=VALUE` sets, `KEY-` removes. The
    /// node cannot change or remove them (pin sensitive work to them).
    Label {
        /// Node name.
        node: String,
        /// `KEY=VALUE` to set, `KEY-` to remove.
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Mark a node unschedulable: no new allocations land there.
    Cordon {
        /// Node name.
        node: String,
    },
    /// Make a node schedulable again (also ends a drain).
    Uncordon {
        /// Node name.
        node: String,
    },
    /// Cordon a node and move its services and jobs elsewhere, one replica of a
    /// service at a time; shows progress until the node is empty (daemons stay).
    Drain {
        /// Node name.
        node: String,
        /// Give up after this long (exit 1).
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
    /// Restart an allocation: it is stopped and the controller places its replacement
    /// (a fenced service's only once this copy is seen stopped).
    Restart {
        /// Allocation id.
        alloc: String,
    },
    /// Print an allocation's output.
    Logs {
        /// Allocation id.
        alloc: String,
        /// Keep printing as the log grows, until the task ends.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Manage the encryption of Secrets.
    Secrets {
        /// What to do.
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Save or restore every object of the cluster (checksummed, at one revision).
    Snapshot {
        /// What to do.
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Print client and server versions.
    Version,
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the JSON Schema of manifest documents (for editors).
    Schema,
    /// Install motley as a systemd service on this machine (or under `--root`): the
    /// binary, a hardened unit, its user and directories, man pages and shell
    /// completions; then enable and start it.
    Install {
        /// What to install.
        #[command(subcommand)]
        what: InstallCommand,
    },
    /// Check this machine for motley, before or after it joins, and say what is wrong
    /// and how to fix it: cgroups, the clock, the data directory's disk, power,
    /// containerd, ports, the servers (exit 1 when a check fails).
    Doctor(DoctorArgs),
    /// What an upgrade would do: every server's and agent's version, the skew policy's
    /// verdict on each agent, and the order (servers first, one at a time, then
    /// agents). Only `--plan` is built: binaries are replaced by `motley install`.
    Upgrade {
        /// Show the plan.
        #[arg(long, required = true)]
        plan: bool,
    },
    /// Remove what `motley install` wrote (the data too with `--purge`).
    Uninstall(UninstallArgs),
    /// Write the man pages (`motley.1` and one per command) into a directory.
    Man {
        /// The directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print what motley discovers about this machine (or a captured tree).
    Facts {
        /// Filesystem root to read (`/proc`, `/sys` under it).
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
        /// Report the device holding this directory (a path inside the root; default:
        /// the current directory on a host, /var/lib/motley in a captured tree).
        #[arg(long)]
        data_dir: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

/// `motley token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create {
        /// `join` (for agents joining the cluster), `viewer` (read-only: no tokens,
        /// snapshots or audit log) or `admin`.
        #[arg(long, default_value = "join", value_parser = ["join", "viewer", "admin"])]
        role: String,
        /// Lifetime, e.g. 1h, 30m, 7d is 168h; none means it never expires.
        #[arg(long)]
        ttl: Option<String>,
        /// Free text shown by `token list`.
        #[arg(long, default_value = "")]
        description: String,
        /// Limit an admin or viewer token to these namespaces (comma-separated): its
        /// role holds there, and cluster-wide routes (nodes, tokens, ...) are refused.
        #[arg(long, value_delimiter = ',')]
        namespaces: Vec<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Revoke a token by its id (from `token list`).
    Revoke {
        /// Token id.
        id: String,
    },
}

/// `motley secrets`.
#[derive(Debug, Subcommand, Clone)]
pub enum SecretsCommand {
    /// Encrypt every stored secret value under a new key, then forget the old one.
    RotateKey,
}

/// `motley snapshot`.
#[derive(Debug, Subcommand, Clone)]
pub enum SnapshotCommand {
    /// Ask the server for a snapshot and write it to FILE.
    Save {
        /// Where to write it.
        file: PathBuf,
    },
    /// Load FILE into an empty store, with no server running on it: a data dir's
    /// embedded store, or etcd (the path from one Pi to three).
    Restore {
        /// The snapshot.
        file: PathBuf,
        /// Restore into this data dir's embedded store.
        #[arg(long, conflicts_with = "datastore")]
        data_dir: Option<PathBuf>,
        /// Restore into etcd: etcd://h1:2379,h2:2379.
        #[arg(long)]
        datastore: Option<String>,
        /// TLS for etcd.
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

/// TLS for the connection to etcd.
#[derive(Debug, Args, Clone, Default)]
pub struct EtcdArgs {
    /// CA certificate (PEM) of etcd's server certificates.
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

/// `motley server`.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// Data directory (default: /var/lib/motley as root, else $XDG_DATA_HOME/motley or
    /// ~/.local/share/motley).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A registry read over plain HTTP (`HOST:PORT`) for image platforms; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// A mirror tried before a registry (`docker.io=http://10.0.0.5:5000`); repeatable.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL")]
    pub registry_mirrors: Vec<String>,
    /// Address the API and agent connections listen on.
    #[arg(long, default_value = "0.0.0.0:7443")]
    pub listen: std::net::SocketAddr,
    /// Extra DNS names or IPs for the server certificate. Repeatable.
    #[arg(long)]
    pub tls_san: Vec<String>,
    /// Failure detection settings.
    #[command(flatten)]
    pub failure: FailureArgs,
    /// The effect of a node condition's taint, CONDITION=EFFECT (conditions: undervoltage,
    /// throttled, thermal, disk-pressure, memory-pressure; effects: prefer-no-schedule,
    /// no-schedule, evict). Repeatable; unset conditions are prefer-no-schedule.
    #[arg(long = "condition-taint", value_name = "CONDITION=EFFECT")]
    pub condition_taints: Vec<String>,
    /// Keep the state in etcd (etcd://h1:2379,h2:2379; etcds:// for TLS) instead of the
    /// embedded store in the data dir.
    #[arg(long)]
    pub datastore: Option<String>,
    /// TLS for etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Take a snapshot this often (e.g. 1h), when anything changed since the last.
    #[arg(long, requires = "snapshot_dir")]
    pub snapshot_interval: Option<String>,
    /// Where scheduled snapshots go.
    #[arg(long, requires = "snapshot_interval")]
    pub snapshot_dir: Option<PathBuf>,
    /// How many scheduled snapshots to keep.
    #[arg(long, default_value_t = 24)]
    pub snapshot_retain: usize,
    /// POST every new event, as JSON lines, to this URL (a collector's HTTP input).
    #[arg(long, value_name = "URL")]
    pub events_forward: Option<String>,
    /// The URL agents, clients and the other servers reach this server at (default:
    /// https://<listen address>; set it when listening on 0.0.0.0 with several servers).
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// This server's name in `motley get servers` (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// With several servers on etcd: how long the leader's lease lasts, i.e. how long
    /// a dead leader goes on leading before another takes over (whole seconds, ≥ 2).
    #[arg(long, default_value = "3s")]
    pub leader_lease: String,
    /// The key Secrets are encrypted with (default: <data-dir>/server/secrets.key,
    /// created on first start). With several servers, give every one the same key file.
    #[arg(long)]
    pub secrets_key: Option<std::path::PathBuf>,
}

/// Failure detection settings of a server (defaults in docs/multi-node.md).
#[derive(Debug, Args, Clone)]
pub struct FailureArgs {
    /// How often agents send heartbeats.
    #[arg(long, default_value = "500ms")]
    pub heartbeat_interval: String,
    /// Phi at which a node becomes suspect (no new work placed there).
    #[arg(long, default_value_t = 3.0)]
    pub suspect_phi: f64,
    /// Phi at which a node is declared down (its work is replaced).
    #[arg(long, default_value_t = 8.0)]
    pub down_phi: f64,
    /// Never declare a node down before this much silence.
    #[arg(long, default_value = "1500ms")]
    pub min_down: String,
    /// Agents stop fenced tasks after this long without contact.
    #[arg(long, default_value = "5s")]
    pub lease: String,
    /// Extra wait beyond the lease before fenced work is replaced.
    #[arg(long, default_value = "2s")]
    pub fence_margin: String,
    /// Heartbeats a second the server takes from all agents together (as Nomad's
    /// setting of that name): with more agents than fit at --heartbeat-interval, each is
    /// told to beat less often, down to a third of --lease. 0: never.
    #[arg(long, default_value_t = 600)]
    pub max_heartbeats_per_second: u32,
}

/// `motley agent`.
#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// Server URLs, comma-separated (https://host:port), tried in order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub server: Vec<String>,
    /// A join token (needed only the first time; the node's own credential is kept in the data dir).
    #[arg(long, env = "MOTLEY_JOIN_TOKEN")]
    pub token: Option<String>,
    /// Data directory (default: /var/lib/motley-agent as root, else
    /// $XDG_DATA_HOME/motley-agent).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Serve the agent's Prometheus metrics over plain HTTP at ADDR:PORT/metrics
    /// (off by default; bind it to a private address).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// A label for this node, KEY=VALUE. Repeatable. Keys under motley.io/ are reserved.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Report the machine captured under DIR (its /proc and /sys) instead of this host's
    /// hardware: for tests and demos (a "Pi 4" on a laptop). Tasks still run here.
    #[arg(long, value_name = "DIR")]
    pub facts_root: Option<PathBuf>,
    /// How often the hardware is re-read (facts and readings are sent only on change).
    #[arg(long, default_value = "30s")]
    pub facts_interval: String,
    /// Use this CPU score instead of calibrating (reference machine = 1000).
    #[arg(long)]
    pub cpu_score: Option<u32>,
    /// This machine's power in watts at rest and at full CPU load, to estimate each
    /// workload's energy where nothing measures it (RAPL does on most x86 machines; a
    /// Raspberry Pi 4 or 3 B+ is known without it).
    #[arg(long, value_name = "IDLE,LOADED")]
    pub watts: Option<String>,
    /// Where task logs go: auto (memory when the data dir is on SD, eMMC or USB flash,
    /// else disk), disk, or memory.
    #[arg(long, default_value = "auto")]
    pub task_logs: String,
    /// Thermal condition: within this many °C of a trip point.
    #[arg(long, default_value_t = 5)]
    pub thermal_margin: u8,
    /// Disk pressure: the data disk at least this full, percent.
    #[arg(long, default_value_t = 90)]
    pub disk_pressure_pct: u8,
    /// Memory pressure: less than this share of memory available, percent.
    #[arg(long, default_value_t = 5)]
    pub memory_available_pct: u8,
    /// Who tasks run as.
    #[command(flatten)]
    pub tasks: TaskUserArgs,
    /// Service networking on this node.
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// The address other nodes reach this one at (default: the address the server
    /// sees its connection come from).
    #[arg(long, value_name = "IP")]
    pub advertise: Option<std::net::IpAddr>,
    /// Run N simulated nodes in this process (`<name>-0` … `<name>-N-1`), each a real
    /// node of the cluster whose tasks only pretend to run: for scale tests and demos.
    #[arg(long, value_name = "N")]
    pub simulate: Option<u32>,
    /// With --simulate: how long a job's instance "runs" before it completes.
    #[arg(long, default_value = "1s", requires = "simulate")]
    pub sim_job_time: String,
}

/// Who tasks run as, on an agent running as root.
#[derive(Debug, Args, Clone)]
pub struct TaskUserArgs {
    /// The unprivileged user tasks run as when the agent runs as root (`root` runs every
    /// task as root).
    #[arg(long, default_value = "nobody")]
    pub task_user: String,
    /// Run tasks that ask for it (`task.root: true`) as root on this node.
    #[arg(long)]
    pub allow_root_tasks: bool,
    /// containerd's socket, for tasks with `image:` (motley keeps its images and
    /// containers in containerd namespace `motley`).
    #[arg(
        long,
        value_name = "SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd: std::path::PathBuf,
    /// A registry spoken to over plain HTTP (`HOST:PORT`); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// A mirror tried before a registry (`docker.io=http://10.0.0.5:5000`); repeatable.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL")]
    pub registry_mirrors: Vec<String>,
    /// How much the node's unused images may take (`2Gi`); the least recently used are
    /// removed past it. Default: 2Gi when the data dir is on SD, eMMC or USB flash,
    /// else 10Gi.
    #[arg(long, value_name = "SIZE")]
    pub image_budget: Option<String>,
    /// How much all task logs on this node may take together (`64Mi`), those kept in
    /// memory and those on disk each; past it the largest are cut to their newest
    /// bytes. Default: 32Mi in memory, 1Gi on disk.
    #[arg(long, value_name = "SIZE")]
    pub log_budget: Option<String>,
}

/// Service networking on a node: the proxy to services, DNS and the ingress.
#[derive(Debug, Args, Clone)]
pub struct MeshArgs {
    /// Answer DNS for `NAME.motley` here (UDP and TCP) and forward other names to the
    /// node's resolver (`127.0.0.1:5353`; port 53 is often taken: docs/services.md).
    #[arg(long, value_name = "ADDR:PORT")]
    pub dns_listen: Option<std::net::SocketAddr>,
    /// Where names outside `motley` are asked (default: the first nameserver of
    /// /etc/resolv.conf that is not --dns-listen).
    #[arg(long, value_name = "ADDR:PORT")]
    pub dns_upstream: Option<std::net::SocketAddr>,
    /// Serve the ingress (HTTP, routed by each service's `expose`) here
    /// (`0.0.0.0:80`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub ingress_listen: Option<std::net::SocketAddr>,
    /// Serve the ingress over HTTPS here (`0.0.0.0:443`): hosts whose `expose` has
    /// `tls`, with the certificate the server sends (a Secret's, or signed by the
    /// cluster CA), chosen by SNI.
    #[arg(long, value_name = "ADDR:PORT")]
    pub ingress_tls_listen: Option<std::net::SocketAddr>,
    /// Do not serve services at their loopback addresses (`NAME.motley:PORT`).
    #[arg(long)]
    pub no_proxy: bool,
}

impl MeshArgs {
    /// What the agent on node `node` serves.
    pub fn config(&self, node: &str) -> motley_mesh::MeshConfig {
        motley_mesh::MeshConfig {
            node: node.to_string(),
            proxy: !self.no_proxy,
            dns: self.dns_listen,
            dns_upstream: self.dns_upstream,
            ingress: self.ingress_listen,
            ingress_tls: self.ingress_tls_listen,
        }
    }
}

/// `motley up`.
#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// Data directory (default: /var/lib/motley as root, else $XDG_DATA_HOME/motley or
    /// ~/.local/share/motley).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: std::net::SocketAddr,
    /// Node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Manifests to apply once the cluster is ready. Repeatable.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Extra DNS names or IPs for the server certificate. Repeatable.
    #[arg(long)]
    pub tls_san: Vec<String>,
    /// POST every new event, as JSON lines, to this URL (a collector's HTTP input).
    #[arg(long, value_name = "URL")]
    pub events_forward: Option<String>,
    /// This machine's power in watts at rest and at full CPU load, to estimate each
    /// workload's energy where nothing measures it (RAPL does on most x86 machines).
    #[arg(long, value_name = "IDLE,LOADED")]
    pub watts: Option<String>,
    /// Who tasks run as.
    #[command(flatten)]
    pub tasks: TaskUserArgs,
    /// Service networking on this node.
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// `motley experiment`.
#[derive(Debug, Subcommand, Clone)]
pub enum ExperimentCommand {
    /// Run an experiment: checked against the live cluster, then carried out by the
    /// agents; follows it and prints its report (exit 3 when the steady state did not
    /// hold or the run was aborted). With --dry-run: checks it (nodes and workloads it
    /// names, contradictory faults) and prints when each fault starts and is undone.
    Run {
        /// The experiment.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Check and print the timeline only.
        #[arg(long)]
        dry_run: bool,
        /// Return once started (`experiment report NAME` reads it later).
        #[arg(long, conflicts_with = "dry_run")]
        detach: bool,
    },
    /// An experiment's report: Markdown, or `-o json` for all of it.
    Report {
        /// The experiment's name.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Every experiment run and the one under way.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Stop the experiment under way: every fault it holds is undone at once.
    Abort {
        /// The experiment's name.
        name: String,
    },
}

/// `motley source`.
#[derive(Debug, Subcommand, Clone)]
pub enum SourceCommand {
    /// Fetch the source's ref now and apply its commit; prints the outcome (exit 1
    /// when the sync failed or was refused).
    Sync {
        /// The source.
        name: String,
        /// Confirm a commit that declares nothing while the source applied objects
        /// (with `prune: true`, it deletes them all).
        #[arg(long)]
        allow_empty: bool,
    },
    /// The plan kept of the source's latest commit: objects created, changed and
    /// deleted, placements, and what would wait and why.
    Plan {
        /// The source.
        name: String,
        /// Show every node's reason for what waits.
        #[arg(long)]
        wide: bool,
    },
}

/// `motley rollout`.
#[derive(Debug, Subcommand, Clone)]
pub enum RolloutCommand {
    /// Follow the service's current update until it is complete, fails or waits for
    /// promotion (exit 0 complete or waiting, 1 failed or reverted, 2 still going at
    /// the timeout).
    Status {
        /// The service.
        name: String,
        /// Print where it stands once and return (exit 2 while it progresses).
        #[arg(long)]
        once: bool,
        /// How long to follow it.
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
    /// The generations kept (the last 10) and what each ran.
    History {
        /// The service.
        name: String,
    },
    /// Apply an earlier generation's spec again, as a new generation (default: the
    /// newest that differs from the current one).
    Undo {
        /// The service.
        name: String,
        /// The generation to go back to.
        #[arg(long)]
        to_generation: Option<u64>,
    },
}

/// Where `motley install` writes, and whether it starts what it installed.
#[derive(Debug, Args, Clone)]
pub struct InstallTarget {
    /// Install under this directory instead of `/` (packaging, tests): nothing is
    /// started and no user is made.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Write the files but do not enable or start the service.
    #[arg(long)]
    pub no_start: bool,
}

/// `motley install`.
#[derive(Debug, Subcommand, Clone)]
pub enum InstallCommand {
    /// A control-plane server: `motley-server.service`, as user `motley`, data in
    /// `/var/lib/motley`.
    Server {
        /// Where to write.
        #[command(flatten)]
        target: InstallTarget,
        /// Address the API listens on.
        #[arg(long, default_value = "0.0.0.0:7443")]
        listen: std::net::SocketAddr,
        /// Keep the state in etcd (`etcd://h1:2379,h2:2379`) instead of the data dir.
        #[arg(long)]
        datastore: Option<String>,
        /// More `motley server` flags, after `--`.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// An agent: `motley-agent.service`, as root (it runs tasks as their users), data in
    /// `/var/lib/motley-agent`; it joins with the token (kept in a 0600 file).
    Agent {
        /// Where to write.
        #[command(flatten)]
        target: InstallTarget,
        /// The servers' URLs (`https://pi1:7443`), comma-separated.
        #[arg(long = "join", value_delimiter = ',', required = true)]
        servers: Vec<String>,
        /// The join token (`motley token create --role join`).
        #[arg(long, env = "MOTLEY_JOIN_TOKEN")]
        token: String,
        /// The node's name (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// More `motley agent` flags, after `--`.
        #[arg(last = true)]
        extra: Vec<String>,
    },
}

/// `motley uninstall`.
#[derive(Debug, Args, Clone)]
pub struct UninstallArgs {
    /// Remove from under this directory instead of `/`.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Also delete the data directories (the cluster's state and credentials).
    #[arg(long)]
    pub purge: bool,
}

/// `motley doctor`.
#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// The data directory (default: the one `motley up` and `motley server` use).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Servers to reach (default: the client config's).
    #[arg(long = "server", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// The server API's address, checked free (a machine that is to run a server).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// The agent's DNS address, checked free.
    #[arg(long, value_name = "ADDR:PORT")]
    pub dns_listen: Option<std::net::SocketAddr>,
    /// The agent's ingress address, checked free.
    #[arg(long, value_name = "ADDR:PORT")]
    pub ingress_listen: Option<std::net::SocketAddr>,
    /// containerd's socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd: PathBuf,
    /// Output format (table: one line per check, with the fix).
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
}

/// `motley job …`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Start a run of periodic job NAME now, beside its schedule (Kubernetes'
    /// `kubectl create job --from=cronjob/NAME`).
    Run {
        /// The periodic job.
        name: String,
    },
}
