//! The service catalog: where each service's healthy replicas answer, as the server
//! builds it from the cluster state and sends it to every agent, and the rules the
//! agents' proxies, DNS and ingress route by. Pure: the agent only does the IO.
//!
//! Invariants:
//! * An endpoint is in the catalog only while its allocation is wanted running, runs,
//!   passes its check (or has none), has its ports, and its node is not down. An
//!   allocation asked to stop leaves the catalog at once: its supervisor
//!   (`crate::supervisor`, phase `Draining`) waits [`DRAIN_MS`] before stopping it, so
//!   every proxy has stopped sending to it first.
//! * A service's address ([`vip`]) depends only on its name and the names of
//!   services whose hash collides with it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::health::Health;
use crate::model::{AllocState, Allocation, Desired, Expose, Kind, Node, Spec, Workload};

/// How long a supervisor waits between an endpoint's leaving the catalog (its
/// allocation asked to stop) and stopping it: time for every proxy to hear of it.
pub const DRAIN_MS: u64 = 1_000;

/// The DNS zone of services: `web.motley`.
pub const ZONE: &str = "motley";

/// Every service that can be reached, by its name in the zone (`web`, `web.dev`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Services with ports, by name.
    #[serde(default)]
    pub services: BTreeMap<String, CatalogService>,
    /// Certificates of the ingress's HTTPS hosts (sent to agents only; the API shows
    /// none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certs: BTreeMap<String, HostCert>,
}

/// A certificate chain and its key, PEM. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCert {
    /// The chain, leaf first.
    pub chain: String,
    /// The private key.
    pub key: String,
}

impl std::fmt::Debug for HostCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCert")
            .field("chain_bytes", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// The HTTPS hosts of `workloads`' `expose` rules and where each one's certificate
/// comes from (`None`: the cluster CA; `Some(secret)`, in the service's namespace). A
/// host claimed with two sources takes the first service's (by name).
pub fn tls_hosts(
    workloads: &BTreeMap<crate::model::WorkloadRef, Workload>,
) -> BTreeMap<String, Option<crate::model::WorkloadRef>> {
    let mut out = BTreeMap::new();
    for (r, w) in workloads {
        let Spec::Service(s) = &w.spec else { continue };
        for e in &s.expose {
            if let Some(t) = &e.tls {
                out.entry(e.host.to_ascii_lowercase())
                    .or_insert_with(|| t.secret.as_ref().map(|n| r.sibling(Kind::Secret, n)));
            }
        }
    }
    out
}

/// A task's `resolv.conf`: `nameserver`, and one `search` line (the resolver reads
/// only the last) with its namespace's zone first (`dev.motley`, then `motley`; in
/// `default` just `motley`), then the node's own search domains (`host`: the node's
/// `resolv.conf`).
pub fn resolv_conf(nameserver: &str, namespace: &str, host: &str) -> String {
    let mut search: Vec<String> = Vec::new();
    if namespace != crate::model::DEFAULT_NAMESPACE {
        search.push(format!("{namespace}.{ZONE}"));
    }
    search.push(ZONE.to_string());
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            for d in words {
                if !search.iter().any(|s| s == d) {
                    search.push(d.to_string());
                }
            }
        }
    }
    format!("nameserver {nameserver}\nsearch {}\n", search.join(" "))
}

/// One service as the proxies see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogService {
    /// Its address on every node's loopback (`127.77.x.y`), where the proxy listens.
    pub vip: Ipv4Addr,
    /// Its ports: name and service port (`None`: no service port, SRV and ingress only).
    #[serde(default)]
    pub ports: Vec<(String, Option<u16>)>,
    /// Its ingress routes.
    #[serde(default)]
    pub expose: Vec<Expose>,
    /// Its TCP routes on the ingress: node port, port name, PROXY protocol v2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<(u16, String, bool)>,
    /// Its ports the node proxy forwards request by request (`protocol: http`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// Replicas that take traffic.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// A replica that takes traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The allocation.
    pub alloc: String,
    /// Its node.
    pub node: String,
    /// The node's address.
    pub addr: IpAddr,
    /// Host ports by port name.
    pub ports: BTreeMap<String, u16>,
    /// 0 for a node with no condition taint; more for one that is hot, throttled or
    /// underpowered (its count of condition taints): chosen only when no better one is.
    #[serde(default)]
    pub rank: u8,
}

impl Catalog {
    /// Builds the catalog: every service with ports, and its endpoints on nodes that
    /// are `up` and whose address is known.
    pub fn build(
        workloads: &BTreeMap<crate::model::WorkloadRef, Workload>,
        allocs: &BTreeMap<String, Allocation>,
        nodes: &BTreeMap<String, Node>,
        up: &BTreeSet<String>,
        addrs: &BTreeMap<String, IpAddr>,
    ) -> Catalog {
        let mut services: BTreeMap<String, CatalogService> = BTreeMap::new();
        for (r, w) in workloads {
            let Spec::Service(s) = &w.spec else { continue };
            if s.ports.is_empty() {
                continue;
            }
            // `web` in default, `web.dev` in dev: the name before `.motley`.
            services.insert(
                r.dns_name(),
                CatalogService {
                    vip: Ipv4Addr::UNSPECIFIED,
                    ports: s
                        .ports
                        .iter()
                        .map(|p| (p.name.clone(), p.service_port))
                        .collect(),
                    expose: s.expose.clone(),
                    tcp: s
                        .expose_tcp
                        .iter()
                        .map(|t| (t.node_port, t.port.clone(), t.proxy_protocol))
                        .collect(),
                    http: s
                        .ports
                        .iter()
                        .filter(|p| p.protocol == crate::model::PortProtocol::Http)
                        .map(|p| p.name.clone())
                        .collect(),
                    endpoints: Vec::new(),
                },
            );
        }
        // Rebuilt on every change of the cluster (a batch of job reports too): a
        // cluster without service ports pays for no walk over its allocations.
        if services.is_empty() {
            return Catalog::default();
        }
        for a in allocs.values() {
            if a.workload.kind != Kind::Service || !serves(a) {
                continue;
            }
            let Some(svc) = services.get_mut(&a.workload.dns_name()) else {
                continue;
            };
            let (Some(addr), true) = (addrs.get(&a.node), up.contains(&a.node)) else {
                continue;
            };
            if svc.ports.iter().any(|(n, _)| !a.ports.contains_key(n)) {
                continue;
            }
            let rank = nodes.get(&a.node).map_or(0, |n| {
                n.taints
                    .iter()
                    .filter(|t| t.key.starts_with("motley.io/"))
                    .count()
                    .min(u8::MAX as usize) as u8
            });
            svc.endpoints.push(Endpoint {
                alloc: a.id.clone(),
                node: a.node.clone(),
                addr: *addr,
                ports: a.ports.clone(),
                rank,
            });
        }
        let mut taken = BTreeSet::new();
        for (name, svc) in services.iter_mut() {
            svc.vip = vip(name, &mut taken);
        }
        Catalog {
            services,
            certs: BTreeMap::new(),
        }
    }

    /// The service a name asks for: `web.motley` or `web.motley.` (any case).
    pub fn lookup(&self, name: &str) -> Option<(&str, &CatalogService)> {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        let svc = n.strip_suffix(ZONE)?.strip_suffix('.')?;
        self.services
            .get_key_value(svc)
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Where a client outside the mesh reaches `host:port` of a service (`web.motley:80`,
    /// `web.dev.motley:8080`): a healthy endpoint's node address and host port for the
    /// service port `port`, the least-tainted first. An experiment's HTTP probe from the
    /// server uses it: the server has no node proxy or DNS of its own.
    pub fn reach(&self, host: &str, port: u16) -> Option<std::net::SocketAddr> {
        let (_, svc) = self.lookup(host)?;
        let name = svc
            .ports
            .iter()
            .find(|(_, p)| *p == Some(port))
            .map(|(n, _)| n.as_str())?;
        svc.endpoints
            .iter()
            .filter_map(|e| e.ports.get(name).map(|p| (e.rank, e.addr, *p)))
            .min_by_key(|(rank, _, _)| *rank)
            .map(|(_, addr, p)| std::net::SocketAddr::new(addr, p))
    }

    /// What a name's labels (lowercase, without the root) ask of the zone: `(service,
    /// endpoint, SRV port)`; the service as the catalog names it. `web.motley` and
    /// `web.dev.motley` (a service in namespace dev), `_http._tcp.<service>.motley`,
    /// `<alloc>.<service>.motley`; three labels are a service in a namespace when the
    /// catalog has one by that name, else an endpoint. `None` outside the zone or when
    /// the form is none of these; `Some((None, ..))` for the zone itself.
    pub fn asked<'a>(
        &self,
        labels: &[&'a str],
    ) -> Option<(Option<String>, Option<&'a str>, Option<&'a str>)> {
        let (last, rest) = labels.split_last()?;
        if *last != ZONE {
            return None;
        }
        let svc = |parts: &[&str]| parts.join(".");
        Some(match rest {
            [] => (None, None, None),
            [s] => (Some(svc(&[s])), None, None),
            [p, t, s @ ..] if p.starts_with('_') && *t == "_tcp" && (1..=2).contains(&s.len()) => {
                (Some(svc(s)), None, Some(p.trim_start_matches('_')))
            }
            [a, b] if self.services.contains_key(&svc(&[a, b])) => (Some(svc(&[a, b])), None, None),
            [a, s] => (Some(svc(&[s])), Some(*a), None),
            [a, s, ns] => (Some(svc(&[s, ns])), Some(*a), None),
            _ => return None,
        })
    }

    /// The ingress route for a request: `(service, port name)` of the rule whose host
    /// is `host` (without case or `:port`) and whose path is the longest prefix of
    /// `path` on a segment boundary.
    pub fn route(&self, host: &str, path: &str) -> Option<(&str, &str)> {
        let host = host
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let mut best: Option<(usize, &str, &str)> = None;
        for (name, svc) in &self.services {
            for e in &svc.expose {
                if !e.host.eq_ignore_ascii_case(&host) || !path_under(path, &e.path) {
                    continue;
                }
                let len = e.path.trim_end_matches('/').len();
                if best.is_none_or(|(l, _, _)| len > l) {
                    best = Some((len, name.as_str(), e.port.as_str()));
                }
            }
        }
        best.map(|(_, s, p)| (s, p))
    }
}

/// Whether an allocation takes traffic: wanted running, running, and passing its check
/// (or without one).
pub fn serves(a: &Allocation) -> bool {
    a.desired == Desired::Run
        && a.state == AllocState::Running
        && (a.check.is_none() || a.health == Some(Health::Healthy))
}

/// Whether `path` is `prefix` or under it (`/api` matches `/api` and `/api/x`, not
/// `/apix`).
pub fn path_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

/// A service's loopback address: `127.77.0.0/16` by a hash of its name (FNV-1a), the
/// next free one on a collision; never `.0` or `.255` in the last byte.
pub fn vip(name: &str, taken: &mut BTreeSet<Ipv4Addr>) -> Ipv4Addr {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let mut n = (h % 65_536) as u16;
    loop {
        let [hi, lo] = n.to_be_bytes();
        let ip = Ipv4Addr::new(127, 77, hi, lo);
        if lo != 0 && lo != 255 && taken.insert(ip) {
            return ip;
        }
        n = n.wrapping_add(1);
    }
}

/// The order in which a proxy on `local` tries a service's endpoints: its own node's
/// first, then by rank (cooler, unthrottled nodes), each tier turned by `turn` so that
/// requests are spread (round robin).
pub fn order(endpoints: &[Endpoint], local: &str, turn: usize) -> Vec<usize> {
    let mut tiers: BTreeMap<(bool, u8), Vec<usize>> = BTreeMap::new();
    for (i, e) in endpoints.iter().enumerate() {
        tiers.entry((e.node != local, e.rank)).or_default().push(i);
    }
    let mut out = Vec::with_capacity(endpoints.len());
    for tier in tiers.values() {
        let k = turn % tier.len();
        out.extend(tier[k..].iter().chain(&tier[..k]));
    }
    out
}

impl Default for CatalogService {
    fn default() -> CatalogService {
        CatalogService {
            vip: Ipv4Addr::UNSPECIFIED,
            ports: Vec::new(),
            expose: Vec::new(),
            tcp: Vec::new(),
            http: Vec::new(),
            endpoints: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(alloc: &str, node: &str, rank: u8) -> Endpoint {
        Endpoint {
            alloc: alloc.into(),
            node: node.into(),
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: BTreeMap::new(),
            rank,
        }
    }

    #[test]
    fn a_task_searches_its_own_namespace_first() {
        let host = "nameserver 10.0.0.1\nsearch lan example.org\n";
        assert_eq!(
            resolv_conf("10.77.0.1", "dev", host),
            "nameserver 10.77.0.1\nsearch dev.motley motley lan example.org\n"
        );
        assert_eq!(
            resolv_conf("10.77.0.1", "default", "domain home\n"),
            "nameserver 10.77.0.1\nsearch motley home\n"
        );
        let cat = Catalog {
            services: [("web".to_string(), svc()), ("web.dev".to_string(), svc())]
                .into_iter()
                .collect(),
            certs: BTreeMap::new(),
        };
        assert_eq!(
            cat.lookup("web.dev.motley.").map(|(k, _)| k),
            Some("web.dev")
        );
        assert_eq!(cat.lookup("web.motley").map(|(k, _)| k), Some("web"));
        assert!(cat.lookup("web.staging.motley").is_none());
        let ask = |n: &str| {
            let labels: Vec<&str> = n.split('.').collect();
            cat.asked(&labels)
                .map(|(s, e, p)| (s, e.map(str::to_string), p.map(str::to_string)))
        };
        let some = |s: &str| Some(s.to_string());
        assert_eq!(ask("web.dev.motley"), Some((some("web.dev"), None, None)));
        assert_eq!(
            ask("web-1.web.motley"),
            Some((some("web"), some("web-1"), None))
        );
        assert_eq!(
            ask("web-1.web.dev.motley"),
            Some((some("web.dev"), some("web-1"), None))
        );
        assert_eq!(
            ask("_http._tcp.web.dev.motley"),
            Some((some("web.dev"), None, some("http")))
        );
        assert_eq!(
            ask("_http._tcp.web.motley"),
            Some((some("web"), None, some("http")))
        );
        assert_eq!(ask("motley"), Some((None, None, None)));
        assert_eq!(ask("web.example"), None);
        assert_eq!(ask("a.b.c.d.motley"), None);
    }

    fn svc() -> CatalogService {
        CatalogService {
            vip: Ipv4Addr::LOCALHOST,
            ports: Vec::new(),
            expose: Vec::new(),
            tcp: Vec::new(),
            http: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn a_client_outside_the_mesh_reaches_the_least_tainted_endpoint_of_a_port() {
        let mut web = svc();
        web.ports = vec![("http".into(), Some(80)), ("admin".into(), None)];
        let at = |n: u8, port: u16, rank: u8| Endpoint {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
            ports: [("http".to_string(), port)].into_iter().collect(),
            ..ep("a", "n", rank)
        };
        web.endpoints = vec![at(1, 31001, 1), at(2, 31002, 0)];
        let cat = Catalog {
            services: [("web".to_string(), web)].into_iter().collect(),
            certs: BTreeMap::new(),
        };
        assert_eq!(
            cat.reach("web.motley", 80).map(|a| a.to_string()),
            Some("10.0.0.2:31002".to_string())
        );
        assert!(
            cat.reach("web.motley", 8080).is_none(),
            "no such service port"
        );
        assert!(cat.reach("db.motley", 80).is_none());
    }

    #[test]
    fn the_local_node_comes_first_then_cool_nodes_each_tier_in_turn() {
        let eps = [
            ep("a", "n1", 0),
            ep("b", "n2", 0),
            ep("c", "n3", 1),
            ep("d", "n2", 0),
            ep("e", "me", 2),
        ];
        assert_eq!(order(&eps, "me", 0), vec![4, 0, 1, 3, 2]);
        assert_eq!(order(&eps, "me", 1), vec![4, 1, 3, 0, 2]);
        assert_eq!(order(&eps, "other", 0), vec![0, 1, 3, 2, 4]);
        assert!(order(&[], "me", 3).is_empty());
    }

    #[test]
    fn routes_take_the_longest_path_on_a_segment_boundary_and_ignore_case_and_port() {
        let mut c = Catalog::default();
        let rule = |port: &str, host: &str, path: &str| Expose {
            port: port.into(),
            host: host.into(),
            path: path.into(),
            tls: None,
        };
        c.services.insert(
            "web".into(),
            CatalogService {
                expose: vec![rule("http", "web.home.arpa", "/")],
                ..Default::default()
            },
        );
        c.services.insert(
            "api".into(),
            CatalogService {
                expose: vec![rule("http", "web.home.arpa", "/api/")],
                ..Default::default()
            },
        );
        assert_eq!(c.route("web.home.arpa", "/"), Some(("web", "http")));
        assert_eq!(c.route("WEB.home.arpa:8080", "/api"), Some(("api", "http")));
        assert_eq!(
            c.route("web.home.arpa", "/api/v1?x=1"),
            Some(("api", "http"))
        );
        assert_eq!(c.route("web.home.arpa", "/apix"), Some(("web", "http")));
        assert_eq!(c.route("other.home.arpa", "/"), None);
        assert!(path_under("/a/b?q", "/a"));
        assert!(!path_under("/ab", "/a"));
    }

    #[test]
    fn names_resolve_in_the_zone_only() {
        let mut c = Catalog::default();
        c.services.insert("web".into(), CatalogService::default());
        assert!(c.lookup("web.motley.").is_some());
        assert!(c.lookup("WEB.Motley").is_some());
        assert!(c.lookup("web.motley.example").is_none());
        assert!(c.lookup("db.motley").is_none());
        assert!(c.lookup("motley").is_none());
    }

    #[test]
    fn addresses_are_stable_distinct_and_usable() {
        let mut taken = BTreeSet::new();
        let a = vip("web", &mut taken);
        let mut again = BTreeSet::new();
        assert_eq!(vip("web", &mut again), a);
        // The same name asked again while taken gets another address.
        let b = vip("web", &mut taken);
        assert_ne!(a, b);
        let mut all = BTreeSet::new();
        for i in 0..2000 {
            let ip = vip(&format!("svc{i}"), &mut all);
            assert_eq!(ip.octets()[..2], [127, 77]);
            assert!(ip.octets()[3] != 0 && ip.octets()[3] != 255);
        }
        assert_eq!(all.len(), 2000);
    }
}
