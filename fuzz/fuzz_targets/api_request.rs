//! API request decoding as the server does it: JSON bodies of apply/plan/delete, token
//! and join requests (strict: unknown fields refused), then the manifests and secret
//! inputs inside an apply. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use motley_core::api::{JoinRequest, ManifestSet, TokenRequest};
use motley_core::manifest;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<TokenRequest>(data);
    let _ = serde_json::from_slice::<JoinRequest>(data);
    let Ok(set) = serde_json::from_slice::<ManifestSet>(data) else {
        return;
    };
    if let Ok(docs) = manifest::parse_set(&set.sources()) {
        for (source, from, name, at) in manifest::secret_inputs(&docs) {
            assert!(from == "file" || from == "env");
            assert!(!name.is_empty() || from == "file");
            assert_eq!(at.file, source);
        }
    }
    // What the server would send back is always JSON again.
    let again = serde_json::to_vec(&set).expect("serializes");
    let back: ManifestSet = serde_json::from_slice(&again).expect("reads back");
    assert_eq!(back.files.len(), set.files.len());
});
