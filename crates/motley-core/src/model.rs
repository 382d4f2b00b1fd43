//! The object model: workloads (Service, Job, Daemon), tasks, nodes and
//! allocations, as stored and as exchanged over the API.
//!
//! Every spec type is strict (`deny_unknown_fields`) and carries its `kind`,
//! so what `get -o yaml` prints can be applied again unchanged.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::{Bytes, Duration, MilliCpu};

mod check;
pub use check::*;
mod cluster;
pub use cluster::*;
mod placement;
pub use placement::*;
mod net;
pub use net::*;
mod source;
pub use source::*;
mod namespace;
pub use namespace::*;
mod names;
pub use names::*;
mod slo;
pub use slo::*;
mod secret;
pub use secret::*;
mod periodic;
pub use periodic::*;
mod config;
pub use config::*;

macro_rules! kind_tag {
    ($name:ident, $text:literal) => {
        #[doc = concat!("The `kind: ", $text, "` tag.")]
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default,
        )]
        pub enum $name {
            #[doc = concat!("`", $text, "`")]
            #[default]
            $name,
        }
    };
}
kind_tag!(Service, "Service");
kind_tag!(Job, "Job");
kind_tag!(Daemon, "Daemon");
kind_tag!(Volume, "Volume");
kind_tag!(Secret, "Secret");
kind_tag!(Config, "Config");
/// The `kind: Source` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum SourceKind {
    /// `Source`
    #[default]
    Source,
}

/// The kinds of workload.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Long-running replicas.
    Service,
    /// Runs to completion.
    Job,
    /// One per matching node.
    Daemon,
    /// Storage bound to one node on first use (not a workload: nothing runs).
    Volume,
    /// Named secret values, encrypted at rest (not a workload: nothing runs).
    Secret,
    /// A git repository whose manifests are applied (not a workload either).
    Source,
    /// A namespace and its quota (cluster-wide; not a workload either).
    Namespace,
    /// Named files and values that are not secret (not a workload either).
    Config,
}

impl Kind {
    /// All kinds of object.
    pub const ALL: [Kind; 8] = [
        Kind::Service,
        Kind::Job,
        Kind::Daemon,
        Kind::Volume,
        Kind::Secret,
        Kind::Source,
        Kind::Namespace,
        Kind::Config,
    ];

    /// True for the kinds that run tasks (service, job, daemon).
    pub fn is_workload(self) -> bool {
        matches!(self, Kind::Service | Kind::Job | Kind::Daemon)
    }

    /// The lowercase name used in store keys and the CLI (`service`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Job => "job",
            Kind::Daemon => "daemon",
            Kind::Volume => "volume",
            Kind::Secret => "secret",
            Kind::Source => "source",
            Kind::Namespace => "namespace",
            Kind::Config => "config",
        }
    }

    /// Parses `service`, `services`, `svc`, `Service`, `job(s)`, `daemon(s)`, `ds`,
    /// `volume(s)`, `vol`, `secret(s)`, `source(s)`, `namespace(s)`, `ns`, `config(s)`, `cm`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "service" | "services" | "svc" => Some(Kind::Service),
            "job" | "jobs" => Some(Kind::Job),
            "daemon" | "daemons" | "ds" => Some(Kind::Daemon),
            "volume" | "volumes" | "vol" => Some(Kind::Volume),
            "secret" | "secrets" => Some(Kind::Secret),
            "source" | "sources" => Some(Kind::Source),
            "namespace" | "namespaces" | "ns" => Some(Kind::Namespace),
            "config" | "configs" | "cm" => Some(Kind::Config),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resource requests (what the scheduler reserves) or limits (what the driver enforces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU, e.g. `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<MilliCpu>,
    /// Memory, e.g. `256Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// CPU in calibrated work units instead of millicores: 1000 units are one core of
    /// the reference machine (CPU score 1000). A node with score 500 needs 2000m for
    /// 1000 units. Requests only; when given, `cpu` is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_units: Option<u32>,
    /// GPUs: a count and, optionally, vendor, model and memory each must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequest>,
    /// Ephemeral disk on the node's data disk, e.g. `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Bytes>,
}

/// GPUs a task needs; every one of them must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuRequest {
    /// How many GPUs (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Vendor: `nvidia`, `amd`, `intel`, `broadcom`... (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// A part of the model name, case-insensitive (`4080`, `RX 6600`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// At least this much video memory each, e.g. `8Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
}

impl Resources {
    /// Requested CPU, with the default of 100m when unset. With `cpu_units` the millicores
    /// depend on the node: see [`Resources::cpu_on`].
    pub fn cpu_or_default(&self) -> MilliCpu {
        self.cpu.unwrap_or(MilliCpu(100))
    }
    /// Millicores this request takes on a node with CPU score `score` (reference 1000).
    /// Work units on a node without a score count as millicores.
    pub fn cpu_on(&self, score: Option<u32>) -> u64 {
        match self.cpu_units {
            Some(u) => {
                let score = u64::from(score.unwrap_or(1000).max(1));
                (u64::from(u) * 1000).div_ceil(score)
            }
            None => self.cpu_or_default().0,
        }
    }
    /// GPUs requested.
    pub fn gpu_count(&self) -> u32 {
        self.gpu.as_ref().map_or(0, |g| g.count)
    }
    /// Requested memory, with the default of 64Mi when unset.
    pub fn memory_or_default(&self) -> Bytes {
        self.memory.unwrap_or(Bytes(64 << 20))
    }
}

fn default_grace() -> Duration {
    Duration(10_000)
}

fn is_default_grace(d: &Duration) -> bool {
    *d == default_grace()
}

/// What runs: a process (the exec driver), or a container from an OCI image (the
/// containerd driver) when `image` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// argv: the program and its arguments. `${MOTLEY_INDEX}` and other
    /// `${MOTLEY_*}` variables are expanded. With `image`, optional: it replaces the
    /// image's entrypoint and command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// An OCI image reference (`docker.io/library/busybox:1.36`, `registry:5000/app@sha256:…`):
    /// the task runs as a container from it, through containerd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// With `image`: arguments replacing the image's command (after its entrypoint, or
    /// after `command` when given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// With `image`: a Secret with keys `username` and `password` for the image's
    /// registry (a private image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_secret: Option<String>,
    /// With `image`: `host` (default: the node's network) or `bridge` (a network
    /// namespace of its own on the node's `motley0` bridge, through Debian's CNI
    /// plugins; `ports` are published on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory; defaults to the allocation's own directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// What the scheduler reserves (defaults: cpu 100m, memory 64Mi).
    #[serde(default)]
    pub resources: Resources,
    /// Hard limits enforced through cgroups where the node has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resources>,
    /// Time between SIGTERM and SIGKILL when stopping.
    #[serde(default = "default_grace", skip_serializing_if = "is_default_grace")]
    pub stop_grace: Duration,
    /// Where the task's output is kept: `disk`, or `memory` (a bounded ring on tmpfs).
    /// Default: the node's choice (memory on SD, eMMC and USB flash; disk elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogTarget>,
    /// Static host ports the task listens on; two tasks never share one on a node.
    /// Each is given to the task as `MOTLEY_PORT_<NAME>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<HostPort>,
    /// Volumes (by name) the task uses; each is given as `MOTLEY_VOLUME_<NAME>`, a
    /// directory on the node the volume is bound to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Values of Secrets the task is given, each as an environment variable or as a
    /// file on an in-memory filesystem (`$MOTLEY_SECRETS/<file>`, mode 0400).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    /// With `image`: volumes and node directories mounted at paths of the container's
    /// choosing (besides `/volumes/<name>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Values of Configs the task is given, each as an environment variable or as a
    /// read-only file. A Config that changes rolls the tasks that use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<ConfigRef>,
    /// With `image`: run as this numeric user (`1000` or `1000:1000`) instead of the
    /// agent's task user (Compose's `user:`, Kubernetes' `runAsUser`); root is `root: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run as root. Tasks run as an unprivileged user unless they ask for root, and only
    /// nodes whose agent allows it (`motley agent --allow-root-tasks`) take those.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root: bool,
}

/// A static host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostPort {
    /// Name, for the environment variable (`http` → `MOTLEY_PORT_HTTP`).
    pub name: String,
    /// The port number on the node (1–65535).
    pub port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
    /// With `image` and `network: bridge`: the port the container listens on, published
    /// on the node at `port` (default: the same number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
}

/// A mount of a container (`task.mounts`): exactly one of `volume` and `host_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// One of the task's `volumes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// A directory or file of the node, which must exist there (it pins the work to
    /// the nodes that have it: use `placement.require`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// Where the container sees it (absolute).
    pub path: String,
    /// Read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// How a container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The node's own network.
    Host,
    /// Its own namespace on the node's bridge, ports published.
    Bridge,
}

/// A transport protocol.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    fn is_tcp(&self) -> bool {
        *self == Protocol::Tcp
    }
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Where a task's output is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// A bounded file in the allocation's directory on the data disk.
    Disk,
    /// A bounded ring in memory (tmpfs): nothing is written to the data disk.
    Memory,
}

impl LogTarget {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogTarget::Disk => "disk",
            LogTarget::Memory => "memory",
        }
    }
}

/// When a task that exited is started again in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Always restart, whatever the exit code.
    #[default]
    Always,
    /// Restart only after a non-zero exit or a signal.
    OnFailure,
    /// Never restart.
    Never,
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// First delay.
    #[serde(default = "Backoff::default_initial")]
    pub initial: Duration,
    /// Largest delay; delays double up to it.
    #[serde(default = "Backoff::default_max")]
    pub max: Duration,
}

impl Backoff {
    fn default_initial() -> Duration {
        Duration(1_000)
    }
    fn default_max() -> Duration {
        Duration(60_000)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Self::default_initial(),
            max: Self::default_max(),
        }
    }
}

/// The restart policy of a service or daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// always (default), on-failure or never.
    #[serde(default)]
    pub policy: RestartMode,
    /// Delay between restarts.
    #[serde(default)]
    pub backoff: Backoff,
}

/// The restart behaviour an agent applies to one allocation; derived from the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// Give up (state `failed`) after this many restarts; `None` is unbounded.
    pub max_restarts: Option<u32>,
    /// Backoff between restarts.
    pub backoff: Backoff,
}

/// What happens to a workload's instances when their node is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeLoss {
    /// Replace as soon as the node is declared down (stateless work: availability first).
    #[default]
    Replace,
    /// Never two copies: the cut-off node stops the task when its lease expires, and the
    /// server replaces it only after the lease and a margin have passed.
    Fence,
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}

/// A Service: `replicas` long-running copies of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `Service`.
    pub kind: Service,
    /// Unique among services.
    pub name: String,
    /// The namespace (`default` when unset); names are unique within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How many copies to keep running (default 1).
    #[serde(default = "one")]
    pub replicas: u32,
    /// What each replica runs.
    pub task: Task,
    /// Restart policy (default: always, backoff 1s..60s).
    #[serde(default)]
    pub restart: Restart,
    /// Where replicas may run.
    #[serde(default)]
    pub placement: Placement,
    /// `replace` (default) or `fence` when a node is lost. Services with volumes are
    /// fenced unless they say `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_node_loss: Option<NodeLoss>,
    /// Priority: a service that does not fit preempts job allocations of lower priority.
    #[serde(default, skip_serializing_if = "Priority::is_zero")]
    pub priority: Priority,
    /// How replicas are probed: healthy ones take traffic, unhealthy ones restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// Ports chosen per allocation, reached at `NAME.motley:<service_port>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Routes of the ingress to this service's ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<Expose>,
    /// TCP routes of the ingress (a node port each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_tcp: Vec<TcpExpose>,
    /// How replicas are replaced when the spec changes (rolling, one at a time).
    #[serde(default, skip_serializing_if = "UpdatePolicy::is_default")]
    pub update: UpdatePolicy,
    /// Its availability objective: `{ availability: 99.5% }` (error budget, burn rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
    /// Services (same namespace) that must each have a ready replica before this one's
    /// replicas are placed: a start order (Compose's `depends_on` with
    /// `condition: service_healthy`). Replicas already running are not stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// A Job: runs `completions` instances to success, `parallelism` at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// `Job`.
    pub kind: Job,
    /// Unique among jobs.
    pub name: String,
    /// The namespace (`default` when unset); names are unique within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How many successful instances are needed (default 1). Instance i sees `MOTLEY_INDEX=i`.
    #[serde(default = "one")]
    pub completions: u32,
    /// How many instances may run at once (default 1).
    #[serde(default = "one")]
    pub parallelism: u32,
    /// How many times a failed instance is retried before the job fails (default 3).
    #[serde(default = "three")]
    pub retries: u32,
    /// Delay between retries.
    #[serde(default)]
    pub backoff: Backoff,
    /// Higher runs first when resources are short (default 0); an integer or a class.
    #[serde(default, skip_serializing_if = "Priority::is_zero")]
    pub priority: Priority,
    /// How long one instance may run (Slurm's `--time`): an instance still running
    /// then is stopped and fails (`time limit … exceeded`), which fails the job. Also
    /// lets the queue backfill it ahead of a waiting job it does not delay, and tells
    /// when room held for the head of the queue frees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<Duration>,
    /// What each instance runs.
    pub task: Task,
    /// Where instances may run.
    #[serde(default)]
    pub placement: Placement,
    /// `replace` (default) or `fence` when a node is lost. Jobs with volumes are fenced
    /// unless they say `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_node_loss: Option<NodeLoss>,
    /// How long a finished job (complete or failed) is kept, then deleted with its
    /// allocations (default 24h; Kubernetes' `ttlSecondsAfterFinished`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<Duration>,
    /// Makes it periodic: a cron schedule (`0 3 * * *`; six fields with seconds first).
    /// Each time it fires, a run is started: a Job of its own named `NAME-<unix
    /// seconds>` (docs/periodic.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's time zone (IANA, `Europe/Berlin`; default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Periodic: a run due while another runs: `allow` (default), `forbid`, `replace`.
    #[serde(default, skip_serializing_if = "Concurrency::is_default")]
    pub concurrency: Concurrency,
    /// Periodic: runs due while the control plane was down: `run_once` (default), `skip`.
    #[serde(default, skip_serializing_if = "Missed::is_default")]
    pub missed: Missed,
    /// Periodic: how many finished runs are kept (default 3); older ones are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<u32>,
    /// Periodic: start no run while true (runs under way go on). Due times that pass
    /// meanwhile are missed: `missed` decides once it is false again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// A Daemon: one copy on every node that matches its placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaemonSpec {
    /// `Daemon`.
    pub kind: Daemon,
    /// Unique among daemons.
    pub name: String,
    /// The namespace (`default` when unset); names are unique within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What runs on each node.
    pub task: Task,
    /// Restart policy (default: always).
    #[serde(default)]
    pub restart: Restart,
    /// Which nodes get a copy (`require` selects them; empty means all).
    #[serde(default)]
    pub placement: Placement,
}

/// Any workload spec: one manifest document.
// One per workload (and per kept revision), never in a hot array: the size of its
// largest variant (a service, ~1 KB) costs nothing, and boxing it would touch every
// match on a spec.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Spec {
    /// A service.
    Service(ServiceSpec),
    /// A job.
    Job(JobSpec),
    /// A daemon.
    Daemon(DaemonSpec),
    /// A volume (not a workload: the task and placement accessors give empty ones).
    Volume(VolumeSpec),
    /// A secret (not a workload either).
    Secret(SecretSpec),
    /// A git source (not a workload either).
    Source(SourceSpec),
    /// A namespace (not a workload either).
    Namespace(NamespaceSpec),
    /// A config (not a workload either).
    Config(ConfigSpec),
}

impl Task {
    /// `user` as `(uid, gid)` (the gid defaults to the uid); `None` when unset or not
    /// numeric.
    pub fn numeric_user(&self) -> Option<(u32, u32)> {
        let u = self.user.as_deref()?;
        let (uid, gid) = u.split_once(':').unwrap_or((u, u));
        Some((uid.parse().ok()?, gid.parse().ok()?))
    }

    /// Whether the task is given values delivered with its allocation (Secret values
    /// as variables, files or registry credentials; Config values): it waits for them
    /// before it starts.
    pub fn uses_secrets(&self) -> bool {
        !self.secrets.is_empty() || self.image_secret.is_some() || !self.configs.is_empty()
    }
}

/// What a volume "runs": nothing.
static NO_TASK: Task = Task {
    command: Vec::new(),
    image: None,
    args: Vec::new(),
    image_secret: None,
    network: None,
    env: BTreeMap::new(),
    workdir: None,
    resources: Resources {
        cpu: None,
        memory: None,
        cpu_units: None,
        gpu: None,
        disk: None,
    },
    limits: None,
    stop_grace: Duration(10_000),
    logs: None,
    ports: Vec::new(),
    volumes: Vec::new(),
    mounts: Vec::new(),
    secrets: Vec::new(),
    configs: Vec::new(),
    user: None,
    root: false,
};

static NO_PLACEMENT: Placement = Placement {
    require: None,
    tolerations: Vec::new(),
    prefer: Vec::new(),
    affinity: Vec::new(),
    anti_affinity: Vec::new(),
    spread: Vec::new(),
    strategy: None,
};

impl Spec {
    /// The workload's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Service(_) => Kind::Service,
            Spec::Job(_) => Kind::Job,
            Spec::Daemon(_) => Kind::Daemon,
            Spec::Volume(_) => Kind::Volume,
            Spec::Secret(_) => Kind::Secret,
            Spec::Source(_) => Kind::Source,
            Spec::Namespace(_) => Kind::Namespace,
            Spec::Config(_) => Kind::Config,
        }
    }
    /// The workload's name.
    pub fn name(&self) -> &str {
        match self {
            Spec::Service(s) => &s.name,
            Spec::Job(s) => &s.name,
            Spec::Daemon(s) => &s.name,
            Spec::Volume(s) => &s.name,
            Spec::Secret(s) => &s.name,
            Spec::Source(s) => &s.name,
            Spec::Namespace(s) => &s.name,
            Spec::Config(s) => &s.name,
        }
    }
    /// The namespace it lives in (a Namespace itself: `default`, being cluster-wide).
    pub fn namespace(&self) -> &str {
        let ns = match self {
            Spec::Service(s) => &s.namespace,
            Spec::Job(s) => &s.namespace,
            Spec::Daemon(s) => &s.namespace,
            Spec::Volume(s) => &s.namespace,
            Spec::Secret(s) => &s.namespace,
            Spec::Source(s) => &s.namespace,
            Spec::Config(s) => &s.namespace,
            Spec::Namespace(_) => &None,
        };
        namespace_or_default(ns)
    }
    /// Sets the namespace (`default` is stored as unset, so what 0.1.0 wrote and what
    /// is written now compare equal), and its affinities' (`service/db`: the same
    /// namespace's); a Namespace stays cluster-wide.
    pub fn set_namespace(&mut self, ns: &str) {
        let v = (ns != DEFAULT_NAMESPACE).then(|| ns.to_string());
        match self {
            Spec::Service(s) => {
                s.namespace = v;
                localize(&mut s.placement, ns);
            }
            Spec::Job(s) => {
                s.namespace = v;
                localize(&mut s.placement, ns);
            }
            Spec::Daemon(s) => {
                s.namespace = v;
                localize(&mut s.placement, ns);
            }
            Spec::Volume(s) => s.namespace = v,
            Spec::Secret(s) => s.namespace = v,
            Spec::Source(s) => s.namespace = v,
            Spec::Config(s) => s.namespace = v,
            Spec::Namespace(_) => {}
        }
    }
    /// Free-form labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        match self {
            Spec::Service(s) => &s.labels,
            Spec::Job(s) => &s.labels,
            Spec::Daemon(s) => &s.labels,
            Spec::Volume(s) => &s.labels,
            Spec::Secret(s) => &s.labels,
            Spec::Source(s) => &s.labels,
            Spec::Namespace(s) => &s.labels,
            Spec::Config(s) => &s.labels,
        }
    }
    /// The task every instance runs (a volume's is empty).
    pub fn task(&self) -> &Task {
        match self {
            Spec::Service(s) => &s.task,
            Spec::Job(s) => &s.task,
            Spec::Daemon(s) => &s.task,
            Spec::Volume(_)
            | Spec::Secret(_)
            | Spec::Source(_)
            | Spec::Namespace(_)
            | Spec::Config(_) => &NO_TASK,
        }
    }
    /// The task as its allocations run it: a service's with its service ports added
    /// (port 0: chosen per allocation by its agent).
    pub fn run_task(&self) -> std::borrow::Cow<'_, Task> {
        match self {
            Spec::Service(s) if !s.ports.is_empty() => std::borrow::Cow::Owned(s.task_with_ports()),
            _ => std::borrow::Cow::Borrowed(self.task()),
        }
    }
    /// The placement constraints (a volume's are empty).
    pub fn placement(&self) -> &Placement {
        match self {
            Spec::Service(s) => &s.placement,
            Spec::Job(s) => &s.placement,
            Spec::Daemon(s) => &s.placement,
            Spec::Volume(_)
            | Spec::Secret(_)
            | Spec::Source(_)
            | Spec::Namespace(_)
            | Spec::Config(_) => &NO_PLACEMENT,
        }
    }
    /// The priority (daemons: `critical`, as node helpers; volumes: 0).
    pub fn priority(&self) -> i32 {
        match self {
            Spec::Service(s) => s.priority.0,
            Spec::Job(s) => s.priority.0,
            Spec::Daemon(_) => Priority::CLASSES[0].1,
            Spec::Volume(_)
            | Spec::Secret(_)
            | Spec::Source(_)
            | Spec::Namespace(_)
            | Spec::Config(_) => 0,
        }
    }
    /// What happens to instances on a lost node (daemons: replace, they never move).
    /// Work with volumes is fenced unless it asks for `replace`: its data is on that node.
    pub fn on_node_loss(&self) -> NodeLoss {
        let default = if self.task().volumes.is_empty() {
            NodeLoss::Replace
        } else {
            NodeLoss::Fence
        };
        match self {
            Spec::Service(s) => s.on_node_loss.unwrap_or(default),
            Spec::Job(s) => s.on_node_loss.unwrap_or(default),
            Spec::Daemon(_)
            | Spec::Volume(_)
            | Spec::Secret(_)
            | Spec::Source(_)
            | Spec::Namespace(_)
            | Spec::Config(_) => NodeLoss::Replace,
        }
    }

    /// The restart policy an agent applies to each instance.
    pub fn restart_policy(&self) -> RestartPolicy {
        match self {
            Spec::Service(s) => RestartPolicy {
                mode: s.restart.policy,
                max_restarts: None,
                backoff: s.restart.backoff,
            },
            Spec::Daemon(s) => RestartPolicy {
                mode: s.restart.policy,
                max_restarts: None,
                backoff: s.restart.backoff,
            },
            Spec::Job(s) => RestartPolicy {
                mode: RestartMode::OnFailure,
                max_restarts: Some(s.retries),
                backoff: s.backoff,
            },
            Spec::Volume(_)
            | Spec::Secret(_)
            | Spec::Source(_)
            | Spec::Namespace(_)
            | Spec::Config(_) => RestartPolicy {
                mode: RestartMode::Never,
                max_restarts: Some(0),
                backoff: Backoff::default(),
            },
        }
    }
    /// A reference to this workload.
    pub fn reference(&self) -> WorkloadRef {
        WorkloadRef {
            kind: self.kind(),
            name: self.name().to_string(),
            namespace: self.namespace().to_string(),
        }
    }
}

/// A workload as stored: the spec plus server-maintained metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// What the user applied.
    pub spec: Spec,
    /// Incremented on every change of the spec.
    pub generation: u64,
    /// Unique id of this incarnation (a deleted and re-created workload gets a new one).
    pub uid: String,
    /// When it was first created (ms since the Unix epoch).
    pub created_at: u64,
    /// When the spec last changed.
    pub updated_at: u64,
    /// Volumes only: where it is bound, once used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<VolumeBinding>,
    /// Tasks with `image:`: the platforms the image offers, read from the registry by
    /// the server when the spec was applied (empty: not known, and not filtered on;
    /// the node then refuses at pull time if it cannot run it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_platforms: Vec<crate::platform::Platform>,
    /// Services: earlier specs, oldest first (`motley rollout history`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::rollout::Revision>,
    /// Services: what the control plane recorded of the latest update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::Rollout>,
    /// The source that applied it (its inventory); none when made by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A run of a periodic job: which, and for when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_of: Option<RunOf>,
}

impl Workload {
    /// A workload as first created: generation 1, no binding, history or rollout.
    pub fn created(spec: Spec, uid: String, now: u64) -> Workload {
        Workload {
            spec,
            generation: 1,
            uid,
            created_at: now,
            updated_at: now,
            binding: None,
            image_platforms: Vec::new(),
            history: Vec::new(),
            rollout: None,
            source: None,
            run_of: None,
        }
    }
}

/// An allocation for the core's unit tests: `id` of `workload` (`kind/name`) on node
/// `n1`, desired to run, in `state`.
#[cfg(test)]
pub(crate) fn test_alloc(id: &str, workload: &str, state: AllocState) -> Allocation {
    let json = serde_json::json!({
        "id": id, "workload": workload,
        "workload_uid": "u", "generation": 1, "index": 0, "node": "n1",
        "task": {"command": ["true"]},
        "restart": {"mode": "always", "max_restarts": null, "backoff": {}},
        "desired": "run", "state": state,
        "created_at": 0, "updated_at": 0
    });
    match serde_json::from_value(json) {
        Ok(a) => a,
        Err(e) => panic!("test allocation: {e}"),
    }
}
