//! The body of the cargo-fuzz target `local_state` as a library function (replayed and
//! driven with generated input by `tests/fuzz_corpus.rs` on stable). It panics when a
//! property fails.

use crate::local::StateFile;

/// The agent's `state.json` on arbitrary bytes (a file cut by a power loss, edited by
/// hand, or from another version): no panic; what decodes encodes and decodes to the
/// same.
pub fn local_state(data: &[u8]) {
    let Ok(state) = StateFile::decode(data) else {
        return;
    };
    let bytes = match StateFile::encode(&state) {
        Ok(b) => b,
        Err(e) => panic!("a decoded state does not encode: {e}"),
    };
    match StateFile::decode(&bytes) {
        Ok(back) => assert_eq!(back, state, "the state changed through encode and decode"),
        Err(e) => panic!("an encoded state does not decode: {e}"),
    }
}
