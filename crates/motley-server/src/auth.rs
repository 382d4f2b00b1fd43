//! Bearer tokens and roles. Servers keep only a SHA-256 hash of each token.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// A node's own credential: connect as that node, nothing else.
    Node {
        /// The node it is bound to.
        node: String,
    },
    /// May join a new node (exchange itself for a node credential), nothing else.
    Join,
}

impl Role {
    /// `admin`, `node`, `join`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
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
}

impl TokenRecord {
    /// True when it has an expiry in the past.
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}
