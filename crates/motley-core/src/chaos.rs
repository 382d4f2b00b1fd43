//! Faults as an agent carries them out (issue 24): what the server orders
//! ([`AgentFault`], each with how long it lasts), the set a node holds with the local
//! deadline that undoes each even when the server is gone (the dead-man switch,
//! [`Faults`]), and the nftables rules for drops and loss ([`nft_script`]). Pure: the
//! agent's `chaos` module only runs what these say.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The nftables table the agent's drop and loss rules live in (removed whole to undo
/// them, and at every agent start).
pub const NFT_TABLE: &str = "motley_chaos";

/// One fault on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AgentFault {
    /// Stop every task and go silent (no connection to any server).
    PowerOff,
    /// Drop all traffic with these addresses; `server`: also with the control plane
    /// (without nftables the agent only stops talking to the server).
    Partition {
        /// Peer nodes' addresses.
        #[serde(default)]
        peers: Vec<IpAddr>,
        /// Cut off from the control plane too.
        #[serde(default)]
        server: bool,
    },
    /// Drop this share of packets exchanged with the cluster (servers and `peers`);
    /// without nftables, of the agent's own heartbeats.
    PacketLoss {
        /// 1–100.
        percent: u8,
        /// The other nodes' addresses.
        #[serde(default)]
        peers: Vec<IpAddr>,
    },
    /// Delay the agent's connection and its node's service proxy this much each way.
    Latency {
        /// Milliseconds.
        ms: u32,
    },
    /// Keep this many cores busy (a process in a cgroup limited to them).
    CpuStress {
        /// Cores.
        cores: u32,
    },
    /// Hold this much memory (a process in a cgroup limited to it).
    MemoryStress {
        /// Bytes.
        bytes: u64,
    },
    /// SIGKILL one allocation's processes.
    Kill {
        /// The allocation.
        alloc: String,
    },
}

impl AgentFault {
    /// Instant faults have nothing to undo.
    pub fn instant(&self) -> bool {
        matches!(self, AgentFault::Kill { .. })
    }

    /// Whether it is carried out with nftables rules (when the node has them).
    pub fn uses_nft(&self) -> bool {
        matches!(
            self,
            AgentFault::Partition { .. } | AgentFault::PacketLoss { .. }
        )
    }
}

/// The faults a node holds, each with its local deadline (ms on the agent's clock).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    /// By the experiment's fault id.
    pub held: BTreeMap<String, (AgentFault, u64)>,
}

impl Faults {
    /// Takes `fault` on until `now + lasts_ms`. Refused: a second fault of the same id,
    /// anything while powered off, and a zero duration for a lasting fault.
    pub fn begin(
        &mut self,
        id: &str,
        fault: AgentFault,
        lasts_ms: u64,
        now: u64,
    ) -> Result<(), String> {
        if self.held.contains_key(id) {
            return Err(format!("fault {id} is already held"));
        }
        if self.powered_off() {
            return Err("the node is powered off".into());
        }
        if fault.instant() {
            return Ok(());
        }
        if lasts_ms == 0 {
            return Err("a lasting fault needs a duration".into());
        }
        self.held
            .insert(id.to_string(), (fault, now.saturating_add(lasts_ms)));
        Ok(())
    }

    /// Ends one fault (None: not held).
    pub fn end(&mut self, id: &str) -> Option<AgentFault> {
        self.held.remove(id).map(|(f, _)| f)
    }

    /// Every fault whose deadline has come, removed.
    pub fn expired(&mut self, now: u64) -> Vec<(String, AgentFault)> {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(id, _)| id.clone())
            .collect();
        due.into_iter()
            .filter_map(|id| self.held.remove(&id).map(|(f, _)| (id, f)))
            .collect()
    }

    /// The next deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.held.values().map(|(_, d)| *d).min()
    }

    /// Whether a power-off is held.
    pub fn powered_off(&self) -> bool {
        self.held
            .values()
            .any(|(f, _)| matches!(f, AgentFault::PowerOff))
    }

    /// Whether the agent must stay away from the server: powered off, or partitioned
    /// from it with no nftables to do it with.
    pub fn silent(&self, nft: bool) -> bool {
        self.held.values().any(|(f, _)| match f {
            AgentFault::PowerOff => true,
            AgentFault::Partition { server, .. } => *server && !nft,
            _ => false,
        })
    }

    /// The latency to add, ms (the largest held).
    pub fn delay_ms(&self) -> u32 {
        self.held
            .values()
            .filter_map(|(f, _)| match f {
                AgentFault::Latency { ms } => Some(*ms),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The share of its own heartbeats the agent drops (loss without nftables), percent.
    pub fn heartbeat_loss(&self, nft: bool) -> u8 {
        if nft {
            return 0;
        }
        self.held
            .values()
            .filter_map(|(f, _)| match f {
                AgentFault::PacketLoss { percent, .. } => Some(*percent),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether any held fault needs nftables rules.
    pub fn any_nft(&self) -> bool {
        self.held.values().any(|(f, _)| f.uses_nft())
    }
}

/// The whole table for the faults held (one script, loaded atomically by `nft -f`):
/// the table deleted and made again, so the script is also the undo of every fault no
/// longer held. `servers` are the control plane's addresses. Traffic on loopback is
/// never touched; drops apply to both directions.
pub fn nft_script(faults: &Faults, servers: &[IpAddr]) -> String {
    let mut rules: Vec<String> = Vec::new();
    for (fault, _) in faults.held.values() {
        match fault {
            AgentFault::Partition { peers, server } => {
                let mut addrs: Vec<IpAddr> = peers.clone();
                if *server {
                    addrs.extend(servers.iter().copied());
                }
                for a in addrs {
                    rules.extend(both_ways(a, "drop"));
                }
            }
            AgentFault::PacketLoss { percent, peers } => {
                let mut addrs: Vec<IpAddr> = servers.to_vec();
                addrs.extend(peers.iter().copied());
                for a in addrs {
                    rules.extend(both_ways(
                        a,
                        &format!("numgen random mod 100 < {percent} drop"),
                    ));
                }
            }
            _ => {}
        }
    }
    rules.sort();
    rules.dedup();
    let mut s = format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
    if rules.is_empty() {
        return s;
    }
    s.push_str(&format!("table inet {NFT_TABLE} {{\n"));
    for hook in ["input", "output"] {
        s.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority -10; policy accept;\n"
        ));
        for r in rules.iter().filter(|r| r.starts_with(hook)) {
            s.push_str("    ");
            s.push_str(&r[hook.len() + 1..]);
            s.push('\n');
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

/// `input …` and `output …` rules for traffic from and to `a`.
fn both_ways(a: IpAddr, verdict: &str) -> [String; 2] {
    let family = if a.is_ipv4() { "ip" } else { "ip6" };
    [
        format!("input {family} saddr {a} {verdict}"),
        format!("output {family} daddr {a} {verdict}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        match s.parse() {
            Ok(a) => a,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn deadlines_undo_each_fault_and_power_off_refuses_more() {
        let mut f = Faults::default();
        assert_eq!(
            f.begin("e/0", AgentFault::Latency { ms: 200 }, 1_000, 10),
            Ok(())
        );
        assert_eq!(f.begin("e/1", AgentFault::PowerOff, 5_000, 20), Ok(()));
        assert!(f.silent(true) && f.powered_off());
        assert_eq!(f.delay_ms(), 200);
        assert!(
            f.begin("e/2", AgentFault::CpuStress { cores: 1 }, 1, 30)
                .is_err()
        );
        assert!(
            f.begin("e/0", AgentFault::Latency { ms: 1 }, 1, 30)
                .is_err()
        );
        assert!(
            f.begin("e/3", AgentFault::Latency { ms: 1 }, 0, 30)
                .is_err()
        );
        assert_eq!(f.next_deadline(), Some(1_010));
        assert!(f.expired(1_009).is_empty());
        let gone = f.expired(1_010);
        assert_eq!(
            gone,
            vec![("e/0".to_string(), AgentFault::Latency { ms: 200 })]
        );
        assert_eq!(f.delay_ms(), 0);
        assert_eq!(f.end("e/1"), Some(AgentFault::PowerOff));
        assert!(!f.silent(false) && f.held.is_empty());
        // A kill holds nothing.
        assert_eq!(
            f.begin("e/4", AgentFault::Kill { alloc: "a".into() }, 0, 0),
            Ok(())
        );
        assert!(f.held.is_empty());
    }

    #[test]
    fn without_nftables_a_partition_from_the_server_is_silence_and_loss_is_heartbeats() {
        let mut f = Faults::default();
        let p = AgentFault::Partition {
            peers: vec![],
            server: true,
        };
        assert_eq!(f.begin("e/0", p, 100, 0), Ok(()));
        let loss = AgentFault::PacketLoss {
            percent: 30,
            peers: vec![],
        };
        assert_eq!(f.begin("e/1", loss, 100, 0), Ok(()));
        assert!(f.silent(false) && !f.silent(true));
        assert_eq!((f.heartbeat_loss(false), f.heartbeat_loss(true)), (30, 0));
        assert!(f.any_nft());
    }

    #[test]
    fn the_script_drops_both_ways_and_always_deletes_the_table_first() {
        let mut f = Faults::default();
        let servers = [ip("10.0.0.1")];
        assert_eq!(
            nft_script(&f, &servers),
            "table inet motley_chaos\ndelete table inet motley_chaos\n"
        );
        let p = AgentFault::Partition {
            peers: vec![ip("10.0.0.3")],
            server: true,
        };
        assert_eq!(f.begin("e/0", p, 100, 0), Ok(()));
        let loss = AgentFault::PacketLoss {
            percent: 5,
            peers: vec![ip("fd00::4")],
        };
        assert_eq!(f.begin("e/1", loss, 100, 0), Ok(()));
        let s = nft_script(&f, &servers);
        let expected = [
            "table inet motley_chaos",
            "delete table inet motley_chaos",
            "table inet motley_chaos {",
            "  chain input {",
            "    type filter hook input priority -10; policy accept;",
            "    ip saddr 10.0.0.1 drop",
            "    ip saddr 10.0.0.1 numgen random mod 100 < 5 drop",
            "    ip saddr 10.0.0.3 drop",
            "    ip6 saddr fd00::4 numgen random mod 100 < 5 drop",
            "  }",
            "  chain output {",
            "    type filter hook output priority -10; policy accept;",
            "    ip daddr 10.0.0.1 drop",
            "    ip daddr 10.0.0.1 numgen random mod 100 < 5 drop",
            "    ip daddr 10.0.0.3 drop",
            "    ip6 daddr fd00::4 numgen random mod 100 < 5 drop",
            "  }",
            "}",
            "",
        ]
        .join("\n");
        assert_eq!(s, expected);
        f.end("e/0");
        f.end("e/1");
        assert!(!nft_script(&f, &servers).contains("drop"));
    }

    #[test]
    fn orders_round_trip_as_json() -> serde_json::Result<()> {
        let f = AgentFault::PacketLoss {
            percent: 5,
            peers: vec![ip("10.0.0.2")],
        };
        let text = serde_json::to_string(&f)?;
        assert_eq!(
            text,
            r#"{"action":"packet_loss","percent":5,"peers":["10.0.0.2"]}"#
        );
        assert_eq!(serde_json::from_str::<AgentFault>(&text)?, f);
        Ok(())
    }
}
