//! A Config's values and the tasks' references to Configs: checked here, versioned and
//! resolved in [`crate::config`].

use super::*;
use crate::config::MAX_CONFIG_BYTES;

/// Problems with a Config's values.
pub(super) fn validate(doc: &Document, c: &model::ConfigSpec, errors: &mut Vec<ManifestError>) {
    if c.data.is_empty() {
        errors.push(doc.error_at("data", "a config needs at least one value"));
    }
    let mut inline = 0usize;
    for (k, v) in &c.data {
        let field = format!("data.{k}");
        if !valid_secret_key(k) {
            errors.push(doc.error_at(
                &field,
                format!("key {k:?} must be 1-253 characters of A-Z a-z 0-9 . _ -"),
            ));
        }
        if v.value.is_some() == v.from_file.is_some() {
            errors.push(doc.error_at(&field, "give exactly one of value and fromFile"));
        }
        if v.from_file.as_deref().is_some_and(str::is_empty) {
            errors.push(doc.error_at(&format!("{field}.fromFile"), "must name a file"));
        }
        inline += v.value.as_ref().map_or(0, String::len);
    }
    super::secret::too_large(doc, inline, MAX_CONFIG_BYTES, errors);
}

/// Problems with a task's `configs`: names, keys, exactly one of `env` and `file`, no
/// variable or file given twice (nor a variable `env` or a secret already sets).
pub(super) fn validate_refs(doc: &Document, task: &model::Task, errors: &mut Vec<ManifestError>) {
    let mut envs = std::collections::BTreeSet::new();
    let mut files = std::collections::BTreeSet::new();
    for (i, r) in task.configs.iter().enumerate() {
        let at = |f: &str| format!("task.configs[{i}].{f}");
        if let Err(m) = model::validate_name(&r.config) {
            errors.push(doc.error_at(&at("config"), m));
        }
        if !valid_secret_key(&r.key) {
            errors.push(doc.error_at(&at("key"), format!("{:?} is not a config key", r.key)));
        }
        match (&r.env, &r.file) {
            (Some(e), None) => {
                let taken = task.env.contains_key(e)
                    || task.secrets.iter().any(|s| s.env.as_ref() == Some(e))
                    || !envs.insert(e.clone());
                if let Some(m) = super::secret::env_problem(e, taken) {
                    errors.push(doc.error_at(&at("env"), m));
                }
            }
            (None, Some(f)) => match file_problem(f) {
                Some(m) => errors.push(doc.error_at(&at("file"), m)),
                None if !files.insert(f.clone()) => {
                    errors.push(doc.error_at(&at("file"), format!("{f} is given twice")))
                }
                None => {}
            },
            _ => errors.push(doc.error_at(
                &format!("task.configs[{i}]"),
                "give exactly one of env and file",
            )),
        }
    }
}

/// Why `f` cannot be a config file's path: it must be absolute, normal (no `.`, `..`
/// or empty parts) and not a directory motley mounts itself.
fn file_problem(f: &str) -> Option<String> {
    let Some(rest) = f.strip_prefix('/') else {
        return Some(format!("{f:?} must be an absolute path (/etc/app/app.ini)"));
    };
    if rest.is_empty()
        || rest
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\0'))
    {
        return Some(format!("{f:?} must name a file: no empty, . or .. parts"));
    }
    let top = rest.split('/').next().unwrap_or_default();
    if matches!(top, "alloc" | "volumes" | "proc" | "sys" | "dev")
        || rest == "run/secrets"
        || rest.starts_with("run/secrets/")
    {
        return Some(format!(
            "{f:?} is under /{top}, which motley or the kernel mounts; choose another path"
        ));
    }
    None
}
