//! Store key layout. Everything motley stores lives under [`PREFIX`].
//!
//! | key | value |
//! |---|---|
//! | `/motley/workloads/<kind>/<name>` | [`motley_core::model::Workload`] (JSON) in `default` |
//! | `/motley/workloads/<kind>/<namespace>/<name>` | one in another namespace |
//! | `/motley/nodes/<name>` | [`motley_core::model::Node`] |
//! | `/motley/allocs/<id>` | [`motley_core::model::Allocation`] |
//! | `/motley/tokens/<sha256 of token>` | [`crate::auth::TokenRecord`] |
//! | `/motley/sources/<name>` | [`crate::sources::Record`] |
//! | `/motley/ca` | the cluster CA's certificate and private key (PEM, JSON) |
//! | `/motley/experiments/<name>` | an experiment's last report ([`motley_core::experiment_run::Report`]) |
//!
//! Several servers on etcd also keep leased keys under `/motley-ha/` (see
//! [`crate::ha`]); those are not motley's state and never in a snapshot.

use motley_core::model::{DEFAULT_NAMESPACE, Kind, WorkloadRef};

/// Root of all motley keys.
pub const PREFIX: &str = "/motley/";
/// Workloads.
pub const WORKLOADS: &str = motley_core::keys::WORKLOADS;
/// Nodes.
pub const NODES: &str = motley_core::keys::NODES;
/// Allocations.
pub const ALLOCS: &str = motley_core::keys::ALLOCS;
/// Tokens.
pub const TOKENS: &str = "/motley/tokens/";
/// Git sources' records (`applied`, `healthy`, `failed` commits).
pub const SOURCES: &str = "/motley/sources/";
/// The cluster CA, shared by every server.
pub const CA: &str = "/motley/ca";
/// Experiments' reports.
pub const EXPERIMENTS: &str = "/motley/experiments/";

/// Key of a workload.
pub fn workload(r: &WorkloadRef) -> String {
    if r.in_default() {
        format!("{WORKLOADS}{}/{}", r.kind, r.name)
    } else {
        format!("{WORKLOADS}{}/{}/{}", r.kind, r.namespace, r.name)
    }
}
/// Key of a node.
pub fn node(name: &str) -> String {
    format!("{NODES}{name}")
}
/// Key of an allocation.
pub fn alloc(id: &str) -> String {
    format!("{ALLOCS}{id}")
}
/// Key of a git source's record.
pub fn source_record(name: &str) -> String {
    format!("{SOURCES}{name}")
}
/// Key of a token record.
pub fn token(hash: &str) -> String {
    format!("{TOKENS}{hash}")
}

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A workload.
    Workload(WorkloadRef),
    /// A node.
    Node(&'a str),
    /// An allocation.
    Alloc(&'a str),
    /// A token.
    Token(&'a str),
    /// Something else.
    Other,
}

/// Parses a key.
pub fn parse(key: &str) -> Parsed<'_> {
    if let Some(rest) = key.strip_prefix(WORKLOADS) {
        let parts: Vec<&str> = rest.split('/').collect();
        let (kind, ns, name) = match parts.as_slice() {
            [kind, name] => (*kind, DEFAULT_NAMESPACE, *name),
            [kind, ns, name] => (*kind, *ns, *name),
            _ => return Parsed::Other,
        };
        if let Some(kind) = Kind::parse(kind)
            && !name.is_empty()
        {
            return Parsed::Workload(WorkloadRef::in_namespace(ns, kind, name));
        }
        return Parsed::Other;
    }
    if let Some(n) = key.strip_prefix(NODES) {
        return Parsed::Node(n);
    }
    if let Some(a) = key.strip_prefix(ALLOCS) {
        return Parsed::Alloc(a);
    }
    if let Some(t) = key.strip_prefix(TOKENS) {
        return Parsed::Token(t);
    }
    Parsed::Other
}
