//! Reading manifest inputs: files, directories (their *.yaml and *.yml, sorted,
//! not recursive, as kubectl does) and standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use motley_core::api::ManifestFile;

/// Reads every input named by `-f`.
pub fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<ManifestFile>> {
    let mut out = Vec::new();
    for p in paths {
        if p == Path::new("-") {
            let mut content = String::new();
            std::io::stdin()
                .read_to_string(&mut content)
                .context("reading standard input")?;
            out.push(ManifestFile {
                name: "-".into(),
                content,
            });
        } else if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| {
                    e.is_file()
                        && matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            entries.sort();
            anyhow::ensure!(
                !entries.is_empty(),
                "{}: no *.yaml or *.yml files",
                p.display()
            );
            for e in entries {
                out.push(read_file(&e)?);
            }
        } else {
            out.push(read_file(p)?);
        }
    }
    Ok(out)
}

fn read_file(p: &Path) -> anyhow::Result<ManifestFile> {
    let content = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(ManifestFile {
        name: p.display().to_string(),
        content,
    })
}
