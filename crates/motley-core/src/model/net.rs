//! How a service is reached (`ports:` with a `service_port`, `expose:` for the ingress).

use super::*;

/// A port of a service: a free host port is chosen for it per allocation (given to the
/// task as `MOTLEY_PORT_<NAME>`), and with `service_port` every task of the cluster
/// reaches the service at `NAME.motley:<service_port>` through its node's proxy.
/// Service ports are TCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    /// Name, for the environment variable (`http` → `MOTLEY_PORT_HTTP`), checks and
    /// `expose`.
    pub name: String,
    /// The port the service answers on at `NAME.motley` (1–65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u16>,
    /// `tcp` (default: the node proxy forwards connections) or `http` (it forwards
    /// requests: each to a healthy endpoint, the next one on a refused connection,
    /// counted per endpoint).
    #[serde(default, skip_serializing_if = "PortProtocol::is_tcp")]
    pub protocol: PortProtocol,
    /// With `image` and `network: bridge`: the port the container listens on (an image
    /// that listens on a fixed port, `80`); the chosen node port is published to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
}

/// How the node proxy forwards a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// Connections (L4).
    #[default]
    Tcp,
    /// HTTP/1.1 requests (L7).
    Http,
}

impl PortProtocol {
    fn is_tcp(&self) -> bool {
        *self == PortProtocol::Tcp
    }
}

/// A route of the ingress: requests for `host` (and a path under `path`) go to the
/// service's port `port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expose {
    /// The name of one of the service's `ports`.
    pub port: String,
    /// The host name clients ask for (`web.home.arpa`), matched without case and port.
    pub host: String,
    /// Requests whose path is this or under it (default `/`); the longest match wins.
    #[serde(default = "root_path")]
    pub path: String,
    /// Also serve `host` over HTTPS (`--ingress-tls-listen`): `{}` with a certificate
    /// signed by the cluster CA, `{ secret: NAME }` with a Secret's `tls.crt` and
    /// `tls.key` (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExposeTls>,
}

/// A TCP route of the ingress (`expose_tcp:`): connections to `node_port` on every
/// node's ingress address go to the service's port `port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpExpose {
    /// The name of one of the service's `ports`.
    pub port: String,
    /// The port every node's ingress listens on for it (1–65535).
    pub node_port: u16,
    /// Send a PROXY protocol v2 header first, carrying the client's address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
}

/// `expose[].tls`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposeTls {
    /// A Secret with keys `tls.crt` (the certificate chain) and `tls.key`; without
    /// it, the cluster CA signs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn root_path() -> String {
    "/".to_string()
}

/// Whether `host` is a host name an `expose` rule may claim: labels of letters, digits
/// and `-`, separated by dots, at most 253 characters.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl ServiceSpec {
    /// The task as it runs: its own ports, and the service's ports with port number 0
    /// (chosen per allocation).
    pub fn task_with_ports(&self) -> Task {
        let mut t = self.task.clone();
        t.ports.extend(self.ports.iter().map(|p| HostPort {
            name: p.name.clone(),
            port: 0,
            protocol: Protocol::Tcp,
            container_port: p.container_port,
        }));
        t
    }
}

/// How a service's replicas are replaced when its spec changes (`update:`): a few at a
/// time, each batch only once the new replicas have passed their check (or run,
/// without one) for `min_healthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Replicas replaced at once (default 1).
    #[serde(default = "one_u32")]
    pub max_parallel: u32,
    /// How long a new replica must pass its check before the next is replaced
    /// (default 0s: as soon as it passes).
    #[serde(default)]
    pub min_healthy: crate::quantity::Duration,
    /// A new replica not healthy this long after it was placed stops the update: no
    /// further old replica is replaced (default 5m).
    #[serde(default = "five_minutes")]
    pub deadline: crate::quantity::Duration,
    /// When an update stops at its deadline, go back to the last spec whose update did
    /// not fail (as a new generation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_revert: bool,
    /// Replace only this many replicas, then wait for `motley promote NAME` (default 0:
    /// no canaries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub canary: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for UpdatePolicy {
    fn default() -> UpdatePolicy {
        UpdatePolicy {
            max_parallel: 1,
            min_healthy: crate::quantity::Duration(0),
            deadline: five_minutes(),
            auto_revert: false,
            canary: 0,
        }
    }
}

impl UpdatePolicy {
    /// Whether this is the default (not shown).
    pub fn is_default(&self) -> bool {
        *self == UpdatePolicy::default()
    }
}

fn one_u32() -> u32 {
    1
}

fn five_minutes() -> crate::quantity::Duration {
    crate::quantity::Duration(300_000)
}
