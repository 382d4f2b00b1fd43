//! Documents of a kind that is not stored in the cluster (`kind: Inventory`, read by
//! `motley capacity`): taken out of a set, parsed as their own type with the same
//! file:line:column:field errors, the rest left for [`super::parse_set`] with its
//! line numbers unchanged.

use super::*;

/// One document of another kind, and where it came from.
#[derive(Debug, Clone)]
pub struct Other<T> {
    /// Source name.
    pub file: String,
    /// Line where its `kind` is.
    pub line: u64,
    /// The value.
    pub value: T,
    spans: SpanNode,
}

impl<T> Other<T> {
    /// An error about `field` (`models[1].watts`), located where it is written.
    pub fn error_at(&self, field: &str, message: impl Into<String>) -> ManifestError {
        self.spans.error_at(&self.file, field, message.into())
    }
}

/// The documents taken, and each source's text without them.
pub type Taken<T> = (Vec<Other<T>>, Vec<String>);

/// Takes the documents whose `kind` is `kind` out of `sources`: each parsed as `T`
/// (errors with file, line, column and field), and each source's text with those
/// documents' lines blanked, for [`super::parse_set`].
pub fn take_kind<T: de::DeserializeOwned>(
    sources: &[Source<'_>],
    kind: &str,
) -> Result<Taken<T>, Vec<ManifestError>> {
    let mut taken = Vec::new();
    let mut rest = Vec::new();
    let mut errors = Vec::new();
    for src in sources {
        let mut lines: Vec<&str> = src.text.split_inclusive('\n').collect();
        for raw in split_documents(src.text) {
            let off = raw.line_offset;
            let Ok(tree) = serde_saphyr::from_str_with_options::<Spanned<SpanValue>>(
                &raw.text,
                yaml_options(),
            ) else {
                continue; // parse_set reports it
            };
            let tree = SpanNode::from_spanned(tree);
            let Some(k) = tree.get("kind") else { continue };
            if k.scalar() != Some(kind) {
                continue;
            }
            let line = k.line + off;
            match parse_typed::<T>(&raw.text) {
                Ok(value) => {
                    let mut spans = tree;
                    shift_lines(&mut spans, off);
                    taken.push(Other {
                        file: src.name.to_string(),
                        line,
                        value,
                        spans,
                    });
                }
                Err(boxed) => {
                    let (path, e) = *boxed;
                    let (l, c) = location_of(&e);
                    errors.push(ManifestError {
                        file: src.name.to_string(),
                        line: if l == 0 { 0 } else { l + off },
                        column: c,
                        field: path,
                        message: short_message(&e),
                    });
                }
            }
            // Blank the document's lines; its `---` marker, if it has one, stays.
            let first = off as usize;
            let marker = lines.get(first).is_some_and(|l| {
                let b = l.trim_end_matches(['\n', '\r']);
                b == "---" || b.starts_with("--- ") || b.starts_with("---\t")
            });
            let end = (first + raw.text.split_inclusive('\n').count()).min(lines.len());
            for l in lines.iter_mut().take(end).skip(first + usize::from(marker)) {
                *l = if l.ends_with('\n') { "\n" } else { "" };
            }
        }
        rest.push(lines.concat());
    }
    if errors.is_empty() {
        Ok((taken, rest))
    } else {
        Err(errors)
    }
}

/// Documents as workloads just created (uid = name), keyed by reference: the
/// workloads of a question asked without a cluster (`motley capacity`, benchmarks).
pub fn created(
    docs: Vec<Document>,
    now: u64,
) -> std::collections::BTreeMap<crate::model::WorkloadRef, crate::model::Workload> {
    docs.into_iter()
        .map(|d| {
            let r = d.spec.reference();
            let w = crate::model::Workload::created(d.spec, r.name.clone(), now);
            (r, w)
        })
        .collect()
}
