//! Whole hardware trees: see `motley_discovery::fuzzing::discovery_tree`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    motley_discovery::fuzzing::discovery_tree(data, dir.path());
});
