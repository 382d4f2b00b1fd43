//! Shared by the `motley-bench` binary and its criterion benchmarks: a synthetic
//! heterogeneous cluster built from the fixture machines, and a workload mix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use motley_core::hw::{Hardware, TaintPolicy, Thresholds};
use motley_core::manifest::{Source, parse_set};
use motley_core::model::{Node, NodeFacts, Workload, WorkloadRef};

/// The fixture machines a synthetic cluster is drawn from (`tests/fixtures/hw/...`), with
/// the CPU score each is given.
pub const MACHINES: [(&str, u32); 5] = [
    ("constructed/pi4-undervoltage", 450),
    ("constructed/pi5", 900),
    ("constructed/celeron-emmc", 300),
    ("constructed/x86-nvme-gpu", 2200),
    ("hwloc/raptorlake", 2600),
];

/// Discovers each fixture machine once.
pub fn machines(fixtures: &Path) -> anyhow::Result<Vec<(Hardware, u32)>> {
    let opts = motley_discovery::Options {
        data_dir: Some("/var/lib/motley".into()),
    };
    MACHINES
        .iter()
        .map(|(dir, score)| {
            let root = fixtures.join(dir);
            anyhow::ensure!(
                root.join("proc/cpuinfo").is_file(),
                "no fixture machine at {} (run from the repository root or pass --fixtures)",
                root.display()
            );
            Ok((motley_discovery::discover(&root, &opts), *score))
        })
        .collect()
}

/// `n` nodes drawn from `machines` in turn, as the server would record them: labels and
/// taints derived from facts (default taint policy), capacity from CPUs and memory.
pub fn nodes(machines: &[(Hardware, u32)], n: usize) -> BTreeMap<String, Node> {
    let policy = TaintPolicy::default();
    (0..n)
        .map(|i| {
            let (hw, score) = &machines[i % machines.len()];
            let conditions =
                motley_core::hw::conditions(hw, Some(20), &Thresholds::default(), &[], 0);
            let mut labels = motley_core::hw::labels(hw, Some(*score), "disk");
            labels.insert("rack".into(), format!("r{}", i % 16));
            let name = format!("node-{i:05}");
            let facts = NodeFacts {
                arch: hw.arch.clone(),
                os: "linux".into(),
                cpus: hw.cpu.logical.max(1),
                memory: hw.memory,
                hostname: name.clone(),
                cpu_score: Some(*score),
                hw: Some(Box::new(hw.clone())),
                conditions: conditions.clone(),
                ..Default::default()
            };
            let node = Node {
                name: name.clone(),
                capacity: motley_core::node::capacity(&facts),
                facts,
                labels,
                taints: policy.taints(&conditions),
                cordoned: false,
                draining: false,
                operator_labels: Default::default(),
                registered_at: 0,
            };
            (name, node)
        })
        .collect()
}

/// `count` workloads: services that spread (some over racks, some preferring fast
/// CPUs or NVMe), bin-packed jobs (some only on arm64, some in calibrated work units),
/// and one GPU job. Requests are small so that a million allocations fit.
pub fn workloads(count: usize) -> anyhow::Result<BTreeMap<WorkloadRef, Workload>> {
    let mut out = BTreeMap::new();
    for i in 0..count {
        let cpu = 5 + (i % 4) * 5;
        let mem = 2 + (i % 3) * 2;
        let yaml = match i % 10 {
            0 if i == 0 => format!(
                "kind: Job\nname: w{i}\ncompletions: 100000\nparallelism: 100000\ntask:\n  command: [t]\n  resources: {{ cpu: {cpu}m, memory: {mem}Mi, gpu: {{ vendor: amd }} }}\n"
            ),
            0..=2 => format!(
                "kind: Service\nname: w{i}\nreplicas: 1000\ntask:\n  command: [s]\n  resources: {{ cpu: {cpu}m, memory: {mem}Mi }}\n"
            ),
            3 => format!(
                "kind: Service\nname: w{i}\nreplicas: 1000\nplacement:\n  spread: [{{ key: rack, max_skew: 2 }}]\ntask:\n  command: [s]\n  resources: {{ cpu: {cpu}m, memory: {mem}Mi }}\n"
            ),
            4 => format!(
                "kind: Service\nname: w{i}\nreplicas: 1000\nplacement:\n  prefer: [{{ selector: \"cpu.score > 1000\", weight: 30 }}, {{ selector: \"storage in (nvme, ssd)\", weight: 20 }}]\ntask:\n  command: [s]\n  resources: {{ cpu: {cpu}m, memory: {mem}Mi }}\n"
            ),
            5 => format!(
                "kind: Job\nname: w{i}\ncompletions: 1000\nparallelism: 1000\nplacement:\n  require: arch in (arm64)\ntask:\n  command: [j]\n  resources: {{ cpu: {cpu}m, memory: {mem}Mi }}\n"
            ),
            6 => format!(
                "kind: Job\nname: w{i}\ncompletions: 1000\nparallelism: 1000\ntask:\n  command: [j]\n  resources: {{ cpu_units: {}, memory: {mem}Mi }}\n",
                cpu * 10
            ),
            _ => format!(
                "kind: Job\nname: w{i}\ncompletions: 1000\nparallelism: 1000\ntask:\n  command: [j]\n  resources: {{ cpu: {cpu}m, memory: {mem}Mi }}\n"
            ),
        };
        let docs = parse_set(&[Source {
            name: "bench",
            text: &yaml,
        }])
        .map_err(|e| anyhow::anyhow!("workload {i}: {e:?}"))?;
        for d in docs {
            let r = d.spec.reference();
            out.insert(
                r,
                Workload {
                    spec: d.spec,
                    generation: 1,
                    uid: format!("u{i}"),
                    created_at: i as u64,
                    updated_at: i as u64,
                    binding: None,
                    image_platforms: Vec::new(),
                    history: Vec::new(),
                    rollout: None,
                    source: None,
                    run_of: None,
                },
            );
        }
    }
    Ok(out)
}

/// A synthetic cluster: every node ready, no allocations yet, no readings.
pub struct Synthetic {
    /// The nodes.
    pub nodes: BTreeMap<String, Node>,
    /// All of them.
    pub ready: BTreeSet<String>,
    /// The workloads.
    pub workloads: BTreeMap<WorkloadRef, Workload>,
    /// Empty.
    pub readings: BTreeMap<String, motley_core::hw::Readings>,
}

impl Synthetic {
    /// `n_nodes` nodes from the fixture machines under `fixtures`, `n_workloads` workloads.
    pub fn new(fixtures: &Path, n_nodes: usize, n_workloads: usize) -> anyhow::Result<Synthetic> {
        let nodes = nodes(&machines(fixtures)?, n_nodes);
        Ok(Synthetic {
            ready: nodes.keys().cloned().collect(),
            nodes,
            workloads: workloads(n_workloads)?,
            readings: BTreeMap::new(),
        })
    }

    /// What a scheduling pass starts from.
    pub fn cluster(&self) -> motley_core::reconcile::Cluster<'_> {
        motley_core::reconcile::Cluster {
            nodes: &self.nodes,
            ready: &self.ready,
            workloads: &self.workloads,
            live: Vec::new(),
            readings: &self.readings,
            now: 0,
        }
    }
}
