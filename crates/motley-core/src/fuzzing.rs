//! The bodies of the cargo-fuzz targets in `fuzz/` as library functions, so that stable
//! `cargo test` replays every committed corpus file through them
//! (`tests/fuzz_corpus.rs`) and the nightly fuzzer runs the very same checks. Each
//! panics when a property fails.

use crate::api::{JoinRequest, ManifestSet, TokenRequest};
use crate::manifest::{self, ClusterLimits, Source};
use crate::model::Spec;
use crate::proto::{AgentMsg, ServerMsg};

/// Agent ⇄ server messages: what decodes encodes and decodes to the same; a server
/// message's `Debug` never shows a secret value (it may be logged).
pub fn agent_msg(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = serde_json::from_str::<AgentMsg>(text) {
        let json = serde_json::to_string(&m).expect("encodes");
        let back: AgentMsg = serde_json::from_str(&json).expect("decodes again");
        assert_eq!(back, m);
    }
    if let Ok(m) = serde_json::from_str::<ServerMsg>(text) {
        if let ServerMsg::Upsert {
            secrets: Some(d), ..
        } = &m
        {
            // The same delivery with every value blanked prints the same.
            let mut blank = d.clone();
            blank.env.values_mut().for_each(String::clear);
            blank.files.values_mut().for_each(String::clear);
            assert_eq!(
                format!("{d:?}"),
                format!("{blank:?}"),
                "Debug shows a secret value"
            );
        }
        let json = serde_json::to_string(&m).expect("encodes");
        let back: ServerMsg = serde_json::from_str(&json).expect("decodes again");
        assert_eq!(back, m);
    }
}

/// API request bodies: token, join and manifest-set requests; secret inputs of a set
/// name their source; a set is always JSON again.
pub fn api_request(data: &[u8]) {
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
    let again = serde_json::to_vec(&set).expect("serializes");
    let back: ManifestSet = serde_json::from_slice(&again).expect("reads back");
    assert_eq!(back.files.len(), set.files.len());
}

/// Manifest parsing on arbitrary text: no panic, bounded work (alias bombs, deep
/// nesting), the source named in every error, and whatever is accepted survives JSON
/// (the store, `-o json`) and YAML (`-o yaml`, which must apply again unchanged).
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let src = [Source {
        name: "fuzz.yaml",
        text: &text,
    }];
    let docs = match manifest::parse_set(&src) {
        Ok(d) => d,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                assert_eq!(e.file, "fuzz.yaml");
                assert!(!e.message.is_empty());
            }
            return;
        }
    };
    let _ = manifest::check_against_cluster(
        &docs,
        &ClusterLimits {
            max_cpu: 4000,
            max_memory: 4 << 30,
        },
    );
    let _ = manifest::secret_inputs(&docs);
    for d in &docs {
        let json = serde_json::to_vec(&d.spec).expect("a spec serializes");
        let back: Spec = serde_json::from_slice(&json).expect("its JSON reads back");
        assert_eq!(back, d.spec, "JSON round trip");
        let yaml = serde_saphyr::to_string(&d.spec).expect("a spec prints as YAML");
        let again = manifest::parse_set(&[Source {
            name: "again.yaml",
            text: &yaml,
        }])
        .unwrap_or_else(|e| panic!("printed YAML does not apply again: {e:?}\n{yaml}"));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].spec, d.spec, "YAML round trip:\n{yaml}");
    }
}
