//! The two runtime seams the server and the agent go through, so that the simulator
//! (`motley-sim`) can run the real code of many processes on one thread and one
//! virtual clock:
//!
//! * [`now_ms`]: the wall clock. On a real node, the system clock. Under
//!   [`virtual_clock`], a clock that moves with tokio's (paused) time, plus the
//!   calling process's skew.
//! * [`spawn`]: `tokio::spawn`, except that a task spawned inside a [`Process`] belongs
//!   to it (and so do the tasks it spawns): [`Process::kill`] aborts them all at once,
//!   as SIGKILL ends a process. Outside a process it is plain `tokio::spawn`.
//!
//! * [`spawn_blocking`] and [`seeded_u64`]: under [`simulate`], blocking work runs as a
//!   task on the simulation's one thread, and ids and jitter come from the seed, so a
//!   seed replays the same way.
//!
//! Nothing here changes what a real node does: without a process and outside
//! [`simulate`] these are the plain tokio, system and OS-random calls.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::task::{AbortHandle, JoinHandle};

tokio::task_local! {
    static PROCESS: Arc<Process>;
}

/// A simulation on this thread: the virtual clock's origin (wall time in ms, the tokio
/// instant it corresponds to) and the state of its random numbers.
struct Simulation {
    epoch_ms: u64,
    at: tokio::time::Instant,
    random: u64,
}

thread_local! {
    static SIMULATION: RefCell<Option<Simulation>> = const { RefCell::new(None) };
}

/// From now on, on this thread (one simulation runs on one thread, its tasks on a
/// current-thread runtime): [`now_ms`] is `epoch_ms` plus the tokio time passed since
/// this call (with tokio's clock paused, a virtual wall clock); [`seeded_u64`] draws
/// from `seed`; [`spawn_blocking`] runs its work as a task.
pub fn simulate(epoch_ms: u64, seed: u64) {
    SIMULATION.with(|s| {
        *s.borrow_mut() = Some(Simulation {
            epoch_ms,
            at: tokio::time::Instant::now(),
            random: seed,
        })
    });
}

/// The next number from the simulation's seed (SplitMix64), or `None` outside
/// [`simulate`]: ids and jitter use it so that a seed replays the same way, and use
/// the OS's randomness otherwise.
pub fn seeded_u64() -> Option<u64> {
    SIMULATION.with(|s| {
        s.borrow_mut()
            .as_mut()
            .map(|sim| splitmix64(&mut sim.random))
    })
}

/// The hasher of the server's and agent's hash maps: random keys, as std's, on a real
/// node (no one can choose keys that collide); fixed keys under [`simulate`], so that
/// iteration order, and what follows from it, replays with the seed.
#[derive(Clone, Debug)]
pub struct MapHasher(Option<std::collections::hash_map::RandomState>);

impl Default for MapHasher {
    fn default() -> Self {
        if simulated() {
            MapHasher(None)
        } else {
            MapHasher(Some(std::collections::hash_map::RandomState::new()))
        }
    }
}

impl std::hash::BuildHasher for MapHasher {
    type Hasher = std::hash::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        match &self.0 {
            Some(r) => r.build_hasher(),
            None => std::hash::DefaultHasher::new(),
        }
    }
}

/// `std::collections::HashMap` with [`MapHasher`]: create with `default()`.
pub type HashMap<K, V> = std::collections::HashMap<K, V, MapHasher>;
/// `std::collections::HashSet` with [`MapHasher`].
pub type HashSet<K> = std::collections::HashSet<K, MapHasher>;

/// The next number of a SplitMix64 sequence whose state is `state` (small, fast, the
/// same on every machine): the simulation's ids here, and every choice of `motley-sim`.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// True under [`simulate`] on this thread.
pub fn simulated() -> bool {
    SIMULATION.with(|s| s.borrow().is_some())
}

/// `tokio::task::spawn_blocking`; under [`simulate`], the work runs as a task of the
/// calling process on the simulation's thread (in order, at a deterministic point,
/// and seeing the virtual clock).
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if simulated() {
        spawn(async move { f() })
    } else {
        tokio::task::spawn_blocking(f)
    }
}

/// Milliseconds since the Unix epoch, as the calling process's clock says.
pub fn now_ms() -> u64 {
    let virtual_now = SIMULATION.with(|s| {
        s.borrow().as_ref().map(|sim| {
            sim.epoch_ms
                + tokio::time::Instant::now()
                    .duration_since(sim.at)
                    .as_millis() as u64
        })
    });
    let base = match virtual_now {
        Some(ms) => ms,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let skew = PROCESS
        .try_with(|p| p.skew_ms.load(Ordering::Relaxed))
        .unwrap_or(0);
    base.saturating_add_signed(skew)
}

/// A simulated OS process: a name, a clock skew, and the tasks it runs.
#[derive(Debug)]
pub struct Process {
    /// What the simulator calls it (`agent n1`, `server s0`).
    pub name: String,
    skew_ms: AtomicI64,
    tasks: Mutex<Vec<AbortHandle>>,
    killed: AtomicBool,
    /// `Some` while paused: the wakers of tasks that wanted to run meanwhile.
    paused: Mutex<Option<Vec<std::task::Waker>>>,
}

impl Process {
    /// A new process with no tasks and no skew.
    pub fn new(name: impl Into<String>) -> Arc<Process> {
        Arc::new(Process {
            name: name.into(),
            skew_ms: AtomicI64::new(0),
            tasks: Mutex::new(Vec::new()),
            killed: AtomicBool::new(false),
            paused: Mutex::new(None),
        })
    }

    /// Runs `fut` as part of this process: what it spawns through [`spawn`] belongs here.
    pub async fn enter<F: Future>(self: &Arc<Self>, fut: F) -> F::Output {
        PROCESS.scope(self.clone(), fut).await
    }

    /// Spawns `fut` as a task of this process.
    pub fn spawn<F>(self: &Arc<Self>, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let gated = Gated {
            fut: Box::pin(fut),
            process: self.clone(),
        };
        let h = tokio::spawn(PROCESS.scope(self.clone(), gated));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        if self.killed.load(Ordering::SeqCst) {
            h.abort();
        } else {
            tasks.push(h.abort_handle());
        }
        h
    }

    /// Sets this process's clock skew: [`now_ms`] inside it reads `ms` more (or less).
    pub fn set_skew(&self, ms: i64) {
        self.skew_ms.store(ms, Ordering::Relaxed);
    }

    /// Its clock skew.
    pub fn skew(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    /// Ends every task of the process at its next await, running no more of its code
    /// (a SIGKILL). Tasks it spawns afterwards are aborted at once.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
    }

    /// Stops running any of the process's tasks until [`Process::resume`] (a SIGSTOP):
    /// their timers still fire, but nothing runs until then.
    pub fn pause(&self) {
        let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(Vec::new());
        }
    }

    /// Lets the tasks run again (a SIGCONT).
    pub fn resume(&self) {
        let wakers = self.paused.lock().unwrap_or_else(|e| e.into_inner()).take();
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    /// True while paused.
    pub fn paused(&self) -> bool {
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// True once killed.
    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Tasks still running.
    pub fn tasks(&self) -> usize {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.len()
    }
}

/// A task of a process: not polled while the process is paused.
struct Gated<F: Future> {
    fut: std::pin::Pin<Box<F>>,
    process: Arc<Process>,
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        {
            let mut p = self
                .process
                .paused
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(wakers) = p.as_mut() {
                wakers.push(cx.waker().clone());
                return std::task::Poll::Pending;
            }
        }
        self.fut.as_mut().poll(cx)
    }
}

/// `tokio::spawn`, the task belonging to the calling [`Process`] if there is one.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match PROCESS.try_with(Arc::clone) {
        Ok(p) => p.spawn(fut),
        Err(_) => tokio::spawn(fut),
    }
}

/// The calling task's process, if any.
pub fn current() -> Option<Arc<Process>> {
    PROCESS.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn killing_a_process_ends_its_tasks_and_their_children() {
        let p = Process::new("p");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        p.enter(async {
            let tx = tx.clone();
            spawn(async move {
                let tx2 = tx.clone();
                spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = tx2.send(2);
                    }
                });
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = tx.send(1);
                }
            });
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut seen = Vec::new();
        while let Ok(v) = rx.try_recv() {
            seen.push(v);
        }
        seen.sort();
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(p.tasks(), 2);
        p.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(rx.try_recv().is_err(), "nothing runs after the kill");
        assert_eq!(p.tasks(), 0);
        // Outside any process, spawn is plain tokio.
        let h = spawn(async { 7 });
        assert_eq!(h.await.ok(), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_process_runs_nothing_until_resumed() {
        let p = Process::new("p");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        p.spawn(async move {
            for i in 0.. {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.send(i);
            }
        });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(rx.try_recv().ok(), Some(0));
        assert_eq!(rx.try_recv().ok(), Some(1));
        p.pause();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(rx.try_recv().is_err(), "nothing ran while paused");
        p.resume();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(rx.try_recv().ok(), Some(2), "it goes on where it stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_clock_carries_its_skew() {
        let p = Process::new("p");
        p.set_skew(-60_000);
        let outside = now_ms();
        let inside = p.enter(async { now_ms() }).await;
        assert!(outside >= inside + 59_000, "{outside} vs {inside}");
    }
}
