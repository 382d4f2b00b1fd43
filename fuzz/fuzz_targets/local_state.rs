//! See `motley_agent::fuzzing::local_state`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    motley_agent::fuzzing::local_state(data);
});
