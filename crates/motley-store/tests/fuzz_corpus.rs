//! The `snapshot` fuzz target on stable: its committed corpus replayed through
//! `motley_store::fuzzing::snapshot`, and the body driven with generated input
//! (`motley_core::fuzz_target_tests`).

motley_core::fuzz_target_tests!(snapshot, 10, 2_000, motley_store::fuzzing::snapshot);
