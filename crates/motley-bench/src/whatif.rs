//! `motley-bench whatif --nodes N`: `what-if --each-node` on N heterogeneous nodes
//! (the fixture machines) running services of 3 replicas and a daemon, settled first
//! with the real controllers; prints the time of the whole table and one JSON line.

use std::collections::BTreeMap;
use std::time::Instant;

use motley_core::manifest::{Source, parse_set};
use motley_core::model::{AllocState, Desired, Workload};
use motley_core::reconcile::{Ids, Input, reconcile};
use motley_scheduler::whatif::{State, each_node};
use motley_scheduler::{Config, Scheduler};

struct Counter(u64);

impl Ids for Counter {
    fn next_id(&mut self, w: &motley_core::model::WorkloadRef) -> String {
        self.0 += 1;
        format!("{}-{}", w.name, self.0)
    }
}

/// Runs the benchmark.
pub fn run(n_nodes: usize, services: usize, fixtures: &std::path::Path) -> anyhow::Result<()> {
    let t = Instant::now();
    let synthetic = motley_bench::Synthetic::new(fixtures, n_nodes, 0)?;
    let mut yaml = String::from(
        "kind: Daemon\nname: logs\ntask:\n  command: [ship]\n  resources: { cpu: 10m, memory: 16Mi }\n",
    );
    for i in 0..services {
        yaml.push_str(&format!(
            "---\nkind: Service\nname: s{i}\nreplicas: 3\ntask:\n  command: [s]\n  resources: {{ cpu: 50m, memory: 32Mi }}\n"
        ));
    }
    let docs = parse_set(&[Source {
        name: "bench",
        text: &yaml,
    }])
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let workloads: BTreeMap<_, _> = docs
        .into_iter()
        .map(|d| {
            let r = d.spec.reference();
            let w = Workload {
                spec: d.spec,
                generation: 1,
                uid: r.name.clone(),
                created_at: 0,
                updated_at: 0,
                binding: None,
                image_platforms: Vec::new(),
                history: Vec::new(),
                rollout: None,
                source: None,
            };
            (r, w)
        })
        .collect();
    let mut allocs = BTreeMap::new();
    let mut ids = Counter(0);
    let down = BTreeMap::new();
    for _ in 0..5 {
        let plan = reconcile(
            &Input {
                workloads: &workloads,
                nodes: &synthetic.nodes,
                ready: &synthetic.ready,
                down: &down,
                fence_after_ms: 7_000,
                allocs: &allocs,
                readings: &synthetic.readings,
                now: 1_000,
            },
            &mut Scheduler::new(Config::default()),
            &mut ids,
        );
        for mut a in plan.create {
            a.state = AllocState::Running;
            a.ready_at = Some(1_000);
            allocs.insert(a.id.clone(), a);
        }
    }
    let running = allocs
        .values()
        .filter(|a| a.desired == Desired::Run && a.state == AllocState::Running)
        .count();
    let setup_s = t.elapsed().as_secs_f64();
    let state = State {
        workloads,
        applied: None,
        nodes: synthetic.nodes.clone(),
        ready: synthetic.ready.clone(),
        allocs,
        now: 1_000,
        fence_after_ms: 7_000,
        readings: Default::default(),
    };
    let t = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let table = each_node(&state, &Config::default(), threads);
    let took = t.elapsed().as_secs_f64();
    let spof = table.iter().filter(|l| !l.down.is_empty()).count();
    println!(
        "each node of {n_nodes} ({running} allocations running, {} workloads): {took:.2} s \
         ({:.2} ms a node); {spof} nodes a single point of failure; setup {setup_s:.2} s",
        state.workloads.len(),
        took * 1000.0 / table.len().max(1) as f64
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "whatif-each-node",
            "nodes": n_nodes,
            "allocations": running,
            "workloads": state.workloads.len(),
            "seconds": took,
            "rows": table.len(),
            "single_points_of_failure": spof,
        })
    );
    Ok(())
}
