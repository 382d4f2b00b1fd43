//! A virtual cluster for driving the core's controllers with the scheduler: nodes,
//! workloads and allocations in memory, agents that start and stop instantly.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use motley_core::hw::{Taint, TaintEffect};
use motley_core::manifest::{Source, parse_set};
use motley_core::model::{
    AllocState, Allocation, Capacity, Desired, Node, NodeFacts, Workload, WorkloadRef,
};
use motley_core::quantity::{Bytes, MilliCpu};
use motley_core::reconcile::{Ids, Input, Plan, reconcile};
use motley_scheduler::{Config, Scheduler};

pub struct Counter(pub u64);
impl Ids for Counter {
    fn next_id(&mut self, w: &WorkloadRef) -> String {
        self.0 += 1;
        format!("{}-{}", w.name, self.0)
    }
}

pub struct World {
    pub workloads: BTreeMap<WorkloadRef, Workload>,
    pub nodes: BTreeMap<String, Node>,
    pub ready: BTreeSet<String>,
    pub down: BTreeMap<String, u64>,
    pub allocs: BTreeMap<String, Allocation>,
    pub now: u64,
    pub ids: Counter,
    pub seed: u64,
    /// Which workloads a pass visits, told every change found since the last step: each
    /// step plans over it and checks the plan against a full pass.
    pub active: motley_core::active::Active,
    /// The state the last step planned from, to find what changed since.
    seen: (
        BTreeMap<WorkloadRef, Workload>,
        BTreeMap<String, Allocation>,
    ),
    /// How many workloads the steps found settled (a test of the check must see some).
    pub settled: usize,
}

pub fn node(name: &str, cpu: u64, mem_mi: u64) -> Node {
    Node {
        name: name.into(),
        facts: NodeFacts {
            arch: if name.starts_with("pi") {
                "arm64".into()
            } else {
                "amd64".into()
            },
            os: "linux".into(),
            cpus: (cpu / 1000) as u32,
            memory: mem_mi << 20,
            ..Default::default()
        },
        labels: BTreeMap::new(),
        capacity: Capacity {
            cpu: MilliCpu(cpu),
            memory: Bytes(mem_mi << 20),
            disk: Bytes(0),
        },
        taints: Vec::new(),
        cordoned: false,
        draining: false,
        operator_labels: Default::default(),
        registered_at: 0,
    }
}

pub fn tainted(mut n: Node, key: &str, effect: TaintEffect) -> Node {
    n.taints.push(Taint {
        key: key.into(),
        effect,
    });
    n
}

impl World {
    pub fn new(nodes: &[Node]) -> World {
        World {
            workloads: BTreeMap::new(),
            ready: nodes.iter().map(|n| n.name.clone()).collect(),
            nodes: nodes.iter().map(|n| (n.name.clone(), n.clone())).collect(),
            down: BTreeMap::new(),
            allocs: BTreeMap::new(),
            now: 1_000,
            ids: Counter(0),
            seed: 0,
            active: Default::default(),
            seen: Default::default(),
            settled: 0,
        }
    }
    pub fn apply(&mut self, yaml: &str) {
        let docs = parse_set(&[Source {
            name: "t.yaml",
            text: yaml,
        }])
        .expect("valid manifest");
        for d in docs {
            let r = d.spec.reference();
            let old = self.workloads.get(&r).cloned();
            let generation = old.as_ref().map_or(1, |w| w.generation + 1);
            let uid = old
                .as_ref()
                .map_or(format!("uid-{}", r.name), |w| w.uid.clone());
            let mut next = Workload {
                spec: d.spec,
                generation,
                uid,
                created_at: self.now,
                updated_at: self.now,
                binding: None,
                image_platforms: Vec::new(),
                history: Vec::new(),
                rollout: None,
                source: None,
                run_of: None,
            };
            if let Some(old) = &old {
                next.history = old.history.clone();
                motley_core::rollout::push_history(&mut next, old, false);
            }
            self.workloads.insert(r, next);
        }
    }
    /// Tells `active` what changed since the last step, as the server's cache does
    /// (a run's change, or its allocations', touches its periodic job too).
    fn tell_changes(&mut self) {
        use motley_core::periodic::job_of_run;
        let (seen_w, seen_a) = &self.seen;
        let job_of = |r: &WorkloadRef| {
            self.workloads
                .get(r)
                .or_else(|| seen_w.get(r))
                .and_then(job_of_run)
        };
        for (r, w) in &self.workloads {
            if seen_w.get(r) != Some(w) {
                self.active.touch(r);
                if let Some(j) = job_of_run(w) {
                    self.active.touch(&j);
                }
            }
        }
        for (r, w) in seen_w
            .iter()
            .filter(|(r, _)| !self.workloads.contains_key(*r))
        {
            self.active.touch(r);
            if let Some(j) = job_of_run(w) {
                self.active.touch(&j);
            }
        }
        for (id, a) in &self.allocs {
            if seen_a.get(id) != Some(a) {
                self.active.put_alloc(a);
                if let Some(j) = job_of(&a.workload) {
                    self.active.touch(&j);
                }
            }
        }
        for (id, a) in seen_a {
            if !self.allocs.contains_key(id) {
                self.active.remove_alloc(a);
                if let Some(j) = job_of(&a.workload) {
                    self.active.touch(&j);
                }
            }
        }
        self.seen = (self.workloads.clone(), self.allocs.clone());
    }

    /// One pass over the workloads not settled, checked against a full pass.
    pub fn step(&mut self) -> Plan {
        self.tell_changes();
        let input = Input {
            workloads: &self.workloads,
            nodes: &self.nodes,
            ready: &self.ready,
            down: &self.down,
            fence_after_ms: 7_000,
            allocs: &self.allocs,
            readings: &BTreeMap::new(),
            now: self.now,
            active: Some(&self.active),
        };
        let scheduler = || {
            Scheduler::new(Config {
                seed: self.seed,
                ..Config::default()
            })
        };
        let plan = reconcile(&input, &mut scheduler(), &mut self.ids);
        let full = reconcile(
            &Input {
                active: None,
                ..input
            },
            &mut scheduler(),
            &mut Counter(0),
        );
        if let Err(d) = motley_core::active::same_plan(&plan, &full) {
            panic!("a pass over the workloads not settled and a full pass planned different {d}");
        }
        self.active.settle(&plan.settled);
        self.settled += plan.settled.len();
        for (r, b) in &plan.bind {
            if let Some(v) = self.workloads.get_mut(r) {
                v.binding = Some(b.clone());
            }
        }
        for a in &plan.create {
            self.allocs.insert(a.id.clone(), a.clone());
        }
        for w in &plan.revert {
            self.workloads.insert(w.spec.reference(), w.clone());
        }
        // As the server commits them: a run only if absent.
        for w in &plan.runs {
            self.workloads
                .entry(w.spec.reference())
                .or_insert_with(|| w.clone());
        }
        for (r, _) in &plan.drop_runs {
            self.workloads.remove(r);
        }
        for (id, _) in &plan.stop {
            if let Some(a) = self.allocs.get_mut(id) {
                a.desired = Desired::Stop;
            }
        }
        for id in &plan.delete {
            self.allocs.remove(id);
        }
        for (id, _) in &plan.lost {
            if let Some(a) = self.allocs.get_mut(id) {
                a.state = AllocState::Lost;
                a.desired = Desired::Stop;
            }
        }
        plan
    }
    /// The agents: pending → running; stopping → stopped.
    pub fn agents(&mut self) {
        for a in self.allocs.values_mut() {
            if a.desired == Desired::Stop && a.is_live() {
                a.state = AllocState::Stopped;
                a.updated_at = self.now;
            } else if a.state == AllocState::Pending {
                a.state = AllocState::Running;
                a.updated_at = self.now;
                // As the server records it: ready once it runs (these have no check).
                if a.check.is_none() {
                    a.ready_at = Some(self.now);
                }
            }
        }
    }
    pub fn live(&self, name: &str) -> Vec<&Allocation> {
        self.allocs
            .values()
            .filter(|a| a.workload.name == name && a.is_live() && a.desired == Desired::Run)
            .collect()
    }
}
