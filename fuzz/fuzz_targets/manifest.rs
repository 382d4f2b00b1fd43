//! Manifest parsing on arbitrary text: `parse_set` must not panic, bound its work
//! (alias bombs, deep nesting), name the source in every error, and whatever it accepts
//! must survive what the server and `get` do with it: JSON (the store, `-o json`) and
//! YAML (`-o yaml`, which must apply again unchanged).
#![no_main]

use libfuzzer_sys::fuzz_target;
use motley_core::manifest::{self, ClusterLimits, Source};
use motley_core::model::Spec;

fuzz_target!(|data: &[u8]| {
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
});
