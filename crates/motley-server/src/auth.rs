//! Bearer tokens and roles. Servers keep only a SHA-256 hash of each token.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads: workloads, nodes, allocations, logs, plans, servers, metrics. Never tokens,
    /// snapshots (they hold the CA key) or the audit log; never changes anything.
    Viewer,
    /// A node's own credential: connect as that node, nothing else.
    Node {
        /// The node it is bound to.
        node: String,
    },
    /// May join a new node (exchange itself for a node credential), nothing else.
    Join,
}

impl Role {
    /// `admin`, `viewer`, `node`, `join`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Node { .. } => "node",
            Role::Join => "join",
        }
    }
}

/// A stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Short public id, for listing and revoking.
    pub id: String,
    /// The role.
    #[serde(flatten)]
    pub role: Role,
    /// Created (ms since the epoch).
    pub created_at: u64,
    /// Expires (ms since the epoch), if ever.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The namespaces an admin or viewer token may act in; empty: the whole cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

impl TokenRecord {
    /// True when it has an expiry in the past.
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// What a role may do on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Allowed.
    All,
    /// Allowed for what belongs to the caller's own node only: its node record, its
    /// allocations (and their logs), its agent connection.
    OwnNode,
    /// Refused (403).
    Denied,
}

/// The authorization policy: may `role` call `method` on `route` (the route as
/// matched, e.g. `/v1/allocs/{id}`)? Read from [`crate::routes::ROUTES`]; a route not
/// listed there is denied to everyone but an admin (and the router answers it 404).
pub fn access(role: &Role, method: &str, route: &str) -> Access {
    let p = crate::routes::find(method, route).map(|r| r.policy);
    match role {
        Role::Admin => match p {
            Some(p) if !p.admin => Access::Denied,
            _ => Access::All,
        },
        Role::Viewer if p.is_some_and(|p| p.viewer) => Access::All,
        Role::Node { .. } if p.is_some_and(|p| p.node) => Access::OwnNode,
        Role::Join if p.is_some_and(|p| p.join) => Access::All,
        _ => Access::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_closed_by_default() {
        let node = Role::Node { node: "n1".into() };
        for role in [Role::Viewer, node.clone(), Role::Join] {
            for (m, r) in [
                ("POST", "/v1/apply"),
                ("POST", "/v1/delete"),
                ("DELETE", "/v1/workloads/{kind}/{name}"),
                ("POST", "/v1/tokens"),
                ("DELETE", "/v1/tokens/{id}"),
                ("POST", "/v1/nodes/{name}/{action}"),
                ("GET", "/v1/snapshot"),
                ("GET", "/v1/tokens"),
                ("GET", "/v1/audit"),
                ("GET", "/v1/some/new/route"),
            ] {
                assert_eq!(access(&role, m, r), Access::Denied, "{role:?} {m} {r}");
            }
        }
        assert_eq!(access(&Role::Admin, "POST", "/v1/apply"), Access::All);
        assert_eq!(access(&Role::Admin, "POST", "/v1/join"), Access::Denied);
        assert_eq!(access(&Role::Viewer, "GET", "/v1/workloads"), Access::All);
        assert_eq!(access(&Role::Viewer, "POST", "/v1/plan"), Access::All);
        assert_eq!(access(&node, "GET", "/v1/allocs/{id}"), Access::OwnNode);
        assert_eq!(access(&node, "GET", "/v1/workloads"), Access::Denied);
        assert_eq!(access(&node, "POST", "/v1/join"), Access::Denied);
        assert_eq!(access(&Role::Join, "POST", "/v1/join"), Access::All);
        assert_eq!(
            access(&Role::Join, "GET", "/v1/agent/connect"),
            Access::Denied
        );
    }
}
