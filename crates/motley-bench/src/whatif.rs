//! `motley-bench whatif --nodes N`: `what-if --each-node` on N heterogeneous nodes
//! (the fixture machines) running services of 3 replicas and a daemon, settled first
//! with the real controllers; prints the time of the whole table and one JSON line.

use std::collections::BTreeMap;
use std::time::Instant;

use motley_core::manifest::{Source, parse_set};
use motley_core::model::{AllocState, Desired};
use motley_scheduler::Config;
use motley_scheduler::whatif::{Change, State, each_node, settle};

/// The synthetic nodes, every one ready, and the workloads of `yaml`, nothing placed.
fn unplaced(synthetic: &motley_bench::Synthetic, yaml: &str) -> anyhow::Result<State> {
    let docs = parse_set(&[Source {
        name: "bench",
        text: yaml,
    }])
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(State {
        workloads: motley_core::manifest::created(docs, 0),
        applied: None,
        nodes: synthetic.nodes.clone(),
        ready: synthetic.ready.clone(),
        allocs: BTreeMap::new(),
        now: 1_000,
        fence_after_ms: 7_000,
        readings: Default::default(),
    })
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
    // Settled by the same engine the question then runs on.
    let empty = unplaced(&synthetic, &yaml)?;
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

/// `motley-bench replay --jobs J --nodes N`: a history of J jobs (one instance of
/// 500m for 60 s each, one arriving every 2 s) replayed on N fixture machines, as
/// recorded and with a tenth of the nodes lost (`what-if --trace`).
pub fn replay(jobs: usize, n_nodes: usize, fixtures: &std::path::Path) -> anyhow::Result<()> {
    use motley_core::events::{Event, EventKind};
    use motley_scheduler::replay::{arrivals, replay};
    let synthetic = motley_bench::Synthetic::new(fixtures, n_nodes, 0)?;
    let mut yaml = String::new();
    let mut history = Vec::new();
    for i in 0..jobs {
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(&format!(
            "kind: Job\nname: j{i}\ntask:\n  command: [j]\n  resources: {{ cpu: 500m, memory: 64Mi }}\n"
        ));
        let at = 1_000_000 + i as u64 * 2_000;
        let ev = |seq: u64, at: u64, kind: EventKind| Event {
            seq,
            at,
            kind,
            object: format!("job/j{i}"),
            alloc: Some(format!("j{i}-a")),
            node: None,
            message: String::new(),
        };
        let s = i as u64 * 3;
        history.push(ev(s + 1, at, EventKind::Applied));
        history.push(ev(s + 2, at + 1_000, EventKind::Started));
        history.push(ev(s + 3, at + 61_000, EventKind::Exited));
    }
    let state = unplaced(&synthetic, &yaml)?;
    let a = arrivals(&history);
    let lose: Vec<String> = synthetic.nodes.keys().step_by(10).cloned().collect();
    for (what, change) in [
        ("as recorded", Change::default()),
        (
            "a tenth of the nodes lost",
            Change {
                lose: lose.clone(),
                drain: vec![],
            },
        ),
    ] {
        let t = Instant::now();
        let r = replay(&state, &change, &a, &Config::default()).map_err(|e| anyhow::anyhow!(e))?;
        let took = t.elapsed().as_secs_f64();
        let delayed = r
            .workloads
            .iter()
            .filter(|w| w.delay_ms().is_some_and(|d| d > 1_000))
            .count();
        println!(
            "replay of {jobs} jobs on {n_nodes} nodes, {what}: {took:.2} s for {:.0} s of history, {} passes; {delayed} jobs delayed over 1 s",
            r.span_ms as f64 / 1000.0,
            r.passes
        );
        println!(
            "{}",
            serde_json::json!({
                "bench": "whatif-replay",
                "jobs": jobs,
                "nodes": n_nodes,
                "lost": if change.lose.is_empty() { 0 } else { lose.len() },
                "seconds": took,
                "history_seconds": r.span_ms as f64 / 1000.0,
                "passes": r.passes,
                "delayed": delayed,
            })
        );
    }
    Ok(())
}
