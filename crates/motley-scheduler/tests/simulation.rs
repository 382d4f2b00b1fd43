//! Deterministic simulation of failure detection and node-loss reconciliation under
//! virtual time, with seeded heartbeat delays, partitions and crashes.
//!
//! Invariants checked at every step, for 1,000 seeds:
//! * no node is declared down while its heartbeats arrive within the configured bound;
//! * no allocation is ever placed on a node that is not ready;
//! * never two running copies of a replica of the fenced service;
//! * once faults stop, every replica runs again, each on a live node, and stale copies
//!   on returned nodes are stopped.

use std::collections::{BTreeMap, BTreeSet};

use motley_core::failure::{Detector, FailureConfig, Health};
use motley_core::manifest::{Source, parse_set};
use motley_core::model::NodeLoss;
use motley_core::model::{
    AllocState, Allocation, Capacity, Desired, Node, NodeFacts, Workload, WorkloadRef,
};
use motley_core::quantity::{Bytes, MilliCpu};
use motley_core::reconcile::{Ids, Input, reconcile};
use motley_scheduler::{Config, Scheduler};

/// xorshift64*: small, deterministic, good enough for fault injection.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Counter(u64);
impl Ids for Counter {
    fn next_id(&mut self, w: &WorkloadRef) -> String {
        self.0 += 1;
        format!("{}-{}", w.name, self.0)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Heartbeats do not arrive and assignments are not delivered until this time; tasks keep running.
    Partitioned(u64),
    /// The machine is gone for good: its tasks died with it.
    Crashed,
}

struct SimNode {
    node: Node,
    fault: Fault,
    next_beat: u64,
    /// Heartbeats in flight: arrival times.
    in_flight: Vec<u64>,
    /// Allocation ids whose process runs on this machine.
    running: BTreeSet<String>,
    /// When its last fault ended.
    healthy_since: u64,
    /// When its agent last heard from the server (its lease runs from here).
    last_contact: u64,
}

const REPLICAS: usize = 6;
const FENCED: usize = 2;
const STEP: u64 = 100;
const FAULTS_UNTIL: u64 = 25_000;
const END: u64 = 40_000;

fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        facts: NodeFacts {
            arch: "arm64".into(),
            os: "linux".into(),
            cpus: 4,
            memory: 4 << 30,
            ..Default::default()
        },
        labels: BTreeMap::new(),
        capacity: Capacity {
            cpu: MilliCpu(4000),
            memory: Bytes(4 << 30),
            disk: Bytes(0),
        },
        taints: Vec::new(),
        cordoned: false,
        draining: false,
        operator_labels: Default::default(),
        registered_at: 0,
    }
}

fn run(seed: u64) -> Result<(), String> {
    let cfg = FailureConfig::default();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let yaml = format!(
        "kind: Service\nname: web\nreplicas: {REPLICAS}\ntask:\n  command: [srv]\n  resources: {{ cpu: 500m, memory: 256Mi }}\n---\n\
         kind: Service\nname: db\nreplicas: {FENCED}\non_node_loss: fence\ntask:\n  command: [db]\n  stop_grace: 1s\n  resources: {{ cpu: 100m, memory: 64Mi }}\n"
    );
    let docs = parse_set(&[Source {
        name: "sim.yaml",
        text: &yaml,
    }])
    .map_err(|e| format!("{e:?}"))?;
    let mut workloads = BTreeMap::new();
    for d in docs {
        workloads.insert(
            d.spec.reference(),
            Workload {
                spec: d.spec,
                generation: 1,
                uid: "u".into(),
                created_at: 0,
                updated_at: 0,
                binding: None,
                image_platforms: Vec::new(),
                history: Vec::new(),
                rollout: None,
                source: None,
                run_of: None,
            },
        );
    }
    let mut nodes: Vec<SimNode> = (0..4)
        .map(|i| SimNode {
            node: node(&format!("pi{i}")),
            fault: Fault::None,
            next_beat: 0,
            in_flight: vec![],
            running: BTreeSet::new(),
            healthy_since: 0,
            last_contact: 0,
        })
        .collect();
    let mut detectors: BTreeMap<String, Detector> = nodes
        .iter()
        .map(|n| (n.node.name.clone(), Detector::new(0, &cfg)))
        .collect();
    let mut last_arrival: BTreeMap<String, u64> =
        nodes.iter().map(|n| (n.node.name.clone(), 0)).collect();
    let mut allocs: BTreeMap<String, Allocation> = BTreeMap::new();
    let mut ids = Counter(0);
    let mut fenced: BTreeSet<String> = BTreeSet::new();
    let mut crashed = 0;
    let mut down_since: BTreeMap<String, u64> = BTreeMap::new();
    let mut now = 0;
    while now <= END {
        // Faults: at most one crash per run; partitions of 2-10 s.
        if now < FAULTS_UNTIL && rng.below(1000) < 8 {
            let i = rng.below(nodes.len() as u64) as usize;
            if nodes[i].fault == Fault::None {
                if rng.below(4) == 0 && crashed == 0 {
                    nodes[i].fault = Fault::Crashed;
                    nodes[i].running.clear();
                    crashed += 1;
                } else {
                    nodes[i].fault = Fault::Partitioned(now + 2_000 + rng.below(8_000));
                }
            }
        }
        for n in nodes.iter_mut() {
            if let Fault::Partitioned(until) = n.fault
                && now >= until
            {
                n.fault = Fault::None;
                n.healthy_since = now;
            }
            // Heartbeats: every interval, delivered after 0-300 ms (TCP keeps them in order).
            if n.fault != Fault::Crashed && now >= n.next_beat {
                n.next_beat = now + cfg.heartbeat_ms;
                let delay = rng.below(300);
                let arrive = n.in_flight.last().copied().unwrap_or(0).max(now + delay);
                n.in_flight.push(arrive);
            }
            if n.fault == Fault::None {
                n.last_contact = now;
            } else if now.saturating_sub(n.last_contact) >= cfg.lease_ms {
                // The lease ran out: the agent stops its fenced tasks.
                n.running.retain(|id| !fenced.contains(id));
            }
            if n.fault == Fault::None {
                let name = n.node.name.clone();
                let (due, later): (Vec<u64>, Vec<u64>) =
                    n.in_flight.iter().partition(|t| **t <= now);
                n.in_flight = later;
                for t in due {
                    if let Some(d) = detectors.get_mut(&name) {
                        d.heartbeat(t, &cfg);
                    }
                    last_arrival.insert(name.clone(), t);
                }
            }
        }
        // The server's view.
        let mut ready = BTreeSet::new();
        let mut down = BTreeMap::new();
        for n in &nodes {
            let name = &n.node.name;
            let health = detectors[name].health(now, &cfg);
            // Heartbeats of a node without faults arrive at most 500 + 300 ms apart, within
            // the bound (min_down_ms): such a node must never be declared down.
            let healthy_for = now.saturating_sub(n.healthy_since);
            if health == Health::Down
                && n.fault == Fault::None
                && healthy_for > cfg.min_down_ms + 1_000
            {
                return Err(format!(
                    "seed {seed}: {name} declared down at {now} while its heartbeats arrive"
                ));
            }
            match health {
                Health::Ready => {
                    ready.insert(name.clone());
                }
                Health::Down => {
                    let since = *down_since.entry(name.clone()).or_insert(now);
                    down.insert(name.clone(), since);
                }
                Health::Suspect => {}
            }
            if health != Health::Down {
                down_since.remove(name);
            }
        }
        let node_map: BTreeMap<String, Node> = nodes
            .iter()
            .map(|n| (n.node.name.clone(), n.node.clone()))
            .collect();
        let plan = reconcile(
            &Input {
                workloads: &workloads,
                nodes: &node_map,
                ready: &ready,
                down: &down,
                fence_after_ms: cfg.fence_after_ms(),
                allocs: &allocs,
                readings: &BTreeMap::new(),
                now,
                active: None,
            },
            &mut Scheduler::new(Config {
                seed,
                ..Config::default()
            }),
            &mut ids,
        );
        for a in &plan.create {
            if !ready.contains(&a.node) {
                return Err(format!(
                    "seed {seed}: placed {} on {} which is not ready",
                    a.id, a.node
                ));
            }
            allocs.insert(a.id.clone(), a.clone());
        }
        for (id, _) in &plan.lost {
            if let Some(a) = allocs.get_mut(id) {
                a.state = AllocState::Lost;
                a.desired = Desired::Stop;
                a.updated_at = now;
            }
        }
        for (id, _) in &plan.stop {
            if let Some(a) = allocs.get_mut(id) {
                a.desired = Desired::Stop;
            }
        }
        for id in &plan.delete {
            allocs.remove(id);
        }
        // Agents that can hear the server act on their assignments and report back.
        for n in nodes.iter_mut().filter(|n| n.fault == Fault::None) {
            for a in allocs.values_mut().filter(|a| a.node == n.node.name) {
                match a.desired {
                    Desired::Run if a.state == AllocState::Pending => {
                        n.running.insert(a.id.clone());
                        a.state = AllocState::Running;
                        a.updated_at = now;
                    }
                    // A running allocation whose process is gone (fenced away) is reported stopped.
                    Desired::Run
                        if a.state == AllocState::Running && !n.running.contains(&a.id) =>
                    {
                        a.state = AllocState::Stopped;
                        a.updated_at = now;
                    }
                    Desired::Stop => {
                        n.running.remove(&a.id);
                        if a.is_live() {
                            a.state = AllocState::Stopped;
                            a.updated_at = now;
                        }
                    }
                    _ => {}
                }
            }
            // Processes of allocations the cluster forgot are stopped too.
            n.running.retain(|id| allocs.contains_key(id));
        }
        for a in &plan.create {
            if a.on_node_loss == NodeLoss::Fence {
                fenced.insert(a.id.clone());
            }
        }
        // Never two copies of a fenced replica, at any moment.
        let mut copies: BTreeMap<u32, usize> = BTreeMap::new();
        for n in &nodes {
            for id in &n.running {
                if let Some(a) = allocs.get(id).filter(|a| a.on_node_loss == NodeLoss::Fence) {
                    *copies.entry(a.index).or_default() += 1;
                }
            }
        }
        if let Some((slot, n)) = copies.iter().find(|(_, n)| **n > 1) {
            return Err(format!(
                "seed {seed}: {n} copies of fenced replica {slot} at {now}"
            ));
        }
        now += STEP;
    }
    // Faults stopped at 25 s; by 40 s the cluster must have converged.
    let live_nodes: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.fault != Fault::Crashed)
        .map(|n| n.node.name.as_str())
        .collect();
    let processes: usize = nodes.iter().map(|n| n.running.len()).sum();
    let want = REPLICAS + FENCED;
    let running: Vec<&Allocation> = allocs
        .values()
        .filter(|a| a.state == AllocState::Running)
        .collect();
    if running.len() != want || processes != want {
        return Err(format!(
            "seed {seed}: {} running allocations, {processes} processes, want {want}",
            running.len()
        ));
    }
    if let Some(a) = running
        .iter()
        .find(|a| !live_nodes.contains(a.node.as_str()))
    {
        return Err(format!(
            "seed {seed}: {} counted as running on crashed {}",
            a.id, a.node
        ));
    }
    let slots: BTreeSet<(String, u32)> = running
        .iter()
        .map(|a| (a.workload.to_string(), a.index))
        .collect();
    if slots.len() != want {
        return Err(format!("seed {seed}: slots {slots:?}"));
    }
    Ok(())
}

#[test]
fn a_thousand_seeds_of_partitions_and_crashes() {
    let failures: Vec<String> = (0..1000).filter_map(|s| run(s).err()).collect();
    assert!(
        failures.is_empty(),
        "{} seeds failed, first: {:?}",
        failures.len(),
        failures.first()
    );
}
