//! Messages between an agent and a server, carried as JSON text frames over
//! the agent's one outbound WebSocket (`/v1/agent/connect`).
//!
//! The agent is level-triggered on connect: [`AgentMsg::Hello`] carries every
//! allocation it holds, [`ServerMsg::Sync`] every allocation assigned to it.
//! After that both sides send changes only: the agent re-reads its hardware
//! periodically but sends facts and readings only when they differ.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hw::Readings;

use crate::model::{AllocState, Allocation, NodeFacts};

/// Protocol version; a server refuses agents with another major version.
pub const PROTOCOL_VERSION: u32 = 1;

/// What an agent last observed of one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocReport {
    /// Allocation id.
    pub id: String,
    /// Observed state.
    pub state: AllocState,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Last exit code (negative: signal).
    pub exit_code: Option<i32>,
    /// Restarts in place so far.
    pub restarts: u32,
    /// Why it changed, if there is something to say.
    pub reason: Option<String>,
    /// What its check says while it runs (none without a check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
    /// The host ports chosen for its service ports, by name (while running).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// When observed (ms since the epoch, agent's clock).
    pub at: u64,
}

/// The Secret and Config values one allocation is given. Both sides keep them in
/// memory only; `Debug` shows names, never values. Config values are not secret: they
/// are not masked in logs, and their files are written with the allocation.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SecretDelivery {
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files in `$MOTLEY_SECRETS`, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Why they could not be given: the allocation fails with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Registry credentials (`task.image_secret`): user name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<(String, String)>,
    /// Config values given as environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_env: BTreeMap<String, String>,
    /// Config values given as files, by the path the task names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_files: BTreeMap<String, String>,
}

impl std::fmt::Debug for SecretDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretDelivery")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("error", &self.error)
            .field("registry_user", &self.registry.as_ref().map(|r| &r.0))
            .field("config_env", &self.config_env.keys().collect::<Vec<_>>())
            .field(
                "config_files",
                &self.config_files.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SecretDelivery {
    /// Every value, for redaction.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.env
            .values()
            .chain(self.files.values())
            .map(String::as_str)
    }
}

/// Agent → server. Decoded strictly (unknown messages and fields are errors): the
/// server upgrades first, so it always knows every field an agent sends, and a node is
/// untrusted input. The agent reads [`ServerMsg`] leniently, so a newer server works
/// with older agents during an upgrade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentMsg {
    /// First message on every connection.
    Hello {
        /// Protocol version.
        version: u32,
        /// Node name.
        node: String,
        /// Discovered facts.
        facts: NodeFacts,
        /// Labels the node's owner gave the agent (`--label`), never under `motley.io/`.
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// The latest report of every allocation the agent holds.
        allocs: Vec<AllocReport>,
        /// The latest readings.
        #[serde(default)]
        readings: Option<Box<Readings>>,
        /// The address other nodes reach this one at (`--advertise`); without it, the
        /// address the server sees the connection come from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<std::net::IpAddr>,
    },
    /// The node's facts or conditions changed (sent only on change; stored).
    Facts {
        /// All of them, as in Hello.
        facts: NodeFacts,
    },
    /// New readings (sent only on change; kept in the server's memory only).
    Readings {
        /// Readings.
        readings: Readings,
        /// When taken (agent's clock, ms since the epoch).
        at: u64,
    },
    /// An allocation changed state.
    Update(AllocReport),
    /// What a starting allocation is doing (`pulling 41 % of 120 MiB`; empty: done).
    /// Kept in the server's memory only, shown by `get allocs` and `describe`.
    Progress {
        /// The allocation.
        id: String,
        /// In words, at most 80 characters.
        text: String,
    },
    /// I am alive (every `heartbeat_ms`; kept in the server's memory only).
    Heartbeat {
        /// Numbers the heartbeat (from 1); the server echoes it in [`ServerMsg::Ack`] so
        /// the agent's lease runs from when it sent it ([`crate::lease`]). 0: unnumbered.
        #[serde(default)]
        seq: u64,
        /// No acknowledgement wanted: the node holds no fenced work, so it has no lease
        /// to renew ([`crate::lease::asks_ack`]). Absent (older agents): one is wanted.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        quiet: bool,
    },
    /// A piece of an allocation's log, answering [`ServerMsg::Logs`].
    LogData {
        /// Request id.
        req: u64,
        /// Bytes (lossy UTF-8).
        data: String,
        /// No more data will follow.
        eof: bool,
        /// Set when the logs cannot be read.
        error: Option<String>,
    },
    /// Energy given to each allocation on the node so far, millijoules (every one the
    /// agent holds; sent when it changes, at most every few seconds; kept in the
    /// server's memory only: `motley_core::energy`).
    Energy {
        /// By allocation id.
        mj: BTreeMap<String, u64>,
        /// Estimated from a power model (true) or measured (RAPL, GPU hwmon).
        estimated: bool,
    },
    /// A fault ordered by [`ServerMsg::Fault`] was carried out (no error) or not.
    Fault {
        /// The fault's id.
        id: String,
        /// Why it could not be.
        #[serde(default)]
        error: Option<String>,
    },
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Accepted; first message from the server.
    Welcome {
        /// Protocol version.
        version: u32,
        /// How often to send heartbeats.
        heartbeat_ms: u64,
        /// Stop fenced tasks after this long without hearing from a server.
        lease_ms: u64,
        /// Every server of the control plane (URLs), for failover.
        #[serde(default)]
        servers: Vec<String>,
    },
    /// A heartbeat was received: the agent's lease is renewed from when it sent it.
    Ack {
        /// The heartbeat's number (0 from a server that echoes none: renews nothing).
        #[serde(default)]
        seq: u64,
        /// From now on, send heartbeats this often (ms): the server paces its agents by
        /// how many are connected (`failure::paced_heartbeat_ms`). Absent: unchanged (an
        /// older agent ignores it and keeps its pace, which is judged fairly anyway).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_ms: Option<u64>,
    },
    /// The servers of the control plane changed (URLs), for failover.
    Servers {
        /// Every server.
        servers: Vec<String>,
    },
    /// The complete set of allocations assigned to this node.
    Sync {
        /// All of them; anything the agent holds that is not here is to be stopped and forgotten.
        allocs: Vec<Allocation>,
        /// The Secret values of those that reference any, by allocation id.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        secrets: BTreeMap<String, SecretDelivery>,
    },
    /// An allocation was created or its desired state changed.
    Upsert {
        /// The allocation.
        alloc: Box<Allocation>,
        /// Its Secret values, when it references any and is new. Boxed: every message
        /// in a node's outbox is as large as the largest kind (128 bytes with this
        /// inline, 72 without; a connected node's queue keeps blocks of 32).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secrets: Option<Box<SecretDelivery>>,
    },
    /// An allocation was removed from the cluster.
    Remove {
        /// Its id.
        id: String,
    },
    /// Send an allocation's log.
    Logs {
        /// Request id, echoed in [`AgentMsg::LogData`].
        req: u64,
        /// Allocation id.
        alloc: String,
        /// Start this many bytes before the end (`None`: from the start of what is kept).
        tail_bytes: Option<u64>,
        /// Keep sending as the log grows.
        follow: bool,
    },
    /// Stop sending the log of this request.
    LogsCancel {
        /// Request id.
        req: u64,
    },
    /// Carry out a fault of an experiment (issue 24), undone by the agent itself after
    /// `lasts_ms` on its own clock even without a server, or by [`ServerMsg::Undo`].
    Fault {
        /// The fault's id (`EXPERIMENT/INDEX`).
        id: String,
        /// What to do.
        fault: crate::chaos::AgentFault,
        /// How long it lasts (0: instant).
        lasts_ms: u64,
    },
    /// Undo a fault now.
    Undo {
        /// The fault's id.
        id: String,
    },
    /// Every service that can be reached and its healthy endpoints (sent on connect
    /// and whenever it changes): what the node's proxy, DNS and ingress route by.
    Catalog {
        /// The whole catalog.
        catalog: crate::catalog::Catalog,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_messages_are_strict_server_messages_lenient() {
        assert!(serde_json::from_str::<AgentMsg>(r#"{"type":"heartbeat"}"#).is_ok());
        assert!(serde_json::from_str::<AgentMsg>(r#"{"type":"heartbeat","x":1}"#).is_err());
        assert!(serde_json::from_str::<AgentMsg>(r#"{"type":"reboot"}"#).is_err());
        let update = r#"{"type":"update","id":"a","state":"running","pid":1,"exit_code":null,"restarts":0,"reason":null,"at":1}"#;
        assert!(serde_json::from_str::<AgentMsg>(update).is_ok());
        let extra = update.replace(r#""at":1"#, r#""at":1,"evil":true"#);
        assert!(serde_json::from_str::<AgentMsg>(&extra).is_err());
        assert!(serde_json::from_str::<ServerMsg>(r#"{"type":"ack","new_field":1}"#).is_ok());
    }

    /// Every connected node's outbox holds blocks of 32 messages: a large kind of
    /// message inline would make every slot that large (a secret delivery was 120 bytes).
    #[test]
    fn a_server_message_stays_small() {
        let size = std::mem::size_of::<ServerMsg>();
        assert!(size <= 72, "ServerMsg is {size} bytes");
    }

    #[test]
    fn heartbeats_and_acks_carry_a_number_older_peers_leave_out() -> serde_json::Result<()> {
        let hb: AgentMsg = serde_json::from_str(r#"{"type":"heartbeat","seq":7}"#)?;
        assert_eq!(
            hb,
            AgentMsg::Heartbeat {
                seq: 7,
                quiet: false
            }
        );
        let old: AgentMsg = serde_json::from_str(r#"{"type":"heartbeat"}"#)?;
        assert_eq!(
            old,
            AgentMsg::Heartbeat {
                seq: 0,
                quiet: false
            }
        );
        let ack: ServerMsg = serde_json::from_str(r#"{"type":"ack"}"#)?;
        assert_eq!(
            ack,
            ServerMsg::Ack {
                seq: 0,
                heartbeat_ms: None
            }
        );
        assert_eq!(
            serde_json::to_string(&ServerMsg::Ack {
                seq: 3,
                heartbeat_ms: None
            })?,
            r#"{"type":"ack","seq":3}"#
        );
        // A heartbeat that wants its acknowledgement is what older servers know; a
        // quiet one says so.
        assert_eq!(
            serde_json::to_string(&AgentMsg::Heartbeat {
                seq: 8,
                quiet: false
            })?,
            r#"{"type":"heartbeat","seq":8}"#
        );
        let quiet = AgentMsg::Heartbeat {
            seq: 9,
            quiet: true,
        };
        let text = serde_json::to_string(&quiet)?;
        assert_eq!(text, r#"{"type":"heartbeat","seq":9,"quiet":true}"#);
        assert_eq!(serde_json::from_str::<AgentMsg>(&text)?, quiet);
        let paced: ServerMsg =
            serde_json::from_str(r#"{"type":"ack","seq":4,"heartbeat_ms":1500}"#)?;
        assert_eq!(
            paced,
            ServerMsg::Ack {
                seq: 4,
                heartbeat_ms: Some(1_500)
            }
        );
        Ok(())
    }
}
