//! The gRPC APIs motley speaks as a client, as Rust code generated from their `.proto`
//! files **once** and committed (`src/gen/`), so that building motley needs nothing but
//! cargo: no system `protoc`, no build script.
//!
//! | module | protocol | sources |
//! |---|---|---|
//! | [`etcd`] | etcd v3: KV, Watch, Lease (grant, revoke, keep-alive) | `proto/etcd/` |
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
