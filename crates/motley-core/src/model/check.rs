//! A service's health check (`check:`): how its replicas are probed, and when a replica
//! counts as healthy (it takes traffic) or unhealthy (it is restarted).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::Duration;

use super::Task;

/// How a replica is probed, how often, and how many results in a row decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// An HTTP GET to a port of the task's (2xx or 3xx passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A TCP connection to a port of the task's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// A command run next to a native task, as its user, with its environment and in
    /// its directory, or inside a container through containerd (exit 0 passes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    /// Time between probes (default 2s).
    #[serde(default = "two_seconds")]
    pub interval: Duration,
    /// How long one probe may take (default 1s).
    #[serde(default = "one_second")]
    pub timeout: Duration,
    /// Passes in a row before a replica takes traffic (default 1).
    #[serde(default = "one")]
    pub healthy_after: u32,
    /// Failures in a row before a healthy replica is out of rotation and restarted
    /// (default 3).
    #[serde(default = "three")]
    pub unhealthy_after: u32,
}

/// `check.http`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// The name of one of the task's ports.
    pub port: String,
    /// The path asked for (default `/`).
    #[serde(default = "root_path")]
    pub path: String,
}

/// `check.tcp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    /// The name of one of the task's ports.
    pub port: String,
}

fn two_seconds() -> Duration {
    Duration(2000)
}
fn one_second() -> Duration {
    Duration(1000)
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn root_path() -> String {
    "/".to_string()
}

/// What a probe looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<'a> {
    /// GET `path` on this port number.
    Http(u16, &'a str),
    /// Connect to this port number.
    Tcp(u16),
    /// Run this command.
    Exec(&'a [String]),
}

impl Check {
    /// The probe for `task`; `None` when the check is invalid for it ([`Check::problems`]).
    pub fn probe<'a>(&'a self, task: &Task) -> Option<Probe<'a>> {
        let port = |name: &str| task.ports.iter().find(|p| p.name == name).map(|p| p.port);
        match (&self.http, &self.tcp, self.exec.is_empty()) {
            (Some(h), None, true) => Some(Probe::Http(port(&h.port)?, &h.path)),
            (None, Some(t), true) => Some(Probe::Tcp(port(&t.port)?)),
            (None, None, false) => Some(Probe::Exec(&self.exec)),
            _ => None,
        }
    }

    /// What is wrong with the check for `task`: `(field under `check.`, message)`; an
    /// empty field is the check itself.
    pub fn problems(&self, task: &Task) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let kinds = [
            self.http.is_some(),
            self.tcp.is_some(),
            !self.exec.is_empty(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            out.push((
                String::new(),
                "give exactly one of http, tcp or exec".to_string(),
            ));
        }
        let port = self
            .http
            .as_ref()
            .map(|h| ("http.port", &h.port))
            .or(self.tcp.as_ref().map(|t| ("tcp.port", &t.port)));
        if let Some((field, name)) = port
            && !task.ports.iter().any(|p| &p.name == name)
        {
            let declared: Vec<&str> = task.ports.iter().map(|p| p.name.as_str()).collect();
            out.push((
                field.to_string(),
                if declared.is_empty() {
                    format!("port {name:?} is not declared: the task has no ports")
                } else {
                    format!(
                        "port {name:?} is not declared (the task's ports: {})",
                        declared.join(", ")
                    )
                },
            ));
        }
        if let Some(h) = &self.http
            && !h.path.starts_with('/')
        {
            out.push(("http.path".to_string(), "must start with /".to_string()));
        }
        if self.interval.as_millis() < 100 {
            out.push(("interval".to_string(), "must be at least 100ms".to_string()));
        }
        if self.timeout.as_millis() == 0 || self.timeout > self.interval {
            out.push((
                "timeout".to_string(),
                "must be more than 0 and at most the interval".to_string(),
            ));
        }
        for (field, n) in [
            ("healthy_after", self.healthy_after),
            ("unhealthy_after", self.unhealthy_after),
        ] {
            if n == 0 || n > 100 {
                out.push((field.to_string(), "must be 1 to 100".to_string()));
            }
        }
        out
    }
}
