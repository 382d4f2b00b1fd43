//! `motley-sim`: runs seeds and prints what they found.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use motley_sim::run::{FAULTS, Options, run_seed};

/// Run the real server and agent under seeded faults and check the invariants.
#[derive(Parser, Debug)]
#[command(name = "motley-sim")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed (default: from the time, printed). `MOTLEY_SIM_SEED` runs that one
    /// seed alone.
    #[arg(long)]
    start: Option<u64>,
    /// Output: `text` or `json` (one object).
    #[arg(short = 'o', long, default_value = "text")]
    output: String,
    /// Virtual seconds of faults per seed.
    #[arg(long, default_value_t = 40)]
    fault_secs: u64,
    /// Plant a named bug (needs a build with `--features mutants`).
    #[arg(long)]
    mutant: Option<String>,
    /// Name the mutants and exit.
    #[arg(long)]
    list_mutants: bool,
    /// Keep agent pauses under 4 s, shorter than the lease (the default lets them
    /// outlast it; replays seeds found before the fence guard, docs/simulation.md).
    #[arg(long)]
    short_agent_pauses: bool,
    /// Stop at the first seed with a violation.
    #[arg(long)]
    fail_fast: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list_mutants {
        for (name, what) in motley_core::mutants::ALL {
            println!("{name}\t{what}");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(m) = &args.mutant {
        if !motley_core::mutants::ALL.iter().any(|(n, _)| n == m) {
            eprintln!("motley-sim: no mutant {m:?} (see --list-mutants)");
            return ExitCode::from(2);
        }
        #[cfg(feature = "mutants")]
        motley_core::mutants::set(m);
        #[cfg(not(feature = "mutants"))]
        {
            eprintln!("motley-sim: --mutant needs a build with --features mutants");
            return ExitCode::from(2);
        }
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let (start, seeds) = match std::env::var("MOTLEY_SIM_SEED") {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(seed) => (seed, 1),
            Err(e) => {
                eprintln!("motley-sim: MOTLEY_SIM_SEED={s:?}: {e}");
                return ExitCode::from(2);
            }
        },
        Err(_) => (
            args.start.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            }),
            args.seeds,
        ),
    };
    let json = args.output == "json";
    if !json {
        println!("seeds {start} … {}", start + seeds.saturating_sub(1));
    }
    let opts = Options {
        faults_for: std::time::Duration::from_secs(args.fault_secs),
        long_agent_pauses: !args.short_agent_pauses,
        ..Options::default()
    };
    let began = Instant::now();
    let mut failing: Vec<(u64, Vec<String>)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let (mut steps, mut sim_ms, mut acked, mut ran) = (0u64, 0u64, 0u64, 0u64);
    let mut secrets = 0u64;
    let mut cut_keys = 0u64;
    let mut periodic_runs = 0u64;
    let (mut paced_seeds, mut paces_told) = (0u64, 0u64);
    // Every seed's fingerprint, combined in seed order: equal for two runs of one range.
    let mut fingerprint = 0u64;
    let mut faults: BTreeMap<&str, u64> = FAULTS.iter().map(|f| (*f, 0)).collect();
    for seed in start..start.saturating_add(seeds) {
        match run_seed(seed, &opts) {
            Ok(r) => {
                ran += 1;
                steps += r.steps;
                sim_ms += r.sim_ms;
                acked += r.applies_acked;
                secrets += r.secrets_checked;
                cut_keys += r.cut_keys;
                periodic_runs += r.periodic_runs;
                paced_seeds += u64::from(r.paced);
                paces_told += r.paces_told;
                fingerprint = fingerprint.rotate_left(5) ^ r.fingerprint;
                for (k, v) in &r.faults {
                    *faults.entry(k).or_default() += v;
                }
                if !r.violations.is_empty() {
                    if !json {
                        println!("seed {seed}: {} violation(s)", r.violations.len());
                        for v in &r.violations {
                            println!("  {v}");
                        }
                        println!(
                            "  replay: MOTLEY_SIM_SEED={seed} cargo run --release -p motley-sim{}",
                            args.mutant
                                .as_ref()
                                .map(|m| format!(" --features mutants -- --mutant {m}"))
                                .unwrap_or_default()
                        );
                    }
                    failing.push((seed, r.violations));
                    if args.fail_fast {
                        break;
                    }
                }
            }
            Err(e) => errors.push(format!("seed {seed}: {e:#}")),
        }
    }
    let wall = began.elapsed().as_secs_f64();
    let violations: usize = failing.iter().map(|(_, v)| v.len()).sum();
    if json {
        let out = serde_json::json!({
            "start": start,
            "seeds": ran,
            "violations": violations,
            "failing_seeds": failing.iter().map(|(s, v)| serde_json::json!({"seed": s, "violations": v})).collect::<Vec<_>>(),
            "errors": errors,
            "steps": steps,
            "faults": faults,
            "applies_acknowledged": acked,
            "secret_deliveries_checked": secrets,
            "keys_taken_by_power_cuts": cut_keys,
            "periodic_runs_checked": periodic_runs,
            "paced_seeds": paced_seeds,
            "paces_told": paces_told,
            "simulated_seconds": sim_ms as f64 / 1000.0,
            "wall_seconds": wall,
            "mutant": args.mutant,
            "fingerprint": format!("{fingerprint:016x}"),
        });
        println!("{out}");
    } else {
        for e in &errors {
            println!("{e}");
        }
        println!(
            "{ran} seeds, {violations} violations in {} seeds, {} errors, {steps} steps, {:.0} simulated s in {wall:.1} wall s ({:.0}×)",
            failing.len(),
            errors.len(),
            sim_ms as f64 / 1000.0,
            sim_ms as f64 / 1000.0 / wall.max(1e-9)
        );
        println!("records taken back by power cuts of the store: {cut_keys}");
        println!("runs of periodic jobs, each the only one for its due time: {periodic_runs}");
        println!("seeds whose agents were paced: {paced_seeds}, new paces told: {paces_told}");
        println!(
            "faults: {}",
            faults
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if violations > 0 || !errors.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
