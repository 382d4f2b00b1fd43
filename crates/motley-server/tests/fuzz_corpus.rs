//! The `agent_session` fuzz target on stable: its committed corpus replayed through
//! `motley_server::fuzzing::agent_session`, and the body driven with generated input
//! (`motley_core::fuzz_target_tests`).

motley_core::fuzz_target_tests!(
    agent_session,
    100,
    200,
    motley_server::fuzzing::agent_session
);

motley_core::fuzz_target_tests!(http_request, 100, 200, motley_server::fuzzing::http_request);
