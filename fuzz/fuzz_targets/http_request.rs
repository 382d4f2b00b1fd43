//! See `motley_server::fuzzing::http_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    motley_server::fuzzing::http_request(data);
});
