//! A few seeds of the simulator under `cargo test` (CI runs 1,000 more in release):
//! the real server and agents under faults, with every invariant checked.

use motley_sim::run::{Options, run_seed};

#[test]
fn ten_seeds_hold_every_invariant_and_inject_faults() {
    let opts = Options::default();
    let mut faults = 0;
    let mut acked = 0;
    for seed in 1..=10 {
        let r = match run_seed(seed, &opts) {
            Ok(r) => r,
            Err(e) => panic!("seed {seed} could not run: {e:#}"),
        };
        assert!(
            r.violations.is_empty(),
            "seed {seed}: {:?} (replay: MOTLEY_SIM_SEED={seed} cargo run --release -p motley-sim)",
            r.violations
        );
        assert!(r.steps > 300, "seed {seed} ran {} steps", r.steps);
        faults += r.faults.values().sum::<u64>();
        acked += r.applies_acked;
    }
    // Not vacuous: faults were injected and applies acknowledged.
    assert!(faults > 20, "{faults} faults in ten seeds");
    assert!(acked > 20, "{acked} acknowledged applies in ten seeds");
}
