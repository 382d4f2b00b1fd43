//! OCI image references and image indexes: which registry to ask for what, and which of
//! an image's manifests a node pulls (by [`crate::platform`]'s rules). Pure: the agent
//! fetches, this decides.
//!
//! References are normalized as Docker and containerd do: no registry means
//! `docker.io`; a single-component name on Docker Hub is under `library/`; no tag and
//! no digest means `:latest`. Docker Hub's API lives at `registry-1.docker.io`.

use serde::Deserialize;

use crate::platform::Platform;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/busybox`.
    pub repository: String,
    /// `1.36` (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// `sha256:…`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes `[registry/]repository[:tag][@digest]`.
    pub fn parse(s: &str) -> Result<Reference, String> {
        let bad = |why: &str| Err(format!("image {s:?}: {why}"));
        if s.is_empty() || s.len() > 1024 {
            return bad("must be 1 to 1024 characters");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("must not contain whitespace");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let Some((alg, hex)) = d.split_once(':') else {
                    return bad("a digest is ALGORITHM:HEX (sha256:…)");
                };
                if alg != "sha256" && alg != "sha512" {
                    return bad("the digest's algorithm must be sha256 or sha512");
                }
                let len = if alg == "sha256" { 64 } else { 128 };
                if hex.len() != len || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return bad("the digest's hex part has the wrong length or characters");
                }
                (r, Some(d.to_ascii_lowercase()))
            }
            None => (s, None),
        };
        // The first component is a registry when it has a dot or a colon, or is
        // `localhost` (Docker's rule).
        let (registry, path) = match rest.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), p)
            }
            _ => ("docker.io".to_string(), rest),
        };
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
            _ => (path, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && !t.starts_with(['.', '-']);
            if !ok {
                return bad("a tag is 1 to 128 letters, digits, '_', '.' or '-'");
            }
        }
        if path.is_empty()
            || path.split('/').any(|c| {
                c.is_empty()
                    || !c.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                    })
            })
        {
            return bad(
                "the repository is lowercase letters, digits, '.', '_' and '-' in '/'-separated parts",
            );
        }
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host to speak the registry API to (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else
    /// the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// OCI and Docker media types motley reads.
pub mod media {
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// A Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// A Docker image manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Every manifest type, for the registry's `Accept` header.
    pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

    /// Whether a media type is an index (a list of per-platform manifests).
    pub fn is_index(t: &str) -> bool {
        t == OCI_INDEX || t == DOCKER_LIST
    }
}

/// A content descriptor (`mediaType`, `digest`, `size`, and for index entries the
/// platform).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Index entries: the platform the manifest is for.
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
    /// Annotations (e.g. `org.opencontainers.image.ref.name`).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A platform as an index writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DescriptorPlatform {
    /// `linux`.
    pub os: String,
    /// `amd64`.
    pub architecture: String,
    /// `v7`.
    #[serde(default)]
    pub variant: Option<String>,
}

impl DescriptorPlatform {
    /// As a [`Platform`].
    pub fn platform(&self) -> Platform {
        Platform::new(
            &self.os,
            &self.architecture,
            self.variant.as_deref().unwrap_or(""),
        )
    }
}

/// An image index or manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// The media type, when the document names it.
    #[serde(default)]
    pub media_type: Option<String>,
    /// One manifest per platform (plus attestations, which name `unknown/unknown`).
    pub manifests: Vec<Descriptor>,
}

/// An image manifest: its config and layers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The media type, when the document names it.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The image configuration blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

/// The parts of an image configuration a container is built from.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    /// `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `v7`.
    #[serde(default)]
    pub variant: Option<String>,
    /// Entrypoint, command, environment, working directory, user.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// The layers' uncompressed digests, base first.
    pub rootfs: RootFs,
}

/// `config` of an image configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// The entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The command (arguments to the entrypoint).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE`.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// The working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `user[:group]`.
    #[serde(default)]
    pub user: Option<String>,
}

/// `rootfs` of an image configuration.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    /// The uncompressed layer digests (diff ids), base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    /// The image's platform.
    pub fn platform(&self) -> Platform {
        Platform::new(
            &self.os,
            &self.architecture,
            self.variant.as_deref().unwrap_or(""),
        )
    }

    /// The process to run: `command` (or the image's entrypoint), then `args` (or the
    /// image's command when neither `command` nor `args` is given), as Docker and
    /// Kubernetes do. Empty when the image and the task name nothing.
    pub fn argv(&self, command: &[String], args: &[String]) -> Vec<String> {
        let cfg = self.config.clone().unwrap_or_default();
        let entry = if command.is_empty() {
            cfg.entrypoint.unwrap_or_default()
        } else {
            command.to_vec()
        };
        let rest = if !args.is_empty() {
            args.to_vec()
        } else if command.is_empty() {
            cfg.cmd.unwrap_or_default()
        } else {
            Vec::new()
        };
        entry.into_iter().chain(rest).collect()
    }
}

/// The platforms an index offers (attestation entries, `unknown/unknown`, left out).
pub fn offered(index: &Index) -> Vec<Platform> {
    index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown" && p.architecture != "unknown")
        .map(DescriptorPlatform::platform)
        .collect()
}

/// The manifest of an index a node of platform `node` pulls, or why none:
/// "image has linux/amd64, linux/arm64; pi3 is linux/arm/v7".
pub fn choose<'a>(
    index: &'a Index,
    node_name: &str,
    node: Option<&Platform>,
) -> Result<&'a Descriptor, String> {
    let offered = offered(index);
    let refuse = || crate::platform::refusal(node_name, node, &offered);
    let node = node.ok_or_else(refuse)?;
    let chosen = node.choose(&offered).ok_or_else(refuse)?;
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .map(DescriptorPlatform::platform)
                .as_ref()
                == Some(chosen)
        })
        .ok_or_else(refuse)
}

/// An image a node keeps, as garbage collection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its name (the normalized reference).
    pub name: String,
    /// Bytes of its blobs (layers shared with other images are counted in each: the
    /// budget is reached early rather than late).
    pub bytes: u64,
    /// When it was last pulled or started from (ms).
    pub last_used: u64,
    /// A container uses it, or a pull of it runs: never collected.
    pub busy: bool,
}

/// The default image budget of a node whose container store is on SD, eMMC or USB
/// flash (small cards fill, and every pull wears them).
pub const BUDGET_FLASH: u64 = 2 << 30;
/// The default image budget elsewhere.
pub const BUDGET_DISK: u64 = 10 << 30;

/// The images to remove so that what is kept fits in `budget`: the least recently
/// used first, never a busy one. Empty when everything fits.
pub fn to_collect(images: &[Kept], budget: u64) -> Vec<&str> {
    let mut total: u64 = images.iter().map(|i| i.bytes).sum();
    if total <= budget {
        return Vec::new();
    }
    let mut idle: Vec<&Kept> = images.iter().filter(|i| !i.busy).collect();
    idle.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.name.cmp(&b.name)));
    let mut out = Vec::new();
    for i in idle {
        if total <= budget {
            break;
        }
        total = total.saturating_sub(i.bytes);
        out.push(i.name.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn references_are_normalized_as_docker_does() {
        let b = r("busybox");
        assert_eq!(b.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(b.api_host(), "registry-1.docker.io");
        assert_eq!(
            r("grafana/grafana-oss:11.2.0").to_string(),
            "docker.io/grafana/grafana-oss:11.2.0"
        );
        let local = r("127.0.0.1:5000/app/web:v1");
        assert_eq!(
            (local.registry.as_str(), local.repository.as_str()),
            ("127.0.0.1:5000", "app/web")
        );
        assert_eq!(local.tag.as_deref(), Some("v1"));
        assert_eq!(r("localhost/x").registry, "localhost");
        let d = format!("ghcr.io/o/i@sha256:{}", "a".repeat(64));
        let pinned = r(&d);
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.object(), format!("sha256:{}", "a".repeat(64)));
        assert_eq!(r("registry:5000/x").registry, "registry:5000");
        for bad in [
            "",
            "Busybox",
            "a b",
            "x:",
            "x@sha256:12",
            "x@md5:00",
            "x//y",
            "x:-t",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"os":"linux","architecture":"amd64"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v6"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:dd","size":1,"platform":{"os":"unknown","architecture":"unknown"}}]}"#;

    #[test]
    fn a_node_pulls_its_own_platform_or_is_refused_with_both_lists() {
        let index: Index = serde_json::from_str(INDEX).expect("index");
        let p = |s: &str| Platform::parse(s).expect("platform");
        assert_eq!(offered(&index).len(), 3, "attestations are not platforms");
        let pick = |node: &str| choose(&index, "n", Some(&p(node))).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64").as_deref(), Ok("sha256:aa"));
        assert_eq!(pick("linux/arm64").as_deref(), Ok("sha256:bb"));
        // A 32-bit userland on a 64-bit Pi: arm/v7 runs the v6 build, never arm64's.
        assert_eq!(pick("linux/arm/v7").as_deref(), Ok("sha256:cc"));
        assert_eq!(
            choose(&index, "pi1", Some(&p("linux/arm/v5"))).map(|d| d.digest.clone()),
            Err(
                "image has linux/amd64, linux/arm64/v8, linux/arm/v6; pi1 is linux/arm/v5"
                    .to_string()
            )
        );
        assert!(choose(&index, "n", Some(&p("linux/386"))).is_err());
        assert!(
            choose(&index, "x", None)
                .err()
                .is_some_and(|e| e.contains("x's userland platform is unknown"))
        );
    }

    #[test]
    fn collection_removes_the_least_recently_used_idle_images_until_they_fit() {
        let k = |name: &str, bytes: u64, last_used: u64, busy: bool| Kept {
            name: name.into(),
            bytes,
            last_used,
            busy,
        };
        let images = [
            k("old", 400, 1, false),
            k("running", 500, 0, true),
            k("recent", 300, 9, false),
            k("middle", 200, 5, false),
        ];
        assert!(to_collect(&images, 1400).is_empty(), "it fits");
        assert_eq!(to_collect(&images, 1000), ["old"]);
        assert_eq!(to_collect(&images, 700), ["old", "middle", "recent"]);
        // A busy image is never collected, even when the rest cannot make it fit.
        assert_eq!(to_collect(&images, 0), ["old", "middle", "recent"]);
    }

    #[test]
    fn argv_follows_docker_and_kubernetes() {
        let cfg: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .expect("config");
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(cfg.argv(&[], &[]), v(&["/bin/sh", "-c", "echo hi"]));
        assert_eq!(cfg.argv(&[], &v(&["date"])), v(&["/bin/sh", "-c", "date"]));
        assert_eq!(cfg.argv(&v(&["/bin/true"]), &[]), v(&["/bin/true"]));
        assert_eq!(
            cfg.argv(&v(&["/bin/echo"]), &v(&["a"])),
            v(&["/bin/echo", "a"])
        );
        assert_eq!(cfg.platform().to_string(), "linux/amd64");
    }
}
