//! What runs where: nodes (their facts and capacity) and allocations (one instance of a
//! workload on one node, and its lifecycle).

use super::*;

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
    /// The agent runs tasks that ask for it as root (`--allow-root-tasks`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root_tasks: bool,
    /// containerd's version, while the agent reaches it (tasks with `image:` run only
    /// where this is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<String>,
}

/// A node as stored. Liveness is not here: it lives in the server's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// Discovered facts.
    pub facts: NodeFacts,
    /// Labels selectors match: the node's own (`--label`), the hardware labels the
    /// server derives from its facts (`motley.io/`), and the operator's, which win.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Labels the operator set with `motley label` (kept across registrations; the node
    /// cannot change or remove them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub operator_labels: BTreeMap<String, String>,
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
    /// Bytes of ephemeral disk (the data disk's size; 0 when unknown).
    #[serde(default)]
    pub disk: Bytes,
}

impl Node {
    /// The label-like view selectors match: facts first (`arch`, `os`, `cpus`,
    /// `memory`, `name`, `hostname`), then labels, then discovered labels by their short
    /// name (`cpu.score` for `motley.io/cpu-score`).
    pub fn label(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match key {
            "arch" => Some(Cow::Borrowed(&self.facts.arch)),
            "os" => Some(Cow::Borrowed(&self.facts.os)),
            "cpus" => Some(Cow::Owned(self.facts.cpus.to_string())),
            "memory" => Some(Cow::Owned(self.facts.memory.to_string())),
            "name" => Some(Cow::Borrowed(&self.name)),
            "hostname" => Some(Cow::Borrowed(&self.facts.hostname)),
            _ => match self.labels.get(key) {
                Some(v) => Some(Cow::Borrowed(v.as_str())),
                // Short names for discovered labels: `cpu.score` and `cpu-score` both mean
                // `motley.io/cpu-score`, `storage` means `motley.io/storage`.
                None if !key.contains('/') => {
                    // Built on the stack: selectors look labels up for every node.
                    let mut buf = [0u8; 64];
                    let prefix = crate::hw::LABEL_PREFIX.as_bytes();
                    let len = prefix.len() + key.len();
                    let long = buf.get_mut(..len)?;
                    long[..prefix.len()].copy_from_slice(prefix);
                    for (d, c) in long[prefix.len()..].iter_mut().zip(key.bytes()) {
                        *d = if c == b'.' { b'-' } else { c };
                    }
                    let long = std::str::from_utf8(long).ok()?;
                    self.labels.get(long).map(|v| Cow::Borrowed(v.as_str()))
                }
                None => None,
            },
        }
    }
}

/// The lifecycle state of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocState {
    /// Placed; not yet started by the agent.
    Pending,
    /// The task runs.
    Running,
    /// The task exited and waits to be restarted in place (a crash loop shows here,
    /// with the last exit and the delay in its reason).
    Backoff,
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
        !matches!(
            self,
            AllocState::Pending | AllocState::Running | AllocState::Backoff
        )
    }
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AllocState::Pending => "pending",
            AllocState::Running => "running",
            AllocState::Backoff => "backoff",
            AllocState::Complete => "complete",
            AllocState::Failed => "failed",
            AllocState::Lost => "lost",
            AllocState::Stopped => "stopped",
        }
    }
    /// All states, for metrics.
    pub const ALL: [AllocState; 7] = [
        AllocState::Pending,
        AllocState::Running,
        AllocState::Backoff,
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
    /// The task, copied from the spec when created. Shared: the allocations of one
    /// workload generation hold one copy (the reconcile pass's `task_of`, the server
    /// cache's `share_task`), not one each.
    pub task: std::sync::Arc<Task>,
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
    /// Jobs: the agent stops it and marks it failed this long after it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<Duration>,
    /// GPUs assigned to it (device names such as `card0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// Its volumes and the mount each is bound to on its node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<AllocVolume>,
    /// Created (ms since the epoch).
    pub created_at: u64,
    /// When the state last changed.
    pub updated_at: u64,
    /// What a starting allocation is doing now (`pulling 41 % of 120 MiB`), as its agent
    /// last said: filled in API answers from the server's memory, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The service's check, copied at creation: the agent probes by it. Boxed: most
    /// allocations have none, and inline it took 120 of an allocation's 496 bytes in
    /// every copy a server and an agent keep (docs/decisions.md, "A connection's memory").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Box<super::Check>>,
    /// What the check says, as the agent last reported (`None`: no check, or not
    /// running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
    /// The host ports its agent chose for the service's ports (`task.ports` with port
    /// 0), by name, as last reported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// Since when (server's clock, ms) it has run and passed its check (or run, without
    /// one): what a rolling update waits on. `None` while it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<u64>,
}

/// A volume as an allocation uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocVolume {
    /// The volume's name.
    pub name: String,
    /// The mount point on the node it is bound to; the agent keeps the directory there.
    pub mount: String,
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
