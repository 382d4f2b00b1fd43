//! TLS identity and client configuration.
//!
//! * [`Ca`]: the cluster CA, created on a server's first start and kept in its
//!   data directory (`ca.crt`, `ca.key`, mode 0600). The server's own
//!   certificate is signed by it at every start and kept only in memory, so a
//!   restart writes nothing.
//! * [`client_tls`]: a rustls client configuration that trusts only the
//!   cluster CA (no system roots, no trust on first use).
//! * [`ClientConfig`]: the `client.yaml` a server writes for the CLI, in the
//!   spirit of a kubeconfig.
//! * Tokens: random secrets of which servers store only a SHA-256 hash.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fuzzing;
pub mod ws;

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Errors of TLS setup and client configuration.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(String),
    /// A client config file is not valid.
    #[error("{path}: {message}")]
    Config {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cert_err<E: std::fmt::Display>(e: E) -> NetError {
    NetError::Cert(e.to_string())
}

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Writes `data` to `path` atomically (temporary file, fsync, rename) with the given mode.
pub fn write_private(path: &Path, data: &[u8], mode: u32) -> Result<(), NetError> {
    write_atomic(path, data, mode, true)
}

/// Replaces `path` with `data` atomically (temporary file, rename) without waiting for
/// the disk: readers, and a restarted process, see either the old content or the new,
/// whole; a power cut may lose the latest writes. For state that only matters while the
/// machine stays up (and, on flash, to spare it a cache flush per write).
pub fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<(), NetError> {
    write_atomic(path, data, mode, false)
}

fn write_atomic(path: &Path, data: &[u8], mode: u32, durable: bool) -> Result<(), NetError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        if durable {
            f.sync_all().map_err(io_err(&tmp))?;
        }
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if durable
        && let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The cluster certificate authority.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
}

fn ca_params() -> Result<CertificateParams, NetError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "motley cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2125, 1, 1);
    Ok(p)
}

impl Ca {
    /// Loads `ca.crt`/`ca.key` from `dir`, creating them on first use.
    pub fn load_or_create(dir: &Path) -> Result<Ca, NetError> {
        let crt = dir.join("ca.crt");
        let key = dir.join("ca.key");
        if crt.exists() && key.exists() {
            let cert_pem = fs::read_to_string(&crt).map_err(io_err(&crt))?;
            let key_pem = fs::read_to_string(&key).map_err(io_err(&key))?;
            let key = KeyPair::from_pem(&key_pem).map_err(cert_err)?;
            return Ok(Ca { cert_pem, key });
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let kp = KeyPair::generate().map_err(cert_err)?;
        let cert = ca_params()?.self_signed(&kp).map_err(cert_err)?;
        write_private(&key, kp.serialize_pem().as_bytes(), 0o600)?;
        write_private(&crt, cert.pem().as_bytes(), 0o644)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key: kp,
        })
    }

    /// A CA from its certificate and private key (PEM), as kept in the datastore when
    /// several servers share one cluster.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, NetError> {
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(cert_err)?;
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    /// The CA's private key, PEM (to share it with the other servers through the store).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// `sha256:<hex>` of the CA certificate (DER), as carried by join tokens.
    pub fn hash(&self) -> Result<String, NetError> {
        ca_hash(&self.cert_pem)
    }

    /// Signs a fresh server certificate for these names and addresses; returns (cert chain, key).
    pub fn server_cert(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), NetError> {
        let (cert, kp) = self.sign_server(names, "motley server")?;
        let ca_der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(cert_err)?;
        let key = PrivateKeyDer::try_from(kp.serialize_der()).map_err(cert_err)?;
        Ok((vec![cert.der().clone(), ca_der], key))
    }

    /// A certificate for `names` signed by this CA, as PEM: (chain, leaf first; key).
    pub fn host_cert_pem(&self, names: &[String]) -> Result<(String, String), NetError> {
        let cn = names.first().map_or("motley", |n| n.as_str());
        let (cert, kp) = self.sign_server(names, cn)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            kp.serialize_pem(),
        ))
    }

    /// A fresh key and a server certificate for `names` (common name `cn`) signed by
    /// this CA, valid 2025–2125.
    fn sign_server(
        &self,
        names: &[String],
        cn: &str,
    ) -> Result<(rcgen::Certificate, KeyPair), NetError> {
        let kp = KeyPair::generate().map_err(cert_err)?;
        let mut p = CertificateParams::new(names.to_vec()).map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2125, 1, 1);
        let issuer = Issuer::new(ca_params()?, &self.key);
        let cert = p.signed_by(&kp, &issuer).map_err(cert_err)?;
        Ok((cert, kp))
    }

    /// A rustls server configuration with a fresh certificate for `names`.
    pub fn server_config(&self, names: &[String]) -> Result<rustls::ServerConfig, NetError> {
        install_crypto_provider();
        let (chain, key) = self.server_cert(names)?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(cert_err)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session resumption: a server kept a cache of 256 sessions (30 KiB made
        // up front, and two tickets' sessions stored per connection) and sent two
        // tickets after every handshake, for clients that never come back with them: a
        // CLI command is a process of its own, and an agent reconnects seldom (a full
        // handshake then costs one signature). docs/decisions.md, "A connection's memory".
        cfg.session_storage = std::sync::Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        Ok(cfg)
    }
}

/// `sha256:<hex>` of the first certificate in `pem`.
pub fn ca_hash(pem: &str) -> Result<String, NetError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(cert_err)?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(der.as_ref()))
    ))
}

/// The names a server certificate should cover: localhost, loopback, the host name,
/// the listen address when specific, and any extra names.
pub fn server_names(listen: Option<IpAddr>, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            names.push(h.to_string());
        }
    }
    if let Some(ip) = listen
        && !ip.is_unspecified()
    {
        names.push(ip.to_string());
    }
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// A rustls client configuration that trusts only the given CA.
pub fn client_tls(ca_pem: &str) -> Result<rustls::ClientConfig, NetError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(cert_err)?).map_err(cert_err)?;
        n += 1;
    }
    if n == 0 {
        return Err(NetError::Cert("no CA certificate in the given PEM".into()));
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    cfg.resumption = resumption();
    Ok(cfg)
}

/// Servers whose session tickets a client keeps, to resume its next connection to one
/// of them without a full handshake. rustls' default is 256, a table of about 15 KiB
/// allocated with the configuration, in every agent and server; a client here talks to
/// the servers of one cluster (one to three, rarely more).
pub const RESUMED_SERVERS: usize = 8;

fn resumption() -> rustls::client::Resumption {
    rustls::client::Resumption::in_memory_sessions(RESUMED_SERVERS)
}

/// A new random token secret (256 bits, hex).
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A short random id (64 bits, hex).
pub fn new_id() -> String {
    hex::encode(random_u64().to_be_bytes())
}

/// 64 random bits (from the seed under the simulator, so a seed replays the same way).
pub fn random_u64() -> u64 {
    motley_rt::seeded_u64().unwrap_or_else(|| rand::rng().next_u64())
}

/// SHA-256 of a token, hex: what servers store instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An error and its sources, joined with `: ` (HTTP and TLS errors hide the useful part
/// in their sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Prefix of join tokens: `mtly1.<sha256 of the CA, hex>.<secret>`.
pub const JOIN_PREFIX: &str = "mtly1.";

/// A join token carrying the cluster CA's hash, so a joining agent can verify the
/// server before trusting it (no trust on first use).
pub fn join_token(ca_hash: &str) -> String {
    let hex = ca_hash.trim_start_matches("sha256:");
    format!("{JOIN_PREFIX}{hex}.{}", new_secret())
}

/// The CA hash (`sha256:<hex>`) a join token pins, or `None` if it is not a join token.
pub fn join_token_pin(token: &str) -> Option<String> {
    let rest = token.strip_prefix(JOIN_PREFIX)?;
    let (hex, secret) = rest.split_once('.')?;
    let ok = hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) && !secret.is_empty();
    ok.then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Verifies a server against a pinned CA hash: the chain the server presents must include
/// a certificate with that hash, and the server certificate must be valid under it.
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let hash =
            |c: &CertificateDer<'_>| format!("sha256:{}", hex::encode(Sha256::digest(c.as_ref())));
        let Some(ca) = intermediates.iter().find(|c| hash(c) == self.pin) else {
            let seen: Vec<String> = intermediates.iter().map(hash).collect();
            return Err(rustls::Error::General(format!(
                "the server's CA ({}) does not match the join token's CA ({}): refusing to trust it",
                if seen.is_empty() {
                    "none presented".to_string()
                } else {
                    seen.join(", ")
                },
                self.pin
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that trusts a server only if its chain includes the CA with
/// hash `pin` (`sha256:<hex>`), as carried by a join token.
pub fn pinned_client_tls(pin: &str) -> rustls::ClientConfig {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            pin: pin.to_string(),
            provider,
        }))
        .with_no_client_auth();
    cfg.resumption = resumption();
    cfg
}

/// `client.yaml`: how the CLI reaches the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Server URLs, tried in order (`https://host:port`).
    pub servers: Vec<String>,
    /// The cluster CA certificate, PEM.
    pub ca: String,
    /// The bearer token.
    pub token: String,
}

impl ClientConfig {
    /// Reads a client config file.
    pub fn load(path: &Path) -> Result<ClientConfig, NetError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let cfg: ClientConfig = serde_saphyr::from_str(&text).map_err(|e| NetError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if cfg.servers.is_empty() {
            return Err(NetError::Config {
                path: path.to_path_buf(),
                message: "servers: at least one server URL is needed".into(),
            });
        }
        Ok(cfg)
    }

    /// Writes it with mode 0600 (it holds a token).
    pub fn save(&self, path: &Path) -> Result<(), NetError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let text = serde_saphyr::to_string(self).map_err(|e| NetError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        write_private(path, text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_and_signs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path()).expect("create");
        let again = Ca::load_or_create(dir.path()).expect("load");
        assert_eq!(ca.hash().expect("hash"), again.hash().expect("hash"));
        assert!(ca.hash().expect("hash").starts_with("sha256:"));
        ca.server_config(&server_names(None, &[]))
            .expect("server config");
        client_tls(ca.cert_pem()).expect("client config");
        assert!(client_tls("not a pem").is_err());
        let jt = join_token(&ca.hash().expect("hash"));
        assert_eq!(join_token_pin(&jt), Some(ca.hash().expect("hash")));
        assert_eq!(join_token_pin("mtly1.abc.def"), None);
        assert_eq!(join_token_pin(&new_secret()), None);
        let cfg = ClientConfig {
            servers: vec!["https://127.0.0.1:7443".into()],
            ca: ca.cert_pem().to_string(),
            token: new_secret(),
        };
        let p = dir.path().join("client.yaml");
        cfg.save(&p).expect("save");
        assert_eq!(ClientConfig::load(&p).expect("load"), cfg);
    }

    /// A client's store of sessions that counts the tickets it is given.
    #[derive(Debug, Default)]
    struct CountingStore {
        inner: Option<Arc<dyn rustls::client::ClientSessionStore>>,
        tickets: std::sync::atomic::AtomicUsize,
    }

    impl rustls::client::ClientSessionStore for CountingStore {
        fn set_kx_hint(
            &self,
            name: rustls::pki_types::ServerName<'static>,
            group: rustls::NamedGroup,
        ) {
            if let Some(i) = &self.inner {
                i.set_kx_hint(name, group);
            }
        }
        fn kx_hint(&self, name: &rustls::pki_types::ServerName<'_>) -> Option<rustls::NamedGroup> {
            self.inner.as_ref().and_then(|i| i.kx_hint(name))
        }
        fn set_tls12_session(
            &self,
            _: rustls::pki_types::ServerName<'static>,
            _: rustls::client::Tls12ClientSessionValue,
        ) {
        }
        fn tls12_session(
            &self,
            _: &rustls::pki_types::ServerName<'_>,
        ) -> Option<rustls::client::Tls12ClientSessionValue> {
            None
        }
        fn remove_tls12_session(&self, _: &rustls::pki_types::ServerName<'static>) {}
        fn insert_tls13_ticket(
            &self,
            _: rustls::pki_types::ServerName<'static>,
            _: rustls::client::Tls13ClientSessionValue,
        ) {
            self.tickets
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn take_tls13_ticket(
            &self,
            _: &rustls::pki_types::ServerName<'static>,
        ) -> Option<rustls::client::Tls13ClientSessionValue> {
            None
        }
    }

    /// Moves what `from` has to send into `to`, and lets `to` process it.
    fn carry<A, B>(from: &mut rustls::ConnectionCommon<A>, to: &mut rustls::ConnectionCommon<B>) {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).expect("writes");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).expect("reads");
        }
        to.process_new_packets().expect("processes");
    }

    /// The server keeps no sessions and sends no tickets (docs/decisions.md, "A
    /// connection's memory"): a client that completed a handshake and exchanged data
    /// was given none, and the server's store can cache nothing.
    #[test]
    fn the_server_sends_no_session_tickets_and_keeps_no_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path()).expect("create");
        let server_cfg = ca
            .server_config(&server_names(None, &[]))
            .expect("server config");
        assert!(!server_cfg.session_storage.can_cache());
        let store = Arc::new(CountingStore::default());
        let mut client_cfg = client_tls(ca.cert_pem()).expect("client config");
        client_cfg.resumption = rustls::client::Resumption::store(store.clone());
        let mut client = rustls::ClientConnection::new(
            Arc::new(client_cfg),
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
        )
        .expect("client");
        let mut server = rustls::ServerConnection::new(Arc::new(server_cfg)).expect("server");
        // Bytes back and forth in memory until both sides have nothing more to say,
        // with a message each way once the handshake is done.
        let mut said = false;
        for _ in 0..20 {
            carry(&mut client, &mut server);
            carry(&mut server, &mut client);
            if !client.is_handshaking() && !server.is_handshaking() && !said {
                std::io::Write::write_all(&mut client.writer(), b"ping").expect("ping");
                std::io::Write::write_all(&mut server.writer(), b"pong").expect("pong");
                said = true;
            }
        }
        assert!(said, "the handshake did not complete");
        let mut got = [0u8; 4];
        std::io::Read::read_exact(&mut client.reader(), &mut got).expect("the server's answer");
        assert_eq!(&got, b"pong");
        assert_eq!(
            store.tickets.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "the server sent session tickets"
        );
    }
}
