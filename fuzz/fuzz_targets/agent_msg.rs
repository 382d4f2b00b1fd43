//! Agent ⇄ server messages: see `motley_core::fuzzing::agent_msg`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    motley_core::fuzzing::agent_msg(data);
});
