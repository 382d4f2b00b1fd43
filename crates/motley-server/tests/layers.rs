//! The server's modules form layers: none imports, directly or through others, a module
//! that imports it (docs/ARCHITECTURE.md). Read from the sources: every `crate::x` a
//! module names outside comments and its tests, submodules counted with their parent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn strip(src: &str) -> String {
    let code = match src.find("#[cfg(test)]") {
        Some(i) => &src[..i],
        None => src,
    };
    code.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::name` paths and names inside `use crate::{...}`.
fn named(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            for part in inner[..end].split(',') {
                let part = part.trim();
                let first = part.split_once("::").map_or(part, |(m, _)| m).trim();
                if modules.contains(first) {
                    out.insert(first.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if modules.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

fn read_dir(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    for entry in entries {
        let path = match entry {
            Ok(e) => e.path(),
            Err(e) => panic!("reading {}: {e}", dir.display()),
        };
        if path.is_dir() {
            let Some(parent) = path.file_name().and_then(|n| n.to_str()) else {
                panic!("{}: not a UTF-8 name", path.display())
            };
            for (_, text) in read_dir(&path) {
                files.push((parent.to_string(), text));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                panic!("{}: not a UTF-8 name", path.display())
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push((name.to_string(), text)),
                Err(e) => panic!("reading {}: {e}", path.display()),
            }
        }
    }
    files
}

#[test]
fn server_modules_import_each_other_in_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_dir(&src);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|(m, _)| m.clone())
        .filter(|m| m != "lib")
        .collect();
    assert!(modules.len() > 10, "found only {modules:?}");
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &files {
        if m == "lib" {
            continue;
        }
        let mut named = named(&strip(text), &modules);
        named.remove(m);
        deps.entry(m.clone()).or_default().extend(named);
    }
    assert!(
        deps.get("api").is_some_and(|d| d.contains("state")),
        "the scan sees api's use of state: {deps:?}"
    );
    for start in deps.keys() {
        // Depth-first from `start`, keeping the path to name the circle.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for next in deps.get(&m).into_iter().flatten() {
                let mut p = path.clone();
                p.push(next.clone());
                assert!(next != start, "import circle: {}", p.join(" -> "));
                if seen.insert(next.clone()) {
                    stack.push((next.clone(), p));
                }
            }
        }
    }
}
