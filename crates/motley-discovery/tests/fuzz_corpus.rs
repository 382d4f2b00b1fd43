//! Every committed cargo-fuzz corpus file of the discovery targets, replayed on stable
//! through the targets' own bodies (`motley_discovery::fuzzing`).

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    assert!(
        files.len() > 100,
        "{target}: only {} corpus files",
        files.len()
    );
    files
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

motley_core::fuzz_target_tests!(
    discovery_text,
    100,
    1_000,
    motley_discovery::fuzzing::discovery_text
);

#[test]
fn discovery_tree_corpus() {
    for p in corpus("discovery_tree") {
        let dir = tempfile::tempdir().expect("tempdir");
        motley_discovery::fuzzing::discovery_tree(&read(&p), dir.path());
    }
}
