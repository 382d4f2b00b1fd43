//! Strict YAML manifests.
//!
//! A manifest set is one or more sources (files, or standard input), each with
//! any number of `---`-separated documents. [`parse_set`] validates the whole
//! set and returns either every workload or every error, so a set applies all
//! or nothing. Each error names the file, line, column and field path.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::model::{
    self, DaemonSpec, JobSpec, Kind, SecretSpec, ServiceSpec, Spec, VolumeSpec, WorkloadRef,
};
use crate::selector::Selector;

/// Upper bounds that keep one manifest from asking for absurd amounts.
pub const MAX_REPLICAS: u32 = 100_000;
/// Upper bound on a job's completions.
pub const MAX_COMPLETIONS: u32 = 10_000_000;
/// Largest accepted stop grace period (1 hour), in ms.
pub const MAX_STOP_GRACE_MS: u64 = 3_600_000;

/// One input: a display name (a path, or `-` for standard input) and its text.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Shown in errors.
    pub name: &'a str,
    /// The YAML text.
    pub text: &'a str,
}

/// One validation error, pointing into a source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestError {
    /// Source name.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// Field path such as `task.resources.memory`; empty for the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A validated workload and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// Source name.
    pub file: String,
    /// Line where the document's `kind` is.
    pub line: u64,
    /// The workload.
    pub spec: Spec,
    /// Locations of fields, for errors found later (e.g. against the live cluster).
    spans: SpanNode,
}

impl Document {
    /// An error about `field` of this document, located where the field (or its
    /// nearest present parent) is written.
    pub fn error_at(&self, field: &str, message: impl Into<String>) -> ManifestError {
        self.spans.error_at(&self.file, field, message.into())
    }
}

/// The largest node, for "larger than any node" checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterLimits {
    /// Largest node CPU capacity in millicores.
    pub max_cpu: u64,
    /// Largest node memory capacity in bytes.
    pub max_memory: u64,
}

// ---------------------------------------------------------------------------
// Span tree: a generic YAML tree where every node knows its line and column.

/// A YAML node with where it is written (also read by [`crate::convert`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanNode {
    pub(crate) line: u64,
    pub(crate) column: u64,
    pub(crate) value: SpanValue,
}

/// A YAML value whose children know where they are written.
#[derive(Debug, Clone, Default)]
pub(crate) enum SpanValue {
    Map(Vec<(String, SpanNode)>),
    Seq(Vec<SpanNode>),
    Scalar(String),
    #[default]
    Null,
}

impl SpanNode {
    fn from_spanned(s: Spanned<SpanValue>) -> SpanNode {
        SpanNode {
            line: s.referenced.line(),
            column: s.referenced.column(),
            value: s.value,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&SpanNode> {
        match &self.value {
            SpanValue::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn scalar(&self) -> Option<&str> {
        match &self.value {
            SpanValue::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Line and column of `path` (`a.b[2].c`), or of its deepest present ancestor.
    /// An error about `field` of the document this tree is, in `file`.
    fn error_at(&self, file: &str, field: &str, message: String) -> ManifestError {
        let (line, column) = self.locate(field);
        ManifestError {
            file: file.to_string(),
            line,
            column,
            field: field.to_string(),
            message,
        }
    }

    fn locate(&self, path: &str) -> (u64, u64) {
        let mut node = self;
        for seg in path_segments(path) {
            let next = match seg {
                Seg::Key(k) => node.get(k),
                Seg::Index(i) => match &node.value {
                    SpanValue::Seq(items) => items.get(i),
                    _ => None,
                },
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        (node.line, node.column)
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        // `ports.1.name` as well as `ports[1].name`.
        if let Ok(i) = part.parse::<usize>() {
            out.push(Seg::Index(i));
            continue;
        }
        let (key, rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

impl<'de> Deserialize<'de> for SpanValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SpanValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SpanValue, E> {
                Ok(SpanValue::Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SpanValue, E> {
                Ok(SpanValue::Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SpanValue, E> {
                Ok(SpanValue::Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SpanValue, E> {
                Ok(SpanValue::Scalar(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SpanValue, E> {
                Ok(SpanValue::Scalar(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<SpanValue, E> {
                Ok(SpanValue::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<SpanValue, E> {
                Ok(SpanValue::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<SpanValue, D2::Error> {
                SpanValue::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SpanValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<SpanValue>>()? {
                    items.push(SpanNode::from_spanned(item));
                }
                Ok(SpanValue::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpanValue, A::Error> {
                let mut entries: Vec<(String, SpanNode)> = Vec::new();
                while let Some(key) = map.next_key::<Spanned<SpanValue>>()? {
                    let name = match &key.value {
                        SpanValue::Scalar(s) => s.clone(),
                        SpanValue::Null => "null".to_string(),
                        _ => return Err(de::Error::custom("mapping keys must be plain scalars")),
                    };
                    if entries.iter().any(|(k, _)| *k == name) {
                        return Err(de::Error::custom(format!("duplicate key {name:?}")));
                    }
                    let value = map.next_value::<Spanned<SpanValue>>()?;
                    let mut node = SpanNode::from_spanned(value);
                    // Point at the key for fields whose value is a block.
                    if matches!(node.value, SpanValue::Map(_) | SpanValue::Seq(_))
                        && key.referenced.line() != 0
                    {
                        node.line = key.referenced.line();
                        node.column = key.referenced.column();
                    }
                    entries.push((name, node));
                }
                Ok(SpanValue::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Splitting a stream into documents while keeping line numbers.

/// One document of a stream, as text, and where it starts.
pub(crate) struct RawDoc {
    /// Lines before this document's first line.
    pub(crate) line_offset: u64,
    pub(crate) text: String,
}

pub(crate) fn split_documents(text: &str) -> Vec<RawDoc> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 0u64;
    let mut in_doc_end = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start {
            docs.push(RawDoc {
                line_offset: start,
                text: std::mem::take(&mut cur),
            });
            start = i as u64;
            in_doc_end = false;
            // Keep columns: blank out the marker, keep what follows it.
            cur.push_str("   ");
            cur.push_str(&line[3..]);
            continue;
        }
        if is_end {
            docs.push(RawDoc {
                line_offset: start,
                text: std::mem::take(&mut cur),
            });
            in_doc_end = true;
            start = i as u64 + 1;
            continue;
        }
        if in_doc_end {
            start = i as u64 + 1;
            continue;
        }
        cur.push_str(line);
    }
    docs.push(RawDoc {
        line_offset: start,
        text: cur,
    });
    docs.retain(|d| {
        d.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Deepest nesting a manifest may have (a real one needs under 10).
pub const MAX_YAML_DEPTH: usize = 32;
/// Most anchors or aliases in one document (a real one needs a handful).
pub const MAX_YAML_ALIASES: usize = 64;

/// Explicit limits, far tighter than the library's liberal defaults: a manifest is at
/// most a few MiB (the API's body limit) and shallow, so a billion-laughs alias bomb,
/// a deeply nested document or a scalar flood stops after bounded work with an error at
/// its line. Duplicate keys are refused and booleans are strict (the defaults).
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_YAML_DEPTH,
            max_aliases: MAX_YAML_ALIASES,
            max_anchors: MAX_YAML_ALIASES,
            max_events: 500_000,
            max_nodes: 200_000,
            max_documents: 1,
            max_total_scalar_bytes: 8 << 20,
            max_reader_input_bytes: Some(8 << 20),
            max_merge_keys: 64,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
            max_replay_stack_depth: 8,
            max_alias_expansions_per_anchor: 256,
        },
    }
}

fn location_of(e: &serde_saphyr::Error) -> (u64, u64) {
    e.location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0))
}

/// First line of an error's message, without the snippet the YAML library renders.
fn short_message(e: &serde_saphyr::Error) -> String {
    let full = e.without_snippet().to_string();
    let first = full.lines().next().unwrap_or("").trim().to_string();
    // Drop a trailing " at line X, column Y" since the location is reported separately.
    let msg = match first.find(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first,
    };
    // The YAML library names Rust types; say what a manifest author needs instead.
    match msg.as_str() {
        "invalid u32" | "invalid u64" => "expected a whole number, 0 or more".into(),
        "invalid i32" | "invalid i64" => "expected a whole number".into(),
        m if m.starts_with("budget breached: Depth") => {
            format!("nested deeper than {MAX_YAML_DEPTH} levels (limit for manifests)")
        }
        m if m.starts_with("budget breached") => {
            format!(
                "too large for a manifest ({})",
                &m["budget breached: ".len()..]
            )
        }
        m if m.starts_with("alias replay limit exceeded") => {
            "aliases expand to more than 10000 values (an alias bomb?)".into()
        }
        _ => msg,
    }
}

/// A typed parse failure: the field path and the YAML library's error.
type TypedError = Box<(String, serde_saphyr::Error)>;

fn parse_typed<T: de::DeserializeOwned>(text: &str) -> Result<T, TypedError> {
    let path = RefCell::new(String::new());
    let res = serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |d| {
        serde_path_to_error::deserialize(d).map_err(|e| {
            *path.borrow_mut() = e.path().to_string();
            e.into_inner()
        })
    });
    res.map_err(|e| {
        let p = path.into_inner();
        Box::new((if p == "." { String::new() } else { p }, e))
    })
}

fn parse_document(file: &str, raw: &RawDoc, errors: &mut Vec<ManifestError>) -> Option<Document> {
    let off = raw.line_offset;
    let mk = |line: u64, column: u64, field: &str, message: String| ManifestError {
        file: file.to_string(),
        line: if line == 0 { 0 } else { line + off },
        column,
        field: field.to_string(),
        message,
    };
    let tree = match tree_of(&raw.text) {
        Ok(t) => t,
        Err((l, c, m)) => {
            errors.push(mk(l, c, "", m));
            return None;
        }
    };
    if !matches!(tree.value, SpanValue::Map(_)) {
        errors.push(mk(
            tree.line,
            tree.column,
            "",
            "a manifest document must be a mapping with a `kind`".into(),
        ));
        return None;
    }
    let Some(kind_node) = tree.get("kind") else {
        errors.push(mk(
            tree.line,
            tree.column,
            "kind",
            "missing field `kind` (Service, Job, Daemon, Volume, Secret, Config, Source or Namespace)"
                .into(),
        ));
        return None;
    };
    let kind_text = kind_node.scalar().unwrap_or_default().to_string();
    let kind_line = kind_node.line;
    let typed: Result<Spec, TypedError> = match kind_text.as_str() {
        "Service" => parse_typed::<ServiceSpec>(&raw.text).map(Spec::Service),
        "Job" => parse_typed::<JobSpec>(&raw.text).map(Spec::Job),
        "Daemon" => parse_typed::<DaemonSpec>(&raw.text).map(Spec::Daemon),
        "Volume" => parse_typed::<VolumeSpec>(&raw.text).map(Spec::Volume),
        "Secret" => parse_typed::<SecretSpec>(&raw.text).map(Spec::Secret),
        "Source" => parse_typed::<model::SourceSpec>(&raw.text).map(Spec::Source),
        "Namespace" => parse_typed::<model::NamespaceSpec>(&raw.text).map(Spec::Namespace),
        "Config" => parse_typed::<model::ConfigSpec>(&raw.text).map(Spec::Config),
        other => {
            errors.push(mk(
                kind_node.line,
                kind_node.column,
                "kind",
                format!("unknown kind {other:?}: expected Service, Job, Daemon, Volume, Secret, Config, Source or Namespace"),
            ));
            return None;
        }
    };
    let spec = match typed {
        Ok(s) => s,
        Err(boxed) => {
            let (path, e) = *boxed;
            let (l, c) = location_of(&e);
            errors.push(mk(l, c, &path, short_message(&e)));
            return None;
        }
    };
    // `namespace: default` is stored as unset, as 0.1.0 wrote it.
    let mut spec = spec;
    let ns = spec.namespace().to_owned();
    spec.set_namespace(&ns);
    let mut spans = tree;
    shift_lines(&mut spans, off);
    let doc = Document {
        file: file.to_string(),
        line: kind_line + off,
        spec,
        spans,
    };
    let before = errors.len();
    validate_spec(&doc, errors);
    (errors.len() == before).then_some(doc)
}

/// The YAML tree of one document, or where its syntax is wrong and how.
pub(crate) fn tree_of(text: &str) -> Result<SpanNode, (u64, u64, String)> {
    serde_saphyr::from_str_with_options::<Spanned<SpanValue>>(text, yaml_options())
        .map(SpanNode::from_spanned)
        .map_err(|e| {
            let (l, c) = location_of(&e);
            (l, c, format!("YAML syntax: {}", short_message(&e)))
        })
}

pub(crate) fn shift_lines(n: &mut SpanNode, off: u64) {
    if n.line != 0 {
        n.line += off;
    }
    match &mut n.value {
        SpanValue::Map(entries) => entries.iter_mut().for_each(|(_, v)| shift_lines(v, off)),
        SpanValue::Seq(items) => items.iter_mut().for_each(|v| shift_lines(v, off)),
        _ => {}
    }
}

/// Checks that need more than types: names, counts, selectors, env, limits.
fn validate_spec(doc: &Document, errors: &mut Vec<ManifestError>) {
    let spec = &doc.spec;
    if let Err(m) = model::validate_name(spec.name()) {
        errors.push(doc.error_at("name", m));
    }
    if let Err(m) = model::validate_name(spec.namespace()) {
        errors.push(doc.error_at("namespace", m));
    }
    for key in spec.labels().keys() {
        if key.is_empty() || key.len() > 253 || key.contains(char::is_whitespace) {
            errors.push(doc.error_at(
                &format!("labels.{key}"),
                format!("label key {key:?} is not valid"),
            ));
        }
    }
    for (i, t) in spec.placement().tolerations.iter().enumerate() {
        if t.key.is_empty() {
            errors.push(doc.error_at(
                &format!("placement.tolerations.{i}.key"),
                "a toleration needs a taint key, or \"*\" for every key".to_string(),
            ));
        }
    }
    match spec {
        Spec::Service(s) => {
            if s.replicas > MAX_REPLICAS {
                errors.push(doc.error_at("replicas", format!("at most {MAX_REPLICAS} replicas")));
            }
            for (field, m) in net::service_problems(s) {
                errors.push(doc.error_at(&field, m));
            }
            let run = s.task_with_ports();
            for (field, m) in s.check.iter().flat_map(|c| c.problems(&run)) {
                let at = if field.is_empty() {
                    "check".to_string()
                } else {
                    format!("check.{field}")
                };
                errors.push(doc.error_at(&at, m));
            }
        }
        Spec::Job(j) => {
            if j.completions == 0 || j.completions > MAX_COMPLETIONS {
                errors.push(doc.error_at(
                    "completions",
                    format!("must be between 1 and {MAX_COMPLETIONS}"),
                ));
            }
            if j.parallelism == 0 {
                errors.push(doc.error_at("parallelism", "must be at least 1"));
            }
            if j.backoff.initial > j.backoff.max {
                errors.push(doc.error_at("backoff.initial", "must not exceed backoff.max"));
            }
            periodic::validate(doc, j, errors);
        }
        Spec::Daemon(_) => {}
        Spec::Volume(v) => {
            if v.size.0 == 0 {
                errors.push(doc.error_at("size", "must be more than 0"));
            }
            return;
        }
        Spec::Secret(s) => {
            secret::validate(doc, s, errors);
            return;
        }
        Spec::Source(s) => {
            for (field, m) in source::problems(s) {
                errors.push(doc.error_at(&field, m));
            }
            return;
        }
        Spec::Namespace(_) => return,
        Spec::Config(c) => {
            config::validate(doc, c, errors);
            return;
        }
    }
    placement::validate(doc, errors);
    let task = spec.task();
    if let Some(image) = &task.image {
        if let Err(e) = crate::image::Reference::parse(image) {
            errors.push(doc.error_at("task.image", e));
        }
    } else if task.network.is_some() {
        errors.push(doc.error_at(
            "task.network",
            "is for images (a container's network): set task.image too",
        ));
    } else if task.image_secret.is_some() {
        errors.push(doc.error_at(
            "task.image_secret",
            "is for images (registry credentials): set task.image too",
        ));
    } else if !task.args.is_empty() {
        errors.push(doc.error_at(
            "task.args",
            "is for images (it replaces the image's command): put the arguments in task.command",
        ));
    }
    for (i, arg) in task.args.iter().enumerate() {
        if arg.contains('\0') {
            errors.push(doc.error_at(&format!("task.args[{i}]"), "must not contain NUL"));
        }
    }
    if task.command.is_empty() {
        if task.image.is_none() {
            errors.push(doc.error_at(
                "task.command",
                "must name a program to run (or set task.image to run a container)",
            ));
        }
    } else if task.command[0].trim().is_empty() {
        errors.push(doc.error_at("task.command[0]", "the program must not be empty"));
    }
    for (i, arg) in task.command.iter().enumerate() {
        if arg.contains('\0') {
            errors.push(doc.error_at(&format!("task.command[{i}]"), "must not contain NUL"));
        }
    }
    for key in task.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            errors.push(doc.error_at(
                &format!("task.env.{key}"),
                format!("environment variable name {key:?} is not valid"),
            ));
        }
        if key.starts_with("MOTLEY_") {
            errors.push(doc.error_at(
                &format!("task.env.{key}"),
                "MOTLEY_* variables are set by motley",
            ));
        }
    }
    secret::validate_refs(doc, task, errors);
    mounts::validate(doc, errors);
    config::validate_refs(doc, task, errors);
    if let Some(w) = &task.workdir
        && !w.starts_with('/')
    {
        errors.push(doc.error_at("task.workdir", "must be an absolute path"));
    }
    if task.stop_grace.as_millis() > MAX_STOP_GRACE_MS {
        errors.push(doc.error_at("task.stop_grace", "must be at most 1h"));
    }
    if let Some(limits) = &task.limits {
        if let Some(lm) = limits.memory {
            if lm < task.resources.memory_or_default() {
                errors.push(
                    doc.error_at("task.limits.memory", "must not be below the memory request"),
                );
            }
            if lm.0 < 4 << 20 {
                errors.push(doc.error_at("task.limits.memory", "must be at least 4Mi"));
            }
        }
        if let Some(lc) = limits.cpu
            && lc < task.resources.cpu_or_default()
        {
            errors.push(doc.error_at("task.limits.cpu", "must not be below the cpu request"));
        }
    }
    if task.resources.cpu == Some(crate::quantity::MilliCpu(0)) {
        errors.push(doc.error_at("task.resources.cpu", "must be more than 0"));
    }
    if task.resources.cpu_units == Some(0) {
        errors.push(doc.error_at("task.resources.cpu_units", "must be more than 0"));
    }
    if let Some(g) = &task.resources.gpu {
        if g.count == 0 || g.count > 64 {
            errors.push(doc.error_at("task.resources.gpu.count", "must be between 1 and 64"));
        }
        if g.vendor.as_deref().is_some_and(|v| v.trim().is_empty()) {
            errors.push(doc.error_at("task.resources.gpu.vendor", "must not be empty"));
        }
    }
    let mut seen_ports = std::collections::BTreeSet::new();
    for (i, p) in task.ports.iter().enumerate() {
        if p.port == 0 {
            errors.push(doc.error_at(&format!("task.ports.{i}.port"), "must be 1 to 65535"));
        }
        let env_ok = !p.name.is_empty()
            && p.name.len() <= 32
            && p.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !env_ok {
            errors.push(doc.error_at(
                &format!("task.ports.{i}.name"),
                "must be 1 to 32 letters, digits, '-' or '_'",
            ));
        }
        if task.ports[..i].iter().any(|q| q.name == p.name) {
            errors.push(doc.error_at(
                &format!("task.ports.{i}.name"),
                format!("port name {:?} is used twice", p.name),
            ));
        }
        if !seen_ports.insert((p.port, p.protocol)) {
            errors.push(doc.error_at(
                &format!("task.ports.{i}.port"),
                format!("port {}/{} is listed twice", p.port, p.protocol.as_str()),
            ));
        }
    }
    let mut seen_volumes = std::collections::BTreeSet::new();
    for (i, v) in task.volumes.iter().enumerate() {
        if let Err(m) = model::validate_name(v) {
            errors.push(doc.error_at(&format!("task.volumes.{i}"), m));
        } else if !seen_volumes.insert(v) {
            errors.push(doc.error_at(
                &format!("task.volumes.{i}"),
                format!("volume {v:?} is listed twice"),
            ));
        }
    }
    if spec.kind() == Kind::Daemon && !task.volumes.is_empty() {
        errors.push(doc.error_at(
            "task.volumes",
            "daemons run on many nodes; a volume is bound to one",
        ));
    }
    if let Some(req) = &spec.placement().require
        && let Err(e) = Selector::parse(req)
    {
        let mut err = doc.error_at("placement.require", e.to_string());
        // Point at the offending character when the selector is on one line.
        let (_, col) = doc.spans.locate("placement.require");
        if col != 0 && !req.contains('\n') {
            let quoted = doc
                .spans
                .get("placement")
                .and_then(|p| p.get("require"))
                .is_some();
            if quoted {
                err.column = col + e.offset as u64;
            }
        }
        errors.push(err);
    }
}

/// Largest total size of one Secret's values (etcd takes requests up to 1.5 MiB).
pub const MAX_SECRET_BYTES: usize = 1 << 20;

/// True for a Secret key or a secret file name: 1–253 of `A-Za-z0-9._-`, not `.`/`..`.
pub fn valid_secret_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// True for a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Secret and Config values the client must read at apply time: `(source,
/// "file"|"env", name, field)` for every `fromFile` and `fromEnv` in the set, with the
/// field for errors.
pub fn secret_inputs(docs: &[Document]) -> Vec<(String, &'static str, String, ManifestError)> {
    let mut out = Vec::new();
    for d in docs {
        let inputs: Vec<(&String, (&'static str, &str, &'static str))> = match &d.spec {
            Spec::Secret(s) => s
                .data
                .iter()
                .filter_map(|(k, v)| v.input().map(|i| (k, i)))
                .collect(),
            Spec::Config(c) => c
                .data
                .iter()
                .filter_map(|(k, v)| v.from_file.as_deref().map(|f| (k, ("file", f, "fromFile"))))
                .collect(),
            _ => continue,
        };
        for (k, (from, name, field)) in inputs {
            out.push((
                d.file.clone(),
                from,
                name.to_string(),
                d.error_at(&format!("data.{k}.{field}"), ""),
            ));
        }
    }
    out
}

/// Parses and validates a whole manifest set. Returns every workload, or every error.
///
/// Errors include YAML syntax, unknown fields, wrong types, bad quantities, invalid
/// names, selectors and counts, and the same kind/name twice in the set.
pub fn parse_set(sources: &[Source<'_>]) -> Result<Vec<Document>, Vec<ManifestError>> {
    parse_set_in(sources, None)
}

/// [`parse_set`] for namespace `ns` (the CLI's `-n`): a document that names no
/// namespace is put in it, one that names another is an error (as kubectl).
pub fn parse_set_in(
    sources: &[Source<'_>],
    ns: Option<&str>,
) -> Result<Vec<Document>, Vec<ManifestError>> {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    for src in sources {
        let raws = split_documents(src.text);
        for raw in &raws {
            if let Some(d) = parse_document(src.name, raw, &mut errors) {
                docs.push(d);
            }
        }
    }
    if let Some(ns) = ns {
        errors.extend(in_namespace(&mut docs, ns));
    }
    let mut seen: BTreeMap<WorkloadRef, (String, u64)> = BTreeMap::new();
    for d in &docs {
        let key = d.spec.reference();
        if let Some((file, line)) = seen.get(&key) {
            errors.push(d.error_at(
                "name",
                format!("duplicate {key}: already defined at {file}:{line}"),
            ));
        } else {
            seen.insert(key, (d.file.clone(), d.line));
        }
    }
    errors.extend(net::expose_conflicts(&docs, &BTreeMap::new()));
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

/// Checks a validated set against the live cluster: no request larger than every node.
pub fn check_against_cluster(docs: &[Document], cluster: &ClusterLimits) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    for d in docs.iter().filter(|d| d.spec.kind().is_workload()) {
        let r = &d.spec.task().resources;
        let cpu = r.cpu_or_default().0;
        let mem = r.memory_or_default().0;
        if r.cpu_units.is_none() && cpu > cluster.max_cpu {
            errors.push(d.error_at(
                "task.resources.cpu",
                format!(
                    "requests {} but the largest node has {}",
                    r.cpu_or_default(),
                    crate::quantity::MilliCpu(cluster.max_cpu)
                ),
            ));
        }
        if mem > cluster.max_memory {
            errors.push(d.error_at(
                "task.resources.memory",
                format!(
                    "requests {} but the largest node has {}",
                    r.memory_or_default(),
                    crate::quantity::Bytes(cluster.max_memory).readable()
                ),
            ));
        }
    }
    errors
}

#[path = "manifest_config.rs"]
mod config;
#[path = "manifest_mounts.rs"]
mod mounts;
#[path = "manifest_net.rs"]
mod net;
#[path = "manifest_ns.rs"]
mod ns;
#[path = "manifest_other.rs"]
mod other;
#[path = "manifest_periodic.rs"]
mod periodic;
#[path = "manifest_placement.rs"]
mod placement;
#[path = "manifest_secret.rs"]
mod secret;
#[path = "manifest_source.rs"]
mod source;
pub use net::{expose_conflicts, route_key, tcp_key};
pub use ns::{in_namespace, quota_problems};
pub use other::{Other, Taken, created, take_kind};
pub use source::MIN_INTERVAL_MS;

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
