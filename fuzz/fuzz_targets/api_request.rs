//! API request bodies: see `motley_core::fuzzing::api_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    motley_core::fuzzing::api_request(data);
});
