//! The etcd backend: the same [`Store`] model on an etcd cluster (etcd's own model:
//! revisions, mod-revision compares, watches from a revision, compaction).
//!
//! It speaks etcd's gRPC API through the clients generated in `motley-grpc` (committed
//! code: building needs no `protoc`), one member at a time. [`Etcd`] keeps the endpoint
//! list and, when a call fails for want of a connection, a timeout or a member without a
//! leader, reconnects to the next endpoint and retries, up to one full round of the
//! list. A cluster without quorum answers [`StoreError::Unavailable`]. Every request
//! carries etcd's `hasleader` metadata, so a member cut off from its quorum refuses at
//! once instead of waiting.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use motley_grpc::etcd::etcdserverpb as pb;
use motley_grpc::etcd::etcdserverpb::kv_client::KvClient;
use motley_grpc::etcd::etcdserverpb::lease_client::LeaseClient;
use motley_grpc::etcd::etcdserverpb::watch_client::WatchClient;
use motley_grpc::etcd::mvccpb;
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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
    /// The connected channel and the index of its endpoint.
    current: tokio::sync::Mutex<Option<(Channel, usize)>>,
    /// The endpoint to try first on the next connect.
    next: Mutex<usize>,
    /// An open keep-alive stream and the lease it renews (one stream for many renewals).
    keeper: tokio::sync::Mutex<Option<(i64, Keeper)>>,
}

/// A keep-alive stream: where renewals are sent, and where etcd answers them.
type Keeper = (
    mpsc::Sender<pb::LeaseKeepAliveRequest>,
    tonic::Streaming<pb::LeaseKeepAliveResponse>,
);

/// A request with etcd's "refuse if you have no leader" metadata.
fn req<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

/// A request stream fed by a channel: open while the sender lives.
fn outbound<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

/// One renewal on an open keep-alive stream: whether the lease lives.
async fn renew_on(k: &mut Keeper, id: i64) -> Result<bool, tonic::Status> {
    k.0.send(pb::LeaseKeepAliveRequest { id })
        .await
        .map_err(|_| tonic::Status::unavailable("keep-alive stream closed"))?;
    Ok(k.1.message().await?.is_some_and(|r| r.ttl > 0))
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

/// Whether an etcd answer means "try another endpoint" rather than a real answer:
/// gRPC CANCELLED (1), UNKNOWN (2, also a broken connection), DEADLINE_EXCEEDED (4) or
/// UNAVAILABLE (14, no connection, or a member without a leader or quorum).
fn is_transport(s: &tonic::Status) -> bool {
    matches!(s.code() as i32, 1 | 2 | 4 | 14) || s.message().contains("no leader")
}

/// `status: message` of a refusal, as people read it.
fn status_text(s: &tonic::Status) -> String {
    format!("{} ({:?})", s.message(), s.code())
}

/// The end of the key range that holds every key starting with `prefix` (etcd's
/// convention: the prefix with its last byte below 0xff incremented; `\0` for all keys).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

fn header_revision(h: Option<&pb::ResponseHeader>) -> u64 {
    h.map_or(0, |h| h.revision.max(0) as u64)
}

fn kv(k: &mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(&k.key).into_owned(),
        value: k.value.clone(),
        create_revision: k.create_revision.max(0) as u64,
        mod_revision: k.mod_revision.max(0) as u64,
        version: k.version.max(0) as u64,
    }
}

fn compare(
    key: &str,
    target: pb::compare::CompareTarget,
    value: pb::compare::TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(value),
    }
}

fn put_op(key: &str, value: Vec<u8>, lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn delete_op(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    }
}

/// A watch of every key under `prefix` from `from` (0: from now), registered with etcd
/// (its "created" answer read) when this returns.
async fn open_watch(
    ch: Channel,
    prefix: &str,
    from: u64,
) -> Result<
    (
        mpsc::Sender<pb::WatchRequest>,
        tonic::Streaming<pb::WatchResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel(1);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                start_revision: from as i64,
                ..Default::default()
            },
        )),
    };
    tx.send(create)
        .await
        .map_err(|_| tonic::Status::unavailable("watch stream closed"))?;
    let mut stream = WatchClient::new(ch)
        .watch(req(outbound(rx)))
        .await?
        .into_inner();
    match stream.message().await? {
        Some(r) if r.created && !r.canceled => Ok((tx, stream)),
        Some(r) => Err(tonic::Status::failed_precondition(format!(
            "watch refused: {}",
            r.cancel_reason
        ))),
        None => Err(tonic::Status::unavailable("watch stream ended")),
    }
}

impl Etcd {
    /// The revision etcd compacted at, as a watch from `from` reports it.
    async fn compacted_at(&self, prefix: &str, from: u64) -> u64 {
        let Ok((_tx, mut stream)) = self
            .with_retry("watch", |ch| open_watch(ch, prefix, from))
            .await
        else {
            return 0;
        };
        match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(r))) => r.compact_revision.max(0) as u64,
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

    /// Opens `etcd://…` and waits, with backoff from 0.5 s up to 5 s, until the cluster
    /// answers with a quorum: at boot, etcd and motley start in any order. `waiting` is
    /// told what is missing and when the next try is. A malformed URL fails at once.
    pub async fn connect_waiting(
        url: &str,
        tls: EtcdTls,
        mut waiting: impl FnMut(&str, Duration),
    ) -> Result<Etcd, StoreError> {
        let (endpoints, _) = parse_url(url).map_err(StoreError::Backend)?;
        let e = Etcd::new(endpoints, tls);
        let mut delay = Duration::from_millis(500);
        loop {
            match e.revision().await {
                Ok(_) => return Ok(e),
                Err(StoreError::Unavailable(why)) => {
                    waiting(&why, delay);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// The endpoint's connection settings: timeouts, HTTP/2 keep-alive, TLS.
    fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let mut e = Endpoint::from_shared(url.to_string())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") || self.tls.ca_pem.is_some() || self.tls.client.is_some() {
            let mut t = ClientTlsConfig::new();
            if let Some(ca) = &self.tls.ca_pem {
                t = t.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &self.tls.client {
                t = t.identity(Identity::from_pem(cert, key));
            }
            e = e.tls_config(t).map_err(|e| e.to_string())?;
        }
        Ok(e)
    }

    /// A connected channel: the current one, or a new one to the next endpoint.
    async fn client(&self) -> Result<(Channel, usize), StoreError> {
        let mut cur = self.current.lock().await;
        if let Some((c, i)) = cur.as_ref() {
            return Ok((c.clone(), *i));
        }
        let start = *self.next.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = String::new();
        for k in 0..self.endpoints.len() {
            let i = (start + k) % self.endpoints.len();
            let url = &self.endpoints[i];
            let connected = match self.endpoint(url) {
                Ok(e) => e.connect().await.map_err(|e| {
                    // The transport error's source says why (refused, timed out).
                    let mut s = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(c) = src {
                        s = format!("{s}: {c}");
                        src = c.source();
                    }
                    s
                }),
                Err(e) => Err(e),
            };
            match connected {
                Ok(c) => {
                    *cur = Some((c.clone(), i));
                    return Ok((c, i));
                }
                Err(e) => last = format!("{url}: {e}"),
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
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = String::new();
        for _ in 0..self.endpoints.len().max(1) {
            let (c, i) = self.client().await?;
            match tokio::time::timeout(CALL_TIMEOUT, call(c)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if !is_transport(&e) => {
                    return Err(StoreError::Backend(format!(
                        "etcd {what}: {}",
                        status_text(&e)
                    )));
                }
                Ok(Err(e)) => last = format!("{}: {}", self.endpoints[i], status_text(&e)),
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

    /// A range read of `key` (with `end`, every key in `[key, end)`).
    async fn range_of(
        &self,
        what: &str,
        r: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, StoreError> {
        self.with_retry(what, |ch| {
            let r = r.clone();
            async move { Ok(KvClient::new(ch).range(req(r)).await?.into_inner()) }
        })
        .await
    }

    async fn txn_of(&self, t: pb::TxnRequest) -> Result<pb::TxnResponse, StoreError> {
        self.with_retry("txn", |ch| {
            let t = t.clone();
            async move { Ok(KvClient::new(ch).txn(req(t)).await?.into_inner()) }
        })
        .await
    }
}

/// Leases: what several servers on one etcd use to elect a leader and to list
/// themselves. A key written with a lease disappears when the lease runs out; renewing a
/// lease is not written to etcd's log, so a held lease costs no disk writes.
#[async_trait]
impl crate::Leases for Etcd {
    /// Grants a lease of `ttl` (whole seconds, at least 1); returns its id.
    async fn lease_grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let secs = ttl.as_secs().max(1) as i64;
        let r = self
            .with_retry("lease grant", |ch| async move {
                let g = pb::LeaseGrantRequest { ttl: secs, id: 0 };
                Ok(LeaseClient::new(ch).lease_grant(req(g)).await?.into_inner())
            })
            .await?;
        if !r.error.is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd lease grant: {}",
                r.error
            )));
        }
        Ok(r.id)
    }

    /// Renews lease `id`; false when it has already run out.
    async fn lease_renew(&self, id: i64) -> Result<bool, StoreError> {
        let mut cached = self.keeper.lock().await;
        // The open stream first; on any trouble, a new stream (on the next member if
        // need be).
        if let Some((kid, k)) = cached.as_mut()
            && *kid == id
            && let Ok(Ok(alive)) = tokio::time::timeout(CALL_TIMEOUT, renew_on(k, id)).await
        {
            return Ok(alive);
        }
        *cached = None;
        let r = self
            .with_retry("lease keep-alive", |ch| async move {
                // The first renewal goes out with the call: etcd answers the call's
                // headers with its first message.
                let (tx, rx) = mpsc::channel(1);
                tx.send(pb::LeaseKeepAliveRequest { id })
                    .await
                    .map_err(|_| tonic::Status::unavailable("keep-alive stream closed"))?;
                let mut stream = LeaseClient::new(ch)
                    .lease_keep_alive(req(outbound(rx)))
                    .await?
                    .into_inner();
                let alive = stream.message().await?.is_some_and(|r| r.ttl > 0);
                Ok((alive, (tx, stream)))
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
    async fn lease_revoke(&self, id: i64) -> Result<(), StoreError> {
        match self
            .with_retry("lease revoke", |ch| async move {
                let r = pb::LeaseRevokeRequest { id };
                Ok(LeaseClient::new(ch)
                    .lease_revoke(req(r))
                    .await?
                    .into_inner())
            })
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
    async fn put_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
        only_if_absent: bool,
    ) -> Result<Option<u64>, StoreError> {
        use pb::compare::{CompareTarget, TargetUnion};
        let compare = if only_if_absent {
            vec![compare(
                key,
                CompareTarget::Create,
                TargetUnion::CreateRevision(0),
            )]
        } else {
            Vec::new()
        };
        let r = self
            .txn_of(pb::TxnRequest {
                compare,
                success: vec![put_op(key, value, lease)],
                failure: Vec::new(),
            })
            .await?;
        Ok(r.succeeded.then(|| header_revision(r.header.as_ref())))
    }
}

#[async_trait]
impl Store for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let r = self
            .range_of(
                "get",
                pb::RangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                },
            )
            .await?;
        Ok(r.kvs.first().map(kv))
    }

    async fn range(&self, prefix: &str) -> Result<Range, StoreError> {
        let r = self
            .range_of(
                "range",
                pb::RangeRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    ..Default::default()
                },
            )
            .await?;
        let mut kvs: Vec<KeyValue> = r.kvs.iter().map(kv).collect();
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Range {
            kvs,
            revision: header_revision(r.header.as_ref()),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        use pb::compare::{CompareTarget, TargetUnion};
        let compare = txn
            .compares
            .iter()
            .map(|c| match c {
                crate::Compare::ModRevision(k, r) => {
                    compare(k, CompareTarget::Mod, TargetUnion::ModRevision(*r as i64))
                }
            })
            .collect();
        let success = txn
            .ops
            .iter()
            .map(|o| match o {
                crate::Op::Put(k, v) => put_op(k, v.clone(), 0),
                crate::Op::Delete(k) => delete_op(k),
            })
            .collect();
        let r = self
            .txn_of(pb::TxnRequest {
                compare,
                success,
                failure: Vec::new(),
            })
            .await?;
        Ok(TxnResult {
            succeeded: r.succeeded,
            revision: header_revision(r.header.as_ref()),
        })
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<Watch, StoreError> {
        // A start revision already compacted: etcd would accept the watch and cancel it
        // at once; ask first, so the caller gets the error from this call.
        if from_revision > 0 {
            let probe = self
                .range_of(
                    "watch",
                    pb::RangeRequest {
                        key: prefix.as_bytes().to_vec(),
                        range_end: prefix_end(prefix.as_bytes()),
                        count_only: true,
                        revision: from_revision as i64,
                        ..Default::default()
                    },
                )
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
        let (requests, mut stream) = self
            .with_retry("watch", |ch| open_watch(ch, prefix, from_revision))
            .await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            // Keeps the watch open while the receiver lives.
            let _requests = requests;
            let events = |resp: &pb::WatchResponse| {
                resp.events
                    .iter()
                    .filter_map(|e| {
                        let mut kv = kv(e.kv.as_ref()?);
                        let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 {
                            kv.value.clear();
                            EventKind::Delete
                        } else {
                            EventKind::Put
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
                            if resp.compact_revision > 0 || resp.canceled {
                                let _ = tx
                                    .send(Err(StoreError::Compacted {
                                        requested: 0,
                                        oldest: resp.compact_revision.max(0) as u64,
                                    }))
                                    .await;
                                return;
                            }
                            for group in crate::by_revision(events(&resp)) {
                                if tx.send(Ok(group)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => {
                            let _ = tx.send(Err(unavailable("etcd watch ended"))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(unavailable(status_text(&e)))).await;
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
            .with_retry("compact", |ch| async move {
                let c = pb::CompactionRequest {
                    revision: revision as i64,
                    physical: false,
                };
                Ok(KvClient::new(ch).compact(req(c)).await?.into_inner())
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
            .range_of(
                "revision",
                pb::RangeRequest {
                    key: b"/".to_vec(),
                    count_only: true,
                    ..Default::default()
                },
            )
            .await?;
        Ok(header_revision(r.header.as_ref()))
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
            let mut c = EtcdCluster::planned(dir, n);
            c.start_all();
            c
        }

        /// `n` members with their ports chosen, none started yet (for a client that
        /// must start before its etcd).
        pub fn planned(dir: &Path, n: usize) -> EtcdCluster {
            assert!(
                Command::new("etcd").arg("--version").output().is_ok(),
                "etcd is not installed: apt-get install etcd-server (.ci/run does)"
            );
            let members: Vec<(String, u16, u16)> = (0..n)
                .map(|i| (format!("m{i}"), free_port(), free_port()))
                .collect();
            EtcdCluster {
                dir: dir.to_path_buf(),
                procs: (0..n).map(|_| None).collect(),
                members,
            }
        }

        /// Starts every member and waits until the cluster takes writes.
        pub fn start_all(&mut self) {
            for i in 0..self.members.len() {
                self.start_member(i);
            }
            self.wait_healthy();
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
                    // etcd's own defaults: tighter timing made members elect anew on a
                    // loaded 2-core machine, which tests of "nothing noticed" must not
                    // depend on.
                    "--heartbeat-interval",
                    "100",
                    "--election-timeout",
                    "1000",
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

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
