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

/// Every file of a committed corpus directory, read whole; fails (panics) when the
/// directory cannot be read or holds fewer than `min` files, so a moved corpus cannot
/// make the replay pass vacuously.
pub fn corpus(dir: &std::path::Path, min: usize) -> Vec<Vec<u8>> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<(std::path::PathBuf, Vec<u8>)> = entries
        .map(|e| {
            let p = e.expect("corpus entry").path();
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= min,
        "only {} corpus files in {}",
        files.len(),
        dir.display()
    );
    files.into_iter().map(|(_, d)| d).collect()
}

/// A corpus input changed by `edits`, as a fuzzer mutates: each `(at, op, byte)`
/// overwrites (op 0), inserts (1), removes (2) or truncates (3) at `at` (modulo the
/// length). For property tests that drive the targets on stable from the corpus.
pub fn mutate(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for &(at, op, byte) in edits {
        let i = if d.is_empty() { 0 } else { at % d.len() };
        match op % 4 {
            0 if !d.is_empty() => d[i] = byte,
            1 => d.insert(i, byte),
            2 if !d.is_empty() => {
                d.remove(i);
            }
            3 => d.truncate(i),
            _ => d.push(byte),
        }
    }
    d
}

/// The stable tests of one fuzz target, in the calling crate's `tests/`: every corpus
/// file of `fuzz/corpus/<target>` (at least `min`) replayed through `body`, and `body`
/// driven by proptest with corpus files mutated as a fuzzer would and with arbitrary
/// bytes (`cases` each: the bound on its time). The calling crate needs `proptest` as a
/// dev-dependency.
#[macro_export]
macro_rules! fuzz_target_tests {
    ($target:ident, $min:expr, $cases:expr, $body:path) => {
        mod $target {
            use proptest::prelude::*;

            fn corpus() -> Vec<Vec<u8>> {
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../fuzz/corpus")
                    .join(stringify!($target));
                $crate::fuzzing::corpus(&dir, $min)
            }

            #[test]
            fn corpus_replays() {
                for data in corpus() {
                    $body(&data);
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig {
                    cases: $cases,
                    failure_persistence: None,
                    ..ProptestConfig::default()
                })]

                #[test]
                fn mutated_corpus(
                    pick in any::<usize>(),
                    edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..12),
                ) {
                    let files = corpus();
                    let seed = &files[pick % files.len()];
                    $body(&$crate::fuzzing::mutate(seed, &edits));
                }

                #[test]
                fn arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
                    $body(&data);
                }
            }
        }
    };
}
