//! Service networking on a node: what the agent serves from the catalog its server
//! sends ([`motley_core::catalog`]).
//!
//! * [`proxy`]: every service port at the service's loopback address
//!   (`web.motley:80` → `127.77.x.y:80`), forwarded over TCP to a healthy endpoint.
//! * [`ingress`]: HTTP on `--ingress-listen`, routed by host and path (`expose:`);
//!   [`tcp_routes`]: its TCP routes (`expose_tcp:`, PROXY protocol v2).
//! * [`dns`]: `NAME.motley` on `--dns-listen`, everything else forwarded upstream.
//!
//! The rules (which endpoints, in which order, which route) are the core's; this
//! crate only does the IO. Nothing here writes to disk.

#![forbid(unsafe_code)]

pub mod dns;
pub mod ingress;
pub mod netns;
pub mod proxy;
pub mod tcp_routes;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use motley_core::catalog::{self, Catalog};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// How long a connection to an endpoint may take before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most endpoints tried for one request or connection.
pub const MAX_TRIES: usize = 3;

/// What the node serves.
#[derive(Debug, Clone, Default)]
pub struct MeshConfig {
    /// The node's name (its own endpoints are preferred).
    pub node: String,
    /// Serve service ports at their loopback addresses.
    pub proxy: bool,
    /// Answer DNS here.
    pub dns: Option<SocketAddr>,
    /// Where other names are asked (default: the first `nameserver` of
    /// `/etc/resolv.conf` that is not this node's own DNS address).
    pub dns_upstream: Option<SocketAddr>,
    /// Serve the ingress (HTTP) here.
    pub ingress: Option<SocketAddr>,
    /// Serve the ingress over HTTPS here (hosts whose `expose` has `tls`).
    pub ingress_tls: Option<SocketAddr>,
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// An address could not be listened on.
    #[error("{what}: cannot listen on {addr}: {source}{hint}")]
    Listen {
        /// `DNS`, `ingress`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
        /// What may hold it.
        hint: &'static str,
    },
    /// TLS could not be set up.
    #[error("ingress TLS: {0}")]
    Tls(rustls::Error),
}

/// `{service, endpoint}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// The service.
    pub service: String,
    /// `address:port`.
    pub endpoint: String,
}

/// Requests and connections through this node, by service and endpoint.
#[derive(Clone)]
pub struct Metrics {
    /// HTTP requests through the ingress answered by an endpoint.
    pub requests: Family<EndpointLabel, Counter>,
    /// Requests or connections an endpoint failed (refused, reset, 5xx).
    pub errors: Family<EndpointLabel, Counter>,
    /// Time until an endpoint's response head, in seconds.
    pub latency: Family<EndpointLabel, Histogram>,
    /// TCP connections through the service proxy.
    pub connections: Family<EndpointLabel, Counter>,
    /// HTTP requests through the service proxy (`protocol: http` ports).
    pub proxied: Family<EndpointLabel, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            requests: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
            }),
            connections: Family::default(),
            proxied: Family::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "motley_ingress_requests",
            "HTTP requests through the ingress, by service and endpoint",
            self.requests.clone(),
        );
        r.register(
            "motley_endpoint_errors",
            "Requests and connections an endpoint failed (refused, reset, 5xx)",
            self.errors.clone(),
        );
        r.register(
            "motley_ingress_latency_seconds",
            "Time until the endpoint's response head",
            self.latency.clone(),
        );
        r.register(
            "motley_proxy_requests",
            "HTTP requests through the service proxy (protocol: http ports), by service and endpoint",
            self.proxied.clone(),
        );
        r.register(
            "motley_proxy_connections",
            "TCP connections through the service proxy, by service and endpoint",
            self.connections.clone(),
        );
    }
}

/// The node's service networking: shared by the proxy, the ingress and DNS.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    catalog: watch::Receiver<Arc<Catalog>>,
    turn: AtomicUsize,
    metrics: Metrics,
    /// Endpoint label sets in the metrics, to forget those that leave.
    seen: Mutex<std::collections::BTreeSet<(String, String)>>,
    /// Latency an experiment adds to proxied connections, each way, ms.
    delay_ms: std::sync::atomic::AtomicU32,
}

impl Mesh {
    /// Adds `ms` of latency each way to the connections the proxy carries from now on
    /// (an experiment's `latency` fault; 0 ends it).
    pub fn set_delay(&self, ms: u32) {
        self.inner.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// The latency added each way, ms.
    pub(crate) fn delay_ms(&self) -> u32 {
        self.inner.delay_ms.load(Ordering::SeqCst)
    }

    /// Starts what `cfg` asks for. Listening addresses are bound before this returns,
    /// so a busy one is an error here, not a log line later.
    pub async fn start(
        cfg: MeshConfig,
        catalog: watch::Receiver<Arc<Catalog>>,
        registry: &mut Registry,
    ) -> Result<Mesh, MeshError> {
        let metrics = Metrics::new();
        metrics.register(registry);
        let mesh = Mesh {
            inner: Arc::new(Inner {
                node: cfg.node.clone(),
                catalog,
                turn: AtomicUsize::new(0),
                metrics,
                seen: Mutex::default(),
                delay_ms: std::sync::atomic::AtomicU32::new(0),
            }),
        };
        if let Some(addr) = cfg.dns {
            let server = dns::Dns::bind(mesh.clone(), addr, cfg.dns_upstream).await?;
            motley_rt::spawn(server.run());
        }
        if let Some(addr) = cfg.ingress {
            // TCP routes on the ingress's address, at their node ports.
            motley_rt::spawn(tcp_routes::run(mesh.clone(), addr.ip()));
        }
        for (addr, secure) in [(cfg.ingress, false), (cfg.ingress_tls, true)] {
            let Some(addr) = addr else { continue };
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| MeshError::Listen {
                    what: if secure { "ingress (HTTPS)" } else { "ingress" },
                    addr,
                    source,
                    hint: if addr.port() < 1024 {
                        " (ports below 1024 need root or CAP_NET_BIND_SERVICE; another web server may hold it)"
                    } else {
                        ""
                    },
                })?;
            let tls = if secure {
                let cfg = tls::server_config(mesh.clone()).map_err(MeshError::Tls)?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
            } else {
                None
            };
            motley_rt::spawn(ingress::serve(mesh.clone(), l, tls));
        }
        if cfg.proxy {
            motley_rt::spawn(proxy::run(mesh.clone()));
        }
        // Names inside bridge containers (their resolver is theirs: `netns`).
        netns::set_serving();
        let upstream = cfg.dns_upstream.or_else(|| dns::system_upstream(cfg.dns));
        motley_rt::spawn(dns::run_in_namespaces(mesh.clone(), upstream));
        // Metric series of endpoints that left the catalog are forgotten.
        let m = mesh.clone();
        motley_rt::spawn(async move {
            let mut rx = m.inner.catalog.clone();
            while rx.changed().await.is_ok() {
                let cat = rx.borrow_and_update().clone();
                m.prune(&cat);
            }
        });
        Ok(mesh)
    }

    /// The catalog as last received.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.inner.catalog.borrow().clone()
    }

    /// Where to send a connection for `service`'s port `port`, best first (at most
    /// [`MAX_TRIES`]).
    pub fn candidates(&self, service: &str, port: &str) -> Vec<(SocketAddr, EndpointLabel)> {
        let cat = self.catalog();
        let Some(svc) = cat.services.get(service) else {
            return Vec::new();
        };
        let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
        catalog::order(&svc.endpoints, &self.inner.node, turn)
            .into_iter()
            .filter_map(|i| {
                let e = &svc.endpoints[i];
                let p = *e.ports.get(port)?;
                let addr = SocketAddr::new(e.addr, p);
                Some((
                    addr,
                    EndpointLabel {
                        service: service.to_string(),
                        endpoint: addr.to_string(),
                    },
                ))
            })
            .take(MAX_TRIES)
            .collect()
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn note(&self, l: &EndpointLabel) {
        crate::lock(&self.inner.seen).insert((l.service.clone(), l.endpoint.clone()));
    }

    /// Forgets the metric series of endpoints no longer in `cat`.
    fn prune(&self, cat: &Catalog) {
        let live: std::collections::BTreeSet<(String, String)> = cat
            .services
            .iter()
            .flat_map(|(name, s)| {
                s.endpoints.iter().flat_map(move |e| {
                    e.ports
                        .values()
                        .map(move |p| (name.clone(), SocketAddr::new(e.addr, *p).to_string()))
                })
            })
            .collect();
        let dead: Vec<(String, String)> = {
            let mut seen = crate::lock(&self.inner.seen);
            let dead = seen.difference(&live).cloned().collect();
            seen.retain(|k| live.contains(k));
            dead
        };
        let m = self.metrics();
        for (service, endpoint) in dead {
            let l = EndpointLabel { service, endpoint };
            m.requests.remove(&l);
            m.errors.remove(&l);
            m.latency.remove(&l);
            m.connections.remove(&l);
            m.proxied.remove(&l);
        }
    }
}

/// The node's address a service name stands for, for DNS.
pub fn service_address(cat: &Catalog, name: &str) -> Option<IpAddr> {
    cat.lookup(name).map(|(_, s)| IpAddr::V4(s.vip))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects to the first candidate that accepts, counting failures against each.
async fn connect(
    mesh: &Mesh,
    candidates: &[(SocketAddr, EndpointLabel)],
) -> Option<(tokio::net::TcpStream, EndpointLabel)> {
    for (addr, label) in candidates {
        mesh.note(label);
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Some((s, label.clone()));
            }
            Ok(Err(e)) => {
                tracing::debug!("{}: {addr}: {e}; trying the next endpoint", label.service);
                mesh.metrics().errors.get_or_create(label).inc();
            }
            Err(_) => {
                tracing::debug!("{}: {addr}: no answer; trying the next", label.service);
                mesh.metrics().errors.get_or_create(label).inc();
            }
        }
    }
    None
}
