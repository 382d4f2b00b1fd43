//! HTTPS client for the API: trusts only the cluster CA, sends the bearer
//! token, and fails over across the configured servers on connection errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use motley_core::api::ErrorBody;
use motley_net::ClientConfig;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error answer from the server.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Decoded body.
    pub body: ErrorBody,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.body.error, self.status)
    }
}

impl std::error::Error for ApiError {}

/// The default client config path: `~/.config/motley/config.yaml`.
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("motley").join("config.yaml"))
}

/// A client of one cluster.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    servers: Vec<String>,
    token: String,
    scope: Namespacing,
}

/// The namespace a command acts in, as kubectl's `-n` and `-A`.
#[derive(Clone, Debug, Default)]
pub struct Namespacing {
    /// `-n NS` (or `$MOTLEY_NAMESPACE`): none given means `default` for what names
    /// one object or lists, and each document's own for a manifest set.
    pub namespace: Option<String>,
    /// `-A`: lists cover every namespace.
    pub all: bool,
}

/// Appends `namespace=NS` to a path.
fn with_ns(path: &str, ns: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}namespace={ns}")
}

impl Client {
    /// Builds a client from a config.
    pub fn new(cfg: &ClientConfig) -> anyhow::Result<Client> {
        let tls = motley_net::client_tls(&cfg.ca).context("the config's CA")?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let token = std::env::var("MOTLEY_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| cfg.token.clone());
        Ok(Client {
            http,
            servers: cfg.servers.clone(),
            token,
            scope: Namespacing::default(),
        })
    }

    /// The same client acting in `scope`.
    pub fn in_scope(mut self, scope: Namespacing) -> Client {
        self.scope = scope;
        self
    }

    /// The namespace `-n` names, else `default`.
    pub fn namespace(&self) -> &str {
        self.scope
            .namespace
            .as_deref()
            .unwrap_or(motley_core::model::DEFAULT_NAMESPACE)
    }

    /// Whether lists cover every namespace (`-A`).
    pub fn all_namespaces(&self) -> bool {
        self.scope.all && self.scope.namespace.is_none()
    }

    /// A path of a namespaced route that names objects or lists them: `-n` (default
    /// `default`); nothing with `-A`.
    pub fn scoped(&self, path: &str) -> String {
        // Namespaces themselves are cluster-wide.
        if self.all_namespaces() || path.starts_with("/v1/workloads/namespace/") {
            path.to_string()
        } else {
            with_ns(path, self.namespace())
        }
    }

    /// A path that takes a manifest set: only an explicit `-n`, so that documents
    /// naming their namespace go there.
    pub fn scoped_set(&self, path: &str) -> String {
        match &self.scope.namespace {
            Some(ns) => with_ns(path, ns),
            None => path.to_string(),
        }
    }

    /// Loads the config from `path`, or the default location.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Client> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => default_config_path()
                .filter(|p| p.exists())
                .ok_or_else(|| anyhow::anyhow!("no client config: start a cluster with `motley up`, or pass --config (or set MOTLEY_CONFIG)"))?,
        };
        let cfg = ClientConfig::load(&path)?;
        Client::new(&cfg)
    }

    /// Sends a request, trying each server in turn while they cannot be reached.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&dyn erased::Body>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut last = None;
        for server in &self.servers {
            let url = format!("{}{}", server.trim_end_matches('/'), path);
            let mut rb = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.token);
            if let Some(b) = body {
                rb = rb
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_json()?);
            }
            match rb.send().await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_connect() || e.is_timeout() => {
                    last = Some(anyhow::anyhow!("{server}: {e}"))
                }
                Err(e) => return Err(anyhow::anyhow!("{server}: {}", motley_net::error_chain(&e))),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no servers configured")))
            .context("cannot reach any server")
    }

    /// Sends a request and decodes a JSON answer, or the server's error.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&dyn erased::Body>,
    ) -> anyhow::Result<T> {
        let resp = self.request(method, path, body).await?;
        decode(resp).await
    }

    /// GET, the answer's raw bytes.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self.request(Method::GET, path, None).await?;
        if resp.status().is_success() {
            return Ok(resp.bytes().await.context("reading the answer")?.to_vec());
        }
        decode::<serde_json::Value>(resp).await.map(|_| Vec::new())
    }

    /// GET.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(Method::POST, path, Some(&erased::Json(body)))
            .await
    }

    /// DELETE.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::DELETE, path, None).await
    }
}

/// Decodes a response: JSON on success, [`ApiError`] otherwise.
pub async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    let bytes = resp.bytes().await.context("reading the answer")?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .with_context(|| format!("decoding the answer ({} bytes)", bytes.len()));
    }
    let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
        error: String::from_utf8_lossy(&bytes).trim().to_string(),
        details: vec![],
    });
    Err(ApiError { status, body }.into())
}

/// Object-safe JSON bodies.
pub mod erased {
    /// A body that can be encoded as JSON.
    pub trait Body: Sync {
        /// The JSON bytes.
        fn to_json(&self) -> anyhow::Result<Vec<u8>>;
    }
    /// Wraps any serializable value.
    pub struct Json<'a, T>(pub &'a T);
    impl<T: serde::Serialize + Sync> Body for Json<'_, T> {
        fn to_json(&self) -> anyhow::Result<Vec<u8>> {
            Ok(serde_json::to_vec(self.0)?)
        }
    }
}
