//! An image already on the node, found without asking its registry: what k3s (kubelet's
//! `IfNotPresent`) and Nomad's docker driver do for a tag other than `latest`. A node
//! then starts containers while the registry is unreachable, and 20 replicas starting
//! at once do not each fetch the manifest and config again.
//!
//! Not for `latest` (it moves: always pulled, as kubelet's default says) nor for an
//! image pulled with credentials (labelled [`PRIVATE`]): whoever starts one must show
//! the registry credentials that let them pull it.

use motley_core::image::{self, ImageConfig, Index, Manifest, Reference, media};
use motley_core::platform::Platform;
use motley_grpc::containerd::services as svc;

use crate::pull::{Pulled, chain_ids};
use crate::{Containerd, Error};

/// Label of an image record pulled with registry credentials.
pub const PRIVATE: &str = "motley.io/private";

/// Largest manifest, index or config read back (they are a few kB).
const SMALL_BLOB: usize = 4 << 20;

/// True when `r` may be served from the node's own copy.
pub fn may_use_local(r: &Reference) -> bool {
    r.digest.is_some() || r.tag.as_deref() != Some("latest")
}

impl Containerd {
    /// The image record `r` names, resolved for `platform` from the content store, if
    /// it is whole here (record, manifest, config, unpacked top layer) and not private.
    pub async fn local(
        &self,
        r: &Reference,
        node: &str,
        platform: Option<&Platform>,
    ) -> Result<Option<Pulled>, Error> {
        let name = r.to_string();
        let record = match self
            .images()
            .get(svc::images::v1::GetImageRequest { name: name.clone() })
            .await
            .map_err(Error::call("images get"))
        {
            Ok(resp) => resp.into_inner().image,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let Some(record) = record else {
            return Ok(None);
        };
        if record.labels.contains_key(PRIVATE) {
            return Ok(None);
        }
        let Some(target) = record.target else {
            return Ok(None);
        };
        let Some(top) = self.read_small(&target.digest).await? else {
            return Ok(None);
        };
        let (from_index, manifest_digest, manifest_bytes) = if media::is_index(&target.media_type) {
            let index: Index = serde_json::from_slice(&top)
                .map_err(|e| Error::Image(format!("{r}: stored index: {e}")))?;
            let chosen = image::choose(&index, node, platform).map_err(Error::Image)?;
            let Some(bytes) = self.read_small(&chosen.digest).await? else {
                return Ok(None);
            };
            (true, chosen.digest.clone(), bytes)
        } else {
            (false, target.digest.clone(), top)
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::Image(format!("{r}: stored manifest: {e}")))?;
        let Some(config_bytes) = self.read_small(&manifest.config.digest).await? else {
            return Ok(None);
        };
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::Image(format!("{r}: stored config: {e}")))?;
        let here = crate::pull::runnable(node, platform, from_index, &config)?;
        let chains = chain_ids(&config.rootfs.diff_ids);
        let Some(top_chain) = chains.last().cloned() else {
            return Ok(None);
        };
        let unpacked = self
            .snapshots()
            .stat(svc::snapshots::v1::StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: top_chain.clone(),
            })
            .await
            .is_ok();
        if !unpacked {
            return Ok(None);
        }
        Ok(Some(Pulled {
            name,
            config,
            chain_id: top_chain,
            platform: here,
            manifest: manifest_digest,
            lease: None,
        }))
    }

    /// A small blob from the content store; `None` when it is not there.
    async fn read_small(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut stream = match self
            .content()
            .read(svc::content::v1::ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            })
            .await
            .map_err(Error::call("content read"))
        {
            Ok(s) => s.into_inner(),
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        loop {
            match stream.message().await.map_err(Error::call("content read")) {
                Ok(Some(m)) => {
                    out.extend_from_slice(&m.data);
                    if out.len() > SMALL_BLOB {
                        return Err(Error::Image(format!(
                            "{digest}: larger than {SMALL_BLOB} bytes"
                        )));
                    }
                }
                Ok(None) => return Ok(Some(out)),
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}
