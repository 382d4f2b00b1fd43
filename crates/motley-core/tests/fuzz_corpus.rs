//! The core's fuzz targets on stable: every committed cargo-fuzz corpus file replayed
//! through the targets' own bodies (`motley_core::fuzzing`), and each body driven with
//! generated input (corpus files mutated as a fuzzer would, and arbitrary bytes): what
//! the fuzzer found and kept is checked on every `cargo test`, with no nightly toolchain.

motley_core::fuzz_target_tests!(agent_msg, 100, 500, motley_core::fuzzing::agent_msg);
motley_core::fuzz_target_tests!(api_request, 100, 500, motley_core::fuzzing::api_request);
motley_core::fuzz_target_tests!(manifest, 100, 500, motley_core::fuzzing::manifest);
