//! Whole-system tests: real `motley` processes on 127.0.0.1, real task processes.
//!
//! Each test starts its own cluster in its own temporary data directory on its
//! own port, and stops it (and checks nothing is left behind) at the end.

mod bad_input;
mod checks;
mod common;
mod compose;
mod containers;
mod crash;
mod dashboard;
mod doctor;
mod events;
mod examples;
mod experiments;
mod gitops;
mod ha;
mod install;
mod lifecycle;
mod mesh;
mod monitoring;
mod multinode;
mod namespaces;
mod netns;
mod periodic;
mod secrets;
mod security;
mod snapshot;
mod uptime;
