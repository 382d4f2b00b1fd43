//! Faults of experiments, carried out on this node (issue 24). What each fault means
//! and when it ends is `motley_core::chaos`; this is the IO: nftables rules, the
//! connection's silence and delay, stress processes in a cgroup, SIGKILL.
//!
//! Every lasting fault ends at its deadline on the agent's own clock whether or not a
//! server says so (the dead-man switch). What was done is written to the `faults` file
//! in the agent's directory before it is done (and the file removed once nothing is
//! held), so an agent killed mid-fault undoes it when it starts again: the nftables
//! table goes, the stress processes are killed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use motley_core::chaos::{AgentFault, Faults, NFT_TABLE, nft_script};
use motley_core::proto::AgentMsg;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{Agent, lock};

/// The file naming what a crash would leave behind.
pub const FAULTS_FILE: &str = "faults";

/// Memory a stress process may use beyond what it holds (its own code and stacks).
const STRESS_SLACK: u64 = 64 << 20;

/// What a crash would leave: stress processes and the nftables table.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Left {
    /// Stress processes by fault id.
    stress: BTreeMap<String, u32>,
    /// Whether rules may be loaded.
    nft: bool,
}

/// The node's faults and what carries them out.
pub(crate) struct Chaos {
    faults: Mutex<Faults>,
    left: Mutex<Left>,
    file: PathBuf,
    /// Whether drops and loss can be done with nftables here (root and `nft` present),
    /// found out at the first fault (an agent that never holds one runs nothing).
    nft: std::sync::OnceLock<bool>,
    /// Silent: no connection to any server (watched by the connection).
    pub(crate) silent: watch::Sender<bool>,
    /// Loading rules failed: a partition from the server falls back to silence.
    nft_failed: std::sync::atomic::AtomicBool,
    /// Latency added each way on the connection, ms.
    pub(crate) delay_ms: AtomicU32,
    /// Share of heartbeats dropped, percent.
    pub(crate) heartbeat_loss: AtomicU32,
    /// The clock deadlines are kept on.
    epoch: tokio::time::Instant,
    /// A fault was taken on: the deadline loop looks at the next deadline again.
    deadline_moved: tokio::sync::Notify,
    /// The node's service proxy, which latency slows too.
    mesh: Option<motley_mesh::Mesh>,
}

/// Whether `nft` runs here as root.
fn nft_usable() -> bool {
    nix::unistd::geteuid().is_root()
        && std::process::Command::new("nft")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Loads an nftables script.
fn nft_load(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn kill_group(pid: u32) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let p = Pid::from_raw(pid as i32);
    let _ = killpg(p, Signal::SIGKILL);
    let _ = kill(p, Signal::SIGKILL);
}

impl Chaos {
    /// The node's chaos state; undoes what an earlier agent process left.
    pub(crate) fn start(dir: &std::path::Path, mesh: Option<motley_mesh::Mesh>) -> Chaos {
        let file = dir.join(FAULTS_FILE);
        if let Ok(text) = std::fs::read_to_string(&file) {
            let left: Left = serde_json::from_str(&text).unwrap_or_default();
            tracing::warn!("undoing the faults an earlier agent process left: {text}");
            for pid in left.stress.values() {
                kill_group(*pid);
            }
            if left.nft
                && let Err(e) = nft_load(&format!(
                    "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
                ))
            {
                tracing::warn!("removing the fault rules: {e}");
            }
            let _ = std::fs::remove_file(&file);
        }
        Chaos {
            faults: Mutex::new(Faults::default()),
            left: Mutex::new(Left::default()),
            file,
            nft: std::sync::OnceLock::new(),
            silent: watch::channel(false).0,
            nft_failed: std::sync::atomic::AtomicBool::new(false),
            delay_ms: AtomicU32::new(0),
            heartbeat_loss: AtomicU32::new(0),
            epoch: tokio::time::Instant::now(),
            deadline_moved: tokio::sync::Notify::new(),
            mesh,
        }
    }

    /// How many faults are held.
    pub(crate) fn held(&self) -> usize {
        lock(&self.faults).held.len()
    }

    fn nft(&self) -> bool {
        // Never under the simulator: its nodes share this host's firewall.
        *self
            .nft
            .get_or_init(|| !motley_rt::simulated() && nft_usable())
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Writes the `faults` file (or removes it when nothing is left to undo).
    fn write_left(&self) {
        let left = lock(&self.left);
        if left.stress.is_empty() && !left.nft {
            let _ = std::fs::remove_file(&self.file);
            return;
        }
        let text = serde_json::to_string(&*left).unwrap_or_default();
        if let Err(e) = std::fs::write(&self.file, text) {
            tracing::warn!("{}: {e}", self.file.display());
        }
    }

    /// The connection's settings from the faults held.
    fn settle(&self) {
        let f = lock(&self.faults);
        let nft = self.nft() && !self.nft_failed.load(Ordering::SeqCst);
        if f.held.is_empty() {
            self.nft_failed.store(false, Ordering::SeqCst);
        }
        self.silent.send_replace(f.silent(nft));
        self.delay_ms.store(f.delay_ms(), Ordering::SeqCst);
        if let Some(m) = &self.mesh {
            m.set_delay(f.delay_ms());
        }
        self.heartbeat_loss
            .store(u32::from(f.heartbeat_loss(nft)), Ordering::SeqCst);
    }

    /// Whether a heartbeat is to be dropped now (loss without nftables).
    pub(crate) fn drop_heartbeat(&self) -> bool {
        let p = self.heartbeat_loss.load(Ordering::SeqCst);
        if p == 0 {
            return false;
        }
        // The simulator's seed decides, so that a seed replays exactly.
        let draw = match motley_rt::seeded_u64() {
            Some(n) => (n % 100) as u32,
            None => rand::random_range(0..100u32),
        };
        draw < p
    }

    /// The latency a fault adds each way (zero without one).
    pub(crate) fn delay(&self) -> Duration {
        Duration::from_millis(u64::from(self.delay_ms.load(Ordering::SeqCst)))
    }
}

/// Messages held for a latency fault, in order, each until its time: the connection
/// goes on meanwhile (a message is late, not the ones behind it by its delay too, as
/// on a slow link).
pub(crate) struct Delayed<T>(std::collections::VecDeque<(tokio::time::Instant, T)>);

impl<T> Delayed<T> {
    pub(crate) fn new() -> Delayed<T> {
        Delayed(std::collections::VecDeque::new())
    }

    /// Holds `item` for `delay`; gives it back to pass on at once when there is no
    /// delay and nothing is held before it.
    pub(crate) fn hold(&mut self, delay: Duration, item: T) -> Option<T> {
        if delay.is_zero() && self.0.is_empty() {
            return Some(item);
        }
        self.0
            .push_back((tokio::time::Instant::now() + delay, item));
        None
    }

    /// The next item once its time comes (never, while none is held).
    pub(crate) async fn due(&mut self) -> T {
        if let Some((at, _)) = self.0.front() {
            tokio::time::sleep_until(*at).await;
        }
        match self.0.pop_front() {
            Some((_, item)) => item,
            None => std::future::pending().await,
        }
    }

    /// Everything held, at once.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = T> + '_ {
        self.0.drain(..).map(|(_, item)| item)
    }
}

impl Agent {
    /// Carries out a fault the server ordered; says whether it could. A fault that cuts
    /// the node off from the server is answered before it is carried out (no answer
    /// would get through after); one that then cannot be done with nftables falls back
    /// to the agent's own silence, so it holds either way.
    pub(crate) fn fault(&self, id: String, fault: AgentFault, lasts_ms: u64) {
        let agent = self.clone();
        motley_rt::spawn(async move {
            let cuts = matches!(
                fault,
                AgentFault::PowerOff | AgentFault::Partition { server: true, .. }
            );
            let mut result = agent.take_fault(&id, &fault, lasts_ms);
            if cuts || result.is_err() {
                agent.answer(&id, &result);
            }
            if result.is_ok() {
                result = agent.apply_fault(&id, &fault, lasts_ms).await;
                if !cuts {
                    agent.answer(&id, &result);
                }
            }
            agent.inner.chaos.settle();
            if result.is_ok() && fault == AgentFault::PowerOff {
                // The tasks stop once the connection is closed, so the server hears
                // nothing of it, as of a power cut.
                let _ = agent
                    .inner
                    .contact
                    .wait_disconnected(Duration::from_secs(5))
                    .await;
                agent.power_off(&id);
            }
        });
    }

    fn answer(&self, id: &str, result: &Result<(), String>) {
        match result {
            Ok(()) => tracing::warn!("fault {id} carried out"),
            Err(e) => tracing::warn!("fault {id}: {e}"),
        }
        self.inner.contact.send(AgentMsg::Fault {
            id: id.to_string(),
            error: result.clone().err(),
        });
    }

    /// Takes a fault on (refused: one held twice, anything while powered off, a
    /// partition from other nodes without nftables) and arms its deadline.
    fn take_fault(&self, id: &str, fault: &AgentFault, lasts_ms: u64) -> Result<(), String> {
        let chaos = &self.inner.chaos;
        if let AgentFault::Partition { peers, .. } = fault
            && !peers.is_empty()
            && !chaos.nft()
        {
            return Err("cutting a node off from other nodes needs nftables (nft, as root)".into());
        }
        lock(&chaos.faults).begin(id, fault.clone(), lasts_ms, chaos.now())?;
        tracing::debug!("fault {id} taken: {fault:?} for {lasts_ms} ms");
        // Its deadline is the core's (`Faults::next_deadline`): the loop looks again.
        chaos.deadline_moved.notify_one();
        Ok(())
    }

    /// Does what a fault taken on means.
    async fn apply_fault(&self, id: &str, fault: &AgentFault, lasts_ms: u64) -> Result<(), String> {
        let chaos = &self.inner.chaos;
        let done = match fault {
            AgentFault::Kill { alloc } => self.kill_alloc(alloc),
            AgentFault::Partition { .. } | AgentFault::PacketLoss { .. } if chaos.nft() => {
                lock(&chaos.left).nft = true;
                chaos.write_left();
                let loaded = self.load_rules().await;
                match (loaded, fault) {
                    (Err(e), AgentFault::Partition { server: true, .. }) => {
                        tracing::warn!(
                            "fault {id}: {e}; the agent stops talking to the server instead"
                        );
                        chaos.nft_failed.store(true, Ordering::SeqCst);
                        Ok(())
                    }
                    (other, _) => other,
                }
            }
            AgentFault::CpuStress { cores } => self.stress(id, *cores, 0, lasts_ms),
            AgentFault::MemoryStress { bytes } => self.stress(id, 0, *bytes, lasts_ms),
            // Power-off (`fault`), latency, and without nftables the silence and the
            // heartbeats' loss: the connection reads them from the faults held.
            _ => Ok(()),
        };
        if done.is_err() {
            lock(&chaos.faults).end(id);
        }
        done
    }

    /// Ends every fault whose deadline came, on the agent's own clock, whether or not a
    /// server says so (the dead-man switch): the deadlines are `Faults`'.
    pub(crate) async fn fault_deadlines(self) {
        let chaos = &self.inner.chaos;
        loop {
            let moved = chaos.deadline_moved.notified();
            let next = lock(&chaos.faults).next_deadline();
            match next {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(chaos.now()));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = moved => {}
                    }
                }
                None => moved.await,
            }
            let due = lock(&chaos.faults).expired(chaos.now());
            for (id, fault) in due {
                self.undone(&id, fault).await;
            }
        }
    }

    /// Undoes a fault now, at the server's word (a no-op once its deadline ended it).
    pub(crate) async fn undo_fault(&self, id: &str) {
        let ended = lock(&self.inner.chaos.faults).end(id);
        if let Some(fault) = ended {
            self.undone(id, fault).await;
        }
    }

    /// What undoing a fault no longer held takes: its rules, its stress process, and
    /// the connection's settings.
    async fn undone(&self, id: &str, fault: AgentFault) {
        let chaos = &self.inner.chaos;
        tracing::warn!("fault {id} undone");
        match fault {
            AgentFault::Partition { .. } | AgentFault::PacketLoss { .. } if chaos.nft() => {
                if let Err(e) = self.load_rules().await {
                    tracing::warn!("undoing fault {id}: {e}");
                }
                let any = lock(&chaos.faults).any_nft();
                if !any {
                    lock(&chaos.left).nft = false;
                }
            }
            AgentFault::CpuStress { .. } | AgentFault::MemoryStress { .. } => {
                let pid = lock(&chaos.left).stress.remove(id);
                if let Some(pid) = pid {
                    kill_group(pid);
                }
            }
            _ => {}
        }
        chaos.write_left();
        chaos.settle();
    }

    /// Loads the rules of every fault held (the table made again whole).
    async fn load_rules(&self) -> Result<(), String> {
        let servers = self.server_addresses().await;
        let script = nft_script(&lock(&self.inner.chaos.faults), &servers);
        motley_rt::spawn_blocking(move || nft_load(&script))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    }

    /// The control plane's addresses, from the server URLs.
    async fn server_addresses(&self) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for url in self.servers() {
            let Ok((host, port)) = motley_net::ws::target(&url) else {
                continue;
            };
            if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await {
                out.extend(addrs.map(|a| a.ip()));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Stops every task, as a power cut would, and goes silent (the connection closes
    /// when the fault is answered).
    fn power_off(&self, id: &str) {
        let running: Vec<String> = lock(&self.inner.sups).keys().cloned().collect();
        for alloc in running {
            self.stop_because(
                &alloc,
                format!("the node was powered off by an experiment ({id})"),
            );
        }
    }

    /// SIGKILL to one allocation's processes.
    fn kill_alloc(&self, alloc: &str) -> Result<(), String> {
        // Simulated tasks' pids are not this host's processes.
        if !self.inner.cfg.driver.processes() {
            return Err("this node's tasks are simulated: nothing to kill".into());
        }
        let pid = self
            .inner
            .local
            .state()
            .allocs
            .get(alloc)
            .and_then(|l| l.report.pid);
        match pid {
            Some(pid) => {
                kill_group(pid);
                Ok(())
            }
            None => Err(format!(
                "allocation {alloc} has no process on {}",
                self.inner.cfg.name
            )),
        }
    }

    /// A stress process (`motley chaos-stress`), in a cgroup limited to what it takes.
    fn stress(&self, id: &str, cores: u32, bytes: u64, lasts_ms: u64) -> Result<(), String> {
        if !self.inner.cfg.driver.processes() || motley_rt::simulated() {
            return Err("this node's tasks are simulated: no stress is started".into());
        }
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args([
            "chaos-stress",
            &cores.to_string(),
            &bytes.to_string(),
            &lasts_ms.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting the stress: {e}"))?;
        let pid = child.id();
        lock(&self.inner.chaos.left)
            .stress
            .insert(id.to_string(), pid);
        self.inner.chaos.write_left();
        let limits = motley_core::model::Resources {
            cpu: (cores > 0).then(|| motley_core::quantity::MilliCpu(u64::from(cores) * 1000)),
            memory: Some(motley_core::quantity::Bytes(bytes + STRESS_SLACK)),
            ..Default::default()
        };
        let dirs =
            self.inner
                .cgroups
                .limit(&format!("chaos-{}", id.replace('/', "-")), pid, &limits);
        if let Err(e) = &dirs {
            tracing::warn!("fault {id}: the stress runs without a cgroup: {e}");
        }
        // Reaped when it ends (it ends by itself at its deadline too).
        let dirs = dirs.unwrap_or_default();
        motley_rt::spawn_blocking(move || {
            let mut child = child;
            let _ = child.wait();
            crate::cgroup::remove(&dirs);
        });
        Ok(())
    }
}

/// `motley chaos-stress`: keeps `cores` threads busy and holds `bytes` of touched
/// memory for `for_ms`, then exits (its own deadline, besides its agent's).
pub fn stress_main(cores: u32, bytes: u64, for_ms: u64) {
    let end = std::time::Instant::now() + Duration::from_millis(for_ms);
    let mut held: Vec<u8> = Vec::new();
    if bytes > 0 {
        held = vec![0u8; bytes as usize];
        // Touch every page so that it is resident.
        for i in (0..held.len()).step_by(4096) {
            held[i] = 1;
        }
    }
    let busy: Vec<std::thread::JoinHandle<()>> = (0..cores)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x: u64 = 1;
                while std::time::Instant::now() < end {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    while std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100).min(end - std::time::Instant::now()));
    }
    for b in busy {
        let _ = b.join();
    }
    std::hint::black_box(&held);
}
