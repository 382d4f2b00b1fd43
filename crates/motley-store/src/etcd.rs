//! The etcd backend: the same [`Store`] model on an etcd cluster (etcd's own model:
//! revisions, mod-revision compares, watches from a revision, compaction).
//!
//! `etcd-client` talks to one endpoint at a time and does not skip a dead one by
//! itself, so [`Etcd`] keeps the endpoint list and, when a call fails for want of a
//! connection, reconnects to the next endpoint and retries, up to one full round of
//! the list. A cluster without quorum answers [`StoreError::Unavailable`].

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, TxnOp,
    WatchOptions,
};
use tokio::sync::mpsc;

use crate::{Event, EventKind, KeyValue, Range, Store, StoreError, Txn, TxnResult, Watch};

/// How long one call may take before the next endpoint is tried.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// TLS for the connection to etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA certificate (PEM) that signed etcd's server certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM), for etcd's client certificate auth.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// The etcd backend.
pub struct Etcd {
    endpoints: Vec<String>,
    tls: EtcdTls,
    /// The connected client and the index of its endpoint.
    current: tokio::sync::Mutex<Option<(Client, usize)>>,
    /// The endpoint to try first on the next connect.
    next: Mutex<usize>,
    /// An open keep-alive stream and the lease it renews (one stream for many renewals).
    keeper: tokio::sync::Mutex<Option<(i64, Keeper)>>,
}

type Keeper = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// One renewal on an open keep-alive stream: whether the lease lives.
async fn renew_on(k: &mut Keeper) -> Result<bool, etcd_client::Error> {
    k.0.keep_alive().await?;
    Ok(k.1.message().await?.is_some_and(|r| r.ttl() > 0))
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// Parses `etcd://h1:2379,h2:2379` (or `etcds://` for TLS) into endpoint URLs.
pub fn parse_url(url: &str) -> Result<(Vec<String>, bool), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?}: expected etcd://HOST:PORT[,HOST:PORT...]"))?;
    let tls = match scheme {
        "etcd" => false,
        "etcds" => true,
        _ => return Err(format!("{url:?}: the scheme must be etcd:// or etcds://")),
    };
    let hosts: Vec<String> = rest
        .trim_end_matches('/')
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{}://{h}", if tls { "https" } else { "http" }))
        .collect();
    if hosts.is_empty() {
        return Err(format!("{url:?}: no endpoints"));
    }
    for h in &hosts {
        let hostport = h.split_once("://").map_or(h.as_str(), |x| x.1);
        if !hostport.contains(':') {
            return Err(format!("{url:?}: {hostport:?} needs a port (2379)"));
        }
    }
    Ok((hosts, tls))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Whether an etcd error means "try another endpoint" rather than a real answer: no
/// connection, or gRPC CANCELLED (1, the client's own timeout), UNKNOWN (2),
/// DEADLINE_EXCEEDED (4) or UNAVAILABLE (14), which etcd returns when the member has
/// no leader or its quorum is gone.
fn is_transport(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) | E::InvalidUri(_) => true,
        E::GRpcStatus(s) => {
            matches!(s.code() as i32, 1 | 2 | 4 | 14) || s.message().contains("no leader")
        }
        _ => false,
    }
}

fn kv(k: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: k.value().to_vec(),
        create_revision: k.create_revision().max(0) as u64,
        mod_revision: k.mod_revision().max(0) as u64,
        version: k.version().max(0) as u64,
    }
}

impl Etcd {
    /// The revision etcd compacted at, as a watch from `from` reports it.
    async fn compacted_at(&self, prefix: &str, from: u64) -> u64 {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from as i64);
        let Ok((_w, mut stream)) = self
            .with_retry("watch", |mut c| {
                let opts = opts.clone();
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await
        else {
            return 0;
        };
        match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(r))) => r.compact_revision().max(0) as u64,
            _ => 0,
        }
    }

    /// A backend for these endpoints (`http://h:2379` or `https://h:2379`). Connects
    /// lazily; [`Etcd::connect`] checks that one endpoint answers.
    pub fn new(endpoints: Vec<String>, tls: EtcdTls) -> Etcd {
        Etcd {
            endpoints,
            tls,
            current: tokio::sync::Mutex::new(None),
            next: Mutex::new(0),
            keeper: tokio::sync::Mutex::new(None),
        }
    }

    /// Opens `etcd://…` and checks that the cluster answers.
    pub async fn connect(url: &str, tls: EtcdTls) -> Result<Etcd, StoreError> {
        let (endpoints, _) = parse_url(url).map_err(StoreError::Backend)?;
        let e = Etcd::new(endpoints, tls);
        e.revision().await?;
        Ok(e)
    }

    fn options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        if self.tls.ca_pem.is_some() || self.tls.client.is_some() {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.tls.ca_pem {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &self.tls.client {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            o = o.with_tls(t);
        }
        o
    }

    /// A connected client: the current one, or a new one to the next endpoint.
    async fn client(&self) -> Result<(Client, usize), StoreError> {
        let mut cur = self.current.lock().await;
        if let Some((c, i)) = cur.as_ref() {
            return Ok((c.clone(), *i));
        }
        let start = *self.next.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = String::new();
        for k in 0..self.endpoints.len() {
            let i = (start + k) % self.endpoints.len();
            match Client::connect([&self.endpoints[i]], Some(self.options())).await {
                Ok(c) => {
                    *cur = Some((c.clone(), i));
                    return Ok((c, i));
                }
                Err(e) => last = format!("{}: {e}", self.endpoints[i]),
            }
        }
        Err(unavailable(format!("no etcd endpoint answers ({last})")))
    }

    /// Drops the client of endpoint `i` so the next call connects to the one after.
    async fn failed(&self, i: usize) {
        let mut cur = self.current.lock().await;
        if cur.as_ref().is_some_and(|(_, j)| *j == i) {
            *cur = None;
        }
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = (i + 1) % self.endpoints.len();
    }

    /// Runs `call` against one endpoint after another until one answers.
    async fn with_retry<T, F, Fut>(&self, what: &str, call: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = String::new();
        for _ in 0..self.endpoints.len().max(1) {
            let (c, i) = self.client().await?;
            match tokio::time::timeout(CALL_TIMEOUT, call(c)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if !is_transport(&e) => {
                    return Err(StoreError::Backend(format!("etcd {what}: {e}")));
                }
                Ok(Err(e)) => last = format!("{}: {e}", self.endpoints[i]),
                Err(_) => {
                    last = format!("{}: no answer within {CALL_TIMEOUT:?}", self.endpoints[i])
                }
            }
            tracing::debug!("etcd {what} failed on {}: {last}", self.endpoints[i]);
            self.failed(i).await;
        }
        Err(unavailable(format!(
            "etcd {what}: no member of {} answered with a quorum (last: {last})",
            self.endpoints.len()
        )))
    }
}

/// Leases: what several servers on one etcd use to elect a leader and to list
/// themselves. A key written with a lease disappears when the lease runs out; renewing a
/// lease is not written to etcd's log, so a held lease costs no disk writes.
impl Etcd {
    /// Grants a lease of `ttl` (whole seconds, at least 1); returns its id.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let secs = ttl.as_secs().max(1) as i64;
        let r = self
            .with_retry("lease grant", |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?;
        Ok(r.id())
    }

    /// Renews lease `id`; false when it has already run out.
    pub async fn lease_renew(&self, id: i64) -> Result<bool, StoreError> {
        let mut cached = self.keeper.lock().await;
        // The open stream first; on any trouble, a new stream (on the next member if
        // need be).
        if let Some((kid, k)) = cached.as_mut()
            && *kid == id
            && let Ok(Ok(alive)) = tokio::time::timeout(CALL_TIMEOUT, renew_on(k)).await
        {
            return Ok(alive);
        }
        *cached = None;
        let r = self
            .with_retry("lease keep-alive", |mut c| async move {
                let mut k = c.lease_keep_alive(id).await?;
                let alive = renew_on(&mut k).await?;
                Ok((alive, k))
            })
            .await
            .map(|(alive, k)| {
                *cached = Some((id, k));
                alive
            });
        match r {
            Err(StoreError::Backend(e)) if e.contains("lease not found") => Ok(false),
            other => other,
        }
    }

    /// Revokes lease `id`: every key written with it is deleted now.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), StoreError> {
        match self
            .with_retry(
                "lease revoke",
                |mut c| async move { c.lease_revoke(id).await },
            )
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: nothing to revoke.
            Err(StoreError::Backend(e)) if e.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes `key` with lease `lease`. With `only_if_absent`, writes only when the key
    /// does not exist. Returns the revision written at, or `None` when the key existed.
    pub async fn put_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
        only_if_absent: bool,
    ) -> Result<Option<u64>, StoreError> {
        let compares = if only_if_absent {
            vec![Compare::create_revision(key, CompareOp::Equal, 0)]
        } else {
            Vec::new()
        };
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
        let r = self
            .with_retry("txn", |mut c| {
                let t = etcd_client::Txn::new()
                    .when(compares.clone())
                    .and_then(vec![put.clone()]);
                async move { c.txn(t).await }
            })
            .await?;
        Ok(r.succeeded()
            .then(|| r.header().map_or(0, |h| h.revision().max(0) as u64)))
    }
}

#[async_trait]
impl Store for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let r = self
            .with_retry("get", |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(r.kvs().first().map(kv))
    }

    async fn range(&self, prefix: &str) -> Result<Range, StoreError> {
        let r = self
            .with_retry("range", |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        let mut kvs: Vec<KeyValue> = r.kvs().iter().map(kv).collect();
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Range {
            kvs,
            revision: r.header().map_or(0, |h| h.revision().max(0) as u64),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let compares: Vec<Compare> = txn
            .compares
            .iter()
            .map(|c| match c {
                crate::Compare::ModRevision(k, r) => {
                    Compare::mod_revision(k.as_str(), CompareOp::Equal, *r as i64)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|o| match o {
                crate::Op::Put(k, v) => TxnOp::put(k.as_str(), v.clone(), None),
                crate::Op::Delete(k) => TxnOp::delete(k.as_str(), None),
            })
            .collect();
        let r = self
            .with_retry("txn", |mut c| {
                let t = etcd_client::Txn::new()
                    .when(compares.clone())
                    .and_then(ops.clone());
                async move { c.txn(t).await }
            })
            .await?;
        Ok(TxnResult {
            succeeded: r.succeeded(),
            revision: r.header().map_or(0, |h| h.revision().max(0) as u64),
        })
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError> {
        let mut opts = WatchOptions::new().with_prefix();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision as i64);
        }
        // A start revision already compacted: etcd would accept the watch and cancel it
        // at once; ask first, so the caller gets the error from this call.
        if from_revision > 0 {
            let probe = self
                .with_retry("watch", |mut c| async move {
                    c.get(
                        prefix,
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_count_only()
                                .with_revision(from_revision as i64),
                        ),
                    )
                    .await
                })
                .await;
            match probe {
                Err(StoreError::Backend(m)) if m.contains("compacted") => {
                    return Err(StoreError::Compacted {
                        requested: from_revision,
                        oldest: self.compacted_at(prefix, from_revision).await,
                    });
                }
                // A revision in the future is fine: the watch waits for it.
                Err(StoreError::Backend(m)) if m.contains("future revision") => {}
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        let (watcher, mut stream) = self
            .with_retry("watch", |mut c| {
                let opts = opts.clone();
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            // Keeps the watch open while the receiver lives.
            let _watcher = watcher;
            let send_all = |resp: &etcd_client::WatchResponse| {
                resp.events()
                    .iter()
                    .filter_map(|e| {
                        let k = e.kv()?;
                        let mut kv = kv(k);
                        let kind = match e.event_type() {
                            EventType::Put => EventKind::Put,
                            EventType::Delete => {
                                kv.value.clear();
                                EventKind::Delete
                            }
                        };
                        Some(Event { kind, kv })
                    })
                    .collect::<Vec<_>>()
            };
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    msg = stream.message() => match msg {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 || resp.canceled() {
                                let _ = tx
                                    .send(Err(StoreError::Compacted {
                                        requested: 0,
                                        oldest: resp.compact_revision().max(0) as u64,
                                    }))
                                    .await;
                                return;
                            }
                            for e in send_all(&resp) {
                                if tx.send(Ok(e)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => {
                            let _ = tx.send(Err(unavailable("etcd watch ended"))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(unavailable(e))).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let r = self
            .with_retry("compact", |mut c| async move {
                c.compact(revision as i64, None).await
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            // Already compacted at or past it: nothing to do.
            Err(StoreError::Backend(m)) if m.contains("compacted") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let r = self
            .with_retry("revision", |mut c| async move {
                c.get("/", Some(GetOptions::new().with_count_only())).await
            })
            .await?;
        Ok(r.header().map_or(0, |h| h.revision().max(0) as u64))
    }
}

/// Real etcd members for tests (Debian's `etcd-server`), on loopback.
pub mod testing {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::{Etcd, EtcdTls};
    use crate::{Store, Txn};

    /// A free TCP port on loopback.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// An etcd cluster of `n` members on loopback, each in its own data dir under `dir`.
    pub struct EtcdCluster {
        dir: PathBuf,
        members: Vec<(String, u16, u16)>,
        procs: Vec<Option<Child>>,
    }

    impl EtcdCluster {
        /// Starts `n` members and waits until the cluster takes writes.
        pub fn start(dir: &Path, n: usize) -> EtcdCluster {
            assert!(
                Command::new("etcd").arg("--version").output().is_ok(),
                "etcd is not installed: apt-get install etcd-server (.ci/run does)"
            );
            let dir = dir.to_path_buf();
            let members: Vec<(String, u16, u16)> = (0..n)
                .map(|i| (format!("m{i}"), free_port(), free_port()))
                .collect();
            let mut c = EtcdCluster {
                dir,
                procs: (0..n).map(|_| None).collect(),
                members,
            };
            for i in 0..n {
                c.start_member(i);
            }
            c.wait_healthy();
            c
        }

        /// Starts (or restarts) member `i`.
        pub fn start_member(&mut self, i: usize) {
            let initial: Vec<String> = self
                .members
                .iter()
                .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
                .collect();
            let (name, client, peer) = &self.members[i];
            let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log");
            let child = Command::new("etcd")
                .args([
                    "--name",
                    name,
                    "--data-dir",
                    &self.dir.join(name).display().to_string(),
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd");
            self.procs[i] = Some(child);
        }

        /// Process ids of the running members.
        pub fn pids(&self) -> Vec<u32> {
            self.procs.iter().flatten().map(Child::id).collect()
        }

        /// Kills member `i` (SIGKILL).
        pub fn kill(&mut self, i: usize) {
            if let Some(mut c) = self.procs[i].take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }

        /// `etcd://` with every member.
        pub fn url(&self) -> String {
            let hosts: Vec<String> = self
                .members
                .iter()
                .map(|(_, c, _)| format!("127.0.0.1:{c}"))
                .collect();
            format!("etcd://{}", hosts.join(","))
        }

        /// Waits until a write succeeds.
        pub fn wait_healthy(&self) {
            let deadline = Instant::now() + Duration::from_secs(30);
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            while Instant::now() < deadline {
                let ok = rt.block_on(async {
                    let e = Etcd::connect(&self.url(), EtcdTls::default()).await;
                    match e {
                        Ok(e) => e.txn(Txn::new().put("/health", "ok")).await.is_ok(),
                        Err(_) => false,
                    }
                });
                if ok {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("etcd did not become healthy: see {}", self.dir.display());
        }
    }

    impl Drop for EtcdCluster {
        fn drop(&mut self) {
            for i in 0..self.procs.len() {
                self.kill(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("etcd://a:2379,b:2379"),
            Ok((vec!["http://a:2379".into(), "http://b:2379".into()], false))
        );
        assert_eq!(
            parse_url("etcds://a:2379"),
            Ok((vec!["https://a:2379".into()], true))
        );
        assert!(parse_url("http://a:2379").is_err());
        assert!(parse_url("etcd://a").is_err_and(|e| e.contains("needs a port")));
        assert!(parse_url("etcd://").is_err());
    }
}
