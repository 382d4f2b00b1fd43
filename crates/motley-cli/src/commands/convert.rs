//! `convert` and `validate`: manifests read (Compose files and Kubernetes documents
//! translated) and checked without a cluster.

use super::*;

/// `convert -f`: prints what the files become in motley's kinds (a motley file as it
/// is), checked as `validate` checks; warnings on standard error.
pub fn convert(paths: &[PathBuf]) -> anyhow::Result<i32> {
    let mut out = String::new();
    for f in files::read_raw(paths)? {
        let t = files::translate(&f)?;
        let body = if t.format == "motley" {
            f.content.clone()
        } else {
            let mut b = t.native.unwrap_or_default();
            if !b.is_empty() && !b.ends_with('\n') {
                b.push('\n');
            }
            if !b.trim().is_empty() {
                b.push_str("---\n");
            }
            b.push_str(&t.text);
            b
        };
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&format!("# {} ({})\n", f.name, t.format));
        out.push_str(&body);
    }
    print!("{out}");
    Ok(0)
}

/// `validate -f`: checks manifests locally, without a cluster.
pub fn validate(paths: &[PathBuf]) -> anyhow::Result<i32> {
    let files = files::read_all(paths)?;
    match manifest::parse_set(&sources(&files)) {
        Ok(docs) => {
            for d in &docs {
                println!(
                    "{}/{} valid ({}:{})",
                    d.spec.kind(),
                    d.spec.name(),
                    d.file,
                    d.line
                );
            }
            Ok(0)
        }
        Err(errors) => {
            print_manifest_errors(&errors);
            eprintln!("{} error(s); nothing would be applied", errors.len());
            Ok(1)
        }
    }
}
