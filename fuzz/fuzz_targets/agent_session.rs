//! See `motley_server::fuzzing::agent_session`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    motley_server::fuzzing::agent_session(data);
});
