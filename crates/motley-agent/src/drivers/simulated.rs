//! The simulated driver: tasks that run on the clock only. A service or daemon task runs
//! until it is stopped; a job's instance completes (exit 0) after the configured time.
//! Handles carry made-up pids (from 4,000,000,000 down, far above any real pid limit)
//! and are kept in the driver, so an agent restarted in the same process adopts its
//! "running" tasks as a real one adopts processes.

use std::collections::HashMap;
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

/// One simulated task as the driver keeps it.
#[derive(Debug)]
struct Entry {
    alloc: String,
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
}

impl Simulated {
    /// A driver whose jobs complete after `job_time`.
    pub fn new(job_time: Duration) -> Simulated {
        Simulated {
            job_time,
            next_pid: Arc::new(AtomicU32::new(4_000_000_000)),
            tasks: Arc::new(Mutex::new(HashMap::new())),
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
            let _ = e.ended.send(Some(exit));
        }
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.lock().len()
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
        let pid = self.next_pid.fetch_sub(1, Ordering::Relaxed);
        let ends =
            (alloc.workload.kind == Kind::Job).then(|| tokio::time::Instant::now() + self.job_time);
        self.lock().insert(
            pid,
            Entry {
                alloc: alloc.id.clone(),
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
                    e.alloc.clone(),
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
}
