//! Where the store keeps motley's state, as far as readers outside the server need it
//! (a snapshot read by `motley what-if --snapshot`). The server's `keys` module builds
//! on these.

/// Workloads: `/motley/workloads/<kind>/[<namespace>/]<name>`.
pub const WORKLOADS: &str = "/motley/workloads/";
/// Nodes: `/motley/nodes/<name>`.
pub const NODES: &str = "/motley/nodes/";
/// Allocations: `/motley/allocs/<id>`.
pub const ALLOCS: &str = "/motley/allocs/";
