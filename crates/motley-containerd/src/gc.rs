//! What image garbage collection needs from containerd: the images kept, their sizes
//! (summed from the content store's records along the `containerd.io/gc.ref.content.*`
//! labels a pull wrote), which ones containers use, and deletion (containerd's own
//! collector then removes the content and snapshots nothing else references). Which
//! to delete is [`motley_core::image::to_collect`]'s decision.

use std::collections::BTreeSet;

use motley_grpc::containerd::services as svc;

use crate::{Containerd, Error};

/// An image record: name, bytes, last pulled (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The record's name.
    pub name: String,
    /// Bytes of the blobs it references (index, manifest, config, layers).
    pub bytes: u64,
    /// When the record was last updated (every pull updates it).
    pub updated_ms: u64,
}

impl Containerd {
    async fn info(&self, digest: &str) -> Result<Option<svc::content::v1::Info>, Error> {
        match self
            .content()
            .info(svc::content::v1::InfoRequest {
                digest: digest.to_string(),
            })
            .await
            .map_err(Error::call("content info"))
        {
            Ok(r) => Ok(r.into_inner().info),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every image in motley's namespace with its size.
    pub async fn stored_images(&self) -> Result<Vec<Stored>, Error> {
        let images = self
            .images()
            .list(svc::images::v1::ListImagesRequest { filters: vec![] })
            .await
            .map_err(Error::call("images list"))?
            .into_inner()
            .images;
        // What is not yet known of the blobs is asked once (they are immutable).
        let mut known = self.blobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if known.len() > 16_384 {
            known.clear();
        }
        let mut out = Vec::new();
        for i in images {
            let Some(target) = &i.target else { continue };
            // Walk the references a pull labelled: index → manifest → config, layers.
            let mut todo = vec![target.digest.clone()];
            let mut seen = BTreeSet::new();
            let mut bytes = 0u64;
            while let Some(d) = todo.pop() {
                if !seen.insert(d.clone()) || seen.len() > 1024 {
                    continue;
                }
                if !known.contains_key(&d) {
                    let Some(info) = self.info(&d).await? else {
                        continue;
                    };
                    let refs = info
                        .labels
                        .iter()
                        .filter(|(k, _)| k.starts_with("containerd.io/gc.ref.content."))
                        .map(|(_, v)| v.clone())
                        .collect();
                    known.insert(d.clone(), (u64::try_from(info.size).unwrap_or(0), refs));
                }
                if let Some((size, refs)) = known.get(&d) {
                    bytes += size;
                    todo.extend(refs.iter().cloned());
                }
            }
            let updated_ms = i
                .updated_at
                .map(|t| (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000)
                .unwrap_or(0);
            out.push(Stored {
                name: i.name,
                bytes,
                updated_ms,
            });
        }
        *self.blobs.lock().unwrap_or_else(|e| e.into_inner()) = known;
        Ok(out)
    }

    /// The images containers in motley's namespace were made from.
    pub async fn images_in_use(&self) -> Result<BTreeSet<String>, Error> {
        Ok(self.records().await?.into_iter().map(|(_, i)| i).collect())
    }

    /// Deletes an image record; containerd collects what only it referenced.
    pub async fn delete_image(&self, name: &str) -> Result<(), Error> {
        match self
            .images()
            .delete(svc::images::v1::DeleteImageRequest {
                name: name.to_string(),
                sync: true,
                target: None,
            })
            .await
            .map_err(Error::call("images delete"))
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs containerd's garbage collector now and waits for it: a lease made and
    /// deleted with `sync`. Image collection calls it after deleting records so that
    /// the disk use it measures next is already lower.
    pub async fn collect_now(&self) -> Result<(), Error> {
        let id = self.lease("collect", 60).await?;
        self.leases()
            .delete(svc::leases::v1::DeleteRequest { id, sync: true })
            .await
            .map_err(Error::call("leases delete"))?;
        Ok(())
    }
}
