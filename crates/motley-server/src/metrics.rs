//! Prometheus metrics of the server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `state="running"` (allocations, nodes).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state.
    pub state: &'static str,
}

/// `kind="service"` (workloads).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: &'static str,
}

/// `service="web",health="healthy"` (service replicas by their check).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceHealthLabel {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub service: String,
    /// `healthy`, `unhealthy`, `unknown`, or `none` (the service has no check).
    pub health: &'static str,
}

/// `namespace="dev",service="web",window="1h"` (services' availability).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AvailabilityLabel {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub service: String,
    /// `1h`, `24h` or `30d`.
    pub window: &'static str,
}

/// `namespace="dev",service="web"` (error budgets).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub service: String,
}

/// `namespace="dev",workload="job/train"` (energy).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabel {
    /// The workload's namespace.
    pub namespace: String,
    /// `kind/name`.
    pub workload: String,
}

/// A gauge of fractions.
pub type Ratio = Gauge<f64, std::sync::atomic::AtomicU64>;

/// `caller="apply"` (store conflicts).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerLabel {
    /// `apply`, `report`, `controller`.
    pub caller: &'static str,
}

/// `how="alone"` (agent reports).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HowLabel {
    /// `alone` or `batched`.
    pub how: &'static str,
}

/// `method="GET",route="/v1/allocs/{id}",code="200"` (API requests).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// The route as matched (`unmatched` when none).
    pub route: String,
    /// Status code.
    pub code: u16,
}

/// `route="/v1/apply"` (API latency).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route as matched.
    pub route: String,
}

/// `source="homelab"` (git sources).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source's name.
    pub source: String,
}

/// `source="homelab",result="failed"` (git source syncs).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceResultLabel {
    /// The source's name.
    pub source: String,
    /// The sync's result (`synced`, `applied`, `refused`, `failed`, `rolled back`…).
    pub result: String,
}

/// Server metrics; gauges of current state are set at scrape time from the cache.
#[derive(Clone)]
pub struct Metrics {
    /// Allocations by state.
    pub allocations: Family<StateLabel, Gauge>,
    /// Nodes by readiness.
    pub nodes: Family<StateLabel, Gauge>,
    /// Workloads by kind.
    pub workloads: Family<KindLabel, Gauge>,
    /// API requests by method, route and status code.
    pub api_requests: Family<RequestLabels, Counter>,
    /// API request latency by route.
    pub api_latency: Family<RouteLabel, Histogram>,
    /// Reconcile pass duration.
    pub reconcile_seconds: Histogram,
    /// Store transactions that lost a compare (conflicts), by caller.
    pub conflicts: Family<CallerLabel, Counter>,
    /// Running replicas of each service by what its check says.
    pub service_replicas: Family<ServiceHealthLabel, Gauge>,
    /// Each service's availability per window (the leader's).
    pub service_availability: Family<AvailabilityLabel, Ratio>,
    /// Each service's error budget left over 30 days (services with an SLO).
    pub service_budget: Family<ServiceLabel, Ratio>,
    /// Agent reports committed alone (a transaction each): `motley_agent_reports{how="alone"}`.
    pub reports_alone: Counter,
    /// Agent reports committed with others that arrived together, in one transaction:
    /// `motley_agent_reports{how="batched"}`.
    pub reports_batched: Counter,
    /// Agents' heartbeats heard.
    pub heartbeats: Counter,
    /// Heartbeats answered (lease renewals and new paces): nodes without fenced work
    /// ask for no answer (`motley_core::lease::asks_ack`).
    pub heartbeat_acks: Counter,
    /// Connected agents.
    pub agents_connected: Gauge,
    /// 1 while this server leads.
    pub leader: Gauge,
    /// Terms this server began as leader.
    pub leader_terms: Counter,
    /// Git source syncs by source and result.
    pub source_syncs: Family<SourceResultLabel, Counter>,
    /// When each source last synced successfully (seconds since the epoch).
    pub source_last_success: Family<SourceLabel, Gauge>,
    /// How long each source's syncs take.
    pub source_sync_seconds: Family<SourceLabel, Histogram>,
    /// Energy given to each workload's allocations, joules (where nodes measure or
    /// estimate power).
    pub workload_energy: Family<WorkloadLabel, Ratio>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Metrics {
        // One family whose two series are held directly: no labels built per report.
        let reports = Family::<HowLabel, Counter>::default();
        // (Separate statements: get_or_create's guard must be gone before the next.)
        let reports_alone = reports.get_or_create(&HowLabel { how: "alone" }).clone();
        let reports_batched = reports.get_or_create(&HowLabel { how: "batched" }).clone();
        let m = Metrics {
            allocations: Family::default(),
            nodes: Family::default(),
            workloads: Family::default(),
            api_requests: Family::default(),
            api_latency: Family::new_with_constructor(latency_histogram),
            reconcile_seconds: latency_histogram(),
            conflicts: Family::default(),
            service_replicas: Family::default(),
            service_availability: Family::default(),
            service_budget: Family::default(),
            reports_alone,
            reports_batched,
            heartbeats: Counter::default(),
            heartbeat_acks: Counter::default(),
            agents_connected: Gauge::default(),
            leader: Gauge::default(),
            leader_terms: Counter::default(),
            source_syncs: Family::default(),
            source_last_success: Family::default(),
            source_sync_seconds: Family::new_with_constructor(latency_histogram),
            workload_energy: Family::default(),
        };
        registry.register(
            "motley_workload_energy_joules",
            "Energy given to a workload's allocations so far (measured, or estimated from nodes' power models)",
            m.workload_energy.clone(),
        );
        registry.register(
            "motley_allocations",
            "Allocations by state",
            m.allocations.clone(),
        );
        registry.register("motley_nodes", "Nodes by state", m.nodes.clone());
        registry.register("motley_workloads", "Workloads by kind", m.workloads.clone());
        registry.register(
            "motley_service_availability",
            "Share of the observed time a service had a replica in rotation, per window (the leader's)",
            m.service_availability.clone(),
        );
        registry.register(
            "motley_service_error_budget_remaining",
            "Share of a service's 30-day error budget left (services with an slo)",
            m.service_budget.clone(),
        );
        registry.register(
            "motley_service_replicas",
            "Running replicas of each service by what its check says (none: no check)",
            m.service_replicas.clone(),
        );
        registry.register(
            "motley_api_requests",
            "API requests by method, route and code",
            m.api_requests.clone(),
        );
        registry.register(
            "motley_api_request_duration_seconds",
            "API request latency by route",
            m.api_latency.clone(),
        );
        registry.register(
            "motley_reconcile_duration_seconds",
            "Duration of one reconcile pass",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "motley_store_conflicts",
            "Store transactions that lost a compare",
            m.conflicts.clone(),
        );
        registry.register(
            "motley_agent_reports",
            "Agent reports applied, alone or batched with others that arrived together",
            reports.clone(),
        );
        registry.register(
            "motley_agent_heartbeats",
            "Heartbeats heard from agents",
            m.heartbeats.clone(),
        );
        registry.register(
            "motley_agent_heartbeat_acks",
            "Heartbeats answered: lease renewals for nodes holding fenced work, and new paces",
            m.heartbeat_acks.clone(),
        );
        registry.register(
            "motley_agents_connected",
            "Agents connected to this server",
            m.agents_connected.clone(),
        );
        registry.register(
            "motley_leader",
            "1 while this server leads the control plane",
            m.leader.clone(),
        );
        registry.register(
            "motley_leader_terms",
            "Terms this server began as leader",
            m.leader_terms.clone(),
        );
        registry.register(
            "motley_source_syncs",
            "Git source syncs by source and result",
            m.source_syncs.clone(),
        );
        registry.register(
            "motley_source_last_success_seconds",
            "When each git source last synced successfully (Unix time)",
            m.source_last_success.clone(),
        );
        registry.register(
            "motley_source_sync_duration_seconds",
            "How long each git source's syncs take",
            m.source_sync_seconds.clone(),
        );
        m
    }
}
