//! The `join_token` fuzz target on stable: its committed corpus replayed through
//! `motley_net::fuzzing::join_token`, and the body driven with generated input
//! (`motley_core::fuzz_target_tests`).

motley_core::fuzz_target_tests!(join_token, 10, 2_000, motley_net::fuzzing::join_token);
