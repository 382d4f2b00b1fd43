//! Versions and the skew policy of an upgrade: servers first, then agents, each agent
//! within one minor version behind the servers, never ahead (as Kubernetes' kubelet).

use std::fmt;

/// This build's version.
pub const THIS: &str = env!("CARGO_PKG_VERSION");

/// `MAJOR.MINOR.PATCH` (a pre-release or build suffix is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Incompatible changes.
    pub major: u64,
    /// New features; the unit of skew.
    pub minor: u64,
    /// Fixes.
    pub patch: u64,
}

impl Version {
    /// Parses `0.2.1`, `0.2.1-rc1`, `v0.2.1`.
    pub fn parse(s: &str) -> Option<Version> {
        let core = s.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
        let v = Version {
            major: it.next()??,
            minor: it.next()??,
            patch: it.next().unwrap_or(Some(0))?,
        };
        it.next().is_none().then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the policy says of an agent's version against a server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skew {
    /// The same minor version.
    Same,
    /// One minor version behind: allowed; upgrade it next.
    Behind,
    /// Too far behind, or another major version: refused.
    TooOld(String),
    /// Newer than the server: refused (servers are upgraded first).
    Newer(String),
    /// A version that does not parse: refused.
    Unknown(String),
}

impl Skew {
    /// Whether the server accepts the agent.
    pub fn allowed(&self) -> bool {
        matches!(self, Skew::Same | Skew::Behind)
    }
}

/// The policy: an agent may run the server's minor version or the one before it, in
/// the same major version; for `0.x`, where every minor version may break, the same
/// holds with the minor as the unit (0.3 agents with a 0.4 server, not with 0.5).
pub fn skew(server: &str, agent: &str) -> Skew {
    let (Some(s), Some(a)) = (Version::parse(server), Version::parse(agent)) else {
        return Skew::Unknown(format!(
            "agent version {agent:?} or server version {server:?} is not MAJOR.MINOR.PATCH"
        ));
    };
    if a.major > s.major || (a.major == s.major && a.minor > s.minor) {
        return Skew::Newer(format!(
            "agent {a} is newer than server {s}: upgrade the servers first"
        ));
    }
    if a.major < s.major || s.minor - a.minor > 1 {
        return Skew::TooOld(format!(
            "agent {a} is more than one minor version behind server {s}: upgrade the agent to {}.{} or {}.{} first",
            s.major,
            s.minor.saturating_sub(1),
            s.major,
            s.minor
        ));
    }
    if a.minor == s.minor {
        Skew::Same
    } else {
        Skew::Behind
    }
}

/// One step of an upgrade, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `server` or `agent`.
    pub role: &'static str,
    /// Its name (server name, node).
    pub name: String,
    /// What it runs.
    pub from: String,
    /// What it should run.
    pub to: String,
}

/// The order of an upgrade to the newest version anything runs: every server below it
/// first (one at a time: the others keep the API up), then every agent; with what the
/// policy says of each agent now.
pub fn upgrade_plan(
    servers: &[(String, String)],
    agents: &[(String, String)],
) -> (Option<Version>, Vec<Step>, Vec<(String, Skew)>) {
    let newest = servers
        .iter()
        .chain(agents)
        .filter_map(|(_, v)| Version::parse(v))
        .max();
    let oldest_server = servers.iter().filter_map(|(_, v)| Version::parse(v)).min();
    let mut steps = Vec::new();
    if let Some(target) = newest {
        let to = target.to_string();
        for (role, list) in [("server", servers), ("agent", agents)] {
            for (name, v) in list {
                if Version::parse(v).is_none_or(|x| x < target) {
                    steps.push(Step {
                        role,
                        name: name.clone(),
                        from: v.clone(),
                        to: to.clone(),
                    });
                }
            }
        }
    }
    let now = agents
        .iter()
        .map(|(n, v)| {
            let s = oldest_server.map_or_else(
                || Skew::Unknown("no server version known".into()),
                |srv| skew(&srv.to_string(), v),
            );
            (n.clone(), s)
        })
        .collect();
    (newest, steps, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let v = |s| Version::parse(s);
        assert_eq!(v("0.2.1").map(|v| v.to_string()).as_deref(), Some("0.2.1"));
        assert_eq!(v("v1.4.0-rc.1").map(|v| (v.major, v.minor)), Some((1, 4)));
        assert_eq!(v("1.4").map(|v| v.patch), Some(0));
        for bad in ["", "x", "1", "1.x.0", "1.2.3.4"] {
            assert_eq!(v(bad), None, "{bad}");
        }
        assert!(Version::parse(THIS).is_some());
    }

    #[test]
    fn the_skew_policy() {
        assert_eq!(skew("0.4.2", "0.4.0"), Skew::Same);
        assert_eq!(skew("0.4.0", "0.3.9"), Skew::Behind);
        assert!(matches!(skew("0.5.0", "0.3.9"), Skew::TooOld(m) if m.contains("0.4 or 0.5")));
        assert!(matches!(skew("0.4.0", "0.5.0"), Skew::Newer(m) if m.contains("servers first")));
        assert!(matches!(skew("2.0.0", "1.9.0"), Skew::TooOld(_)));
        assert!(matches!(skew("1.0.0", "x"), Skew::Unknown(_)));
        assert!(skew("1.3.0", "1.2.0").allowed() && !skew("1.3.0", "1.4.0").allowed());
    }

    #[test]
    fn an_upgrade_goes_servers_first_then_agents() {
        let s = |n: &str, v: &str| (n.to_string(), v.to_string());
        let (target, steps, now) = upgrade_plan(
            &[s("srv1", "0.4.0"), s("srv2", "0.3.1")],
            &[s("pi1", "0.3.0"), s("pi2", "0.4.0"), s("pi3", "0.2.5")],
        );
        assert_eq!(target.map(|t| t.to_string()).as_deref(), Some("0.4.0"));
        let order: Vec<(&str, &str)> = steps.iter().map(|x| (x.role, x.name.as_str())).collect();
        assert_eq!(
            order,
            [("server", "srv2"), ("agent", "pi1"), ("agent", "pi3")]
        );
        // Against the oldest server (0.3): pi2 is ahead of it, pi3 too far behind.
        assert_eq!(now[0], ("pi1".to_string(), Skew::Same));
        assert!(matches!(&now[1].1, Skew::Newer(_)));
        assert!(matches!(&now[2].1, Skew::Behind));
        let (_, none, _) = upgrade_plan(&[s("srv1", "0.4.0")], &[s("pi1", "0.4.0")]);
        assert!(none.is_empty());
    }
}
