//! The IO shell of an allocation's supervisor: it feeds the core's pure state machine
//! ([`motley_core::supervisor`]) what happened and carries out what it decides (start
//! the task on a blocking thread, stop it, report, clean up). Every rule (fencing,
//! secrets, time limits, restarts and backoff) lives in the core.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use motley_core::health::{Health, Tracker};
use motley_core::model::{AllocState, Allocation, Check, Desired, Probe};
use motley_core::restart::Exit;
use motley_core::supervisor::{Action, Config, Event, Report, Secrets, Supervisor};
use tokio::sync::watch;

use crate::drivers::Task;
use crate::local::LocalAlloc;
use crate::{Agent, Initial, MEMORY_LOG_MAX, cgroup, checks, driver, lock, logs, now_ms};

/// Applies a report change to an allocation's local record.
fn apply(l: &mut LocalAlloc, r: Report) {
    if let Some(s) = r.state {
        l.report.state = s;
    }
    if let Some(p) = r.pid {
        l.report.pid = p;
        if p.is_none() {
            l.handle = None;
        }
    }
    if let Some(c) = r.exit_code {
        l.report.exit_code = c;
    }
    if let Some(n) = r.restarts {
        l.report.restarts = n;
    }
    if let Some(n) = r.uncounted {
        l.uncounted = n;
    }
    if let Some(why) = r.reason {
        l.report.reason = Some(why);
    }
}

impl Agent {
    pub(crate) fn spawn_supervisor(&self, id: &str, desired: Desired, initial: Initial) {
        let (tx, rx) = watch::channel(desired);
        let agent = self.clone();
        let id2 = id.to_string();
        let h = motley_rt::spawn(async move { agent.supervise(id2, rx, initial).await });
        lock(&self.inner.sups).insert(id.to_string(), (tx, h));
    }

    /// What the state machine needs to know now: the desired state (with the reason of
    /// a stop), the lease, and the secrets.
    fn inputs(
        &self,
        id: &str,
        ctl: &mut watch::Receiver<Desired>,
        needs_secrets: bool,
    ) -> Vec<Event> {
        let desired = *ctl.borrow_and_update();
        let why = if desired == Desired::Stop {
            lock(&self.inner.stop_reasons)
                .remove(id)
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut ev = vec![
            Event::Desired(desired, why),
            Event::Lease(self.lease_valid()),
        ];
        if needs_secrets {
            // Secrets come with the allocation from a server, and live in memory only:
            // an agent restarted since waits until a server gives them again.
            let s = match lock(&self.inner.secrets.values).get(id) {
                None => Secrets::Absent,
                Some(d) => match &d.error {
                    Some(e) => Secrets::Error(e.clone()),
                    None => Secrets::Ready,
                },
            };
            ev.push(Event::Secrets(s));
        }
        ev.push(Event::Tick);
        ev
    }

    /// Starts the task. Directories, log files and the process itself are made on a
    /// blocking thread: a burst of hundreds of starts must not hold up the runtime's
    /// threads, which carry the heartbeats (a node whose heartbeats stall for two
    /// seconds is declared down and its work run again elsewhere).
    async fn start_task(
        &self,
        id: &str,
        alloc: &Arc<motley_core::model::Allocation>,
        dir: &std::path::Path,
        log_dir: &std::path::Path,
    ) -> Result<Box<dyn Task>, String> {
        let delivery = lock(&self.inner.secrets.values).get(id).cloned();
        let (alloc, dir, log_dir) = (alloc.clone(), dir.to_path_buf(), log_dir.to_path_buf());
        let volumes = self.volume_dirs(&alloc);
        let user = self.inner.cfg.task_user.clone();
        let secret_dir = self.inner.secrets.root.as_ref().map(|r| r.join(id));
        let drv = self.inner.cfg.driver.clone();
        // A container's start is mostly waiting on containerd and the registry: it runs
        // on the runtime rather than holding a blocking thread per start for seconds,
        // and tells the server how its pull goes.
        if alloc.task.image.is_some()
            && let Some(cs) = drv.containers()
        {
            let (agent, alloc_id) = (self.clone(), id.to_string());
            let progress = move |text: String| {
                agent
                    .inner
                    .contact
                    .send(motley_core::proto::AgentMsg::Progress {
                        id: alloc_id.clone(),
                        text,
                    });
            };
            let setup = driver::TaskSetup {
                user: &user,
                secrets: delivery.as_ref().filter(|_| alloc.task.uses_secrets()),
                secret_dir,
                progress: Some(&progress),
            };
            // Boxed: it is 8 KB of state while it runs, and inline it would make every
            // supervisor's future that large for as long as its task lives (9.5 KB an
            // allocation, containers or not: docs/decisions.md, "One malloc arena").
            return Box::pin(cs.start(&alloc, &dir, &log_dir, &volumes, &setup))
                .await
                .map(|t| Box::new(t) as Box<dyn Task>);
        }
        motley_rt::spawn_blocking(move || {
            let setup = driver::TaskSetup {
                user: &user,
                secrets: delivery.as_ref().filter(|_| alloc.task.uses_secrets()),
                secret_dir,
                progress: None,
            };
            drv.start(&alloc, &dir, &log_dir, &volumes, &setup)
        })
        .await
        .unwrap_or_else(|e| Err(format!("starting the task: {e}")))
    }

    pub(crate) async fn supervise(
        self,
        id: String,
        mut ctl: watch::Receiver<Desired>,
        initial: Initial,
    ) {
        // Shared with the blocking threads that start its process.
        let Some(alloc) = self
            .inner
            .local
            .state()
            .allocs
            .get(&id)
            .map(|l| Arc::new(l.alloc.clone()))
        else {
            return;
        };
        let dir = self.alloc_dir(&id);
        let log_dir = self.log_dir_of(&id);
        // The bound follows from the place: the data disk's, or the smaller in-memory one.
        let log_max = if log_dir.starts_with(&dir) {
            logs::LOG_MAX
        } else {
            MEMORY_LOG_MAX
        };
        let (restarts, uncounted) = self
            .inner
            .local
            .state()
            .allocs
            .get(&id)
            .map_or((0, 0), |l| (l.report.restarts, l.uncounted));
        let cfg = Config::of(&alloc);
        let needs_secrets = cfg.needs_secrets;
        let mut running: Option<Box<dyn Task>> = None;
        let mut cgroups: Vec<PathBuf> = Vec::new();
        let mut pending: Vec<Event> = Vec::new();
        let mut sup = match initial {
            Initial::Adopted(r) => {
                let h = r.handle();
                tracing::info!("adopted {id} (pid {})", h.pid);
                self.report(&id, |l| {
                    l.handle = Some(h);
                    l.report.state = AllocState::Running;
                    l.report.pid = Some(h.pid);
                    l.report.reason = Some("adopted after an agent restart".into());
                });
                running = Some(r);
                Supervisor::adopted(cfg, restarts, now_ms()).with_uncounted(uncounted)
            }
            Initial::ExitedWhileAway => {
                // Hear the control plane first (`supervisor::unseen_exit_wait`): if it saw
                // the task end before this agent lost track, its record is final and the
                // full set stops this supervisor (`upsert`) instead of running the task
                // again. Being told to stop (shutdown, removal) ends the wait too.
                let mut synced = self.inner.contact.synced.subscribe();
                let mut stop = ctl.clone();
                let heard = async {
                    tokio::select! {
                        _ = synced.wait_for(|n| *n > 0) => {}
                        _ = stop.wait_for(|d| *d == Desired::Stop) => {}
                    }
                };
                let lease = self.inner.contact.lease().as_millis() as u64;
                match motley_core::supervisor::unseen_exit_wait(&cfg.restart, lease) {
                    Some(ms) => {
                        let _ = tokio::time::timeout(Duration::from_millis(ms), heard).await;
                    }
                    None => heard.await,
                }
                pending.push(Event::Exited(Exit::Unknown));
                Supervisor::adopted(cfg, restarts, now_ms()).with_uncounted(uncounted)
            }
            Initial::Fresh => Supervisor::new(cfg, restarts).with_uncounted(uncounted),
        };
        let mut trim = tokio::time::interval(Duration::from_secs(10));
        // The service's check, probed while the task runs (`checks`).
        let mut probing: Option<Probing> = None;
        if running.is_some() {
            probing = self.probe(&id, &alloc, &dir);
        }
        'supervise: loop {
            let mut events = std::mem::take(&mut pending);
            events.extend(self.inputs(&id, &mut ctl, needs_secrets));
            let mut todo: VecDeque<Action> = VecDeque::new();
            for e in events {
                todo.extend(sup.step(e, now_ms()));
            }
            while let Some(action) = todo.pop_front() {
                match action {
                    Action::Start => {
                        // The guard hears of a fenced task before it starts: the agent
                        // may freeze at any moment after (`motley_core::fence`).
                        if alloc.on_node_loss == motley_core::model::NodeLoss::Fence {
                            self.fence_sync();
                        }
                        let ev = match self.start_task(&id, &alloc, &dir, &log_dir).await {
                            Ok(r) => {
                                let h = r.handle();
                                self.inner.metrics.starts.inc();
                                let mut cgroup_note = None;
                                if let Some(limits) = &alloc.task.limits
                                    && self.inner.cfg.driver.processes()
                                {
                                    match self.inner.cgroups.limit(&id, h.pid, limits) {
                                        Ok(dirs) => cgroups = dirs,
                                        Err(e) => cgroup_note = Some(e),
                                    }
                                }
                                self.report(&id, |l| l.handle = Some(h));
                                // A container is not found again by its allocation id
                                // (`driver::scan_tasks` sees processes, not containerd's
                                // tasks): its handle is written down now, not with the
                                // next burst (`STATE_WRITE_DELAY`), or an agent killed
                                // meanwhile would start it again beside itself.
                                if alloc.task.image.is_some() {
                                    let a = self.clone();
                                    let _ = motley_rt::spawn_blocking(move || a.flush()).await;
                                }
                                running = Some(r);
                                probing = self.probe(&id, &alloc, &dir);
                                let mut next = sup.step(Event::Started { pid: h.pid }, now_ms());
                                // A limit that could not be set is said in the start's own
                                // report ("started; …"), not in a second one.
                                if let Some(e) = cgroup_note
                                    && let Some(Action::Report(Report {
                                        reason: Some(why), ..
                                    })) =
                                        next.iter_mut().find(|a| matches!(a, Action::Report(_)))
                                {
                                    *why = format!("{why}; {e}");
                                }
                                todo.extend(next);
                                continue;
                            }
                            Err(e) => Event::StartFailed(e),
                        };
                        todo.extend(sup.step(ev, now_ms()));
                    }
                    Action::Stop { grace_ms } => {
                        self.unprobe(&id, &mut probing);
                        let exit = match running.take() {
                            Some(mut r) => {
                                let exit = r.stop(Duration::from_millis(grace_ms)).await;
                                cgroup::remove(&cgroups);
                                cgroups.clear();
                                Some(exit)
                            }
                            None => None,
                        };
                        todo.extend(sup.step(Event::Stopped(exit), now_ms()));
                    }
                    Action::Report(r) => {
                        if r.state == Some(AllocState::Backoff) {
                            self.inner.metrics.restarts.inc();
                        }
                        self.report(&id, |l| apply(l, r));
                    }
                    Action::Finish => break 'supervise,
                }
            }
            // Wait for what moves it next: the process, the deadline (a backoff's end, a
            // time limit), the server, or, while waiting for a lease or secrets, a look
            // again in 100 ms.
            let deadline = sup.deadline().map(|at| {
                tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()))
            });
            let poll = sup.waiting();
            tokio::select! {
                exit = async {
                    match running.as_mut() {
                        Some(r) => r.wait().await,
                        None => std::future::pending().await,
                    }
                } => {
                    running = None;
                    self.unprobe(&id, &mut probing);
                    cgroup::remove(&cgroups);
                    cgroups.clear();
                    pending.push(Event::Exited(exit));
                }
                outcome = async {
                    match probing.as_mut() {
                        Some(p) => p.results.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Liveness: a replica that was healthy and now fails its check is
                    // restarted (one that never passed stays out of rotation instead);
                    // the supervisor stops it and names the check in the restart.
                    if let Some(why) = probing
                        .as_mut()
                        .zip(outcome)
                        .and_then(|(p, o)| self.observe(&id, p, o))
                    {
                        pending.push(Event::Unhealthy(why));
                    }
                }
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = tokio::time::sleep(Duration::from_millis(100)), if poll => {}
                _ = ctl.changed() => {}
                _ = trim.tick() => {
                    let _ = logs::trim(&log_dir, log_max);
                }
            }
        }
        let _ = logs::trim(&log_dir, log_max);
        if alloc.on_node_loss == motley_core::model::NodeLoss::Fence {
            // Ended: the guard forgets it (and ends when nothing fenced is left).
            self.fence_sync();
        }
        // Nothing runs: its secret files go at once.
        if let Some(root) = &self.inner.secrets.root {
            let _ = std::fs::remove_dir_all(root.join(&id));
        }
        if !self.inner.shutting_down.load(Ordering::SeqCst) {
            lock(&self.inner.sups).remove(&id);
        }
        // Forgotten while stopping: clean up its directory too.
        if !self.inner.local.state().allocs.contains_key(&id) {
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_dir_all(&log_dir);
        }
    }

    /// The probe of `c` for this allocation: a port's, or for `exec` the command with
    /// the task's environment, directory and user, or for a container the command run
    /// inside it.
    fn target(
        &self,
        id: &str,
        a: &Allocation,
        dir: &Path,
        c: &Check,
    ) -> Result<checks::Target, String> {
        let Some(Probe::Exec(argv)) = c.probe(&a.task) else {
            return checks::Target::of(c, &a.task);
        };
        if a.task.image.is_some() {
            let containers = self
                .inner
                .cfg
                .driver
                .containers()
                .ok_or("this node's driver runs no containers")?;
            return Ok(checks::Target::ContainerExec(checks::ContainerExec {
                containers,
                id: id.to_string(),
                argv: argv.to_vec(),
                timeout: Duration::from_millis(c.timeout.as_millis()),
                process: Default::default(),
            }));
        }
        let delivery = lock(&self.inner.secrets.values).get(id).cloned();
        let setup = driver::TaskSetup {
            user: &self.inner.cfg.task_user,
            secrets: delivery.as_ref().filter(|_| a.task.uses_secrets()),
            secret_dir: self.inner.secrets.root.as_ref().map(|r| r.join(id)),
            progress: None,
        };
        driver::check_command(a, dir, &self.volume_dirs(a), &setup, argv).map(checks::Target::Exec)
    }

    /// Starts probing a task that just started (or was adopted), when its service has a
    /// check; its health starts unknown.
    fn probe(&self, id: &str, a: &Allocation, dir: &Path) -> Option<Probing> {
        let c = a.check.as_ref()?;
        let target = match self.target(id, a, dir, c) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("{id}: check not run: {e}");
                return None;
            }
        };
        let (tx, results) = tokio::sync::mpsc::channel(1);
        let task = motley_rt::spawn(checks::run(
            target,
            Duration::from_millis(c.interval.as_millis()),
            Duration::from_millis(c.timeout.as_millis()),
            tx,
        ));
        self.report(id, |l| l.report.health = Some(Health::Unknown));
        Some(Probing {
            tracker: Tracker::new(c.healthy_after, c.unhealthy_after),
            unhealthy_after: c.unhealthy_after,
            results,
            task,
        })
    }

    /// Stops probing (the task ended or is being stopped); no health while not running.
    fn unprobe(&self, id: &str, probing: &mut Option<Probing>) {
        if let Some(p) = probing.take() {
            p.task.abort();
            self.report(id, |l| l.report.health = None);
        }
    }

    /// One probe's outcome: reports a change of health; when a healthy replica has
    /// just turned unhealthy (it is to be restarted), why.
    fn observe(&self, id: &str, p: &mut Probing, outcome: checks::Outcome) -> Option<String> {
        let before = p.tracker.health();
        let now = p.tracker.observe(outcome.is_ok())?;
        // A replica that was healthy and fails is restarted, for the check's reason.
        let restart = before == Health::Healthy && now == Health::Unhealthy;
        let why = match &outcome {
            Err(e) => format!("unhealthy: {e} ({} checks in a row)", p.unhealthy_after),
            Ok(()) => "healthy: its check passes".to_string(),
        };
        let said = if restart {
            format!("{why}; restarting it")
        } else {
            why.clone()
        };
        tracing::info!("{id}: {said}");
        self.report(id, |l| {
            l.report.health = Some(now);
            l.report.reason = Some(said);
        });
        restart.then_some(why)
    }
}

/// A running task's check: its results and what they add up to.
struct Probing {
    tracker: Tracker,
    unhealthy_after: u32,
    results: tokio::sync::mpsc::Receiver<checks::Outcome>,
    task: tokio::task::JoinHandle<()>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what a four-argument function returns, without calling it: for an
    /// `async fn`, its future's state.
    fn returned_size<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every allocation's supervisor lives as a task for as long as its allocation: its
    /// future was 9.5 KB (release build) while a container's start, which it awaited
    /// inline, was part of it, for tasks that never start a container. The start is
    /// boxed now; this keeps the next large inline await from coming back unnoticed.
    #[test]
    fn a_supervisors_future_stays_small() {
        let size =
            returned_size::<Agent, String, watch::Receiver<Desired>, Initial, _>(Agent::supervise);
        assert!(
            size <= 3072,
            "an allocation's supervisor future is {size} bytes (at most 3 KiB)"
        );
    }
}
