//! motley's simulator: the real server and agent code under a seeded schedule of faults,
//! on one thread and tokio's paused clock, with invariants checked at every step.
//!
//! * [`store`] — etcd's model in memory: revisions, compare-and-swap, watches (late on
//!   purpose), leases; outages and slow commits.
//! * [`net`] — agent ⇄ server connections that fail as TCP does: latency, partitions
//!   that hold, resets that lose what is in flight.
//! * [`world`] — the cluster: real `Shared` servers and real `Agent`s with the simulated
//!   driver, each in a `motley_rt::Process` that can be killed, paused or skewed.
//! * [`lab`] — an experiment the operator runs in half the seeds.
//! * [`run`] — one seed: the world and its faults drawn from the seed (swarm testing),
//!   the operator's applies, the checks, healing and convergence.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod configs;
pub mod lab;
pub mod net;
pub mod periodic;
pub mod rng;
pub mod run;
pub mod store;
mod verdict;
pub mod world;
