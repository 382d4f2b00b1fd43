//! Reading manifest inputs: files, directories (their *.yaml and *.yml, sorted,
//! not recursive, as kubectl does) and standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use motley_core::api::ManifestFile;

/// Reads every input named by `-f`, Compose files and Kubernetes documents translated
/// into motley's kinds (their warnings on standard error; a refusal is an error).
pub fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<ManifestFile>> {
    let mut out = Vec::new();
    for f in read_raw(paths)? {
        let t = translate(&f)?;
        if t.format == "motley" {
            out.push(f);
            continue;
        }
        if let Some(native) = t.native {
            out.push(ManifestFile {
                name: f.name.clone(),
                content: native,
            });
        }
        out.push(ManifestFile {
            name: converted_name(&f.name),
            content: t.text,
        });
    }
    Ok(out)
}

/// The name of a file's translation: beside it, so that `fromFile` paths are read from
/// its directory.
pub fn converted_name(name: &str) -> String {
    format!("{name} (converted)")
}

/// Every refusal of a translation, one per line.
#[derive(Debug)]
pub struct Refused(pub Vec<motley_core::manifest::ManifestError>);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        write!(f, "{} error(s); nothing was translated", self.0.len())
    }
}

impl std::error::Error for Refused {}

/// Reads files at translation time: relative to the translated file's directory.
struct Near {
    dir: PathBuf,
}

impl motley_core::convert::Reader for Near {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.dir.join(path)).map_err(|e| format!("cannot read it: {e}"))
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn absolute(&self, path: &str) -> Option<String> {
        let p = match path.strip_prefix("~/") {
            Some(rest) => PathBuf::from(std::env::var_os("HOME")?).join(rest),
            None => self.dir.join(path),
        };
        // Lexically: the path is on the node, not necessarily here.
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        out.is_absolute().then(|| out.display().to_string())
    }
}

/// A file translated (`motley convert`'s work), its warnings said on standard error,
/// or its refusals.
pub fn translate(f: &ManifestFile) -> anyhow::Result<motley_core::convert::Translation> {
    let dir = if f.name == "-" {
        std::env::current_dir().context("the current directory")?
    } else {
        let p = Path::new(&f.name);
        let parent = p.parent().unwrap_or(Path::new(""));
        if parent.is_absolute() {
            parent.to_path_buf()
        } else {
            std::env::current_dir()
                .context("the current directory")?
                .join(parent)
        }
    };
    let t = motley_core::convert::translate(&f.name, &f.content, &Near { dir })
        .map_err(|e| anyhow::Error::new(Refused(e)))?;
    for w in &t.warnings {
        eprintln!("warning: {w}");
    }
    Ok(t)
}

/// Reads every input named by `-f`, as written.
pub fn read_raw(paths: &[PathBuf]) -> anyhow::Result<Vec<ManifestFile>> {
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

/// Reads every `fromFile` and `fromEnv` value the set's Secrets and Configs name, at apply time: a
/// relative file is relative to its manifest's directory (standard input: the current
/// one). Errors name the manifest, line, column and field.
pub fn secret_inputs(
    docs: &[motley_core::manifest::Document],
) -> Result<Vec<motley_core::api::SecretInput>, Vec<motley_core::manifest::ManifestError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (source, from, name, mut at) in motley_core::manifest::secret_inputs(docs) {
        let value = if from == "file" {
            let path = Path::new(&name);
            let path = if path.is_relative() && source != "-" {
                Path::new(&source)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(path)
            } else {
                path.to_path_buf()
            };
            std::fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|b| {
                    String::from_utf8(b).map_err(|_| {
                        format!(
                            "{} is not UTF-8 text: secrets and configs hold text (base64-encode binary files)",
                            path.display()
                        )
                    })
                })
        } else {
            std::env::var(&name).map_err(|_| format!("environment variable {name} is not set"))
        };
        match value {
            Ok(value) => out.push(motley_core::api::SecretInput {
                source,
                from: from.to_string(),
                name,
                value,
            }),
            Err(m) => {
                at.message = m;
                errors.push(at);
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn read_file(p: &Path) -> anyhow::Result<ManifestFile> {
    let content = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(ManifestFile {
        name: p.display().to_string(),
        content,
    })
}
