//! motley's sans-IO core.
//!
//! Everything here is a pure function of (state, input, now): no runtime, no
//! filesystem, no network, no clock. The server, the agent and the simulator
//! are shells that feed these functions and carry out what they return.
//!
//! * [`quantity`] — CPU, memory and duration quantities (`500m`, `256Mi`, `10s`).
//! * [`selector`] — Kubernetes' set-based label selectors plus numeric comparisons.
//! * [`model`] — the object model: workloads, tasks, nodes, allocations.
//! * [`manifest`] — strict YAML manifests with file/line/column/field errors.
//! * [`health`] — a replica's health from its check's results in a row.
//! * [`hwview`] — hardware facts, readings and conditions as text rows (CLI and dashboard).
//! * [`hw`] — hardware facts, readings, labels, conditions and taints.
//! * [`experiment`] — `kind: Experiment`: checking, the fault timeline, the history checker.
//! * [`inventory`] — `kind: Inventory`, machines owned or considered (`motley capacity`).
//! * [`node`] — node registration (capacity, labels, taints) and report merging.
//! * [`failure`] — the phi accrual failure detector and node health.
//! * [`reconcile`] — controllers: desired workloads vs existing allocations → a plan.
//! * [`active`] — which workloads a pass visits: not the finished jobs nothing changed.
//! * [`lease`] — the agent's fencing lease, counted from when an acknowledged heartbeat was sent.
//! * [`logbudget`] — how much of each task log a node keeps when together they outgrow its budget.
//! * [`writes`] — a plan's write groups: what commits together, in which order.
//! * [`restart`] — the restart policy state machine used by agents' supervisors.
//! * [`api`] — HTTP API bodies.
//! * [`promtext`] — OpenMetrics to classic Prometheus text.
//! * [`proto`] — the messages agents and servers exchange.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod active;
pub mod admit;
pub mod api;
pub mod catalog;
pub mod chaos;
pub mod collect;
pub mod config;
pub mod convert;
pub mod cron;
pub mod doctor;
pub mod energy;
pub mod events;
pub mod experiment;
pub mod experiment_run;
pub mod failure;
pub mod fence;
pub mod fuzzing;
pub mod health;
pub mod hours;
pub mod hw;
pub mod hwview;
pub mod image;
pub mod inventory;
pub mod keys;
pub mod lease;
pub mod logbudget;
pub mod manifest;
pub mod model;
pub mod node;
pub mod periodic;
pub mod platform;
pub mod promtext;
pub mod proto;
pub mod quantity;
pub mod quota;
pub mod reconcile;
pub mod restart;
pub mod rollout;
pub mod selector;
pub mod source;
pub mod supervisor;
pub mod uptime;
pub mod version;
pub mod writes;

/// Deliberate bugs the simulator must catch (`motley-sim --features mutants`). Without
/// the `mutants` feature [`mutants::active`] is a constant `false` and every planted bug
/// compiles away.
pub mod mutants {
    /// Every mutant: its name and the bug it plants.
    pub const ALL: &[(&str, &str)] = &[
        (
            "fenced-start-ignores-lease",
            "the agent starts and keeps a fenced allocation without a lease",
        ),
        (
            "ack-before-commit",
            "an apply is acknowledged without being committed",
        ),
        (
            "never-down",
            "the failure detector never declares a node down",
        ),
        (
            "replacement-without-loss",
            "a fenced allocation on a down node is replaced at once, its loss not committed",
        ),
        (
            "guard-ignores-lease",
            "the node's fence guard never ends a task whose lease ran out",
        ),
        (
            "lazy-fenced-create",
            "a fenced allocation's creation is group-committed, so a power cut may forget it",
        ),
        (
            "settle-unfinished",
            "a job with no instance running is settled unfinished: no pass visits it until it changes",
        ),
        (
            "runs-collected-by-ttl",
            "a periodic job's runs are collected by their ttl_after_finished like any job's, so the schedule can lose its place and start a due time's run again",
        ),
        (
            "config-users-not-restamped",
            "a changed Config is committed without rewriting the workloads that use it (neither by the apply nor by the controller), so they keep running the old version",
        ),
    ];

    #[cfg(feature = "mutants")]
    static ACTIVE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

    /// Plants mutant `name` in this process (the first call wins).
    #[cfg(feature = "mutants")]
    pub fn set(name: &str) {
        let _ = ACTIVE.set(name.to_string());
    }

    /// True when mutant `name` is planted.
    #[cfg(feature = "mutants")]
    pub fn active(name: &str) -> bool {
        ACTIVE.get().is_some_and(|a| a == name)
    }

    /// Always false: this build has no mutants.
    #[cfg(not(feature = "mutants"))]
    #[inline(always)]
    pub const fn active(_name: &str) -> bool {
        false
    }
}
