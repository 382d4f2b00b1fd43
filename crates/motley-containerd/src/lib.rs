//! The containerd driver's IO: a client of containerd's gRPC API over its unix socket
//! (code generated once in `motley-grpc`, no protoc), in containerd namespace `motley`.
//!
//! | module | does |
//! |---|---|
//! | [`registry`] | speaks the OCI distribution API: manifests and blobs, bearer tokens, plain HTTP for `--insecure-registry` hosts |
//! | [`pull`] | pulls an image the way `ctr` does on containerd 1.6 (which has no Transfer service): blobs into the content store, layers through the diff service onto committed snapshots, the image record last; all inside a lease |
//! | [`run`] | the OCI runtime spec, container and task create, wait (subscribed before start), kill, delete, list |
//!
//! What to pull and how a container is built from an image are decided in
//! [`motley_core::image`] (references, index → manifest by platform, argv).
#![forbid(unsafe_code)]

pub mod gc;
pub mod local;
pub mod pull;
pub mod registry;
pub mod run;

use std::path::{Path, PathBuf};

use motley_grpc::containerd::services as svc;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// containerd namespace motley keeps its images, containers and leases in.
pub const NAMESPACE: &str = "motley";

/// The default socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// Errors, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// containerd could not be reached.
    #[error("containerd at {socket}: {why}")]
    Unreachable {
        /// The socket.
        socket: String,
        /// Why.
        why: String,
    },
    /// A containerd call failed.
    #[error("containerd {call}: {status}")]
    Call {
        /// Which call.
        call: &'static str,
        /// Its status.
        status: Box<tonic::Status>,
    },
    /// The registry refused or failed.
    #[error("{0}")]
    Registry(String),
    /// The image cannot run here, or is malformed.
    #[error("{0}")]
    Image(String),
}

impl Error {
    /// A failed call.
    pub fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Call {
            call,
            status: Box::new(status),
        }
    }

    /// Whether a call failed because the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Call { status, .. } if status.code() == tonic::Code::NotFound)
    }

    /// Whether a call failed because the object exists already.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Call { status, .. } if status.code() == tonic::Code::AlreadyExists)
    }
}

/// Adds the namespace (and, inside a pull, the lease) to every request.
#[derive(Debug, Clone)]
pub struct Scope {
    namespace: MetadataValue<tonic::metadata::Ascii>,
    lease: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Scope {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        if let Some(l) = &self.lease {
            req.metadata_mut().insert("containerd-lease", l.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Scope>;

/// A connection to containerd.
#[derive(Debug, Clone)]
pub struct Containerd {
    channel: Channel,
    scope: Scope,
    socket: PathBuf,
    /// Plain-HTTP registries and mirrors.
    pub registries: registry::Registries,
    /// The snapshotter (`overlayfs`).
    pub snapshotter: String,
    http: reqwest::Client,
    /// Blob → (size, the blobs its labels reference), for image collection: blobs are
    /// immutable, so each is asked of the content store once, not at every look.
    blobs: std::sync::Arc<std::sync::Mutex<Blobs>>,
}

/// Blob digest → (size, the digests its `containerd.io/gc.ref.content.*` labels name).
type Blobs = std::collections::HashMap<String, (u64, Vec<String>)>;

/// An HTTP client for registries (rustls with the workspace's ring provider).
pub fn registry_client() -> Result<reqwest::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        // A node pulls now and then: idle connections (each with its buffers) are not
        // kept for reqwest's default 90 s, nor one per concurrent pull.
        .pool_idle_timeout(std::time::Duration::from_secs(5))
        .pool_max_idle_per_host(2)
        .build()
        .map_err(|e| Error::Registry(format!("HTTP client: {e}")))
}

impl Containerd {
    /// Connects to the socket and checks containerd answers; returns its version too.
    pub async fn connect(
        socket: &Path,
        registries: impl Into<registry::Registries>,
    ) -> Result<(Containerd, String), Error> {
        let unreachable = |why: String| Error::Unreachable {
            socket: socket.display().to_string(),
            why,
        };
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let http = registry_client()?;
        let c = Containerd {
            channel,
            scope: Scope {
                namespace: MetadataValue::from_static(NAMESPACE),
                lease: None,
            },
            socket: socket.to_path_buf(),
            registries: registries.into(),
            snapshotter: "overlayfs".to_string(),
            http,
            blobs: Default::default(),
        };
        let v = c.version().await.map_err(|e| unreachable(e.to_string()))?;
        Ok((c, v))
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's version (`1.6.20~ds1`).
    pub async fn version(&self) -> Result<String, Error> {
        let r = svc::version::v1::version_client::VersionClient::new(self.channel.clone())
            .version(())
            .await
            .map_err(Error::call("version"))?;
        Ok(r.into_inner().version)
    }

    /// The same connection with requests inside lease `id`.
    fn leased(&self, id: &str) -> Result<Containerd, Error> {
        let mut c = self.clone();
        c.scope.lease = Some(
            MetadataValue::try_from(id).map_err(|e| Error::Image(format!("lease id {id}: {e}")))?,
        );
        Ok(c)
    }

    fn svc(&self) -> Svc {
        InterceptedService::new(self.channel.clone(), self.scope.clone())
    }

    fn content(&self) -> svc::content::v1::content_client::ContentClient<Svc> {
        svc::content::v1::content_client::ContentClient::new(self.svc())
    }
    fn images(&self) -> svc::images::v1::images_client::ImagesClient<Svc> {
        svc::images::v1::images_client::ImagesClient::new(self.svc())
    }
    fn snapshots(&self) -> svc::snapshots::v1::snapshots_client::SnapshotsClient<Svc> {
        svc::snapshots::v1::snapshots_client::SnapshotsClient::new(self.svc())
    }
    fn diff(&self) -> svc::diff::v1::diff_client::DiffClient<Svc> {
        svc::diff::v1::diff_client::DiffClient::new(self.svc())
    }
    fn leases(&self) -> svc::leases::v1::leases_client::LeasesClient<Svc> {
        svc::leases::v1::leases_client::LeasesClient::new(self.svc())
    }
    fn containers(&self) -> svc::containers::v1::containers_client::ContainersClient<Svc> {
        svc::containers::v1::containers_client::ContainersClient::new(self.svc())
    }
    fn tasks(&self) -> svc::tasks::v1::tasks_client::TasksClient<Svc> {
        svc::tasks::v1::tasks_client::TasksClient::new(self.svc())
    }
}
