//! HTTPS for the ingress: the certificate for each host the catalog carries
//! (`Catalog::certs`), chosen by the client's SNI.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Mesh;

/// Parsed certificates by host.
type ByHost = Arc<HashMap<String, Arc<CertifiedKey>>>;

/// Certificates by host, parsed once per catalog (kept with the catalog they came
/// from: holding it, its address cannot be reused by a newer one).
pub struct Certs {
    mesh: Mesh,
    parsed: Mutex<(Option<Arc<motley_core::catalog::Catalog>>, ByHost)>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certs")
    }
}

impl Certs {
    /// Certificates from `mesh`'s catalog.
    pub fn new(mesh: Mesh) -> Certs {
        Certs {
            mesh,
            parsed: Mutex::new((None, Arc::default())),
        }
    }

    fn current(&self) -> ByHost {
        let cat = self.mesh.catalog();
        let mut p = crate::lock(&self.parsed);
        if !p.0.as_ref().is_some_and(|c| Arc::ptr_eq(c, &cat)) {
            let provider = rustls::crypto::ring::default_provider();
            let mut map = HashMap::new();
            for (host, c) in &cat.certs {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(c.chain.as_bytes())
                        .filter_map(Result::ok)
                        .collect();
                let key = PrivateKeyDer::from_pem_slice(c.key.as_bytes()).ok();
                let signing = key.and_then(|k| provider.key_provider.load_private_key(k).ok());
                match signing {
                    Some(s) if !chain.is_empty() => {
                        map.insert(host.clone(), Arc::new(CertifiedKey::new(chain, s)));
                    }
                    _ => tracing::warn!("ingress: the certificate for {host} is not usable PEM"),
                }
            }
            *p = (Some(cat.clone()), Arc::new(map));
        }
        p.1.clone()
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.current().get(&name).cloned()
    }
}

/// The TLS configuration of the ingress: ring, TLS 1.2 and 1.3, HTTP/1.1.
pub fn server_config(mesh: Mesh) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(Certs::new(mesh)));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
