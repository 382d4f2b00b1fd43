//! Checks of a `kind: Source` document.

use crate::model::{SourceSpec, validate_name};

/// The shortest polling interval: a remote is asked at most every 5 s.
pub const MIN_INTERVAL_MS: u64 = 5_000;

/// Whether `r` can be a branch or tag name (git's `check-ref-format`, the parts that
/// matter to a fetch: no spaces or control characters, no `..`, `~^:?*[\`, not
/// starting with `-` or `/`, not ending with `/`, `.` or `.lock`).
fn valid_ref(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && !r.starts_with(['-', '/'])
        && !r.ends_with(['/', '.'])
        && !r.ends_with(".lock")
        && !r.contains("..")
        && !r.contains("//")
        && !r.contains("@{")
        && !r
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

/// What is wrong with a source: `(field, message)`.
pub(crate) fn problems(s: &SourceSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |f: &str, m: String| out.push((f.to_string(), m));
    let scheme = s.git.url.split_once("://").map(|(a, _)| a);
    match scheme {
        Some("https" | "http" | "git" | "ssh" | "file") => {}
        _ => bad(
            "git.url",
            format!(
                "{:?} is not a URL motley fetches: give https://, http://, git://, ssh:// or file://",
                s.git.url
            ),
        ),
    }
    if s.git
        .url
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        bad("git.url", "must hold no spaces".into());
    }
    let given = [
        s.git.branch.is_some(),
        s.git.tag.is_some(),
        s.git.commit.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        bad("git", "give one of branch, tag and commit".into());
    }
    for (field, r) in [("git.branch", &s.git.branch), ("git.tag", &s.git.tag)] {
        if let Some(r) = r
            && !valid_ref(r)
        {
            bad(field, format!("{r:?} is not a valid git ref name"));
        }
    }
    if let Some(c) = &s.git.commit
        && !(c.len() == 40 && c.chars().all(|c| c.is_ascii_hexdigit()))
    {
        bad(
            "git.commit",
            format!("{c:?} must be a full commit id: 40 hexadecimal digits"),
        );
    }
    let p = &s.git.path;
    if p.starts_with('/') || p.split('/').any(|part| part == "..") || p.contains('\0') {
        bad(
            "git.path",
            format!("{p:?} must be a directory inside the repository: relative, without .."),
        );
    }
    if s.git.ssh_key.is_some() && scheme != Some("ssh") {
        bad("git.ssh_key", "is for ssh:// URLs".into());
    }
    if let Some(c) = &s.git.credentials {
        if scheme != Some("https") {
            bad(
                "git.credentials",
                "are sent only over https:// (never in clear text)".into(),
            );
        }
        if let Err(m) = validate_name(&c.secret) {
            bad("git.credentials.secret", m);
        }
    }
    let secrets = [
        ("git.ssh_key.secret", s.git.ssh_key.as_ref()),
        (
            "decrypt.age_key.secret",
            s.decrypt.as_ref().map(|d| &d.age_key),
        ),
    ];
    for (field, k) in secrets {
        if let Some(k) = k
            && let Err(m) = validate_name(&k.secret)
        {
            bad(field, m);
        }
    }
    if s.interval.as_millis() < MIN_INTERVAL_MS {
        bad(
            "interval",
            format!("{} is too often: at least 5s", s.interval),
        );
    }
    if s.health.timeout.as_millis() < 1_000 {
        bad("health.timeout", "must be at least 1s".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names() {
        for ok in ["main", "release/1.2", "v1.0.0", "feature-x_y"] {
            assert!(valid_ref(ok), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "a:b", "x.lock", "x/", "/x", "a@{1}", "a\\b",
        ] {
            assert!(!valid_ref(bad), "{bad}");
        }
    }
}
