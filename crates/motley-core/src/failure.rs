//! Failure detection: an accrual (phi) detector per node, fed by heartbeat arrival
//! times, and the node states it implies (ready → suspect → down).
//!
//! Phi is how unlikely the current silence is given the heartbeat intervals seen so
//! far (Hayashibara et al.; the same estimator Akka and Cassandra use): a node on
//! flaky Wi-Fi, whose intervals vary, needs a longer silence to be suspected than a
//! node on a quiet LAN. Two floors keep the detector safe: a node is never suspect
//! before `min_suspect_ms` of silence, never down before `min_down_ms`.
//!
//! Pure: times are milliseconds passed in by the caller.

use std::collections::VecDeque;

/// Detector settings. The defaults detect a dead node on a LAN in about 1.6 s.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FailureConfig {
    /// How often agents send a heartbeat.
    pub heartbeat_ms: u64,
    /// Phi at which a node becomes suspect (no new work placed on it).
    pub suspect_phi: f64,
    /// Phi at which a node is down (its work is replaced).
    pub down_phi: f64,
    /// Lower bound of the standard deviation used, so a very regular node is not
    /// declared down by a single late heartbeat.
    pub min_std_ms: u64,
    /// Never suspect before this much silence.
    pub min_suspect_ms: u64,
    /// Never down before this much silence.
    pub min_down_ms: u64,
    /// Intervals remembered.
    pub window: usize,
    /// An agent that has not heard from a server for this long stops its fenced tasks.
    pub lease_ms: u64,
    /// Extra wait, after a node is declared down, beyond the lease before its fenced
    /// work is replaced.
    pub fence_margin_ms: u64,
    /// For this long after a server starts (or a new leader begins to lead) it declares
    /// down only nodes whose agents are connected and silent ([`judge`]): agents need
    /// time to notice and reconnect (their reconnect backoff is at most 7.5 s).
    pub startup_grace_ms: u64,
    /// Heartbeats a second the server aims to receive at most, all nodes together
    /// (Nomad's `max_heartbeats_per_second`): past `heartbeat_budget × heartbeat_ms /
    /// 1000` connected nodes, agents are told to beat less often ([`paced_heartbeat_ms`]).
    /// 0: never.
    #[serde(default)]
    pub heartbeat_budget: u32,
}

impl FailureConfig {
    /// After a node is declared down, how long before its fenced work may be replaced.
    pub fn fence_after_ms(&self) -> u64 {
        self.lease_ms + self.fence_margin_ms
    }

    /// The slowest pace agents are ever told: a third of the lease, in whole
    /// [`PACE_STEP_MS`], never below `heartbeat_ms`. The lease is renewed by an
    /// acknowledged heartbeat, so two may go unanswered before it runs out.
    pub fn slowest_heartbeat_ms(&self) -> u64 {
        (self.lease_ms / 3 / PACE_STEP_MS * PACE_STEP_MS).max(self.heartbeat_ms)
    }
}

/// Paces differ by whole steps, so that a node joining or leaving changes the pace of
/// the others only when it crosses a step.
pub const PACE_STEP_MS: u64 = 250;

/// How often agents should send heartbeats when `nodes` agents are connected: the
/// configured interval while the heartbeats of every node fit the budget, else the
/// interval at which they do, rounded up to a whole step, at most
/// [`FailureConfig::slowest_heartbeat_ms`]. The lease is never lengthened, so fencing
/// and its waits are the same at every pace; what a slower pace costs is detection
/// (the detector learns each node's intervals: a node beating every 1.5 s is declared
/// down after about 2.5 s of silence instead of 1.5 s).
pub fn paced_heartbeat_ms(cfg: &FailureConfig, nodes: usize) -> u64 {
    // The budget's pace, bound by the lease (never below the configured interval:
    // `slowest_heartbeat_ms` is not either).
    quiet_heartbeat_ms(cfg, nodes).min(cfg.slowest_heartbeat_ms())
}

/// How often a node that asks for no acknowledgements (it holds no fenced work:
/// [`crate::lease::asks_ack`]) should beat when `nodes` agents are connected: as
/// [`paced_heartbeat_ms`] but held to the budget alone. Nothing renews such a node's
/// lease, so the third of the lease does not bind it, and the server hears at most the
/// budget from these nodes (Nomad's rule: at 1,000 nodes and 600 a second, 1.75 s
/// instead of 1.5 s). A node given fenced work asks again and is told the faster pace.
pub fn quiet_heartbeat_ms(cfg: &FailureConfig, nodes: usize) -> u64 {
    if cfg.heartbeat_budget == 0 {
        return cfg.heartbeat_ms;
    }
    // Rounded up, so that nodes × 1,000 / pace never exceeds the budget.
    let wanted = (nodes as u64)
        .saturating_mul(1_000)
        .div_ceil(u64::from(cfg.heartbeat_budget));
    let stepped = wanted.div_ceil(PACE_STEP_MS).saturating_mul(PACE_STEP_MS);
    stepped.max(cfg.heartbeat_ms)
}

impl Default for FailureConfig {
    fn default() -> Self {
        FailureConfig {
            heartbeat_ms: 500,
            suspect_phi: 3.0,
            down_phi: 8.0,
            min_std_ms: 200,
            min_suspect_ms: 1_000,
            min_down_ms: 1_500,
            window: 100,
            lease_ms: 5_000,
            fence_margin_ms: 2_000,
            startup_grace_ms: 15_000,
            heartbeat_budget: 600,
        }
    }
}

/// What the detector says of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Heartbeats arrive as expected.
    Ready,
    /// Late: no new work is placed on it.
    Suspect,
    /// Presumed dead: its work is replaced.
    Down,
}

impl Health {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ready => "ready",
            Health::Suspect => "suspect",
            Health::Down => "down",
        }
    }
}

/// The accrual detector of one node.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Milliseconds between heartbeats, oldest first; at most `window` (and one more
    /// while pushing), allocated once: 4 bytes each, kept for every node (issue 25's
    /// 10,000 nodes on one server).
    intervals: VecDeque<u32>,
    sum: u128,
    sum_sq: u128,
    last: u64,
}

impl Detector {
    /// A detector that last heard from the node at `now` (at registration, or when a
    /// new leader starts: a full grace period before anything is declared).
    pub fn new(now: u64, cfg: &FailureConfig) -> Detector {
        Detector::seeded(now, cfg.heartbeat_ms, cfg)
    }

    /// A detector that last heard from the node at `now` and expects a heartbeat every
    /// `interval_ms` (the pace the node was told): its first silences are judged by it.
    pub fn seeded(now: u64, interval_ms: u64, cfg: &FailureConfig) -> Detector {
        let mut d = Detector {
            intervals: VecDeque::with_capacity(cfg.window.clamp(2, 1024) + 1),
            sum: 0,
            sum_sq: 0,
            last: now,
        };
        // Seed with the expected interval so the first silences are judged sensibly.
        d.push(interval_ms, cfg);
        d.push(interval_ms, cfg);
        d
    }

    fn push(&mut self, interval: u64, cfg: &FailureConfig) {
        // Longer than 49 days is the same verdict as 49 days.
        let interval = u32::try_from(interval).unwrap_or(u32::MAX);
        self.intervals.push_back(interval);
        self.sum += interval as u128;
        self.sum_sq += (interval as u128) * (interval as u128);
        while self.intervals.len() > cfg.window.max(2) {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old as u128;
                self.sum_sq -= (old as u128) * (old as u128);
            }
        }
    }

    /// Records a heartbeat arriving at `now`.
    pub fn heartbeat(&mut self, now: u64, cfg: &FailureConfig) {
        if now > self.last {
            self.push(now - self.last, cfg);
            self.last = now;
        }
    }

    /// When the last heartbeat arrived.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Phi at `now`: -log10 of the probability that a heartbeat is still to come.
    pub fn phi(&self, now: u64, cfg: &FailureConfig) -> f64 {
        let n = self.intervals.len().max(1) as f64;
        let mean = self.sum as f64 / n;
        let var = (self.sum_sq as f64 / n - mean * mean).max(0.0);
        let std = var.sqrt().max(cfg.min_std_ms as f64);
        let t = now.saturating_sub(self.last) as f64;
        let y = (t - mean) / std;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let p_later = if t > mean {
            e / (1.0 + e)
        } else {
            1.0 - 1.0 / (1.0 + e)
        };
        if p_later <= f64::MIN_POSITIVE {
            f64::MAX
        } else {
            -p_later.log10()
        }
    }

    /// The node's health at `now`.
    pub fn health(&self, now: u64, cfg: &FailureConfig) -> Health {
        let silence = now.saturating_sub(self.last);
        let phi = self.phi(now, cfg);
        if silence >= cfg.min_down_ms && phi >= cfg.down_phi {
            Health::Down
        } else if silence >= cfg.min_suspect_ms && phi >= cfg.suspect_phi {
            Health::Suspect
        } else {
            Health::Ready
        }
    }
}

/// What a server concludes of a node at `now`: the detector's verdict, at most suspect
/// while the node's agent is not connected, and never down during the grace period
/// that began at `grace_from` (the server's start, or when it began to lead) unless
/// the agent is connected and silent. A node heard once in that period and then cut off
/// (a relay that ended as the leader key changed hands) is still reconnecting, and
/// agents reconnect within their backoff of at most 7.5 s.
pub fn judge(
    detector: &Detector,
    now: u64,
    cfg: &FailureConfig,
    grace_from: u64,
    connected: bool,
) -> Health {
    match detector.health(now, cfg) {
        Health::Down
            if now < grace_from.saturating_add(cfg.startup_grace_ms)
                && !(connected && detector.last() > grace_from) =>
        {
            Health::Suspect
        }
        Health::Ready if !connected => Health::Suspect,
        Health::Down if crate::mutants::active("never-down") => Health::Suspect,
        verdict => verdict,
    }
}

/// Whether to hold back the down verdicts of one evaluation: `verdicts` pairs each
/// node's health before it with the verdict [`judge`] gives now. When a cluster of
/// two or more nodes not yet down would have some declared down and none of the rest
/// ready (every one silent, the first to pass the threshold a moment before the
/// others: on a loaded server they do not all cross it in the same evaluation), the
/// likelier story is that this server lost its network, not that every node
/// failed together: Kubernetes' node controller stops evicting on a full disruption
/// for the same reason. Declaring them down would mark every allocation lost, and
/// when the network came back every task would be stopped and started again; held
/// suspect, nothing moves (nothing could be placed anyway: no node is left). Fenced
/// tasks still stop on their agents when the lease runs out, so safety holds either way.
/// A single node (nothing else to compare with) is judged alone.
pub fn full_disruption(verdicts: impl IntoIterator<Item = (Health, Health)>) -> bool {
    // One walk, nothing allocated: the health pass asks this of every node four times
    // a second.
    let (mut live, mut any_down, mut any_ready) = (0usize, false, false);
    for (before, now) in verdicts {
        if before == Health::Down {
            continue;
        }
        live += 1;
        any_down |= now == Health::Down;
        any_ready |= now == Health::Ready;
    }
    live >= 2 && any_down && !any_ready
}

/// One evaluation's decision about a full disruption, given whether the last one was
/// held: `(hold, disrupted, fresh_grace)`. While every node is silent the down
/// verdicts are held ([`full_disruption`]). When the disruption ends (some node is
/// heard again) the nodes come back one at a time, within their reconnect backoff; the
/// ones not yet back must not be declared down because another was quicker. So the
/// evaluation that sees the end holds too, and the silent nodes get a fresh startup
/// grace from now (`fresh_grace`), as after a server start.
pub fn disruption_step(was_disrupted: bool, full: bool) -> (bool, bool, bool) {
    match (was_disrupted, full) {
        (_, true) => (true, true, false),
        (true, false) => (true, false, true),
        (false, false) => (false, false, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_disruption_holds_once_and_grants_a_fresh_grace() {
        assert_eq!(disruption_step(false, false), (false, false, false));
        assert_eq!(disruption_step(false, true), (true, true, false));
        assert_eq!(disruption_step(true, true), (true, true, false));
        assert_eq!(disruption_step(true, false), (true, false, true));
    }

    #[test]
    fn every_node_silent_at_once_is_a_full_disruption() {
        use Health::*;
        assert!(full_disruption([(Ready, Down), (Suspect, Down)]));
        // One node down among others that are fine: a node failed.
        assert!(!full_disruption([(Ready, Down), (Ready, Ready)]));
        assert!(!full_disruption([(Ready, Down), (Suspect, Ready)]));
        // Every node silent, one crossing the threshold before the other: held too
        // (seen on a loaded machine: n1 down, n2 still suspect, then n2 down alone).
        assert!(full_disruption([(Ready, Down), (Ready, Suspect)]));
        assert!(full_disruption([
            (Suspect, Down),
            (Suspect, Suspect),
            (Down, Down)
        ]));
        // Nobody going down: nothing to hold.
        assert!(!full_disruption([(Ready, Suspect), (Ready, Suspect)]));
        // A node already down does not count, either way.
        assert!(full_disruption([
            (Down, Down),
            (Ready, Down),
            (Ready, Down)
        ]));
        assert!(!full_disruption([(Down, Down), (Ready, Down)]));
        // A single node is judged alone; an empty cluster has nothing to hold.
        assert!(!full_disruption([(Ready, Down)]));
        assert!(!full_disruption(std::iter::empty()));
    }

    /// A node heard regularly until `until`, from a detector started at `from`.
    fn heard(from: u64, until: u64, cfg: &FailureConfig) -> Detector {
        let mut d = Detector::new(from, cfg);
        let mut t = from;
        while t + cfg.heartbeat_ms <= until {
            t += cfg.heartbeat_ms;
            d.heartbeat(t, cfg);
        }
        d
    }

    #[test]
    fn during_the_grace_period_only_a_connected_silent_node_goes_down() {
        let cfg = FailureConfig::default();
        let grace_end = 100_000 + cfg.startup_grace_ms;
        // Not heard since the grace began (a new leader at 100 s), not connected.
        let unheard = Detector::new(100_000, &cfg);
        assert_eq!(
            judge(&unheard, 105_000, &cfg, 100_000, false),
            Health::Suspect
        );
        assert_eq!(
            judge(&unheard, grace_end + 1, &cfg, 100_000, false),
            Health::Down
        );
        // Heard once after the grace began, then cut off while it reconnects.
        let mut once = Detector::new(100_000, &cfg);
        once.heartbeat(100_010, &cfg);
        assert_eq!(judge(&once, 103_000, &cfg, 100_000, false), Health::Suspect);
        assert_eq!(
            judge(&once, grace_end + 1, &cfg, 100_000, false),
            Health::Down
        );
        // Connected and silent: down at once, grace or not.
        assert_eq!(judge(&once, 103_000, &cfg, 100_000, true), Health::Down);
        // Heartbeating but not connected (yet): suspect, never ready.
        let live = heard(100_000, 104_000, &cfg);
        assert_eq!(judge(&live, 104_100, &cfg, 100_000, true), Health::Ready);
        assert_eq!(judge(&live, 104_100, &cfg, 100_000, false), Health::Suspect);
    }

    #[test]
    fn a_regular_node_is_ready_and_a_silent_one_goes_down_within_3s() {
        let cfg = FailureConfig::default();
        let mut d = Detector::new(0, &cfg);
        let mut now = 0;
        for _ in 0..40 {
            now += 500;
            d.heartbeat(now, &cfg);
            assert_eq!(d.health(now + 400, &cfg), Health::Ready);
        }
        let last = now;
        let mut down_at = None;
        for t in (last..last + 5_000).step_by(10) {
            if d.health(t, &cfg) == Health::Down {
                down_at = Some(t - last);
                break;
            }
        }
        let down_after = down_at.expect("declared down");
        assert!(
            (1_500..3_000).contains(&down_after),
            "down after {down_after} ms"
        );
        assert_eq!(d.health(last + 1_200, &cfg), Health::Suspect);
    }

    #[test]
    fn agents_are_paced_by_the_budget_within_a_third_of_the_lease() {
        let cfg = FailureConfig::default();
        assert_eq!(cfg.slowest_heartbeat_ms(), 1_500);
        let pace = |n| paced_heartbeat_ms(&cfg, n);
        assert_eq!((pace(0), pace(1), pace(300)), (500, 500, 500));
        assert_eq!((pace(301), pace(450), pace(451)), (750, 750, 1_000));
        assert_eq!(
            (pace(900), pace(1_000), pace(10_000)),
            (1_500, 1_500, 1_500)
        );
        let off = FailureConfig {
            heartbeat_budget: 0,
            ..cfg
        };
        assert_eq!(paced_heartbeat_ms(&off, 10_000), 500);
        assert_eq!(quiet_heartbeat_ms(&off, 10_000), 500);
        // A node without fenced work is held to the budget alone.
        let quiet = |n| quiet_heartbeat_ms(&cfg, n);
        assert_eq!((quiet(300), quiet(301), quiet(900)), (500, 750, 1_500));
        assert_eq!((quiet(1_000), quiet(10_000)), (1_750, 16_750));
        // A lease too short to pace: never slower than configured.
        let short = FailureConfig {
            lease_ms: 1_000,
            ..cfg
        };
        assert_eq!(paced_heartbeat_ms(&short, 10_000), 500);
    }

    proptest::proptest! {
        #[test]
        fn the_pace_grows_with_the_nodes_and_leaves_two_heartbeats_per_lease(
            budget in 0u32..5_000,
            heartbeat_ms in 50u64..3_000,
            lease_ms in 0u64..60_000,
            nodes in 0usize..100_000,
        ) {
            let cfg = FailureConfig { heartbeat_budget: budget, heartbeat_ms, lease_ms, ..FailureConfig::default() };
            let p = paced_heartbeat_ms(&cfg, nodes);
            proptest::prop_assert!(p >= heartbeat_ms);
            proptest::prop_assert!(p == heartbeat_ms || p * 3 <= lease_ms);
            proptest::prop_assert!(p <= paced_heartbeat_ms(&cfg, nodes + 1));
            proptest::prop_assert!(p == heartbeat_ms || p.is_multiple_of(PACE_STEP_MS));
            // A quiet node: never faster than one that holds a lease, the budget kept.
            let q = quiet_heartbeat_ms(&cfg, nodes);
            proptest::prop_assert!(q >= p);
            proptest::prop_assert!(q <= quiet_heartbeat_ms(&cfg, nodes + 1));
            proptest::prop_assert!(q == heartbeat_ms || q.is_multiple_of(PACE_STEP_MS));
            if budget > 0 {
                proptest::prop_assert!(nodes as u64 * 1_000 <= q * u64::from(budget));
            }
        }

        /// The one-walk `full_disruption` says what its definition says: at least two
        /// nodes not down before, some now down, none ready.
        #[test]
        fn a_full_disruption_is_as_defined(verdicts in proptest::collection::vec((0u8..3, 0u8..3), 0..8)) {
            let h = |x: u8| [Health::Ready, Health::Suspect, Health::Down][x as usize];
            let v: Vec<(Health, Health)> = verdicts.iter().map(|&(b, n)| (h(b), h(n))).collect();
            let live: Vec<&(Health, Health)> = v.iter().filter(|(b, _)| *b != Health::Down).collect();
            let defined = live.len() >= 2
                && live.iter().any(|(_, n)| *n == Health::Down)
                && live.iter().all(|(_, n)| *n != Health::Ready);
            proptest::prop_assert_eq!(full_disruption(v.iter().copied()), defined);
        }
    }

    #[test]
    fn a_node_seeded_with_its_pace_is_ready_while_regular_and_down_within_3s_of_silence() {
        let cfg = FailureConfig::default();
        let pace = cfg.slowest_heartbeat_ms();
        // Seeded with the default instead, its first paced silence looks long.
        let unpaced = Detector::new(0, &cfg);
        assert_ne!(unpaced.health(pace - 10, &cfg), Health::Ready);
        let mut d = Detector::seeded(0, pace, &cfg);
        let mut now = 0;
        for _ in 0..40 {
            assert_eq!(d.health(now + pace - 10, &cfg), Health::Ready);
            now += pace;
            d.heartbeat(now, &cfg);
        }
        let down_after = (now..now + 10_000)
            .step_by(10)
            .find(|&t| d.health(t, &cfg) == Health::Down)
            .map(|t| t - now);
        assert!(
            down_after.is_some_and(|ms| (pace..3_000).contains(&ms)),
            "down after {down_after:?} ms"
        );
    }

    #[test]
    fn a_jittery_node_is_given_more_time() {
        let cfg = FailureConfig::default();
        let mut steady = Detector::new(0, &cfg);
        let mut jittery = Detector::new(0, &cfg);
        let (mut a, mut b) = (0, 0);
        for i in 0..100u64 {
            a += 500;
            steady.heartbeat(a, &cfg);
            b += if i % 2 == 0 { 100 } else { 1_300 };
            jittery.heartbeat(b, &cfg);
        }
        assert!(jittery.phi(b + 1_600, &cfg) < steady.phi(a + 1_600, &cfg));
    }
}
