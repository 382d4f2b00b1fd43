//! The agent protocol on arbitrary frames: the server decodes agent messages and the
//! agent decodes server messages from text frames. Nothing may panic; whatever decodes
//! encodes and decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use motley_core::proto::{AgentMsg, ServerMsg};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = serde_json::from_str::<AgentMsg>(text) {
        let json = serde_json::to_string(&m).expect("encodes");
        let back: AgentMsg = serde_json::from_str(&json).expect("decodes again");
        assert_eq!(back, m);
    }
    if let Ok(m) = serde_json::from_str::<ServerMsg>(text) {
        // Debug never shows secret values (it may be logged).
        if let ServerMsg::Upsert {
            secrets: Some(d), ..
        } = &m
        {
            // The same delivery with every value blanked prints the same.
            let mut blank = d.clone();
            blank.env.values_mut().for_each(String::clear);
            blank.files.values_mut().for_each(String::clear);
            assert_eq!(format!("{d:?}"), format!("{blank:?}"), "Debug shows a secret value");
        }
        let json = serde_json::to_string(&m).expect("encodes");
        let back: ServerMsg = serde_json::from_str(&json).expect("decodes again");
        assert_eq!(back, m);
    }
});
