//! Links the `motley` binary as a position-dependent executable (`-no-pie`) on Linux:
//! see docs/decisions.md, "The binary is linked without PIE". A PIE binary's loader
//! patches about 47,000 pointers at every start, copying the 0.8 MB of relocated data
//! into private memory of every motley process (agent, server, each CLI call) and
//! costing each `motley` invocation about 200 page faults.
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let pie = std::env::var("MOTLEY_PIE").is_ok_and(|v| v == "1");
    println!("cargo:rerun-if-env-changed=MOTLEY_PIE");
    if os == "linux" && !pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
