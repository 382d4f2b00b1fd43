//! The platforms of images, read from their registries when a spec naming one is
//! applied: the scheduler places a task with `image:` only on nodes whose userland
//! platform the image has (`motley_scheduler` filter `ImagePlatform`), so no node pulls
//! an image it cannot run. A digest-pinned reference is read once; a tag again after
//! [`TAG_TTL`] (tags move). A registry that does not answer leaves the platforms
//! unknown: the workload is placed without that filter and a node that cannot run the
//! image refuses it at pull time, naming both platforms.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use motley_core::platform::Platform;

/// How long a tag's platforms are trusted.
pub const TAG_TTL: Duration = Duration::from_secs(300);

/// How long one lookup may take before the apply goes on without it.
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

/// Image platform lookups and their cache.
#[derive(Debug, Default)]
pub struct Images {
    registries: Mutex<motley_containerd::registry::Registries>,
    http: Mutex<Option<reqwest::Client>>,
    cache: Mutex<HashMap<String, (Instant, Vec<Platform>)>>,
}

impl Images {
    /// Plain-HTTP registries and mirrors (`--insecure-registry`, `--registry-mirror`).
    pub fn set_registries(&self, r: motley_containerd::registry::Registries) {
        *crate::util::lock(&self.registries) = r;
    }

    /// The platforms `reference` offers; empty when they cannot be read (logged).
    pub async fn platforms(
        &self,
        reference: &str,
        auth: Option<motley_containerd::registry::Credentials>,
    ) -> Vec<Platform> {
        let pinned = reference.contains('@');
        if let Some((at, p)) = crate::util::lock(&self.cache).get(reference)
            && (pinned || at.elapsed() < TAG_TTL)
        {
            return p.clone();
        }
        let http = {
            let mut g = crate::util::lock(&self.http);
            match g.as_ref() {
                Some(c) => c.clone(),
                None => match motley_containerd::registry_client() {
                    Ok(c) => {
                        *g = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::warn!("image {reference}: {e}");
                        return Vec::new();
                    }
                },
            }
        };
        let regs = crate::util::lock(&self.registries).clone();
        let looked = tokio::time::timeout(
            LOOKUP_LIMIT,
            motley_containerd::registry::platforms(&http, &regs, reference, auth),
        )
        .await;
        match looked {
            Ok(Ok((_digest, platforms))) => {
                let mut c = crate::util::lock(&self.cache);
                if c.len() >= 4096 {
                    c.clear();
                }
                c.insert(reference.to_string(), (Instant::now(), platforms.clone()));
                platforms
            }
            Ok(Err(e)) => {
                tracing::warn!("image {reference}: {e}; placing it without knowing its platforms");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(
                    "image {reference}: the registry did not answer in {} s; placing it without knowing its platforms",
                    LOOKUP_LIMIT.as_secs()
                );
                Vec::new()
            }
        }
    }
}
