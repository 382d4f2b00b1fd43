//! Manifest parsing: see `motley_core::fuzzing::manifest`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    motley_core::fuzzing::manifest(data);
});
