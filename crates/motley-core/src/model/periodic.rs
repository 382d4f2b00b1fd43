//! Periodic jobs in the model: how a scheduled Job's runs overlap and catch up, and
//! what a run records of the schedule that made it ([`crate::periodic`] decides).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a periodic job does when a run is due while an earlier one still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Start it anyway (Kubernetes' default).
    #[default]
    Allow,
    /// Skip it: a run due while another runs does not run.
    Forbid,
    /// Stop the running ones and start it.
    Replace,
}

impl Concurrency {
    /// Whether this is the default.
    pub fn is_default(&self) -> bool {
        *self == Concurrency::Allow
    }
}

/// What a periodic job does about runs due while the control plane was down (a run
/// counts as missed when it could not start within [`crate::periodic::LATE_AFTER_MS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Run the latest missed one once, late (Kubernetes' behaviour).
    #[default]
    RunOnce,
    /// Run none of them; wait for the next.
    Skip,
}

impl Missed {
    /// Whether this is the default.
    pub fn is_default(&self) -> bool {
        *self == Missed::RunOnce
    }
}

/// A run of a periodic job: which job made it, and for which time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunOf {
    /// The periodic job's name (same namespace).
    pub job: String,
    /// The time the run was due (ms since the epoch); for a run started by hand, when.
    pub due: u64,
    /// Started by hand (`motley job run`), not by the schedule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
}
