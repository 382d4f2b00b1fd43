//! The git side of a sync: fetching (with an ssh deploy key), and reading a commit's
//! manifests, decrypted in memory.

use std::path::PathBuf;

use motley_core::manifest::{self, Document};
use motley_core::model::{Kind, SourceSpec};

use super::Stop;
use crate::state::Shared;

/// Fetches the source's ref (objects only when it moved from `known`).
pub(super) async fn fetch(
    s: &Shared,
    spec: &SourceSpec,
    known: Option<String>,
) -> Result<motley_git::Fetched, Stop> {
    let dir = repo_dir(s, &spec.name).map_err(|m| Stop("failed", m))?;
    let (url, want) = (spec.git.url.clone(), want_of(spec));
    let ssh = ssh_command(s, spec, &dir).map_err(|m| Stop("failed", m))?;
    let auth = match &spec.git.credentials {
        None => None,
        Some(c) => {
            let ring = crate::state::read(&s.trust.keyring);
            let (username, password) = crate::secrets::registry_credentials(
                &ring,
                &s.cache().workloads,
                &secret_of(spec, &c.secret),
            )
            .map_err(|m| Stop("failed", format!("the git credentials: {m}")))?;
            Some(motley_git::Auth { username, password })
        }
    };
    motley_rt::spawn_blocking(move || {
        let access = motley_git::Access {
            ssh_command: ssh.as_ref().map(|(cmd, _key)| cmd.as_str()),
            auth: auth.as_ref(),
        };
        let r = motley_git::fetch_with(&dir, &url, &want, known.as_deref(), &access);
        let said = ssh.as_ref().and_then(|(_, key)| {
            let path = ssh_errors(key.path());
            let text = std::fs::read_to_string(&path).ok();
            let _ = std::fs::remove_file(&path);
            text
        });
        r.map_err(
            |e| match said.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                Some(t) => format!("{e} (ssh: {})", t.lines().last().unwrap_or(t)),
                None => e.to_string(),
            },
        )
    })
    .await
    .map_err(|e| Stop("failed", format!("fetch: {e}")))?
    .map_err(|e| Stop("failed", format!("fetch: {e}; nothing was changed")))
}

fn want_of(spec: &SourceSpec) -> motley_git::Want {
    match spec.wanted() {
        ("commit", c) => motley_git::Want::Commit(c.to_string()),
        ("tag", t) => motley_git::Want::Tag(t.to_string()),
        (_, b) => motley_git::Want::Branch(b.to_string()),
    }
}

pub(super) fn repo_dir(s: &Shared, name: &str) -> Result<PathBuf, String> {
    s.sources
        .dir
        .get()
        .map(|d| d.join(name))
        .ok_or_else(|| "the server has no sources directory".to_string())
}

/// `'text'` for `sh`.
fn quoted(p: &std::path::Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// For an `ssh://` source with `git.ssh_key`: the ssh command that uses the deploy
/// key, and the key's file on tmpfs (`/dev/shm`, mode 0600), removed when dropped.
/// The Secret's `known_hosts` value, when it has one, is the only host key accepted;
/// without it the first key seen is kept (`<name>.known_hosts` beside the repository)
/// and required from then on.
fn ssh_command(
    s: &Shared,
    spec: &SourceSpec,
    dir: &std::path::Path,
) -> Result<Option<(String, tempfile::NamedTempFile)>, String> {
    let Some(k) = &spec.git.ssh_key else {
        return Ok(None);
    };
    let (key, known) = {
        let ring = crate::state::read(&s.trust.keyring);
        let cache = s.cache();
        let key =
            crate::secrets::value(&ring, &cache.workloads, &secret_of(spec, &k.secret), &k.key)
                .map(zeroize::Zeroizing::new)
                .map_err(|m| format!("the deploy key: {m}"))?;
        let known = crate::secrets::value(
            &ring,
            &cache.workloads,
            &secret_of(spec, &k.secret),
            "known_hosts",
        )
        .ok();
        (key, known)
    };
    let mut file = tempfile::Builder::new()
        .prefix("motley-deploy-key-")
        .tempfile_in("/dev/shm")
        .map_err(|e| format!("the deploy key needs a tmpfs at /dev/shm: {e}"))?;
    std::io::Write::write_all(&mut file, &key)
        .and_then(|()| {
            // ssh refuses a key file without a final newline as "invalid format".
            if key.ends_with(b"\n") {
                Ok(())
            } else {
                std::io::Write::write_all(&mut file, b"\n")
            }
        })
        .map_err(|e| format!("writing the deploy key to /dev/shm: {e}"))?;
    // Beside the repository (whose directory must be empty when it is made).
    let hosts = dir.with_extension("known_hosts");
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let checking = match &known {
        Some(k) => {
            std::fs::write(&hosts, k).map_err(|e| format!("{}: {e}", hosts.display()))?;
            "yes"
        }
        None => "accept-new",
    };
    // ssh's own words ("Host key verification failed.") go to a file beside the
    // key, read when the fetch fails: gix reports only a broken pipe.
    let cmd = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking={checking} -o UserKnownHostsFile={} 2>{}",
        quoted(file.path()),
        quoted(&hosts),
        quoted(&ssh_errors(file.path()))
    );
    Ok(Some((cmd, file)))
}

/// Where ssh's standard error goes during a fetch with a deploy key.
fn ssh_errors(key: &std::path::Path) -> PathBuf {
    key.with_extension("stderr")
}

/// Errors of a commit's manifests, each naming file, line, column and field; the
/// file names carry the commit.
pub(super) fn manifest_errors(details: &[manifest::ManifestError], commit: &str) -> String {
    let list: Vec<String> = details.iter().map(|e| e.to_string()).collect();
    format!(
        "commit {commit}: {} invalid field(s), nothing was changed: {}",
        details.len(),
        list.join("; ")
    )
}

/// The commit's manifests, decrypted and parsed.
pub(super) async fn read_commit(
    s: &Shared,
    spec: &SourceSpec,
    commit: &str,
) -> Result<Vec<Document>, Stop> {
    let dir = repo_dir(s, &spec.name).map_err(|m| Stop("failed", m))?;
    let (c, path) = (commit.to_string(), spec.git.path.clone());
    let read = motley_rt::spawn_blocking(move || {
        motley_git::manifests(&dir, &c, &path, &motley_git::Limits::default())
    })
    .await
    .map_err(|e| Stop("failed", e.to_string()))?;
    let files = match read {
        Ok(f) => f,
        // A vanished path declares nothing: the empty-commit rule decides.
        Err(motley_git::GitError::NoPath { path, .. }) => {
            tracing::info!(source = %spec.name, %commit, "{path} is not in the commit");
            Vec::new()
        }
        Err(e) => return Err(Stop("failed", format!("{e}; nothing was changed"))),
    };
    let short = motley_core::source::short_commit(commit);
    let encrypted = files.iter().any(|f| f.is_age() || is_sops(f));
    let ids = match (&spec.decrypt, encrypted) {
        (_, false) => None,
        (None, true) => {
            let f = files.iter().find(|f| f.is_age() || is_sops(f));
            return Err(Stop(
                "failed",
                format!(
                    "{short}:{} is encrypted, and the source has no decrypt.age_key; nothing was changed",
                    f.map_or("", |f| f.path.as_str())
                ),
            ));
        }
        (Some(d), true) => {
            let key = {
                let ring = crate::state::read(&s.trust.keyring);
                crate::secrets::value(
                    &ring,
                    &s.cache().workloads,
                    &secret_of(spec, &d.age_key.secret),
                    &d.age_key.key,
                )
            }
            .map(zeroize::Zeroizing::new)
            .map_err(|m| Stop("failed", format!("the age identity: {m}")))?;
            let text = std::str::from_utf8(&key)
                .map_err(|_| Stop("failed", "the age identity is not text".into()))?;
            Some(motley_sops::Identities::parse(text).map_err(|e| Stop("failed", e.to_string()))?)
        }
    };
    // Names shown in errors: `<commit>:<path>`.
    let mut texts: Vec<(String, zeroize::Zeroizing<String>)> = Vec::with_capacity(files.len());
    for f in &files {
        let shown = format!("{short}:{}", f.path);
        let text = match (&ids, f.is_age(), is_sops(f)) {
            (Some(ids), true, _) => {
                let plain = motley_sops::decrypt_age(ids, &shown, &f.data, 1 << 20)
                    .map_err(|e| Stop("failed", e.to_string()))?;
                let t = std::str::from_utf8(&plain).map_err(|_| {
                    Stop(
                        "failed",
                        format!("{shown}: decrypts to text that is not UTF-8"),
                    )
                })?;
                zeroize::Zeroizing::new(t.to_string())
            }
            (Some(ids), false, true) => {
                let t = f
                    .text()
                    .map_err(|e| Stop("failed", format!("{shown}: {e}")))?;
                motley_sops::decrypt_sops_yaml(ids, &shown, t)
                    .map_err(|e| Stop("failed", e.to_string()))?
            }
            _ => {
                let t = f
                    .text()
                    .map_err(|e| Stop("failed", format!("{shown}: {e}")))?;
                zeroize::Zeroizing::new(t.to_string())
            }
        };
        texts.push((shown, text));
    }
    let texts = translate(texts).map_err(|e| Stop("failed", manifest_errors(&e, commit)))?;
    let sources: Vec<manifest::Source<'_>> = texts
        .iter()
        .map(|(n, t)| manifest::Source {
            name: n,
            text: t.as_str(),
        })
        .collect();
    // A source in `default` (a cluster admin's) writes where its documents say; one in
    // another namespace writes only there, and makes no namespaces.
    let docs = manifest::parse_set_in(&sources, spec.namespace.as_deref())
        .map_err(|e| Stop("failed", manifest_errors(&e, commit)))?;
    if let Some(ns) = &spec.namespace
        && let Some(d) = docs.iter().find(|d| d.spec.kind() == Kind::Namespace)
    {
        let e = d.error_at(
            "kind",
            format!("a source in namespace {ns} may not make namespaces (only one in default)"),
        );
        return Err(Stop("failed", manifest_errors(&[e], commit)));
    }
    // Values read from a file or the environment are `motley apply`'s; in git they
    // are encrypted instead.
    let inputs = manifest::secret_inputs(&docs);
    if !inputs.is_empty() {
        let errors: Vec<manifest::ManifestError> = inputs
            .into_iter()
            .map(|(_, _, _, mut e)| {
                e.message = "fromFile and fromEnv are read by `motley apply`; in git, give value (a secret's: encrypt the file with age or SOPS)".into();
                e
            })
            .collect();
        return Err(Stop("failed", manifest_errors(&errors, commit)));
    }
    Ok(docs)
}

/// Compose files and Kubernetes documents of a commit translated into motley's kinds
/// (`motley_core::convert`, as `motley apply` does): what they name is read from the
/// commit's files under the source's path; there is no client environment here.
fn translate(
    texts: Vec<(String, zeroize::Zeroizing<String>)>,
) -> Result<Vec<(String, zeroize::Zeroizing<String>)>, Vec<manifest::ManifestError>> {
    struct InCommit<'a> {
        texts: &'a [(String, zeroize::Zeroizing<String>)],
        dir: String,
    }
    impl motley_core::convert::Reader for InCommit<'_> {
        fn read(&self, path: &str) -> Result<String, String> {
            let want = format!("{}/{}", self.dir, path.trim_start_matches("./"));
            self.texts
                .iter()
                .find(|(n, _)| *n == want)
                .map(|(_, t)| t.to_string())
                .ok_or_else(|| "not among the source's YAML files".to_string())
        }
        fn env(&self, _: &str) -> Option<String> {
            None
        }
        fn absolute(&self, path: &str) -> Option<String> {
            path.starts_with('/').then(|| path.to_string())
        }
    }
    let mut out = Vec::with_capacity(texts.len());
    let mut errors = Vec::new();
    for (name, text) in &texts {
        let dir = name
            .rsplit_once('/')
            .map_or(String::new(), |(d, _)| d.to_string());
        let reader = InCommit { texts: &texts, dir };
        match motley_core::convert::translate(name, text, &reader) {
            Ok(t) if t.format == "motley" => out.push((name.clone(), text.clone())),
            Ok(t) => {
                if let Some(native) = t.native {
                    out.push((name.clone(), zeroize::Zeroizing::new(native)));
                }
                out.push((
                    format!("{name} (converted)"),
                    zeroize::Zeroizing::new(t.text),
                ));
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A SOPS file: YAML with a top-level `sops:` map.
fn is_sops(f: &motley_git::File) -> bool {
    !f.is_age()
        && f.text()
            .is_ok_and(|t| t.lines().any(|l| l.starts_with("sops:")))
}

/// A Secret a source names: in the source's own namespace.
fn secret_of(spec: &SourceSpec, name: &str) -> motley_core::model::WorkloadRef {
    use motley_core::model::{Kind, WorkloadRef, namespace_or_default};
    WorkloadRef::in_namespace(namespace_or_default(&spec.namespace), Kind::Secret, name)
}
