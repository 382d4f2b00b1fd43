//! A Secret's values and the tasks' references to Secrets.

use super::*;

/// Problems with a Secret's values.
pub(super) fn validate(doc: &Document, s: &SecretSpec, errors: &mut Vec<ManifestError>) {
    if s.data.is_empty() {
        errors.push(doc.error_at("data", "a secret needs at least one value"));
    }
    let mut inline = 0usize;
    for (k, v) in &s.data {
        let field = format!("data.{k}");
        if !valid_secret_key(k) {
            errors.push(doc.error_at(
                &field,
                format!("key {k:?} must be 1-253 characters of A-Z a-z 0-9 . _ -"),
            ));
        }
        if v.sealed.is_some() {
            errors.push(doc.error_at(
                &format!("{field}.sealed"),
                "sealed values are written by the server; give value, fromFile or fromEnv",
            ));
        }
        if v.redacted.is_some() {
            errors.push(doc.error_at(
                &format!("{field}.redacted"),
                "this is a hidden value from `motley get`; give value, fromFile or fromEnv",
            ));
        }
        let given = [
            v.value.is_some(),
            v.from_file.is_some(),
            v.from_env.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        if given != 1 && v.sealed.is_none() && v.redacted.is_none() {
            errors.push(doc.error_at(&field, "give exactly one of value, fromFile and fromEnv"));
        }
        if let Some(e) = &v.from_env
            && !valid_env_name(e)
        {
            errors.push(doc.error_at(
                &format!("{field}.fromEnv"),
                format!("{e:?} is not an environment variable name"),
            ));
        }
        if v.from_file.as_deref().is_some_and(str::is_empty) {
            errors.push(doc.error_at(&format!("{field}.fromFile"), "must name a file"));
        }
        inline += v.value.as_ref().map_or(0, String::len);
    }
    too_large(doc, inline, MAX_SECRET_BYTES, errors);
}

/// An error at `data` when values of `inline` bytes exceed `max`.
pub(super) fn too_large(
    doc: &Document,
    inline: usize,
    max: usize,
    errors: &mut Vec<ManifestError>,
) {
    if inline > max {
        errors.push(doc.error_at(
            "data",
            format!("the values add up to {inline} bytes; at most {max}"),
        ));
    }
}

/// Why `e` cannot be the variable a value is given as (`taken`: something sets it
/// already).
pub(super) fn env_problem(e: &str, taken: bool) -> Option<String> {
    if !valid_env_name(e) {
        Some(format!("{e:?} is not an environment variable name"))
    } else if e.starts_with("MOTLEY_") {
        Some("MOTLEY_* variables are set by motley".into())
    } else if taken {
        Some(format!("{e} is set twice"))
    } else {
        None
    }
}

/// Problems with a task's `secrets`.
pub(super) fn validate_refs(doc: &Document, task: &model::Task, errors: &mut Vec<ManifestError>) {
    let mut envs = std::collections::BTreeSet::new();
    let mut files = std::collections::BTreeSet::new();
    for (i, r) in task.secrets.iter().enumerate() {
        let at = |f: &str| format!("task.secrets[{i}].{f}");
        if let Err(m) = model::validate_name(&r.secret) {
            errors.push(doc.error_at(&at("secret"), m));
        }
        if !valid_secret_key(&r.key) {
            errors.push(doc.error_at(&at("key"), format!("{:?} is not a secret key", r.key)));
        }
        match (&r.env, &r.file) {
            (Some(e), None) => {
                let taken = task.env.contains_key(e) || !envs.insert(e.clone());
                if let Some(m) = env_problem(e, taken) {
                    errors.push(doc.error_at(&at("env"), m));
                }
            }
            (None, Some(f)) => {
                if !valid_secret_key(f) {
                    errors.push(doc.error_at(
                        &at("file"),
                        format!("{f:?} must be a plain file name (A-Z a-z 0-9 . _ -)"),
                    ));
                } else if !files.insert(f.clone()) {
                    errors.push(doc.error_at(&at("file"), format!("{f} is given twice")));
                }
            }
            _ => errors.push(doc.error_at(
                &format!("task.secrets[{i}]"),
                "give exactly one of env and file",
            )),
        }
    }
}
