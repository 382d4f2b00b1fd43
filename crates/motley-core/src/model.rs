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
}

impl Kind {
    /// All workload kinds.
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::Job, Kind::Daemon];

    /// The lowercase name used in store keys and the CLI (`service`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Job => "job",
            Kind::Daemon => "daemon",
        }
    }

    /// Parses `service`, `services`, `svc`, `Service`, `job(s)`, `daemon(s)`, `ds`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "service" | "services" | "svc" => Some(Kind::Service),
            "job" | "jobs" => Some(Kind::Job),
            "daemon" | "daemons" | "ds" => Some(Kind::Daemon),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU, e.g. `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<MilliCpu>,
    /// Memory, e.g. `256Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
}

impl Resources {
    /// Requested CPU, with the default of 100m when unset.
    pub fn cpu_or_default(&self) -> MilliCpu {
        self.cpu.unwrap_or(MilliCpu(100))
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

/// What runs: the exec driver's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// argv: the program and its arguments. `${MOTLEY_INDEX}` and other
    /// `${MOTLEY_*}` variables are expanded.
    pub command: Vec<String>,
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

impl NodeLoss {
    fn is_replace(&self) -> bool {
        *self == NodeLoss::Replace
    }
}

/// Where a workload may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// A selector every chosen node must match, e.g. `arch in (amd64, arm64)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<String>,
    /// Taints this workload accepts (`{key: motley.io/thermal}`, `{key: "*"}`).
    /// Daemons tolerate every condition taint without saying so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<crate::hw::Toleration>,
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
    /// `replace` (default) or `fence` when a node is lost.
    #[serde(default, skip_serializing_if = "NodeLoss::is_replace")]
    pub on_node_loss: NodeLoss,
}

/// A Job: runs `completions` instances to success, `parallelism` at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// `Job`.
    pub kind: Job,
    /// Unique among jobs.
    pub name: String,
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
    /// Higher runs first when resources are short (default 0).
    #[serde(default)]
    pub priority: i32,
    /// What each instance runs.
    pub task: Task,
    /// Where instances may run.
    #[serde(default)]
    pub placement: Placement,
    /// `replace` (default) or `fence` when a node is lost.
    #[serde(default, skip_serializing_if = "NodeLoss::is_replace")]
    pub on_node_loss: NodeLoss,
}

/// A Daemon: one copy on every node that matches its placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaemonSpec {
    /// `Daemon`.
    pub kind: Daemon,
    /// Unique among daemons.
    pub name: String,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Spec {
    /// A service.
    Service(ServiceSpec),
    /// A job.
    Job(JobSpec),
    /// A daemon.
    Daemon(DaemonSpec),
}

impl Spec {
    /// The workload's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Service(_) => Kind::Service,
            Spec::Job(_) => Kind::Job,
            Spec::Daemon(_) => Kind::Daemon,
        }
    }
    /// The workload's name.
    pub fn name(&self) -> &str {
        match self {
            Spec::Service(s) => &s.name,
            Spec::Job(s) => &s.name,
            Spec::Daemon(s) => &s.name,
        }
    }
    /// The task every instance runs.
    pub fn task(&self) -> &Task {
        match self {
            Spec::Service(s) => &s.task,
            Spec::Job(s) => &s.task,
            Spec::Daemon(s) => &s.task,
        }
    }
    /// The placement constraints.
    pub fn placement(&self) -> &Placement {
        match self {
            Spec::Service(s) => &s.placement,
            Spec::Job(s) => &s.placement,
            Spec::Daemon(s) => &s.placement,
        }
    }
    /// What happens to instances on a lost node (daemons: replace, they never move).
    pub fn on_node_loss(&self) -> NodeLoss {
        match self {
            Spec::Service(s) => s.on_node_loss,
            Spec::Job(s) => s.on_node_loss,
            Spec::Daemon(_) => NodeLoss::Replace,
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
        }
    }
    /// A reference to this workload.
    pub fn reference(&self) -> WorkloadRef {
        WorkloadRef {
            kind: self.kind(),
            name: self.name().to_string(),
        }
    }
}

/// `kind/name` of a workload; serialized as that string (`service/web`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    /// The kind.
    pub kind: Kind,
    /// The name.
    pub name: String,
}

impl WorkloadRef {
    /// Parses `service/web` (any kind alias).
    pub fn parse(s: &str) -> Option<WorkloadRef> {
        let (k, n) = s.split_once('/')?;
        Some(WorkloadRef {
            kind: Kind::parse(k)?,
            name: n.to_string(),
        })
    }
}

impl Serialize for WorkloadRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WorkloadRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WorkloadRef::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("expected KIND/NAME, got {s:?}")))
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
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
}

/// What a node is, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeFacts {
    /// CPU architecture (`amd64`, `arm64`, `arm`, ...), in Go/OCI naming.
    pub arch: String,
    /// Operating system (`linux`).
    pub os: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory: u64,
    /// Hostname.
    #[serde(default)]
    pub hostname: String,
    /// Version of the agent.
    #[serde(default)]
    pub agent_version: String,
    /// Single-thread CPU score (reference machine = 1000; see `docs/discovery.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_score: Option<u32>,
    /// Where task logs go by default on this node (`disk` or `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_logs: Option<LogTarget>,
    /// Why the agent chose that (`data dir on sd (mmcblk0p2)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_logs_reason: Option<String>,
    /// Discovered hardware (stable facts; readings are kept in memory only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw: Option<Box<crate::hw::Hardware>>,
    /// Conditions that hold now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::hw::Condition>,
}

/// A node as stored. Liveness is not here: it lives in the server's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// Discovered facts.
    pub facts: NodeFacts,
    /// User labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Schedulable capacity.
    pub capacity: Capacity,
    /// No new allocations when set.
    #[serde(default)]
    pub cordoned: bool,
    /// Being drained: its allocations move elsewhere, one replica of a service at a time.
    #[serde(default)]
    pub draining: bool,
    /// Taints, from the node's conditions and the server's taint policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<crate::hw::Taint>,
    /// When the node first registered.
    pub registered_at: u64,
}

/// Capacity a node offers to workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Capacity {
    /// Millicores.
    pub cpu: MilliCpu,
    /// Bytes of memory.
    pub memory: Bytes,
}

impl Node {
    /// The label-like view selectors match: facts first (`arch`, `os`, `cpus`,
    /// `memory`, `name`, `hostname`), then user labels.
    pub fn label(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match key {
            "arch" => Some(Cow::Borrowed(&self.facts.arch)),
            "os" => Some(Cow::Borrowed(&self.facts.os)),
            "cpus" => Some(Cow::Owned(self.facts.cpus.to_string())),
            "memory" => Some(Cow::Owned(self.facts.memory.to_string())),
            "name" => Some(Cow::Borrowed(&self.name)),
            "hostname" => Some(Cow::Borrowed(&self.facts.hostname)),
            _ => self.labels.get(key).map(|v| Cow::Borrowed(v.as_str())),
        }
    }
}

/// The lifecycle state of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocState {
    /// Placed; not yet started by the agent.
    Pending,
    /// The task runs (or waits to be restarted in place).
    Running,
    /// Exited successfully and will not restart.
    Complete,
    /// Failed and will not restart.
    Failed,
    /// Its node was lost.
    Lost,
    /// Stopped on request.
    Stopped,
}

impl AllocState {
    /// Complete, failed, lost or stopped: nothing runs and nothing will.
    pub fn is_terminal(self) -> bool {
        !matches!(self, AllocState::Pending | AllocState::Running)
    }
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AllocState::Pending => "pending",
            AllocState::Running => "running",
            AllocState::Complete => "complete",
            AllocState::Failed => "failed",
            AllocState::Lost => "lost",
            AllocState::Stopped => "stopped",
        }
    }
    /// All states, for metrics.
    pub const ALL: [AllocState; 6] = [
        AllocState::Pending,
        AllocState::Running,
        AllocState::Complete,
        AllocState::Failed,
        AllocState::Lost,
        AllocState::Stopped,
    ];
}

impl fmt::Display for AllocState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the control plane wants of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Keep it running.
    Run,
    /// Stop it.
    Stop,
}

/// One instance of a workload placed on one node. Its id, workload, node and
/// task never change; only its desired and observed state do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Immutable id.
    pub id: String,
    /// The workload it belongs to.
    pub workload: WorkloadRef,
    /// The workload's uid when created.
    pub workload_uid: String,
    /// The workload's generation when created.
    pub generation: u64,
    /// Replica slot (services) or completion index (jobs); 0 for daemons.
    pub index: u32,
    /// The node it runs on.
    pub node: String,
    /// The task, copied from the spec when created.
    pub task: Task,
    /// How the agent restarts it.
    pub restart: RestartPolicy,
    /// Fenced allocations stop when their node loses contact with the control plane.
    #[serde(default)]
    pub on_node_loss: NodeLoss,
    /// What the control plane wants.
    pub desired: Desired,
    /// What the agent last reported.
    pub state: AllocState,
    /// Process id while running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Exit code of the last exit (negative: killed by that signal).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// How many times it was restarted in place.
    #[serde(default)]
    pub restarts: u32,
    /// Recent reasons for transitions, newest last (bounded).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Created (ms since the epoch).
    pub created_at: u64,
    /// When the state last changed.
    pub updated_at: u64,
}

/// How many reasons an allocation keeps.
pub const MAX_REASONS: usize = 8;

impl Allocation {
    /// Appends a reason, dropping the oldest beyond [`MAX_REASONS`].
    pub fn push_reason(&mut self, reason: String) {
        self.reasons.push(reason);
        if self.reasons.len() > MAX_REASONS {
            let extra = self.reasons.len() - MAX_REASONS;
            self.reasons.drain(..extra);
        }
    }

    /// True while it occupies resources on its node (not terminal).
    pub fn is_live(&self) -> bool {
        !self.state.is_terminal()
    }
}

/// Validates a node label: a key of 1–253 characters and a value of at most 63, neither
/// with whitespace or the selector syntax's `,()=!<>`.
pub fn validate_label(key: &str, value: &str) -> Result<(), String> {
    let bad = |s: &str| {
        s.chars()
            .any(|c| c.is_whitespace() || ",()=!<>".contains(c))
    };
    if key.is_empty() || key.len() > 253 || bad(key) {
        return Err(format!("label key {key:?} is not valid"));
    }
    if value.len() > 63 || bad(value) {
        return Err(format!(
            "label value {value:?} must be at most 63 characters without spaces or ,()=!<>"
        ));
    }
    Ok(())
}

/// Validates a name: 1–63 characters of lowercase letters, digits and `-`,
/// starting with a letter or digit (DNS label rules, as Kubernetes does).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("name {name:?} must be 1 to 63 characters"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "name {name:?} must be lowercase letters, digits and '-', not starting or ending with '-'"
        ));
    }
    Ok(())
}
