//! Request and response bodies of the HTTP API (`/v1`), shared by the server
//! and the CLI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::ManifestError;
use crate::model::{Allocation, Node, Workload};
use crate::reconcile::{Blocked, WorkloadStatus};

/// One manifest file as sent by a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Display name (path or `-`).
    pub name: String,
    /// YAML text.
    pub content: String,
}

/// `POST /v1/apply` and `POST /v1/delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSet {
    /// The files; validated together, applied all or nothing.
    pub files: Vec<ManifestFile>,
    /// Validate and report, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Secret values the client read at apply time (`fromFile`, `fromEnv`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<SecretInput>,
}

/// A secret's values in plaintext (`get secret NAME --reveal`, admins only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedSecret {
    /// The secret's name.
    pub name: String,
    /// Its values by key.
    pub data: BTreeMap<String, String>,
}

/// The answer to `motley secrets rotate-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotated {
    /// The new key's id.
    pub key_id: String,
    /// How many values were sealed again.
    pub resealed: usize,
}

impl ManifestSet {
    /// The files as manifest sources, for [`crate::manifest::parse_set`].
    pub fn sources(&self) -> Vec<crate::manifest::Source<'_>> {
        self.files
            .iter()
            .map(|f| crate::manifest::Source {
                name: &f.name,
                text: &f.content,
            })
            .collect()
    }
}

/// A Secret value read by the client: the file or environment variable a manifest
/// named, and what it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    /// The manifest (its name as in [`ManifestFile`]).
    pub source: String,
    /// `file` or `env`.
    pub from: String,
    /// The path or variable name, as written in the manifest.
    pub name: String,
    /// The value.
    pub value: String,
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectResult {
    /// `service`, `job` or `daemon`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// `created`, `configured`, `unchanged`, `deleted`, `not found`.
    pub action: String,
    /// Its namespace, when not `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ObjectResult {
    /// What happened to `r`.
    pub fn of(r: &crate::model::WorkloadRef, action: &str) -> ObjectResult {
        ObjectResult {
            kind: r.kind.to_string(),
            name: r.name.clone(),
            action: action.to_string(),
            namespace: (!r.in_default()).then(|| r.namespace.clone()),
        }
    }

    /// `service/web` or `dev/service/web`, as references are written.
    pub fn target(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// Response to apply and delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectResults {
    /// One per object, in input order.
    pub results: Vec<ObjectResult>,
}

/// Every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Summary.
    pub error: String,
    /// Per-field manifest errors, when the input was invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ManifestError>,
}

/// A workload with its derived status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadView {
    /// What is stored.
    pub workload: Workload,
    /// Derived from its allocations.
    pub status: WorkloadStatus,
    /// Unplaced demand and why.
    #[serde(default)]
    pub blocked: Option<Blocked>,
    /// Jobs waiting for room: 1 for the head of the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// Services: where the latest update stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::Status>,
    /// Services: availability as the leader observed it, and the SLO's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<UptimeView>,
    /// Periodic jobs: the schedule, the next and the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periodic: Option<PeriodicView>,
}

/// A periodic job as `get jobs` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeriodicView {
    /// Its cron schedule.
    pub schedule: String,
    /// The schedule's zone (`UTC` when unset).
    pub time_zone: String,
    /// When it next fires (ms since the epoch).
    #[serde(default)]
    pub next_run: Option<u64>,
    /// Its newest run's name.
    #[serde(default)]
    pub last_run: Option<String>,
    /// When that run was due (or started by hand), ms.
    #[serde(default)]
    pub last_due: Option<u64>,
    /// How late that run started, in ms, when it started more than
    /// [`crate::periodic::LATE_AFTER_MS`] after it was due (a run missed while the
    /// control plane was down, run once: `missed: run_once`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_late_by: Option<u64>,
    /// Runs not finished.
    pub active: u32,
    /// Runs kept.
    pub runs: u32,
    /// Why the due run did not start, or why the schedule cannot be read here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A service's availability over the last hour, day and 30 days (fractions; none:
/// not observed in that window), and what its SLO says of it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct UptimeView {
    /// Last hour.
    pub h1: Option<f64>,
    /// Last 24 hours.
    pub h24: Option<f64>,
    /// Last 30 days.
    pub d30: Option<f64>,
    /// The SLO's target (`0.995`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// Its error budget left over 30 days (1: untouched; below 0: overspent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_remaining: Option<f64>,
    /// How fast the last hour spends it (1: exactly the budget over 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_rate: Option<f64>,
}

/// A workload with its allocations (`describe`). The server answers with borrowed
/// allocations (`WorkloadDetail<&Allocation>`: the same JSON, no copy of each).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadDetail<A = Allocation> {
    /// The workload and status.
    #[serde(flatten)]
    pub view: WorkloadView,
    /// Its allocations, newest first.
    pub allocations: Vec<A>,
    /// Energy given to its allocations so far, millijoules, by allocation (those whose
    /// node measures or estimates its power: `motley_core::energy`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub energy_mj: BTreeMap<String, u64>,
    /// Whether any of those figures is an estimate (a power model, not a meter).
    #[serde(default)]
    pub energy_estimated: bool,
}

/// A node with its liveness and usage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    /// What is stored.
    pub node: Node,
    /// `ready` or `down`.
    pub state: String,
    /// Since when (ms since the epoch).
    pub since: u64,
    /// Why it is in that state.
    pub reason: String,
    /// Live allocations on it.
    pub allocations: u32,
    /// Millicores requested by them.
    pub used_cpu: u64,
    /// Bytes requested by them.
    pub used_memory: u64,
    /// The latest readings (temperatures, free memory, power), kept in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readings: Option<crate::hw::Readings>,
    /// When they were taken (ms since the epoch, agent's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readings_at: Option<u64>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// `join` (default), `viewer` or `admin`.
    #[serde(default = "join_role")]
    pub role: String,
    /// Lifetime in seconds; none means it never expires.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Admin and viewer tokens: the namespaces it may act in (empty: the whole cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

fn join_role() -> String {
    "join".into()
}

/// A denied request (`GET /v1/audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ms since the epoch).
    pub at: u64,
    /// Who: `token <id> (<role>)`, `invalid token`, or `anonymous`.
    pub who: String,
    /// The client's address.
    pub peer: String,
    /// HTTP method.
    pub method: String,
    /// Path asked for.
    pub path: String,
    /// The answer: 401, 403 or 429.
    pub status: u16,
    /// Why it was refused.
    pub why: String,
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id, for revoking.
    pub id: String,
    /// `admin`, `node` or `join`.
    pub role: String,
    /// For node credentials: the node.
    #[serde(default)]
    pub node: Option<String>,
    /// Created (ms since the epoch).
    pub created_at: u64,
    /// Expires (ms since the epoch).
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The namespaces it is limited to (empty: none, the whole cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// Answer to `POST /v1/tokens`: the token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    /// Its listing.
    pub info: TokenInfo,
    /// The secret token.
    pub token: String,
}

/// `POST /v1/join` with a join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The joining node's name.
    pub node: String,
}

/// Answer to a join: the node's own credential and the cluster CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The node credential (bound to the node's name).
    pub credential: String,
    /// The cluster CA, PEM.
    pub ca: String,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Server version.
    pub version: String,
    /// Agent protocol version.
    pub protocol: u32,
    /// Store backend.
    pub datastore: String,
}

/// `GET /v1/whoami`: the calling token as the server sees it (the dashboard shows what
/// its role may do, and nothing more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// The token's public id.
    pub id: String,
    /// `admin` or `viewer` (node and join tokens may not ask).
    pub role: String,
    /// The namespaces it is limited to; empty: the whole cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// One server of the control plane (`GET /v1/servers`), as registered in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Unique per server process (a new id on every start).
    pub id: String,
    /// Host name (or `--name`).
    pub name: String,
    /// The URL agents and clients use.
    pub url: String,
    /// When this process started (ms since the epoch).
    pub started_at: u64,
    /// Whether it leads (runs the controllers and the scheduler).
    #[serde(default)]
    pub leader: bool,
    /// Since when it leads (ms), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leading_since: Option<u64>,
    /// Its version (empty from a server older than this field).
    #[serde(default)]
    pub version: String,
}

/// One instance `POST /v1/plan` would create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedPlacement {
    /// Its workload.
    pub workload: crate::model::WorkloadRef,
    /// Replica slot or completion index.
    pub index: u32,
    /// The node it would go to.
    pub node: String,
    /// GPUs it would get.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// Volumes and the mounts they would use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::model::AllocVolume>,
}

/// One allocation `POST /v1/plan` would stop (preempted, replaced, scaled down...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedStop {
    /// The allocation.
    pub alloc: String,
    /// Its workload.
    pub workload: crate::model::WorkloadRef,
    /// Its node.
    pub node: String,
    /// Why.
    pub reason: String,
}

/// `POST /v1/plan`: what applying a manifest set would do now, changing nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanResponse {
    /// What each object would be: `created`, `configured`, `unchanged`.
    pub objects: Vec<ObjectResult>,
    /// New instances and where.
    pub placements: Vec<PlannedPlacement>,
    /// Allocations that would stop.
    pub stops: Vec<PlannedStop>,
    /// Volumes that would be bound.
    pub bind: Vec<(String, crate::model::VolumeBinding)>,
    /// Demand that would wait, and why (node by node).
    pub blocked: Vec<(crate::model::WorkloadRef, Blocked)>,
    /// The job queue afterwards, head first.
    pub queue: Vec<crate::model::WorkloadRef>,
}

/// A git source as `get sources` and `describe source` show it (the leader's, in
/// memory; `applied` and `healthy` are also stored).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceView {
    /// The source's name.
    pub name: String,
    /// The repository.
    pub url: String,
    /// What it follows: `branch main`, `tag v1`, `commit <id>`.
    pub wanted: String,
    /// The directory read.
    pub path: String,
    /// The commit the remote's ref named at the last fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<String>,
    /// The commit whose manifests are applied now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// The last commit that passed its health gate (where a rollback returns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<String>,
    /// A commit that failed its health gate: not applied again until the ref moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// When the last sync ended (ms), 0 before the first.
    pub last_sync: u64,
    /// When the last sync that succeeded ended (ms), 0 before one did.
    pub last_success: u64,
    /// `synced`, `applied`, `waiting` (health gate), `rolled back`, `refused`, `failed`.
    pub result: String,
    /// What happened, in words; errors name the file, line, column and commit.
    pub message: String,
    /// Objects it applied that were changed by hand since.
    pub drift: Vec<crate::model::WorkloadRef>,
    /// How many objects it applied (its inventory).
    pub owned: usize,
    /// The plan of its latest new commit (kept; `motley source plan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<SourcePlan>,
    /// Its latest syncs, newest last (at most 20).
    pub events: Vec<SourceEvent>,
}

/// The plan of a commit: what applying it did (or would) do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourcePlan {
    /// The commit.
    pub commit: String,
    /// When it was planned (ms).
    pub at: u64,
    /// The store revision it was planned at (the apply requires it unchanged for the
    /// objects it touches).
    pub revision: u64,
    /// Created, changed, deleted objects, placements, and what would wait and why.
    pub plan: PlanResponse,
}

/// One sync of a source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceEvent {
    /// When it ended (ms).
    pub at: u64,
    /// The commit it was about (empty when the fetch failed).
    pub commit: String,
    /// Its result (as [`SourceView::result`]).
    pub result: String,
    /// What happened.
    pub message: String,
}

/// `POST /v1/sources/{name}/sync`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Confirms a commit that would delete every object the source applied.
    #[serde(default)]
    pub allow_empty: bool,
}

/// `POST /v1/experiments`: an experiment file to run (or only check, `dry_run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRequest {
    /// The file.
    pub file: ManifestFile,
    /// Check it against the cluster and answer its timeline; nothing is done.
    #[serde(default)]
    pub dry_run: bool,
}

/// Its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentAccepted {
    /// The experiment's name.
    pub name: String,
    /// Started (false for a dry run).
    pub started: bool,
    /// When each fault starts and ends, from the moment the steady state first holds.
    pub timeline: Vec<crate::experiment::Step>,
}

/// One row of `GET /v1/experiments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSummary {
    /// The name.
    pub name: String,
    /// Where its run is.
    pub phase: crate::experiment_run::Phase,
    /// When it was asked for (ms since the epoch).
    pub created: u64,
    /// When it ended.
    pub ended: Option<u64>,
    /// The verdict: the steady state held (once ended).
    pub steady: Option<bool>,
    /// Why it was aborted.
    pub why: Option<String>,
}

impl From<&crate::experiment_run::Report> for ExperimentSummary {
    fn from(r: &crate::experiment_run::Report) -> ExperimentSummary {
        ExperimentSummary {
            name: r.name.clone(),
            phase: r.phase,
            created: r.created,
            ended: r.ended,
            steady: r.verdict.as_ref().map(|v| v.steady),
            why: r.why.clone(),
        }
    }
}
