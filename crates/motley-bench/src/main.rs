//! `motley-bench`: benchmarks that are programs, not timed tests. Each prints what it
//! measured and, as its last line, one JSON object (for `bench/` scripts and
//! `docs/BENCHMARKS.md`).
//!
//! * `motley-bench discovery [--root DIR] [--runs N]`: the cost of one facts refresh
//!   (what the agent does every 30 s): wall time, allocations and bytes allocated.
//! * `motley-bench calibrate [--runs N]`: the CPU calibration's time and score spread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// Counts allocations so a benchmark can report them.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
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
