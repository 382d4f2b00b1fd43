//! The agent's contact with the control plane: whether it is connected, where messages
//! to the server go, the fencing lease (`motley_core::lease`), how many full assignment
//! sets arrived, a fatal refusal, and the servers to try. `conn.rs` drives it; the
//! supervisors and the lease watchdog read it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use motley_core::proto::AgentMsg;
use tokio::sync::{mpsc, watch};

use crate::drivers::Driver;
use crate::lock;

/// Lease assumed before a server announces its own.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// Time an agent that starts cut off gets to reach a server before fenced tasks stop.
pub const START_GRACE: Duration = Duration::from_secs(1);

/// See the module.
pub struct Contact {
    /// Where messages to the server go while connected.
    out: Mutex<Option<mpsc::UnboundedSender<AgentMsg>>>,
    connected: watch::Sender<bool>,
    /// Full assignment sets received from servers since this process started.
    pub synced: watch::Sender<u64>,
    fatal: watch::Sender<Option<String>>,
    /// When the agent sent the last message a server answered (a heartbeat or the
    /// hello), in ms of [`Contact::now_ms`]: the lease of fenced tasks runs from here.
    last_contact: Mutex<u64>,
    /// The lease's clock: the driver's fence clock (`CLOCK_BOOTTIME` on a real node), so
    /// that a node that was suspended knows its lease ran out meanwhile, and the agent
    /// and its fence guard count the same time (`motley_core::fence`).
    clock: Arc<dyn Driver>,
    /// Where [`Contact::now_ms`] falls back to, should the fence clock be unreadable.
    fallback: tokio::time::Instant,
    /// The lease, as the server announced it.
    lease: Mutex<Duration>,
    /// Servers to try: the configured ones, then those servers announced.
    servers: Mutex<Vec<String>>,
    /// Told of every renewal (the lease watchdog waits for one while nothing fenced
    /// runs and the lease has run out).
    pub renewed: tokio::sync::Notify,
}

impl Contact {
    /// Not connected. Starting cut off is like having been cut off for a lease: fenced
    /// tasks get only [`START_GRACE`] to reach a server before they are stopped.
    pub fn new(servers: Vec<String>, clock: Arc<dyn Driver>) -> Contact {
        let mut c = Contact {
            out: Mutex::new(None),
            connected: watch::channel(false).0,
            synced: watch::channel(0).0,
            fatal: watch::channel(None).0,
            last_contact: Mutex::new(0),
            clock,
            fallback: tokio::time::Instant::now(),
            lease: Mutex::new(DEFAULT_LEASE),
            servers: Mutex::new(servers),
            renewed: tokio::sync::Notify::new(),
        };
        let cut_off = (DEFAULT_LEASE - START_GRACE).as_millis() as u64;
        c.last_contact = Mutex::new(c.now_ms().saturating_sub(cut_off));
        c
    }

    /// Now on the lease's clock, in ms.
    pub fn now_ms(&self) -> u64 {
        self.clock.fence_clock_ms().unwrap_or_else(|| {
            // Unreadable (never seen): monotonic time, which at least never runs back.
            1_000_000_000 + self.fallback.elapsed().as_millis() as u64
        })
    }

    /// Sends a message to the server if connected (dropped otherwise: the next Hello
    /// carries the latest state).
    pub fn send(&self, msg: AgentMsg) -> bool {
        lock(&self.out)
            .as_ref()
            .is_some_and(|o| o.send(msg).is_ok())
    }

    /// A session began: messages go to `out`.
    pub fn attach(&self, out: mpsc::UnboundedSender<AgentMsg>) {
        *lock(&self.out) = Some(out);
    }

    /// Records whether a session is up (and forgets where messages went when not).
    pub fn set_connected(&self, up: bool) {
        if !up {
            *lock(&self.out) = None;
        }
        self.connected.send_replace(up);
    }

    /// True while connected to a server.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until connected, at most `timeout`; returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok()
    }

    /// Waits (at most `timeout`) until no connection is up; whether none is.
    pub async fn wait_disconnected(&self, timeout: Duration) -> bool {
        let mut rx = self.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| !*c))
            .await
            .is_ok()
    }

    /// Records a refusal retrying cannot fix.
    pub fn set_fatal(&self, why: String) {
        self.fatal.send_replace(Some(why));
    }

    /// Waits until the connection fails for good; returns why.
    pub async fn wait_fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        match rx.wait_for(|f| f.is_some()).await {
            Ok(f) => f.clone().unwrap_or_default(),
            Err(_) => "the agent stopped".into(),
        }
    }

    /// Renews the lease from `sent`: when the agent sent what the server just answered
    /// (a heartbeat it acknowledged, or the hello it welcomed), never when the answer
    /// arrived (`motley_core::lease`).
    pub fn renew_lease(&self, sent: u64) {
        let mut last = lock(&self.last_contact);
        *last = motley_core::lease::renewed(*last, sent);
        drop(last);
        self.renewed.notify_one();
    }

    /// Gives the lease up: a node that asks for no acknowledgements holds none, so fenced
    /// work given to it always waits for a fresh one (`motley_core::lease::beat_now`),
    /// never starts on what is left of an old one (the Welcome's, seconds from its end).
    pub fn forget_lease(&self) {
        *lock(&self.last_contact) = 0;
    }

    /// The lease the server announced.
    pub fn set_lease(&self, lease: Duration) {
        *lock(&self.lease) = lease;
    }

    /// The lease's length.
    pub fn lease(&self) -> Duration {
        *lock(&self.lease)
    }

    /// When the lease runs out, in ms of [`Contact::now_ms`].
    pub fn lease_deadline(&self) -> u64 {
        lock(&self.last_contact).saturating_add(self.lease().as_millis() as u64)
    }

    /// How long since the lease was last renewed from.
    pub fn since_contact(&self) -> Duration {
        let last = *lock(&self.last_contact);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// True while the lease runs.
    pub fn lease_valid(&self) -> bool {
        self.since_contact() < self.lease()
    }

    /// Servers to try, in order.
    pub fn servers(&self) -> Vec<String> {
        lock(&self.servers).clone()
    }

    /// Adds servers not yet known (HTTPS URLs only); returns whether any was new.
    pub fn merge_servers(&self, urls: &[String]) -> bool {
        let mut list = lock(&self.servers);
        let mut grew = false;
        for u in urls {
            let u = u.trim();
            if u.starts_with("https://") && !list.iter().any(|k| k == u) {
                list.push(u.to_string());
                grew = true;
            }
        }
        grew
    }
}
