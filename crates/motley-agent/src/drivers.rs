//! The agent's drivers: what runs an allocation's task. The supervisor
//! ([`motley_core::supervisor`] and its shell, `supervise.rs`) decides *when* to start,
//! stop or restart; a [`Driver`] knows *how*.
//!
//! | driver | runs a task as | used by |
//! |---|---|---|
//! | [`Exec`] | a process in its own process group ([`crate::driver`], [`crate::spawn`]) | every real agent |
//! | [`simulated::Simulated`] | a timer: services run until stopped, a job's instance completes after a set time | `motley agent --simulate N`, the simulator |
//!
//! A task started by an earlier agent process is found again by its [`Handle`]
//! ([`Driver::adopt`]) or, when the agent died before writing the handle down, by its
//! allocation id ([`Driver::scan`]).

pub mod cni;
pub mod container;
pub mod simulated;

use motley_rt::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use motley_core::model::Allocation;
use motley_core::restart::Exit;

use crate::driver::{Handle, Running, TaskSetup};

/// A task that runs: watched until it ends, or stopped.
#[async_trait]
pub trait Task: Send {
    /// How to find it again after an agent restart.
    fn handle(&self) -> Handle;
    /// Waits until it ends by itself.
    async fn wait(&mut self) -> Exit;
    /// Asks it to end (SIGTERM), gives it `grace`, then ends it (SIGKILL).
    async fn stop(&mut self, grace: Duration) -> Exit;
}

/// What runs tasks on this node.
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// Its name (`exec`, `simulated`).
    fn name(&self) -> &'static str;
    /// Starts an allocation's task. Blocking: called on the blocking pool.
    fn start(
        &self,
        alloc: &Allocation,
        dir: &Path,
        log_dir: &Path,
        volumes: &[(String, PathBuf)],
        setup: &TaskSetup<'_>,
    ) -> Result<Box<dyn Task>, String>;
    /// The task a handle names, if it still runs.
    fn adopt(&self, h: Handle) -> Option<Box<dyn Task>>;
    /// Whether the task a handle names still runs.
    fn alive(&self, h: &Handle) -> bool;
    /// Every running task this driver can find, by allocation id, with the allocation
    /// directory it was started with.
    fn scan(&self) -> HashMap<String, (Handle, Option<PathBuf>)>;
    /// Whether its tasks are real processes (cgroup limits apply to them).
    fn processes(&self) -> bool;
    /// Hands the node's fence guard an order ([`motley_core::fence`]): a party that
    /// ends the named allocations' tasks when the lease ends even while the agent is
    /// paused. Sent before every fenced start and after lease renewals; an order that
    /// names nothing ends the guard. Not blocking.
    fn fence(&self, order: &motley_core::fence::FenceOrder) -> Result<(), String>;
    /// Now on the fence guard's clock (ms), which runs while the node is suspended.
    fn fence_clock_ms(&self) -> Option<u64>;
    /// containerd, when this driver runs tasks with `image:`.
    fn containers(&self) -> Option<std::sync::Arc<container::Containers>> {
        None
    }
}

#[async_trait]
impl Task for Running {
    fn handle(&self) -> Handle {
        Running::handle(self)
    }
    async fn wait(&mut self) -> Exit {
        Running::wait(self).await
    }
    async fn stop(&mut self, grace: Duration) -> Exit {
        Running::stop(self, grace).await
    }
}

/// The exec driver: tasks are processes; the fence guard is `motley fence-guard`
/// ([`crate::guard`]).
#[derive(Debug, Default, Clone)]
pub struct Exec {
    guard: std::sync::Arc<crate::guard::ExecGuard>,
    containers: Option<std::sync::Arc<container::Containers>>,
}

impl Exec {
    /// An exec driver whose fence guard runs as `<program> fence-guard`.
    pub fn with_guard_program(program: PathBuf) -> Exec {
        Exec {
            guard: std::sync::Arc::new(crate::guard::ExecGuard::new(program)),
            containers: None,
        }
    }

    /// Runs tasks with `image:` as containers through `containers`.
    pub fn with_containers(mut self, containers: container::Containers) -> Exec {
        self.containers = Some(std::sync::Arc::new(containers));
        self
    }

    /// The fence guard's pid, while one runs.
    pub fn guard_pid(&self) -> Option<u32> {
        self.guard.pid()
    }
}

impl Driver for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }
    fn start(
        &self,
        alloc: &Allocation,
        dir: &Path,
        log_dir: &Path,
        volumes: &[(String, PathBuf)],
        setup: &TaskSetup<'_>,
    ) -> Result<Box<dyn Task>, String> {
        // Containers are started on the runtime through `Driver::containers`
        // (`supervise.rs`); an image task reaches here only on an agent without them.
        if alloc.task.image.is_some() {
            return Err("this agent runs no containers (start it with --containerd SOCKET)".into());
        }
        crate::driver::start(alloc, dir, log_dir, volumes, setup).map(|r| Box::new(r) as _)
    }
    fn adopt(&self, h: Handle) -> Option<Box<dyn Task>> {
        if let Some(cs) = &self.containers
            && crate::driver::alive(&h)
            && let Some(t) = cs.adopt(h)
        {
            return Some(Box::new(t));
        }
        crate::driver::adopt(h).map(|r| Box::new(r) as _)
    }
    fn alive(&self, h: &Handle) -> bool {
        crate::driver::alive(h)
    }
    fn scan(&self) -> HashMap<String, (Handle, Option<PathBuf>)> {
        crate::driver::scan_tasks()
    }
    fn processes(&self) -> bool {
        true
    }
    fn fence(&self, order: &motley_core::fence::FenceOrder) -> Result<(), String> {
        self.guard.send(order)
    }
    fn fence_clock_ms(&self) -> Option<u64> {
        crate::guard::boottime_ms()
    }
    fn containers(&self) -> Option<std::sync::Arc<container::Containers>> {
        self.containers.clone()
    }
}
