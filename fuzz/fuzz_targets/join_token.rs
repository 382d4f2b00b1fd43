//! See `motley_net::fuzzing::join_token`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    motley_net::fuzzing::join_token(data);
});
