//! Every committed cargo-fuzz corpus file of the core's targets, replayed on stable
//! through the targets' own bodies (`motley_core::fuzzing`): what the fuzzer found
//! and kept is checked on every `cargo test`, with no nightly toolchain.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for e in entries {
        let p = e.expect("corpus entry").path();
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        body(&data);
        n += 1;
    }
    assert!(
        n > 100,
        "{target}: only {n} corpus files in {}",
        dir.display()
    );
}

#[test]
fn agent_msg_corpus() {
    replay("agent_msg", motley_core::fuzzing::agent_msg);
}

#[test]
fn api_request_corpus() {
    replay("api_request", motley_core::fuzzing::api_request);
}

#[test]
fn manifest_corpus() {
    replay("manifest", motley_core::fuzzing::manifest);
}
