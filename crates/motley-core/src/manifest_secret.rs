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
    if inline > MAX_SECRET_BYTES {
        errors.push(doc.error_at(
            "data",
            format!("the values add up to {inline} bytes; at most {MAX_SECRET_BYTES}"),
        ));
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
                if !valid_env_name(e) {
                    errors.push(doc.error_at(
                        &at("env"),
                        format!("{e:?} is not an environment variable name"),
                    ));
                } else if e.starts_with("MOTLEY_") {
                    errors.push(doc.error_at(&at("env"), "MOTLEY_* variables are set by motley"));
                } else if task.env.contains_key(e) || !envs.insert(e.clone()) {
                    errors.push(doc.error_at(&at("env"), format!("{e} is set twice")));
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
