//! The gRPC APIs motley speaks as a client, as Rust code generated from their `.proto`
//! files **once** and committed (`src/gen/`), so that building motley needs nothing but
//! cargo: no system `protoc`, no build script.
//!
//! | module | protocol | sources |
//! |---|---|---|
//! | [`etcd`] | etcd v3: KV, Watch, Lease (grant, revoke, keep-alive) | `proto/etcd/` |
//! | [`containerd`] | containerd 1.6+: containers, content, diff, images, leases, snapshots, tasks, version | `proto/containerd/` |
//!
//! The `.proto` files are trimmed to the services and messages motley calls, with the
//! upstream field numbers unchanged (their headers say where each came from). The code is
//! regenerated with `MOTLEY_REGEN_PROTOS=1 cargo test -p motley-grpc --test generated`
//! (a pure Rust protobuf compiler, `protox`, reads the files); without the variable the
//! same test checks that the committed code is what the `.proto` files produce.
#![forbid(unsafe_code)]

/// etcd's v3 API: `etcdserverpb` (requests, responses, the KV, Watch and Lease clients)
/// and `mvccpb` (keys and events).
pub mod etcd {
    /// Keys and events (`mvccpb`).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod mvccpb {
        include!("gen/mvccpb.rs");
    }
    /// Requests, responses and clients (`etcdserverpb`).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod etcdserverpb {
        include!("gen/etcdserverpb.rs");
    }
}

/// containerd's gRPC API (1.6 and later; no Transfer service, which 1.6 lacks), with its
/// shared types.
pub mod containerd {
    /// Descriptors and mounts (`containerd.types`).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod types {
        include!("gen/containerd.types.rs");
    }
    /// Task states and process info (`containerd.v1.types`).
    pub mod v1 {
        /// Task states and process info.
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod types {
            include!("gen/containerd.v1.types.rs");
        }
    }
    /// The services.
    pub mod services {
        /// Container records (`containerd.services.containers.v1`).
        pub mod containers {
            /// Version 1.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                include!("gen/containerd.services.containers.v1.rs");
            }
        }
        /// The content store: blobs by digest, resumable writes (`containerd.services.content.v1`).
        pub mod content {
            /// Version 1.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                include!("gen/containerd.services.content.v1.rs");
            }
        }
        /// Applying layers to mounts (`containerd.services.diff.v1`).
        pub mod diff {
            /// Version 1.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                include!("gen/containerd.services.diff.v1.rs");
            }
        }
        /// Image records: name to target descriptor (`containerd.services.images.v1`).
        pub mod images {
            /// Version 1.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                include!("gen/containerd.services.images.v1.rs");
            }
        }
        /// Leases that keep content and snapshots from garbage collection (`containerd.services.leases.v1`).
        pub mod leases {
            /// Version 1.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                include!("gen/containerd.services.leases.v1.rs");
            }
        }
        /// Snapshots: prepared, committed, mounted (`containerd.services.snapshots.v1`).
        pub mod snapshots {
            /// Version 1.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                include!("gen/containerd.services.snapshots.v1.rs");
            }
        }
        /// Tasks: create, start, wait, kill, delete (`containerd.services.tasks.v1`).
        pub mod tasks {
            /// Version 1.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                include!("gen/containerd.services.tasks.v1.rs");
            }
        }
        /// The daemon's version (`containerd.services.version.v1`).
        pub mod version {
            /// Version 1.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                include!("gen/containerd.services.version.v1.rs");
            }
        }
    }
}
