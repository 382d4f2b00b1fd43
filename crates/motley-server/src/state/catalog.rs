//! The service catalog the leader keeps and sends its agents: rebuilt from the cache
//! (services, allocations), node verdicts and agent addresses whenever one of them
//! changes, and sent to every agent only when it differs from the last one sent.
//! Memory only: nothing is stored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use motley_core::catalog::Catalog;
use motley_core::proto::ServerMsg;
use tokio::sync::Notify;

use super::Shared;
use crate::util::lock;

/// Changes within this long of each other are sent as one catalog.
const COALESCE: Duration = Duration::from_millis(20);

/// The last catalog sent, and the signal that something it is built from changed.
#[derive(Default)]
pub struct CatalogState {
    last: Mutex<Arc<Catalog>>,
    dirty: Notify,
    /// Certificates the CA signed for ingress hosts, kept for as long as this server
    /// runs (a new key each rebuild would make every catalog differ).
    signed: Mutex<std::collections::BTreeMap<String, motley_core::catalog::HostCert>>,
}

impl CatalogState {
    /// Something the catalog is built from changed (a node's verdict, an agent came
    /// or went).
    pub fn touch(&self) {
        self.dirty.notify_one();
    }

    /// The catalog as last sent.
    pub fn current(&self) -> Arc<Catalog> {
        lock(&self.last).clone()
    }
}

impl Shared {
    /// The catalog of the cluster as this server sees it now.
    pub fn build_catalog(&self) -> Catalog {
        let up = self.ready_nodes();
        let addrs = self.hub.addresses();
        let cache = self.cache();
        let mut c = Catalog::build(&cache.workloads, &cache.allocs, &cache.nodes, &up, &addrs);
        for (host, source) in motley_core::catalog::tls_hosts(&cache.workloads) {
            match self.host_cert(&cache, &host, source.as_ref()) {
                Ok(cert) => {
                    c.certs.insert(host, cert);
                }
                Err(e) => tracing::warn!("ingress certificate for {host}: {e}"),
            }
        }
        c
    }

    /// `host`'s certificate: from Secret `secret` (`tls.crt`, `tls.key`), or signed by
    /// the cluster CA once.
    fn host_cert(
        &self,
        cache: &super::Cache,
        host: &str,
        secret: Option<&motley_core::model::WorkloadRef>,
    ) -> Result<motley_core::catalog::HostCert, String> {
        use motley_core::catalog::HostCert;
        use motley_core::model::Spec;
        if let Some(r) = secret {
            let name = &r.scoped_name();
            let Some(Spec::Secret(s)) = cache.workloads.get(r).map(|w| &w.spec) else {
                return Err(format!("secret {name} does not exist"));
            };
            let ring = crate::util::read(&self.trust.keyring);
            let open = |key: &str| -> Result<String, String> {
                let sealed = s
                    .data
                    .get(key)
                    .and_then(|v| v.sealed.as_deref())
                    .ok_or_else(|| format!("secret {name} has no key {key}"))?;
                let plain = ring.open(name, key, sealed).map_err(|e| e.to_string())?;
                String::from_utf8(plain)
                    .map_err(|_| format!("secret {name}'s {key} is not PEM text"))
            };
            return Ok(HostCert {
                chain: open("tls.crt")?,
                key: open("tls.key")?,
            });
        }
        if let Some(c) = lock(&self.catalog.signed).get(host) {
            return Ok(c.clone());
        }
        let ca = self
            .trust
            .signer
            .get()
            .ok_or_else(|| "this server has no CA key to sign with".to_string())?;
        let (chain, key) = ca
            .host_cert_pem(&[host.to_string()])
            .map_err(|e| e.to_string())?;
        let cert = HostCert { chain, key };
        lock(&self.catalog.signed).insert(host.to_string(), cert.clone());
        Ok(cert)
    }

    /// Rebuilds the catalog on every change and sends it to every agent when it differs.
    pub async fn run_catalog(self: Arc<Self>) {
        let mut rev = self.cache_rev.subscribe();
        loop {
            tokio::select! {
                r = rev.changed() => if r.is_err() { return },
                _ = self.catalog.dirty.notified() => {}
            }
            tokio::time::sleep(COALESCE).await;
            rev.borrow_and_update();
            if self.ha.leading().is_none() {
                continue;
            }
            let next = self.build_catalog();
            let changed = {
                let mut last = lock(&self.catalog.last);
                if **last == next {
                    false
                } else {
                    *last = Arc::new(next.clone());
                    true
                }
            };
            if changed {
                self.hub.broadcast(&ServerMsg::Catalog { catalog: next });
            }
        }
    }
}
