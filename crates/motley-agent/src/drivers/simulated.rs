//! The simulated driver: tasks that run on the clock only. A service or daemon task runs
//! until it is stopped; a job's instance completes (exit 0) after the configured time.
//! Handles carry made-up pids (from 4,000,000,000 down, far above any real pid limit)
//! and are kept in the driver, so an agent restarted in the same process adopts its
//! "running" tasks as a real one adopts processes.

use motley_rt::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use motley_core::model::{Allocation, Kind};
use motley_core::restart::Exit;
use tokio::sync::watch;

use super::{Driver, Task};
use crate::driver::{Handle, TaskSetup};

/// What a simulated task runs, as the simulator's checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Allocation id.
    pub alloc: String,
    /// `service/web`.
    pub workload: String,
    /// The workload's uid (a deleted and re-created workload has a new one).
    pub workload_uid: String,
    /// Replica slot or job index.
    pub index: u32,
    /// `on_node_loss: fence`.
    pub fenced: bool,
}

/// One simulated task as the driver keeps it.
#[derive(Debug)]
struct Entry {
    info: TaskInfo,
    dir: PathBuf,
    /// When it completes by itself (tokio time), if it does.
    ends: Option<tokio::time::Instant>,
    /// Set when it ended (stopped or completed).
    ended: watch::Sender<Option<Exit>>,
}

/// The simulated driver.
#[derive(Debug, Clone)]
pub struct Simulated {
    job_time: Duration,
    next_pid: Arc<AtomicU32>,
    tasks: Arc<Mutex<HashMap<u32, Entry>>>,
    /// Job instances that ran to their end (exit 0), in order.
    completed: Arc<Mutex<Vec<TaskInfo>>>,
    /// The node's fence guard: a timer outside the agent's process, so a paused agent
    /// does not pause it (as `motley fence-guard` is a process of its own).
    fence: Arc<SimFence>,
}

/// The simulated fence guard's state.
#[derive(Debug, Default)]
struct SimFence {
    guard: Mutex<motley_core::fence::Guard>,
    /// Whether its timer task runs.
    running: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
    /// Where its clock starts.
    epoch: std::sync::OnceLock<tokio::time::Instant>,
}

impl Simulated {
    /// A driver whose jobs complete after `job_time`.
    pub fn new(job_time: Duration) -> Simulated {
        Simulated {
            job_time,
            next_pid: Arc::new(AtomicU32::new(4_000_000_000)),
            tasks: Arc::new(Mutex::new(HashMap::default())),
            completed: Arc::new(Mutex::new(Vec::new())),
            fence: Arc::new(SimFence::default()),
        }
    }

    fn fence_now(&self) -> u64 {
        let epoch = *self.fence.epoch.get_or_init(tokio::time::Instant::now);
        tokio::time::Instant::now()
            .saturating_duration_since(epoch)
            .as_millis() as u64
    }

    /// The guard dies (with its agent, or the power): its order goes with it.
    fn fence_gone(&self) {
        self.fence
            .guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .order(motley_core::fence::FenceOrder::default());
        self.fence.wake.notify_one();
    }

    /// The guard's timer: signals as [`motley_core::fence::Guard`] says, until its
    /// order names nothing.
    async fn guard_timer(self) {
        loop {
            let now = self.fence_now();
            let (due, sleep) = {
                let mut g = self.fence.guard.lock().unwrap_or_else(|e| e.into_inner());
                if g.current().allocs.is_empty() {
                    // Under the lock: a new order either sees it running or starts one.
                    self.fence.running.store(false, Ordering::SeqCst);
                    return;
                }
                (g.step(now), g.sleep_ms(now))
            };
            for (id, sig) in due {
                let exit = match sig {
                    motley_core::fence::Signal::Term => Exit::Signal(15),
                    motley_core::fence::Signal::Kill => Exit::Signal(9),
                };
                let pids: Vec<u32> = self
                    .lock()
                    .iter()
                    .filter(|(_, e)| e.info.alloc == id)
                    .map(|(pid, _)| *pid)
                    .collect();
                for pid in pids {
                    tracing::debug!("simulated fence guard: {id} ended ({exit:?})");
                    self.end(pid, exit);
                }
            }
            tokio::select! {
                _ = self.fence.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(sleep)) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn task(&self, pid: u32) -> Option<Box<dyn Task>> {
        let t = self.lock();
        let e = t.get(&pid)?;
        Some(Box::new(SimTask {
            handle: Handle { pid, start_time: 0 },
            ends: e.ends,
            ended: e.ended.subscribe(),
            driver: self.clone(),
        }))
    }

    fn end(&self, pid: u32, exit: Exit) {
        if let Some(e) = self.lock().remove(&pid) {
            tracing::debug!("simulated task {} ended: {exit:?}", e.info.alloc);
            if exit == Exit::Code(0) {
                self.completed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(e.info.clone());
            }
            let _ = e.ended.send(Some(exit));
        }
    }

    /// Ends the jobs whose time has come (whether or not an agent is waiting for them).
    fn sweep(&self) {
        let now = tokio::time::Instant::now();
        let due: Vec<u32> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.ends.is_some_and(|t| t <= now))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            self.end(pid, Exit::Code(0));
        }
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.sweep();
        self.lock().len()
    }

    /// What runs now, task by task.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        self.sweep();
        self.lock().values().map(|e| e.info.clone()).collect()
    }

    /// Job instances that ran to their end, in order.
    pub fn completed(&self) -> Vec<TaskInfo> {
        self.sweep();
        self.completed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The agent process died: its fenced tasks die with it, as the exec driver's do
    /// (`PR_SET_PDEATHSIG`); the others run on, to be adopted.
    pub fn agent_died(&self) {
        self.fence_gone();
        self.sweep();
        let pids: Vec<u32> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.info.fenced)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in pids {
            self.end(pid, Exit::Signal(9));
        }
    }

    /// The node loses power: every task ends at once, none of them complete.
    pub fn power_off(&self) {
        self.fence_gone();
        self.sweep();
        let pids: Vec<u32> = self.lock().keys().copied().collect();
        for pid in pids {
            self.end(pid, Exit::Signal(9));
        }
    }
}

struct SimTask {
    handle: Handle,
    ends: Option<tokio::time::Instant>,
    ended: watch::Receiver<Option<Exit>>,
    driver: Simulated,
}

#[async_trait]
impl Task for SimTask {
    fn handle(&self) -> Handle {
        self.handle
    }
    async fn wait(&mut self) -> Exit {
        let on_its_own = async {
            match self.ends {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = on_its_own => {
                self.driver.end(self.handle.pid, Exit::Code(0));
                Exit::Code(0)
            }
            r = self.ended.wait_for(Option::is_some) => match r {
                Ok(v) => v.unwrap_or(Exit::Unknown),
                Err(_) => Exit::Unknown,
            },
        }
    }
    async fn stop(&mut self, _grace: Duration) -> Exit {
        // A simulated task obeys SIGTERM at once.
        self.driver.end(self.handle.pid, Exit::Signal(15));
        Exit::Signal(15)
    }
}

impl Driver for Simulated {
    fn name(&self) -> &'static str {
        "simulated"
    }
    fn start(
        &self,
        alloc: &Allocation,
        dir: &Path,
        _log_dir: &Path,
        _volumes: &[(String, PathBuf)],
        _setup: &TaskSetup<'_>,
    ) -> Result<Box<dyn Task>, String> {
        // As the exec driver does, the directory first: a restarted agent tells from it
        // that the allocation ran here.
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let pid = self.next_pid.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(
            "simulated task {} (#{} gen {}) started",
            alloc.id,
            alloc.index,
            alloc.generation
        );
        let ends =
            (alloc.workload.kind == Kind::Job).then(|| tokio::time::Instant::now() + self.job_time);
        self.lock().insert(
            pid,
            Entry {
                info: TaskInfo {
                    alloc: alloc.id.clone(),
                    workload: alloc.workload.to_string(),
                    workload_uid: alloc.workload_uid.clone(),
                    index: alloc.index,
                    fenced: alloc.on_node_loss == motley_core::model::NodeLoss::Fence,
                },
                dir: dir.to_path_buf(),
                ends,
                ended: watch::channel(None).0,
            },
        );
        self.task(pid)
            .ok_or_else(|| "simulated task vanished".to_string())
    }
    fn adopt(&self, h: Handle) -> Option<Box<dyn Task>> {
        self.task(h.pid)
    }
    fn alive(&self, h: &Handle) -> bool {
        self.lock().contains_key(&h.pid)
    }
    fn scan(&self) -> HashMap<String, (Handle, Option<PathBuf>)> {
        self.lock()
            .iter()
            .map(|(pid, e)| {
                (
                    e.info.alloc.clone(),
                    (
                        Handle {
                            pid: *pid,
                            start_time: 0,
                        },
                        Some(e.dir.clone()),
                    ),
                )
            })
            .collect()
    }
    fn processes(&self) -> bool {
        false
    }
    fn fence(&self, order: &motley_core::fence::FenceOrder) -> Result<(), String> {
        let start = {
            let mut g = self.fence.guard.lock().unwrap_or_else(|e| e.into_inner());
            g.order(order.clone());
            !order.allocs.is_empty() && !self.fence.running.swap(true, Ordering::SeqCst)
        };
        self.fence.wake.notify_one();
        if start {
            // Not `motley_rt::spawn`: the guard is not part of the agent's process.
            tokio::spawn(self.clone().guard_timer());
        }
        Ok(())
    }
    fn fence_clock_ms(&self) -> Option<u64> {
        Some(self.fence_now())
    }
}
