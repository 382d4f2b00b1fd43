//! `motley-bench`: benchmarks that are programs, not timed tests. Each prints what it
//! measured and, as its last line, one JSON object (for `bench/` scripts and
//! `docs/BENCHMARKS.md`).
//!
//! * `motley-bench discovery [--root DIR] [--runs N]`: the cost of one facts refresh
//!   (what the agent does every 30 s): wall time, allocations and bytes allocated.
//! * `motley-bench calibrate [--runs N]`: the CPU calibration's time and score spread.
//! * `motley-bench store --datastore etcd://… | --dir DIR [--writes N]`: the latency
//!   of one compare-and-set write (what an apply of one object costs the store).
//! * `motley-bench scheduler --nodes N --allocations M --seed S`: placements per second
//!   on one thread over N heterogeneous nodes (drawn from the fixture machines) and
//!   1,000 workloads, with the p99 of one placement and peak heap memory.
//! * `motley-bench whatif --nodes N --services M`: `what-if --each-node` over N nodes.
//! * `motley-bench replay --jobs J --nodes N`: `what-if --trace` of J jobs on N nodes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod whatif;

/// Counts allocations so a benchmark can report them.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        let live = LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed) + layout.size() as u64;
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        let live = LIVE.fetch_add(new_size as u64, Ordering::Relaxed) + new_size as u64;
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Parser)]
#[command(name = "motley-bench", about = "motley's benchmarks")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Cost of one hardware facts refresh.
    Discovery {
        /// Filesystem root (a captured tree, or / for this machine).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Refreshes to time.
        #[arg(long, default_value_t = 200)]
        runs: u32,
    },
    /// CPU calibration: time and score over repeated runs.
    Calibrate {
        /// Runs.
        #[arg(long, default_value_t = 10)]
        runs: u32,
    },
    /// Store write latency: N compare-and-set writes of a 1 KiB object, one at a time.
    Store {
        /// etcd://h:2379,… (default: an embedded store in --dir).
        #[arg(long)]
        datastore: Option<String>,
        /// Directory for the embedded store.
        #[arg(long, default_value = "/tmp/motley-bench-store")]
        dir: PathBuf,
        /// Writes.
        #[arg(long, default_value_t = 500)]
        writes: u32,
    },
    /// API apply latency: N applies of distinct small objects (volumes), one at a time,
    /// through the CLI's client (so through whichever server `--config` lists first).
    Apply {
        /// A client config (`client.yaml`).
        #[arg(long)]
        config: PathBuf,
        /// Applies.
        #[arg(long, default_value_t = 200)]
        count: u32,
        /// Prefix of the objects' names (use a new one per run).
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
    /// `what-if --each-node`: every node's loss, one at a time, over N nodes.
    Whatif {
        /// Nodes (drawn in turn from the fixture machines).
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Services of 3 replicas (plus one daemon on every node).
        #[arg(long, default_value_t = 300)]
        services: usize,
        /// The fixture machines (`tests/fixtures/hw` of the repository).
        #[arg(long, default_value = "tests/fixtures/hw")]
        fixtures: PathBuf,
    },
    /// `what-if --trace`: a history of J jobs replayed on N nodes, as recorded and
    /// with a tenth of the nodes lost.
    Replay {
        /// Jobs in the history (one arriving every 2 s, each running 60 s).
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        /// Nodes (drawn in turn from the fixture machines).
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// The fixture machines (`tests/fixtures/hw` of the repository).
        #[arg(long, default_value = "tests/fixtures/hw")]
        fixtures: PathBuf,
    },
    /// Scheduler throughput: M placements over N nodes and 1,000 workloads, one thread.
    Scheduler {
        /// Nodes (drawn in turn from the fixture machines).
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Allocations to place.
        #[arg(long, default_value_t = 1_000_000)]
        allocations: usize,
        /// Tie-breaking seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Workloads the allocations are spread over.
        #[arg(long, default_value_t = 1000)]
        workloads: usize,
        /// The fixture machines (`tests/fixtures/hw` of the repository).
        #[arg(long, default_value = "tests/fixtures/hw")]
        fixtures: PathBuf,
        /// Percentage of feasible nodes to score (default: adaptive).
        #[arg(long)]
        percentage: Option<u32>,
    },
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Discovery { root, runs } => {
            let opts = motley_discovery::Options {
                data_dir: Some(if root == std::path::Path::new("/") {
                    std::env::current_dir()?.to_string_lossy().into_owned()
                } else {
                    "/var/lib/motley".into()
                }),
            };
            // Warm the page cache and the allocator once.
            let first = motley_discovery::discover(&root, &opts);
            let mut times = Vec::new();
            let (a0, b0) = (
                ALLOCS.load(Ordering::Relaxed),
                BYTES.load(Ordering::Relaxed),
            );
            let mut prev = first;
            for i in 0..runs.max(1) {
                let t = Instant::now();
                let hw = motley_discovery::discover(&root, &opts);
                let c = motley_core::hw::conditions(&hw, Some(50), &Default::default(), &[], 0);
                let (stable, readings) = hw.split(Some((&prev, i as u64)), i as u64 + 1, None);
                std::hint::black_box((&c, &stable, &readings));
                times.push(t.elapsed().as_secs_f64() * 1e6);
                prev = hw;
            }
            let n = runs.max(1) as u64;
            let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) / n;
            let bytes = (BYTES.load(Ordering::Relaxed) - b0) / n;
            times.sort_by(f64::total_cmp);
            let (median, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
            println!(
                "discovery of {}: {runs} refreshes, median {median:.0} µs, p99 {p99:.0} µs, {allocs} allocations ({bytes} bytes) per refresh",
                root.display()
            );
            println!(
                "{}",
                serde_json::json!({
                    "bench": "discovery",
                    "root": root.display().to_string(),
                    "runs": runs,
                    "median_us": median.round(),
                    "p99_us": p99.round(),
                    "min_us": times.first().copied().unwrap_or(0.0).round(),
                    "max_us": times.last().copied().unwrap_or(0.0).round(),
                    "allocations_per_refresh": allocs,
                    "bytes_allocated_per_refresh": bytes,
                })
            );
        }
        Bench::Scheduler {
            nodes,
            allocations,
            seed,
            workloads,
            fixtures,
            percentage,
        } => scheduler(
            nodes,
            allocations,
            seed,
            workloads.max(1),
            &fixtures,
            percentage,
        )?,
        Bench::Whatif {
            nodes,
            services,
            fixtures,
        } => whatif::run(nodes, services, &fixtures)?,
        Bench::Replay {
            jobs,
            nodes,
            fixtures,
        } => whatif::replay(jobs, nodes, &fixtures)?,
        Bench::Store {
            datastore,
            dir,
            writes,
        } => store(datastore.as_deref(), &dir, writes)?,
        Bench::Apply {
            config,
            count,
            prefix,
        } => apply(&config, count, &prefix)?,
        Bench::Calibrate { runs } => {
            let mut scores = Vec::new();
            let mut took = Vec::new();
            for _ in 0..runs.max(1) {
                let (s, t): (u32, Duration) = motley_agent::calibrate::measure();
                scores.push(s as f64);
                took.push(t.as_secs_f64() * 1000.0);
            }
            scores.sort_by(f64::total_cmp);
            took.sort_by(f64::total_cmp);
            let median = percentile(&scores, 0.5);
            let (lo, hi) = (scores[0], scores[scores.len() - 1]);
            let spread = if median > 0.0 {
                (hi - lo) / median * 100.0
            } else {
                0.0
            };
            println!(
                "calibration: {runs} runs, score median {median:.0} (min {lo:.0}, max {hi:.0}, spread {spread:.1} %), time median {:.1} ms, max {:.1} ms",
                percentile(&took, 0.5),
                took[took.len() - 1]
            );
            println!(
                "{}",
                serde_json::json!({
                    "bench": "calibrate",
                    "runs": runs,
                    "score_median": median,
                    "score_min": lo,
                    "score_max": hi,
                    "spread_pct": (spread * 10.0).round() / 10.0,
                    "time_median_ms": (percentile(&took, 0.5) * 10.0).round() / 10.0,
                    "time_max_ms": (took[took.len() - 1] * 10.0).round() / 10.0,
                })
            );
        }
    }
    Ok(())
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn scheduler(
    n_nodes: usize,
    allocations: usize,
    seed: u64,
    n_workloads: usize,
    fixtures: &std::path::Path,
    percentage: Option<u32>,
) -> anyhow::Result<()> {
    use motley_core::reconcile::{Placer, Request};
    let t = Instant::now();
    let synthetic = motley_bench::Synthetic::new(fixtures, n_nodes, n_workloads)?;
    let list: Vec<(
        &motley_core::model::WorkloadRef,
        &motley_core::model::Workload,
    )> = synthetic.workloads.iter().collect();
    let setup_s = t.elapsed().as_secs_f64();
    let mut sched = motley_scheduler::Scheduler::new(motley_scheduler::Config {
        seed,
        percentage,
        ..Default::default()
    });
    let t = Instant::now();
    sched.begin(synthetic.cluster());
    let begin_s = t.elapsed().as_secs_f64();
    let mut lat: Vec<u32> = Vec::with_capacity(allocations);
    let mut placed = 0u64;
    let mut unplaced = 0u64;
    let mut per_node = vec![0u32; n_nodes];
    let start = Instant::now();
    for k in 0..allocations {
        let (r, w) = list[k % list.len()];
        let req = Request::new(w, r, (k / list.len()) as u32, 0);
        let t = Instant::now();
        let res = sched.place(&req);
        lat.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        match res {
            Ok(p) => {
                placed += 1;
                std::hint::black_box(p);
            }
            Err(_) => unplaced += 1,
        }
    }
    let total_s = start.elapsed().as_secs_f64();
    for n in sched.nodes() {
        let i = n.node.name[5..].parse::<usize>().unwrap_or(0);
        if let Some(c) = per_node.get_mut(i) {
            *c = n.allocs.len() as u32;
        }
    }
    lat.sort_unstable();
    let p = |q: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    let per_sec = allocations as f64 / total_s;
    let busiest = per_node.iter().max().copied().unwrap_or(0);
    let peak = PEAK.load(Ordering::Relaxed);
    println!(
        "scheduler: {allocations} placements ({placed} placed, {unplaced} refused) on {n_nodes} nodes and {} workloads in {total_s:.2} s: {per_sec:.0}/s, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; begin {begin_s:.3} s, setup {setup_s:.2} s; busiest node {busiest} allocations; peak heap {} MiB, peak RSS {} MiB",
        list.len(),
        p(0.5) as f64 / 1000.0,
        p(0.99) as f64 / 1000.0,
        p(1.0) as f64 / 1000.0,
        peak >> 20,
        vm_hwm_kib() >> 10,
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "scheduler",
            "nodes": n_nodes,
            "allocations": allocations,
            "workloads": list.len(),
            "seed": seed,
            "placed": placed,
            "refused": unplaced,
            "seconds": (total_s * 1000.0).round() / 1000.0,
            "placements_per_sec": per_sec.round(),
            "p50_placement_us": (p(0.5) as f64 / 100.0).round() / 10.0,
            "p99_placement_us": (p(0.99) as f64 / 100.0).round() / 10.0,
            "max_placement_us": (p(1.0) as f64 / 100.0).round() / 10.0,
            "peak_heap_mib": peak >> 20,
            "peak_rss_mib": vm_hwm_kib() >> 10,
        })
    );
    Ok(())
}

fn store(datastore: Option<&str>, dir: &std::path::Path, writes: u32) -> anyhow::Result<()> {
    use motley_store::{Store, Txn};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (store, what): (Box<dyn Store>, String) = match datastore {
            Some(url) => (
                Box::new(motley_store::etcd::Etcd::connect(url, Default::default()).await?),
                url.to_string(),
            ),
            None => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join("bench.redb");
                (
                    Box::new(motley_store::embedded::Embedded::open(&path)?),
                    path.display().to_string(),
                )
            }
        };
        let value = vec![b'x'; 1024];
        let mut rev = store.get("/bench/obj").await?.map_or(0, |k| k.mod_revision);
        let mut lat = Vec::with_capacity(writes as usize);
        for _ in 0..writes.max(1) {
            let t = Instant::now();
            let r = store
                .txn(Txn::new().when("/bench/obj", rev).put("/bench/obj", value.clone()))
                .await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(r.succeeded, "the compare failed: another writer?");
            rev = r.revision;
        }
        lat.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        println!(
            "store {what}: {writes} compare-and-set writes of 1 KiB, median {p50:.2} ms, p99 {p99:.2} ms"
        );
        println!(
            "{}",
            serde_json::json!({
                "bench": "store",
                "datastore": what,
                "writes": writes,
                "median_ms": (p50 * 100.0).round() / 100.0,
                "p99_ms": (p99 * 100.0).round() / 100.0,
            })
        );
        Ok(())
    })
}

fn apply(config: &std::path::Path, count: u32, prefix: &str) -> anyhow::Result<()> {
    use motley_core::api::{ManifestFile, ManifestSet, ObjectResults};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cfg = motley_net::ClientConfig::load(config)?;
    let server = cfg.servers.first().cloned().unwrap_or_default();
    let client = motley_cli::client::Client::new(&cfg)?;
    let mut lat = Vec::with_capacity(count as usize);
    rt.block_on(async {
        for i in 0..count.max(1) {
            let name = format!("{prefix}-{i}");
            let set = ManifestSet {
                inputs: Vec::new(),
                files: vec![ManifestFile {
                    name: format!("{name}.yaml"),
                    content: format!("kind: Volume\nname: {name}\nsize: 1Mi\n"),
                }],
                dry_run: false,
            };
            let t = Instant::now();
            let _: ObjectResults = client.post("/v1/apply", &set).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        anyhow::Ok(())
    })?;
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!("apply via {server}: {count} applies, median {p50:.2} ms, p99 {p99:.2} ms");
    println!(
        "{}",
        serde_json::json!({
            "bench": "apply",
            "server": server,
            "applies": count,
            "median_ms": (p50 * 100.0).round() / 100.0,
            "p99_ms": (p99 * 100.0).round() / 100.0,
        })
    );
    Ok(())
}
