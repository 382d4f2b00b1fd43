//! See `motley_store::fuzzing::snapshot`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    motley_store::fuzzing::snapshot(data);
});
