//! The discovery text parsers: see `motley_discovery::fuzzing::discovery_text`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    motley_discovery::fuzzing::discovery_text(data);
});
