//! Node liveness, in memory only: each node's failure detector and verdict, its latest
//! readings, and the grace period a new server or leader gives nodes it has not heard
//! from. Heartbeats never touch the store; `failure::judge` decides, this keeps the state.

use motley_rt::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use motley_core::failure::{Detector, FailureConfig, Health};
use motley_core::hw::Readings;

use crate::util::{lock, now_ms};

/// What the failure detector says of one node.
pub struct NodeHealth {
    /// Heartbeat history.
    pub detector: Detector,
    /// Current verdict.
    pub health: Health,
    /// Since when (ms).
    pub since: u64,
    /// Why.
    pub reason: String,
}

/// What a node's agent last said of its allocations' energy: mJ by allocation, and
/// whether estimated.
type NodeEnergy = (BTreeMap<String, u64>, bool);

/// Each node's health in a slot of its own, found by name once per lookup: the health
/// pass visits every node four times a second, and a slot's number lets it come back
/// to the node without a second lookup (at 1,000 nodes the lookups were most of the
/// pass). Slots are only ever cleared all together ([`Liveness::begin_grace`]).
#[derive(Default)]
struct Nodes {
    index: HashMap<String, usize>,
    slots: Vec<NodeHealth>,
    /// The slots of the names the last pass judged, and the node set they were of
    /// (`Cache::node_set`): the next pass over the same names looks up none.
    roster: Option<(u64, Vec<usize>)>,
}

impl Nodes {
    fn get(&self, node: &str) -> Option<&NodeHealth> {
        self.index.get(node).map(|&i| &self.slots[i])
    }

    fn get_mut(&mut self, node: &str) -> Option<&mut NodeHealth> {
        self.index.get(node).map(|&i| &mut self.slots[i])
    }

    /// The slot of `node`, made with `new` if it has none.
    fn slot(&mut self, node: &str, new: impl FnOnce() -> NodeHealth) -> usize {
        if let Some(&i) = self.index.get(node) {
            return i;
        }
        self.slots.push(new());
        self.index.insert(node.to_string(), self.slots.len() - 1);
        self.slots.len() - 1
    }

    fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.roster = None;
    }

    /// The slot of each of `names` (those of `node_set`), made for the ones heard of
    /// only now with `new`.
    fn roster(
        &mut self,
        names: &[String],
        node_set: u64,
        new: impl Fn() -> NodeHealth,
    ) -> Vec<usize> {
        match self.roster.take() {
            Some((set, slots)) if set == node_set && slots.len() == names.len() => slots,
            _ => names.iter().map(|n| self.slot(n, &new)).collect(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &NodeHealth)> {
        self.index.iter().map(|(k, &i)| (k, &self.slots[i]))
    }
}

/// Every node's liveness as this server sees it.
pub struct Liveness {
    /// Failure detector settings.
    pub config: FailureConfig,
    nodes: Mutex<Nodes>,
    readings: Mutex<HashMap<String, (Readings, u64)>>,
    /// Energy given to each allocation, by node (as its agent last said, mJ), and
    /// whether it was estimated.
    energy: Mutex<HashMap<String, NodeEnergy>>,
    /// Since when nodes not heard from get their grace period: the server's start, or
    /// the start of its term as leader (ms).
    grace_from: AtomicU64,
    /// When the server started (ms): a node never heard from is suspect since then.
    started_at: u64,
    /// The last evaluation held a full disruption (`failure::disruption_step`).
    disrupted: std::sync::atomic::AtomicBool,
}

impl Liveness {
    /// Nothing heard yet; every node has a grace period from `started_at`.
    pub fn new(config: FailureConfig, started_at: u64) -> Liveness {
        Liveness {
            config,
            nodes: Mutex::new(Nodes::default()),
            readings: Mutex::new(HashMap::default()),
            energy: Mutex::new(HashMap::default()),
            grace_from: AtomicU64::new(started_at),
            started_at,
            disrupted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Records a heartbeat from a node, now.
    /// `pace`: how often the node was told to beat, for a node heard of only now.
    pub fn heartbeat(&self, node: &str, pace: u64) {
        let now = now_ms();
        let mut h = lock(&self.nodes);
        match h.get_mut(node) {
            Some(n) => n.detector.heartbeat(now, &self.config),
            None => {
                h.slot(node, || NodeHealth {
                    detector: Detector::seeded(now, pace, &self.config),
                    health: Health::Ready,
                    since: now,
                    reason: "heartbeating".into(),
                });
            }
        }
    }

    /// A node was told a new pace now: its history is of the old one, and a slower pace
    /// judged by it would look like silence. It is judged from now as if it had beaten
    /// at the new pace (`failure::paced_heartbeat_ms`).
    pub fn repace(&self, node: &str, pace: u64) {
        let now = now_ms();
        if let Some(n) = lock(&self.nodes).get_mut(node) {
            n.detector = Detector::seeded(now, pace, &self.config);
        }
    }

    /// Forgets every node's heartbeat history and gives each a full grace period from
    /// `since` (a server that just began to lead has heard from no one yet).
    pub fn begin_grace(&self, since: u64) {
        self.grace_from.store(since, Ordering::Relaxed);
        lock(&self.nodes).clear();
    }

    /// Judges every node in `names` (`connected`: those whose agent is connected here);
    /// returns the verdicts that changed: node, new verdict, the evidence. Nodes heard of only now get a full grace period
    /// from the start of the grace (a new server, or a leader that just took over,
    /// declares nothing down at once).
    ///
    /// `connected[i]` says whether `names[i]`'s agent is connected here; `node_set`
    /// names the set (`Cache::node_set`): over the same set as the last pass, no node
    /// is looked up by name and nothing is allocated unless a verdict changes (four
    /// times a second over every node).
    pub fn evaluate(
        &self,
        names: &[String],
        node_set: u64,
        connected: &[bool],
    ) -> Vec<(String, Health, String)> {
        let now = now_ms();
        let grace_from = self.grace_from.load(Ordering::Relaxed);
        let mut changed = Vec::new();
        let mut h = lock(&self.nodes);
        let mut verdicts = Vec::with_capacity(names.len());
        let pace = motley_core::failure::paced_heartbeat_ms(&self.config, names.len());
        let slots = h.roster(names, node_set, || NodeHealth {
            detector: Detector::seeded(grace_from, pace, &self.config),
            health: Health::Ready,
            since: now,
            reason: "grace period after server start".into(),
        });
        for (&slot, &connected) in slots.iter().zip(connected) {
            let entry = &h.slots[slot];
            let verdict = motley_core::failure::judge(
                &entry.detector,
                now,
                &self.config,
                grace_from,
                connected,
            );
            verdicts.push((slot, entry.health, verdict));
        }
        let (hold, disrupted, fresh_grace) = motley_core::failure::disruption_step(
            self.disrupted.load(Ordering::Relaxed),
            motley_core::failure::full_disruption(verdicts.iter().map(|&(_, b, v)| (b, v))),
        );
        self.disrupted.store(disrupted, Ordering::Relaxed);
        if fresh_grace {
            self.grace_from.store(now, Ordering::Relaxed);
        }
        for ((name, &connected), (slot, before, mut verdict)) in
            names.iter().zip(connected).zip(verdicts)
        {
            let entry = &mut h.slots[slot];
            let held = hold && verdict == Health::Down && before != Health::Down;
            if held {
                verdict = Health::Suspect;
            }
            if verdict != entry.health {
                let silence = now.saturating_sub(entry.detector.last());
                let phi = entry.detector.phi(now, &self.config).min(99.0);
                entry.reason = match verdict {
                    Health::Ready => "heartbeating".into(),
                    Health::Suspect if held => format!(
                        "every node went silent at once ({silence} ms): this server is more likely cut off than they all failed, so none is declared down"
                    ),
                    Health::Suspect if !connected => {
                        format!("agent not connected ({silence} ms since its last heartbeat)")
                    }
                    Health::Suspect => format!("heartbeat late ({silence} ms, phi {phi:.1})"),
                    Health::Down => format!("no heartbeat for {silence} ms (phi {phi:.1})"),
                };
                tracing::info!(
                    "node {name}: {} -> {} ({})",
                    entry.health.as_str(),
                    verdict.as_str(),
                    entry.reason
                );
                entry.health = verdict;
                entry.since = now;
                changed.push((name.clone(), verdict, entry.reason.clone()));
            }
        }
        h.roster = Some((node_set, slots));
        changed
    }

    /// Nodes declared down, with since when.
    pub fn down_nodes(&self) -> BTreeMap<String, u64> {
        lock(&self.nodes)
            .iter()
            .filter(|(_, n)| n.health == Health::Down)
            .map(|(k, n)| (k.clone(), n.since))
            .collect()
    }

    /// (health, since, reason) of a node.
    pub fn node_health(&self, node: &str) -> (Health, u64, String) {
        lock(&self.nodes)
            .get(node)
            .map(|n| (n.health, n.since, n.reason.clone()))
            .unwrap_or((Health::Suspect, self.started_at, "never heard from".into()))
    }

    /// Which of `nodes` are ready now.
    pub fn ready_of(&self, nodes: BTreeSet<String>) -> BTreeSet<String> {
        let h = lock(&self.nodes);
        nodes
            .into_iter()
            .filter(|n| h.get(n).is_some_and(|x| x.health == Health::Ready))
            .collect()
    }

    /// Keeps a node's latest readings, taken at `at` (ms).
    pub fn set_readings(&self, node: &str, readings: Readings, at: u64) {
        lock(&self.readings).insert(node.to_string(), (readings, at));
    }

    /// A node's latest readings and when they were taken.
    pub fn readings_of(&self, node: &str) -> Option<(Readings, u64)> {
        lock(&self.readings).get(node).cloned()
    }

    /// Each node's latest readings (for the scheduler's health headroom).
    pub fn readings_snapshot(&self) -> BTreeMap<String, Readings> {
        lock(&self.readings)
            .iter()
            .map(|(k, (r, _))| (k.clone(), r.clone()))
            .collect()
    }

    /// Keeps what a node's agent said of its allocations' energy.
    pub fn set_energy(&self, node: &str, mj: BTreeMap<String, u64>, estimated: bool) {
        lock(&self.energy).insert(node.to_string(), (mj, estimated));
    }

    /// The energy of these allocations on `node` (mJ each; absent: none said), and
    /// whether any figure was estimated.
    pub fn energy_of<'a>(
        &self,
        allocs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (BTreeMap<String, u64>, bool) {
        let e = lock(&self.energy);
        let mut out = BTreeMap::new();
        let mut estimated = false;
        for (node, id) in allocs {
            if let Some((m, est)) = e.get(node)
                && let Some(mj) = m.get(id)
            {
                out.insert(id.to_string(), *mj);
                estimated |= *est;
            }
        }
        (out, estimated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn changed(l: &Liveness, n: &[&str], set: u64, connected: &[bool]) -> Vec<(String, Health)> {
        l.evaluate(&names(n), set, connected)
            .into_iter()
            .map(|(node, h, _)| (node, h))
            .collect()
    }

    /// The pass keeps each node's slot between passes over the same node set: a new
    /// set is looked up again (its new node judged), the connections given are the
    /// ones judged, and a grace that forgets every node forgets the slots too.
    #[test]
    fn a_pass_over_the_same_nodes_reuses_their_slots_and_a_new_set_is_read_again() {
        let l = Liveness::new(FailureConfig::default(), now_ms());
        let s = Health::Suspect;
        assert_eq!(
            changed(&l, &["a", "b"], 1, &[true, false]),
            vec![("b".into(), s)]
        );
        assert_eq!(changed(&l, &["a", "b"], 1, &[true, false]), vec![]);
        assert_eq!(
            changed(&l, &["a", "b", "c"], 2, &[true, false, false]),
            vec![("c".into(), s)]
        );
        assert_eq!(
            changed(&l, &["a", "b", "c"], 2, &[true, true, false]),
            vec![("b".into(), Health::Ready)]
        );
        assert_eq!(l.node_health("c").0, s);
        l.begin_grace(now_ms());
        assert_eq!(
            changed(&l, &["a", "b", "c"], 2, &[true, true, false]),
            vec![("c".into(), s)],
            "every slot made again after the grace began"
        );
        assert_eq!(
            changed(&l, &["b", "c"], 3, &[false, false]),
            vec![("b".into(), s)]
        );
    }
}
