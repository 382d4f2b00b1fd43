//! The body of the cargo-fuzz target `join_token` as a library function (replayed and
//! driven with generated input by `tests/fuzz_corpus.rs` on stable). It panics when a
//! property fails.

/// Join tokens as typed by people (`motley agent --token`): no panic; a token that
/// pins a CA pins exactly the 64 hex digits it carries, lower-cased, and a token made
/// for that pin pins it again.
pub fn join_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Some(pin) = crate::join_token_pin(&text) else {
        return;
    };
    let hex = pin.strip_prefix("sha256:").expect("a pin is sha256:<hex>");
    assert_eq!(hex.len(), 64, "{pin}");
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert!(text.starts_with(crate::JOIN_PREFIX));
    assert_eq!(
        crate::join_token_pin(&crate::join_token(&pin)).as_deref(),
        Some(pin.as_str())
    );
}
