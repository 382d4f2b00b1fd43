//! Pulling an image on containerd 1.6, which has no Transfer service: what `ctr pull`
//! does in its own process, here in the agent. Everything happens inside a lease that
//! expires by itself after an hour, so a pull cut short by an agent restart leaves
//! nothing that containerd's garbage collector keeps.
//!
//! 1. Resolve the reference to a manifest (through the index, choosing the node's
//!    platform by [`motley_core::image::choose`]; an image with none is refused before
//!    any layer is fetched).
//! 2. Write the layers, the config, the manifest and the index into the content store,
//!    each verified by its digest, with the `containerd.io/gc.ref.*` labels that keep
//!    the chain alive once the image record points at its top.
//! 3. Apply each layer through the diff service onto a snapshot prepared on the
//!    previous one, and commit it under its chain id (skipped when present).
//! 4. Create or update the image record; delete the lease.

use std::collections::HashMap;

use futures_util::StreamExt;
use motley_core::image::{self, Descriptor, ImageConfig, Index, Manifest, Reference, media};
use motley_core::platform::Platform;
use motley_grpc::containerd::services as svc;
use motley_grpc::containerd::types as ty;
use sha2::{Digest, Sha256};

use crate::registry::{Credentials, Session, sha256};
use crate::{Containerd, Error};

/// A pulled image.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image record's name (the normalized reference).
    pub name: String,
    /// Its configuration.
    pub config: ImageConfig,
    /// The chain id of its top layer: the snapshot a container's rootfs is prepared on.
    pub chain_id: String,
    /// The platform pulled.
    pub platform: Platform,
    /// The manifest's digest.
    pub manifest: String,
    /// The lease that still protects the image's content and snapshots: pass it to
    /// [`crate::run::RunSpec::lease`] (the container's snapshot is then made inside it,
    /// and it ends once the container holds the snapshot), or [`Containerd::release`] it.
    pub lease: Option<String>,
}

/// Progress: bytes of layers fetched so far, and in all.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// The chain ids of a list of diff ids (the OCI image spec's rule).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

fn to_pb(d: &Descriptor) -> ty::Descriptor {
    ty::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        annotations: HashMap::new(),
    }
}

fn rfc3339_in(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + secs;
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let days = (now / 86_400) as i64;
    let rem = now % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The platform of an image's config; for a single-platform image (no index: nothing
/// chose a manifest for the node) refused unless `platform` can run it.
pub(crate) fn runnable(
    node: &str,
    platform: Option<&Platform>,
    from_index: bool,
    config: &ImageConfig,
) -> Result<Platform, Error> {
    let here = config.platform();
    if !from_index && !platform.is_some_and(|p| p.can_run(&here)) {
        return Err(Error::Image(motley_core::platform::refusal(
            node,
            platform,
            &[here],
        )));
    }
    Ok(here)
}

/// The id prefix of motley's leases (pulls, starts, collections; what an interrupted
/// one left is found by it).
pub const LEASE_PREFIX: &str = "motley-";

impl Containerd {
    /// Pulls `reference` for a node of `platform` named `node` (for refusals), reporting
    /// layer bytes to `progress`.
    pub async fn pull(
        &self,
        reference: &str,
        node: &str,
        platform: Option<&Platform>,
        auth: Option<Credentials>,
        progress: Progress<'_>,
    ) -> Result<Pulled, Error> {
        let r = Reference::parse(reference).map_err(Error::Image)?;
        let private = auth.is_some();
        if !private
            && crate::local::may_use_local(&r)
            && let Some(here) = self.local(&r, node, platform).await?
        {
            return Ok(here);
        }
        let mut reg = Session::new(&self.http, &self.registries, &r, auth);
        let (top_type, top_bytes, top_digest) = reg.manifest(r.object()).await?;
        let (index, manifest_desc, manifest_bytes) = if media::is_index(&top_type) {
            let index: Index = serde_json::from_slice(&top_bytes)
                .map_err(|e| Error::Image(format!("{r}: index: {e}")))?;
            let chosen = image::choose(&index, node, platform)
                .map_err(Error::Image)?
                .clone();
            let (t, bytes, digest) = reg.manifest(&chosen.digest).await?;
            let desc = Descriptor {
                media_type: t,
                digest,
                size: bytes.len() as u64,
                platform: None,
                annotations: Default::default(),
            };
            (Some(index), desc, bytes)
        } else {
            let desc = Descriptor {
                media_type: top_type.clone(),
                digest: top_digest.clone(),
                size: top_bytes.len() as u64,
                platform: None,
                annotations: Default::default(),
            };
            (None, desc, top_bytes.clone())
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::Image(format!("{r}: manifest: {e}")))?;
        let config_bytes = reg
            .get(&format!("blobs/{}", manifest.config.digest), None)
            .await?
            .bytes()
            .await
            .map_err(|e| Error::Registry(format!("{r}: config: {e}")))?
            .to_vec();
        if sha256(&config_bytes) != manifest.config.digest {
            return Err(Error::Image(format!(
                "{r}: the config blob does not match its digest"
            )));
        }
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::Image(format!("{r}: config: {e}")))?;
        let pulled_platform = runnable(node, platform, index.is_some(), &config)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::Image(format!(
                "{r}: {} layers but {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        let Some(top_chain) = chains.last().cloned() else {
            return Err(Error::Image(format!("{r}: the image has no layers")));
        };

        let lease_id = self.lease("pull", 3600).await?;
        let leased = self.leased(&lease_id)?;
        let out = leased
            .pull_in_lease(
                &mut reg,
                &r,
                (index.as_ref(), &top_type, &top_bytes, &top_digest),
                (&manifest_desc, &manifest_bytes, &manifest),
                (&config_bytes, &config, &chains),
                progress,
            )
            .await;
        if let Err(e) = out {
            self.release(&lease_id).await;
            return Err(e);
        }
        Ok(Pulled {
            name: r.to_string(),
            config,
            chain_id: top_chain,
            platform: pulled_platform,
            manifest: manifest_desc.digest,
            lease: Some(lease_id),
        })
    }

    /// Makes a lease named `motley-<what>-<random>` that containerd ends by itself
    /// after `expire_secs` if motley never does (an agent killed mid-pull).
    pub(crate) async fn lease(&self, what: &str, expire_secs: u64) -> Result<String, Error> {
        let id = format!("{LEASE_PREFIX}{what}-{:016x}", rand::random::<u64>());
        let mut labels = HashMap::new();
        labels.insert(
            "containerd.io/gc.expire".to_string(),
            rfc3339_in(expire_secs),
        );
        self.leases()
            .create(svc::leases::v1::CreateRequest {
                id: id.clone(),
                labels,
            })
            .await
            .map_err(Error::call("leases create"))?;
        Ok(id)
    }

    /// Ends a lease: what only it protected may then be collected.
    pub async fn release(&self, lease: &str) {
        let _ = self
            .leases()
            .delete(svc::leases::v1::DeleteRequest {
                id: lease.to_string(),
                sync: false,
            })
            .await;
    }

    #[allow(clippy::type_complexity)]
    async fn pull_in_lease(
        &self,
        reg: &mut Session<'_>,
        r: &Reference,
        top: (Option<&Index>, &str, &[u8], &str),
        man: (&Descriptor, &[u8], &Manifest),
        cfg: (&[u8], &ImageConfig, &[String]),
        progress: Progress<'_>,
    ) -> Result<(), Error> {
        let (index, top_type, top_bytes, top_digest) = top;
        let (manifest_desc, manifest_bytes, manifest) = man;
        let (config_bytes, config, chains) = cfg;
        let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
        let mut done = 0u64;
        progress(0, total);
        for layer in &manifest.layers {
            if self.has_content(&layer.digest).await? {
                done += layer.size;
                progress(done, total);
                continue;
            }
            let resp = reg.get(&format!("blobs/{}", layer.digest), None).await?;
            let base = done;
            self.write_stream(layer, resp, HashMap::new(), &|n| progress(base + n, total))
                .await?;
            done += layer.size;
            progress(done, total);
        }
        let mut config_labels = HashMap::new();
        let top_chain = chains.last().cloned().unwrap_or_default();
        config_labels.insert(
            format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
            top_chain,
        );
        self.write_bytes(&manifest.config, config_bytes, config_labels)
            .await?;
        let mut manifest_labels = HashMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            manifest.config.digest.clone(),
        );
        for (i, l) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        self.write_bytes(manifest_desc, manifest_bytes, manifest_labels)
            .await?;
        let target = if index.is_some() {
            let desc = Descriptor {
                media_type: top_type.to_string(),
                digest: top_digest.to_string(),
                size: top_bytes.len() as u64,
                platform: None,
                annotations: Default::default(),
            };
            let mut l = HashMap::new();
            l.insert(
                "containerd.io/gc.ref.content.m.0".to_string(),
                manifest_desc.digest.clone(),
            );
            self.write_bytes(&desc, top_bytes, l).await?;
            desc
        } else {
            manifest_desc.clone()
        };
        self.unpack(r, manifest, &config.rootfs.diff_ids, chains)
            .await?;
        let mut labels = HashMap::new();
        if reg.with_credentials() {
            labels.insert(crate::local::PRIVATE.to_string(), "true".to_string());
        }
        let record = svc::images::v1::Image {
            name: r.to_string(),
            labels,
            target: Some(to_pb(&target)),
            created_at: None,
            updated_at: None,
        };
        match self
            .images()
            .create(svc::images::v1::CreateImageRequest {
                image: Some(record.clone()),
                source_date_epoch: None,
            })
            .await
            .map_err(Error::call("images create"))
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => self
                .images()
                .update(svc::images::v1::UpdateImageRequest {
                    image: Some(record),
                    update_mask: None,
                    source_date_epoch: None,
                })
                .await
                .map(|_| ())
                .map_err(Error::call("images update")),
            Err(e) => Err(e),
        }
    }

    async fn has_content(&self, digest: &str) -> Result<bool, Error> {
        match self
            .content()
            .info(svc::content::v1::InfoRequest {
                digest: digest.to_string(),
            })
            .await
            .map_err(Error::call("content info"))
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes a small blob (config, manifest, index), or updates its labels when present.
    async fn write_bytes(
        &self,
        d: &Descriptor,
        bytes: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        if self.has_content(&d.digest).await? {
            if labels.is_empty() {
                return Ok(());
            }
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            return self
                .content()
                .update(svc::content::v1::UpdateRequest {
                    info: Some(svc::content::v1::Info {
                        digest: d.digest.clone(),
                        size: bytes.len() as i64,
                        created_at: None,
                        updated_at: None,
                        labels,
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await
                .map(|_| ())
                .map_err(Error::call("content update"));
        }
        let chunk = bytes.to_vec();
        let body = futures_util::stream::once(async move { Ok::<_, Error>(chunk) });
        self.write(d, body, labels, &|_| {}).await
    }

    async fn write_stream(
        &self,
        d: &Descriptor,
        resp: reqwest::Response,
        labels: HashMap<String, String>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), Error> {
        let what = d.digest.clone();
        let body = resp.bytes_stream().map(move |c| {
            c.map(|b| b.to_vec())
                .map_err(|e| Error::Registry(format!("blob {what}: {e}")))
        });
        self.write(d, body, labels, progress).await
    }

    /// Streams a blob into the content store and commits it under its digest (which
    /// containerd checks).
    async fn write(
        &self,
        d: &Descriptor,
        body: impl futures_util::Stream<Item = Result<Vec<u8>, Error>> + Send + 'static,
        labels: HashMap<String, String>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), Error> {
        use svc::content::v1::{WriteAction, WriteContentRequest};
        let reference = format!("motley-{}-{:08x}", d.digest, rand::random::<u32>());
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let (total, expected, r2) = (d.size as i64, d.digest.clone(), reference.clone());
        let (err_tx, err_rx) = tokio::sync::oneshot::channel::<Error>();
        let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(0u64);
        let feeder = tokio::spawn(async move {
            let mut offset = 0i64;
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                let data = match chunk {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = err_tx.send(e);
                        return;
                    }
                };
                let n = data.len() as i64;
                let req = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: r2.clone(),
                    total,
                    expected: expected.clone(),
                    offset,
                    data,
                    labels: HashMap::new(),
                };
                if tx.send(req).await.is_err() {
                    return;
                }
                offset += n;
                let _ = sent_tx.send(offset as u64);
            }
            let _ = tx
                .send(WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref: r2,
                    total,
                    expected,
                    offset,
                    data: Vec::new(),
                    labels,
                })
                .await;
        });
        let requests =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        let result = async {
            let mut responses = self
                .content()
                .write(requests)
                .await
                .map_err(Error::call("content write"))?
                .into_inner();
            let mut committed = false;
            loop {
                tokio::select! {
                    m = responses.message() => match m.map_err(Error::call("content write"))? {
                        Some(resp) => {
                            if resp.action == WriteAction::Commit as i32 {
                                committed = resp.digest == d.digest;
                            }
                        }
                        None => break,
                    },
                    Ok(()) = sent_rx.changed() => progress(*sent_rx.borrow()),
                }
            }
            Ok::<bool, Error>(committed)
        }
        .await;
        let _ = feeder.await;
        if let Ok(e) = err_rx.await {
            self.abort(&reference).await;
            return Err(e);
        }
        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.abort(&reference).await;
                Err(Error::Image(format!("blob {}: not committed", d.digest)))
            }
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => {
                self.abort(&reference).await;
                Err(e)
            }
        }
    }

    async fn abort(&self, reference: &str) {
        let _ = self
            .content()
            .abort(svc::content::v1::AbortRequest {
                r#ref: reference.to_string(),
            })
            .await;
    }

    /// Applies the layers onto committed snapshots named by their chain ids.
    async fn unpack(
        &self,
        r: &Reference,
        manifest: &Manifest,
        diff_ids: &[String],
        chains: &[String],
    ) -> Result<(), Error> {
        for (i, layer) in manifest.layers.iter().enumerate() {
            let chain = &chains[i];
            let exists = self
                .snapshots()
                .stat(svc::snapshots::v1::StatSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: chain.clone(),
                })
                .await;
            if exists.is_ok() {
                continue;
            }
            let key = format!("motley-extract-{:016x}", rand::random::<u64>());
            let parent = if i == 0 {
                String::new()
            } else {
                chains[i - 1].clone()
            };
            let mounts = self
                .snapshots()
                .prepare(svc::snapshots::v1::PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.clone(),
                    parent,
                    labels: HashMap::new(),
                })
                .await
                .map_err(Error::call("snapshots prepare"))?
                .into_inner()
                .mounts;
            let applied = self
                .diff()
                .apply(svc::diff::v1::ApplyRequest {
                    diff: Some(to_pb(layer)),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                })
                .await
                .map_err(Error::call("diff apply"));
            let applied = match applied {
                Ok(a) => a.into_inner().applied.map(|d| d.digest),
                Err(e) => {
                    self.remove_snapshot(&key).await;
                    return Err(e);
                }
            };
            // The applied (uncompressed) digest must be the config's diff id.
            let want = &diff_ids[i];
            if applied.as_deref() != Some(want.as_str()) {
                self.remove_snapshot(&key).await;
                return Err(Error::Image(format!(
                    "{r}: layer {} unpacked to {applied:?}, not {want}",
                    layer.digest
                )));
            }
            match self
                .snapshots()
                .commit(svc::snapshots::v1::CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: chain.clone(),
                    key: key.clone(),
                    labels: HashMap::new(),
                    parent: String::new(),
                })
                .await
                .map_err(Error::call("snapshots commit"))
            {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => self.remove_snapshot(&key).await,
                Err(e) => {
                    self.remove_snapshot(&key).await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Removes a snapshot (ignoring one that is gone).
    pub async fn remove_snapshot(&self, key: &str) {
        let _ = self
            .snapshots()
            .remove(svc::snapshots::v1::RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
            })
            .await;
    }

    /// Removes what interrupted pulls and starts left: motley's leases (their content
    /// and snapshots are then collected) and unfinished writes, each begun before
    /// `before` (the agent's start: what began since may be a pull still running).
    pub async fn clean_interrupted(&self, before: std::time::SystemTime) -> Result<usize, Error> {
        let began_before = |t: &Option<prost_types::Timestamp>| {
            t.as_ref()
                .is_some_and(|t| std::time::SystemTime::try_from(*t).is_ok_and(|t| t < before))
        };
        let leases = self
            .leases()
            .list(svc::leases::v1::ListRequest { filters: vec![] })
            .await
            .map_err(Error::call("leases list"))?
            .into_inner()
            .leases;
        let mut n = 0;
        for l in leases
            .into_iter()
            .filter(|l| l.id.starts_with(LEASE_PREFIX) && began_before(&l.created_at))
        {
            let _ = self
                .leases()
                .delete(svc::leases::v1::DeleteRequest {
                    id: l.id,
                    sync: false,
                })
                .await;
            n += 1;
        }
        let statuses = self
            .content()
            .list_statuses(svc::content::v1::ListStatusesRequest { filters: vec![] })
            .await
            .map_err(Error::call("content statuses"))?
            .into_inner()
            .statuses;
        for s in statuses
            .into_iter()
            .filter(|s| s.r#ref.starts_with("motley-") && began_before(&s.started_at))
        {
            self.abort(&s.r#ref).await;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_ids_follow_the_image_spec() {
        let ids = super::chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(
            ids[1],
            super::sha256(b"sha256:a sha256:b"),
            "ChainID(n) = sha256(ChainID(n-1) + \" \" + DiffID(n))"
        );
    }

    #[test]
    fn lease_expiry_is_rfc3339() {
        let s = super::rfc3339_in(0);
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "{s}");
    }
}
