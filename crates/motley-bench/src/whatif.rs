//! `motley-bench whatif --nodes N`: `what-if --each-node` on N heterogeneous nodes
//! (the fixture machines) running services of 3 replicas and a daemon, settled first
//! with the real controllers; prints the time of the whole table and one JSON line.

use std::collections::BTreeMap;
use std::time::Instant;

use motley_core::manifest::{Source, parse_set};
use motley_core::model::{AllocState, Desired};
use motley_scheduler::Config;
use motley_scheduler::whatif::{Change, State, each_node, settle};

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
    // Settled by the same engine the question then runs on.
    let empty = State {
        workloads: motley_core::manifest::created(docs, 0),
        applied: None,
        nodes: synthetic.nodes.clone(),
        ready: synthetic.ready.clone(),
        allocs: BTreeMap::new(),
        now: 1_000,
        fence_after_ms: 7_000,
        readings: Default::default(),
    };
    let settled = settle(&empty, &Change::default(), &Config::default())
        .map_err(|e| anyhow::anyhow!("settling: {e}"))?;
    let running = settled
        .allocs
        .values()
        .filter(|a| a.desired == Desired::Run && a.state == AllocState::Running)
        .count();
    let state = State {
        allocs: settled.allocs,
        now: settled.now,
        ..empty.clone()
    };
    let setup_s = t.elapsed().as_secs_f64();
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
