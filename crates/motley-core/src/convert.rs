//! Bringing apps as they are: `docker-compose.yml` files ([`compose`]) and Kubernetes
//! manifests ([`kube`]) translated into motley's own kinds.
//!
//! A pure function of the text and what the client can read at convert time (env
//! files, its environment): [`translate`] returns the motley objects, a warning for
//! every key kept only in part, and an error for every key refused, each at its file,
//! line and column; nothing is dropped without one of the two. `motley convert` prints
//! the result; `motley apply` (and `plan`, `validate`, `what-if`) apply it, so what
//! `convert` prints re-applies to the same objects.
//!
//! Invariant: every object returned passes [`crate::manifest::parse_set`] (the
//! translation is checked by printing it and parsing it back).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::manifest::{ManifestError, SpanNode, SpanValue};
use crate::model::Spec;

#[path = "convert_compose.rs"]
pub mod compose;
#[path = "convert_kube.rs"]
pub mod kube;

/// What a translation may read besides the text: files named by it (relative to its
/// directory) and the client's environment.
pub trait Reader {
    /// The text of `path` (relative to the translated file's directory, or absolute).
    fn read(&self, path: &str) -> Result<String, String>;
    /// An environment variable of the client.
    fn env(&self, name: &str) -> Option<String>;
    /// `path` made absolute (relative to the translated file's directory; `~` is the
    /// client's home), for a node path named by a bind mount.
    fn absolute(&self, path: &str) -> Option<String>;
}

/// The result of translating one file.
#[derive(Debug, Default)]
pub struct Translation {
    /// The file's own motley documents, with every translated document blanked out (so
    /// its errors keep their lines); `None` when it had none.
    pub native: Option<String>,
    /// The translated objects.
    pub objects: Vec<Spec>,
    /// The translated objects as motley YAML documents (what `motley convert` prints and
    /// `motley apply` sends), parsed back once already.
    pub text: String,
    /// What was kept only in part, or ignored, and why.
    pub warnings: Vec<ManifestError>,
    /// Which format the file was: `compose`, `kubernetes`, or `motley`.
    pub format: &'static str,
}

/// True for a Compose file's tree: a map with `services` and no `kind`.
fn is_compose(tree: &SpanNode) -> bool {
    tree.get("services").is_some() && tree.get("kind").is_none()
}

/// Translates `text` (named `file` in messages): a Compose file (one document), or a
/// stream of documents of which those with `apiVersion` are Kubernetes objects; a file
/// of motley documents only comes back as it is. All or nothing: any refusal is an
/// error. Each document is parsed once.
pub fn translate(
    file: &str,
    text: &str,
    reader: &dyn Reader,
) -> Result<Translation, Vec<ManifestError>> {
    let motley = || Translation {
        native: Some(text.to_string()),
        format: "motley",
        ..Translation::default()
    };
    // A file that names neither can be neither (most files: not parsed twice).
    if !text.contains("services") && !text.contains("apiVersion") {
        return Ok(motley());
    }
    let raws = crate::manifest::split_documents(text);
    // Each document's tree, lines counted from the file's start; one the YAML parser
    // refuses is reported by the manifest parser, where it is.
    let mut trees: Vec<(&crate::manifest::RawDoc, SpanNode)> = raws
        .iter()
        .filter_map(|raw| {
            let mut tree = crate::manifest::tree_of(&raw.text).ok()?;
            crate::manifest::shift_lines(&mut tree, raw.line_offset);
            Some((raw, tree))
        })
        .collect();
    if raws.len() == 1 && trees.len() == 1 && is_compose(&trees[0].1) {
        let (_, root) = trees.remove(0);
        let out = compose::translate(file, root, reader)?;
        return checked(file, out);
    }
    let mut kube_docs = Vec::new();
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (raw, tree) in trees {
        if tree.get("apiVersion").is_none() {
            continue;
        }
        let first = raw.line_offset as usize;
        let n = raw.text.split_inclusive('\n').count();
        for l in lines.iter_mut().skip(first).take(n) {
            // The `---` that opens a document stays a separator.
            if !l.starts_with("---") {
                *l = "\n";
            }
        }
        kube_docs.push(tree);
    }
    if kube_docs.is_empty() {
        return Ok(motley());
    }
    let mut out = kube::translate(file, &kube_docs)?;
    let native: String = lines.concat();
    let has_native = crate::manifest::split_documents(&native)
        .iter()
        .any(|d| !d.text.trim().is_empty());
    out.native = has_native.then_some(native);
    checked(file, out)
}

/// Prints the translated objects into `out.text` and parses them back: a translation
/// that would not apply is a bug here, reported as an error rather than sent.
fn checked(file: &str, mut out: Translation) -> Result<Translation, Vec<ManifestError>> {
    let mut yaml = String::new();
    for (i, o) in out.objects.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        let doc = serde_saphyr::to_string(o).map_err(|e| vec![at_file(file, e.to_string())])?;
        yaml.push_str(&doc);
    }
    let name = format!("{file} (as translated)");
    crate::manifest::parse_set(&[crate::manifest::Source {
        name: &name,
        text: &yaml,
    }])?;
    out.text = yaml;
    Ok(out)
}

fn at_file(file: &str, message: String) -> ManifestError {
    ManifestError {
        file: file.to_string(),
        line: 0,
        column: 0,
        field: String::new(),
        message,
    }
}

/// Warnings and errors of one translation, each at a node of the source.
pub(crate) struct Notes<'a> {
    pub(crate) file: &'a str,
    pub(crate) warnings: Vec<ManifestError>,
    pub(crate) errors: Vec<ManifestError>,
}

impl<'a> Notes<'a> {
    pub(crate) fn new(file: &'a str) -> Self {
        Notes {
            file,
            warnings: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn note(&self, n: &SpanNode, field: &str, message: String) -> ManifestError {
        ManifestError {
            file: self.file.to_string(),
            line: n.line,
            column: n.column,
            field: field.to_string(),
            message,
        }
    }

    /// Kept in part, or ignored: applied anyway, said on standard error.
    pub(crate) fn warn(&mut self, n: &SpanNode, field: &str, message: impl Into<String>) {
        let e = self.note(n, field, message.into());
        self.warnings.push(e);
    }

    /// Refused: nothing is applied.
    pub(crate) fn refuse(&mut self, n: &SpanNode, field: &str, message: impl Into<String>) {
        let e = self.note(n, field, message.into());
        self.errors.push(e);
    }
}

/// The entries of a map node (empty for anything else).
pub(crate) fn entries(n: &SpanNode) -> &[(String, SpanNode)] {
    match &n.value {
        SpanValue::Map(e) => e,
        _ => &[],
    }
}

/// The items of a sequence node (empty for anything else).
pub(crate) fn items(n: &SpanNode) -> &[SpanNode] {
    match &n.value {
        SpanValue::Seq(i) => i,
        _ => &[],
    }
}

/// A scalar as text; `None` for a map, a sequence or null.
pub(crate) fn text(n: &SpanNode) -> Option<&str> {
    n.scalar()
}

/// A list of strings written as a sequence, or one string split like a shell would
/// (quotes and backslashes; no expansion).
pub(crate) fn words(n: &SpanNode) -> Result<Vec<String>, String> {
    match &n.value {
        SpanValue::Seq(items) => items
            .iter()
            .map(|i| {
                text(i)
                    .map(str::to_string)
                    .ok_or("expected a string".to_string())
            })
            .collect(),
        SpanValue::Scalar(s) => split_words(s),
        _ => Err("expected a string or a list of strings".into()),
    }
}

/// Splits a command line as a POSIX shell would split its words (no expansion).
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unclosed ' in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err(format!("unclosed \" in {s:?}")),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(format!("unclosed \" in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// A Compose or Go duration (`1m30s`, `500ms`, `10s`, `1h`) in milliseconds.
pub fn duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" | "" => 1000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Some(total.round() as u64)
}

/// A Compose size (`512m`, `1g`, `1gb`, `2048`, bytes by default; binary multiples).
pub fn compose_bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let n: f64 = t[..num_len].parse().ok()?;
    let mult: f64 = match t[num_len..].trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "ki" | "kib" => 1024.0,
        "m" | "mb" | "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult).round() as u64)
}

/// Bytes as a motley quantity: `512Mi` when whole mebibytes, else bytes.
pub(crate) fn bytes_text(b: u64) -> String {
    const MI: u64 = 1 << 20;
    if b > 0 && b.is_multiple_of(1 << 30) {
        format!("{}Gi", b >> 30)
    } else if b > 0 && b.is_multiple_of(MI) {
        format!("{}Mi", b / MI)
    } else {
        b.to_string()
    }
}

/// Milliseconds as a motley duration.
pub(crate) fn ms_text(ms: u64) -> String {
    crate::quantity::Duration(ms).to_string()
}

/// A Compose or Docker CPU count (`0.5`, `2`) as millicores text (`500m`).
pub(crate) fn cpus_text(s: &str) -> Option<String> {
    let n: f64 = s.trim().parse().ok()?;
    (n > 0.0).then(|| format!("{}m", (n * 1000.0).round() as u64))
}

/// A name as motley takes it: lowercase, `_` and `.` as `-`; `None` if still invalid.
pub fn name_of(s: &str) -> Option<String> {
    let n: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect();
    crate::model::validate_name(&n).is_ok().then_some(n)
}

/// A node architecture as motley's facts name it.
pub(crate) fn arch_of(s: &str) -> String {
    match s {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "armhf" | "armv7l" | "armv7" => "arm".into(),
        other => other.to_string(),
    }
}

/// Builds one typed object from the JSON made for it.
pub(crate) fn build<T: DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("translation produced an invalid object: {e}"))
}

/// A JSON object from pairs, skipping nulls.
pub(crate) fn obj(pairs: Vec<(&str, Value)>) -> Value {
    let m: serde_json::Map<String, Value> = pairs
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Value::Object(m)
}

/// String pairs as a JSON object.
pub(crate) fn map_of(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
