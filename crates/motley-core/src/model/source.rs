//! `kind: Source`: a git repository whose manifests the cluster applies (issue 21;
//! the rules are in [`crate::source`], the IO in the server's `sources` module).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::Duration;

/// One value of a Secret, named: `{ secret: age-key, key: identity }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    /// The Secret's name.
    pub secret: String,
    /// The key within it.
    pub key: String,
}

/// Where a source's manifests are: a repository, one of `branch`, `tag` and `commit`,
/// and a directory in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitSpec {
    /// `https://`, `http://`, `git://`, `ssh://` (the system's `ssh`), `file://`.
    pub url: String,
    /// Follow this branch (the default: `main`, when no tag or commit is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Follow this tag (it may be moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Stay at this commit (a full 40-digit id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The directory whose manifests (`*.yaml`, `*.yml`, `*.json`, and those ending
    /// in `.age`) are applied, recursively; default: the whole repository.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// For `ssh://` URLs: the private deploy key, a Secret's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<SecretKey>,
    /// For `https://` URLs: a Secret with `username` and `password` (or an access
    /// token as the password), given when the server asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretName>,
}

/// A Secret, by name: `{ secret: git-credentials }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretName {
    /// The Secret's name.
    pub secret: String,
}

/// What a sync does with objects changed by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Report them and put the commit's spec back (the default).
    #[default]
    Revert,
    /// Report them only.
    Report,
}

/// How a source decrypts encrypted files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decrypt {
    /// The age identity (`AGE-SECRET-KEY-1…` lines), a Secret's value: it opens
    /// `*.age` files and SOPS files with age recipients.
    pub age_key: SecretKey,
}

/// A source's health gate: after applying a commit it waits for the services it
/// changed to finish their rollouts and its jobs' first instances to run, and goes
/// back to the last healthy commit when they do not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthGate {
    /// How long to wait (default 5m).
    #[serde(default = "default_gate_timeout")]
    pub timeout: Duration,
}

fn default_gate_timeout() -> Duration {
    Duration(300_000)
}

fn default_interval() -> Duration {
    Duration(60_000)
}

impl Default for HealthGate {
    fn default() -> Self {
        HealthGate {
            timeout: default_gate_timeout(),
        }
    }
}

/// `kind: Source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `Source`.
    pub kind: super::SourceKind,
    /// Unique among sources.
    pub name: String,
    /// The namespace (`default` when unset); names are unique within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The repository.
    pub git: GitSpec,
    /// How often the remote is asked whether the ref moved (default 1m; at least 5s).
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Delete objects this source applied that the commit no longer declares.
    #[serde(default)]
    pub prune: bool,
    /// Objects changed by hand: `revert` (default) or `report`.
    #[serde(default)]
    pub drift: DriftPolicy,
    /// How encrypted files are opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrypt: Option<Decrypt>,
    /// The health gate after each apply.
    #[serde(default)]
    pub health: HealthGate,
}

impl SourceSpec {
    /// The ref followed, as `branch main`, `tag v1` or `commit <id>`.
    pub fn wanted(&self) -> (&'static str, &str) {
        match (&self.git.commit, &self.git.tag, &self.git.branch) {
            (Some(c), _, _) => ("commit", c),
            (None, Some(t), _) => ("tag", t),
            (None, None, Some(b)) => ("branch", b),
            (None, None, None) => ("branch", "main"),
        }
    }
}
