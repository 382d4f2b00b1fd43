//! The `local_state` fuzz target on stable: its committed corpus replayed through
//! `motley_agent::fuzzing::local_state`, and the body driven with generated input
//! (`motley_core::fuzz_target_tests`).

motley_core::fuzz_target_tests!(local_state, 10, 2_000, motley_agent::fuzzing::local_state);
