//! The OCI distribution API, as much as a pull needs: `GET /v2/<name>/manifests/<ref>`
//! and `GET /v2/<name>/blobs/<digest>`, with Docker's bearer-token dance (anonymous or
//! with a user and password) and plain HTTP for `--insecure-registry` hosts.

use motley_core::image::{Reference, media};
use sha2::{Digest, Sha256};

use crate::Error;

/// A user and password for a registry (from a Secret).
#[derive(Clone, Default)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <redacted> }}",
            self.user
        )
    }
}

/// How registries are reached: which speak plain HTTP, and mirrors tried first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registries {
    /// `HOST:PORT`s spoken to over plain HTTP (`--insecure-registry`).
    pub insecure: Vec<String>,
    /// Registry (`docker.io`) → mirror base URLs (`http://10.0.0.5:5000`), tried in
    /// order before the registry itself (`--registry-mirror docker.io=URL`).
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
}

impl From<Vec<String>> for Registries {
    fn from(insecure: Vec<String>) -> Registries {
        Registries {
            insecure,
            mirrors: Default::default(),
        }
    }
}

impl Registries {
    /// Adds a mirror from `REGISTRY=URL` (`docker.io=http://10.0.0.5:5000`).
    pub fn add_mirror(&mut self, spec: &str) -> Result<(), String> {
        let (registry, url) = spec.split_once('=').ok_or_else(|| {
            format!("{spec:?}: use REGISTRY=URL (docker.io=http://10.0.0.5:5000)")
        })?;
        let url = url.trim_end_matches('/');
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && reqwest::Url::parse(url).is_ok_and(|u| u.host_str().is_some());
        if registry.is_empty() || !ok {
            return Err(format!(
                "{spec:?}: use REGISTRY=URL with an http:// or https:// URL"
            ));
        }
        self.mirrors
            .entry(registry.to_string())
            .or_default()
            .push(url.to_string());
        Ok(())
    }
}

/// One registry session: the reference's repository, with the token it earned.
pub struct Session<'a> {
    http: &'a reqwest::Client,
    regs: &'a Registries,
    r: &'a Reference,
    auth: Option<Credentials>,
    token: Option<String>,
    /// The base that answered last (a mirror's index, or the registry's).
    chosen: usize,
}

impl Session<'_> {
    /// True when the pull shows registry credentials.
    pub fn with_credentials(&self) -> bool {
        self.auth.is_some()
    }
}

/// The `sha256:` digest of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl<'a> Session<'a> {
    /// A session for `r`.
    pub fn new(
        http: &'a reqwest::Client,
        regs: &'a Registries,
        r: &'a Reference,
        auth: Option<Credentials>,
    ) -> Session<'a> {
        Session {
            http,
            regs,
            r,
            auth,
            token: None,
            chosen: 0,
        }
    }

    /// The repository's base URLs: its mirrors, then the registry itself.
    fn bases(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .regs
            .mirrors
            .get(&self.r.registry)
            .into_iter()
            .flatten()
            .map(|m| format!("{m}/v2/{}", self.r.repository))
            .collect();
        let host = self.r.api_host();
        let scheme = if self.regs.insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        };
        out.push(format!("{scheme}://{host}/v2/{}", self.r.repository));
        out
    }

    /// GETs `path` under the repository from the first base that has it (the one that
    /// answered last first), answering one bearer challenge per base.
    pub async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, Error> {
        let bases = self.bases();
        let mut order: Vec<usize> = (0..bases.len()).collect();
        if self.chosen < bases.len() {
            order.retain(|i| *i != self.chosen);
            order.insert(0, self.chosen);
        }
        let mut last = None;
        for i in order {
            if i != self.chosen {
                self.token = None;
            }
            match self.get_from(&bases[i], path, accept).await {
                Ok(r) => {
                    self.chosen = i;
                    return Ok(r);
                }
                Err(e) => {
                    if bases.len() > 1 {
                        tracing::debug!("{}: {e}; trying the next mirror", bases[i]);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Registry(format!("{}: no registry", self.r))))
    }

    async fn get_from(
        &mut self,
        base: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, Error> {
        let url = format!("{base}/{path}");
        for attempt in 0..2 {
            let mut rb = self.http.get(&url);
            if let Some(a) = accept {
                rb = rb.header(reqwest::header::ACCEPT, a);
            }
            if let Some(t) = &self.token {
                rb = rb.bearer_auth(t);
            } else if let Some(cr) = &self.auth {
                rb = rb.basic_auth(&cr.user, Some(&cr.password));
            }
            let resp = rb
                .send()
                .await
                .map_err(|e| Error::Registry(format!("{}: {e}", self.r.registry)))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if let Some(token) = self.token_for(&challenge).await? {
                    self.token = Some(token);
                    continue;
                }
            }
            if !resp.status().is_success() {
                let status = resp.status();
                let why = match status.as_u16() {
                    401 | 403 => "not allowed (a private image needs registry credentials)",
                    404 => "not found",
                    _ => "refused",
                };
                return Err(Error::Registry(format!(
                    "{}: GET {path}: {status}: {why}",
                    self.r
                )));
            }
            return Ok(resp);
        }
        Err(Error::Registry(format!(
            "{}: GET {path}: unauthorized",
            self.r
        )))
    }

    /// A bearer token for a `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
    /// challenge (`None` for a Basic challenge: credentials are sent as they are).
    async fn token_for(&self, challenge: &str) -> Result<Option<String>, Error> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Ok(None);
        };
        let mut realm = None;
        let mut query = Vec::new();
        for part in split_params(params) {
            if let Some((k, v)) = part.split_once('=') {
                let v = v.trim_matches('"').to_string();
                match k.trim() {
                    "realm" => realm = Some(v),
                    k @ ("service" | "scope") => query.push((k.to_string(), v)),
                    _ => {}
                }
            }
        }
        let Some(realm) = realm else {
            return Ok(None);
        };
        let mut url = reqwest::Url::parse(&realm)
            .map_err(|e| Error::Registry(format!("token realm {realm:?}: {e}")))?;
        for (k, v) in &query {
            url.query_pairs_mut().append_pair(k, v);
        }
        let mut rb = self.http.get(url);
        if let Some(cr) = &self.auth {
            rb = rb.basic_auth(&cr.user, Some(&cr.password));
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| Error::Registry(format!("token from {realm}: {e}")))?;
        if !resp.status().is_success() {
            return Err(Error::Registry(format!(
                "token from {realm}: {} (wrong registry credentials?)",
                resp.status()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = resp
            .json()
            .await
            .map_err(|e| Error::Registry(format!("token from {realm}: {e}")))?;
        Ok(t.token.or(t.access_token))
    }

    /// A manifest or index by tag or digest: (media type, bytes, digest), the digest
    /// checked when the reference named one.
    pub async fn manifest(&mut self, object: &str) -> Result<(String, Vec<u8>, String), Error> {
        let resp = self
            .get(&format!("manifests/{object}"), Some(media::ACCEPT))
            .await?;
        let header_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Registry(format!("{}: manifest {object}: {e}", self.r)))?
            .to_vec();
        if bytes.len() > 4 << 20 {
            return Err(Error::Image(format!(
                "{}: manifest {object} is over 4 MiB",
                self.r
            )));
        }
        let digest = sha256(&bytes);
        if object.starts_with("sha256:") && object != digest {
            return Err(Error::Image(format!(
                "{}: manifest {object} arrived with digest {digest}",
                self.r
            )));
        }
        // The document's own mediaType wins over the header (some registries send
        // application/json).
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Typed {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let typed: Typed = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Image(format!("{}: manifest {object}: {e}", self.r)))?;
        let media_type = match typed.media_type {
            Some(t) => t,
            None if typed.manifests.is_some() => media::OCI_INDEX.to_string(),
            None if header_type.is_empty() || header_type == "application/json" => {
                media::OCI_MANIFEST.to_string()
            }
            None => header_type,
        };
        Ok((media_type, bytes, digest))
    }
}

/// Splits `a="x,y",b=z` at commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, ch) in s.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out
}

/// The platforms an image offers (its index's, or its single manifest's config's):
/// what the server schedules by. Fetches one or two small documents, never a layer.
pub async fn platforms(
    http: &reqwest::Client,
    regs: &Registries,
    reference: &str,
    auth: Option<Credentials>,
) -> Result<(String, Vec<motley_core::platform::Platform>), Error> {
    let r = Reference::parse(reference).map_err(Error::Image)?;
    let mut s = Session::new(http, regs, &r, auth);
    let (t, bytes, digest) = s.manifest(r.object()).await?;
    if media::is_index(&t) {
        let index: motley_core::image::Index =
            serde_json::from_slice(&bytes).map_err(|e| Error::Image(format!("{r}: index: {e}")))?;
        return Ok((digest, motley_core::image::offered(&index)));
    }
    let m: motley_core::image::Manifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::Image(format!("{r}: manifest: {e}")))?;
    let cfg = s
        .get(&format!("blobs/{}", m.config.digest), None)
        .await?
        .bytes()
        .await
        .map_err(|e| Error::Registry(format!("{r}: config: {e}")))?;
    let cfg: motley_core::image::ImageConfig =
        serde_json::from_slice(&cfg).map_err(|e| Error::Image(format!("{r}: config: {e}")))?;
    Ok((digest, vec![cfg.platform()]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn challenge_parameters_split_outside_quotes() {
        assert_eq!(
            super::split_params(
                r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#
            ),
            vec![
                r#"realm="https://auth.docker.io/token""#,
                r#"service="registry.docker.io""#,
                r#"scope="repository:library/busybox:pull,push""#
            ]
        );
    }
}
