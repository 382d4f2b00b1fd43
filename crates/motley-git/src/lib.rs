//! Git for sources (issue 21): IO only, blocking (run it on a blocking thread).
//!
//! - [`fetch`] brings one ref of a remote into a bare repository of motley's own, shallow
//!   (depth 1), and only when the remote ref moved: a sync that finds the ref where it
//!   was lists the remote's refs and writes nothing.
//! - [`manifests`] reads the YAML files under a path of a commit's tree straight from
//!   the object database, with no work tree on disk, within [`Limits`]: a repository of
//!   100,000 files, a 1 GB blob or a deep tree stops with an error naming what and
//!   where, before it costs memory. Symlinks are never followed.
//!
//! Transports are gix's: `file://` and paths, `git://`, `ssh://` (the system's ssh),
//! and `http(s)://` through reqwest (rustls with the process's ring provider).
#![forbid(unsafe_code)]

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// The tip of this branch.
    Branch(String),
    /// This tag.
    Tag(String),
    /// This commit (full hex id): once here, never fetched again.
    Commit(String),
}

impl Want {
    fn remote_ref(&self) -> String {
        match self {
            Want::Branch(b) => format!("refs/heads/{b}"),
            Want::Tag(t) => format!("refs/tags/{t}"),
            Want::Commit(c) => c.to_ascii_lowercase(),
        }
    }
}

/// Where a fetched ref is kept in motley's bare repository.
const LOCAL_REF: &str = "refs/motley/source";

/// Bounds on what [`manifests`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries (files and directories) walked under the path.
    pub max_entries: usize,
    /// Bytes of one manifest.
    pub max_file_bytes: u64,
    /// Bytes of all manifests together.
    pub max_total_bytes: u64,
    /// Directory levels below the path.
    pub max_depth: usize,
}

impl Default for Limits {
    /// 10,000 entries, 1 MiB a file, 32 MiB in all, 32 levels: far above a home
    /// cluster's repository (Fako's: 212 files), far below what hurts a 1 GB Pi.
    fn default() -> Limits {
        Limits {
            max_entries: 10_000,
            max_file_bytes: 1 << 20,
            max_total_bytes: 32 << 20,
            max_depth: 32,
        }
    }
}

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The commit the ref names (hex).
    pub commit: String,
    /// Whether objects were fetched (false: the ref had not moved from `known`).
    pub fetched: bool,
}

/// One manifest: its path in the repository and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Path from the repository's root (`clusters/home/web.yaml`).
    pub path: String,
    /// Its contents: UTF-8 for `*.yaml` and `*.yml` (checked), any bytes for `*.age`.
    pub data: Vec<u8>,
}

impl File {
    /// Whether it is an age file (`*.yaml.age`), to be decrypted whole.
    pub fn is_age(&self) -> bool {
        self.path.ends_with(".age")
    }
    /// Its text (a YAML file's always is).
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.data)
    }
}

/// Why git failed; each names the URL, ref, commit or path it is about.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The remote could not be reached or refused.
    #[error("{url}: {why}")]
    Remote {
        /// The remote.
        url: String,
        /// Why.
        why: String,
    },
    /// The remote has no such ref.
    #[error("{url} has no {wanted}")]
    NoRef {
        /// The remote.
        url: String,
        /// `refs/heads/main`.
        wanted: String,
    },
    /// motley's own repository could not be opened or written.
    #[error("{dir}: {why}")]
    Local {
        /// The repository's directory.
        dir: String,
        /// Why.
        why: String,
    },
    /// The commit, or the path in it, is not what a source can read.
    #[error("commit {commit}: {path}: {why}")]
    Tree {
        /// The commit.
        commit: String,
        /// The path in it.
        path: String,
        /// Why.
        why: String,
    },
    /// The path is not in the commit (removed, renamed, or misspelt in the source).
    #[error("commit {commit}: {path} is not in this commit")]
    NoPath {
        /// The commit.
        commit: String,
        /// The path.
        path: String,
    },
}

/// An error with its causes: gix's top messages ("Transport handshake failed") say
/// little without them.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn remote_err(url: &str) -> impl Fn(String) -> GitError + '_ {
    move |why| GitError::Remote {
        url: url.to_string(),
        why,
    }
}

/// The largest single object a fetch may inflate (gix's `gitoxide.objects.allocLimit`):
/// gix inflates each object of a received pack whole to index it, so without a limit a
/// 1 GiB blob anywhere in the commit takes 1 GiB of memory (measured: 1,031 MiB
/// resident; `git clone` streams it in 6 MiB). Past it the fetch fails and says so.
pub const FETCH_OBJECT_LIMIT: u64 = 64 << 20;

fn open_or_init(dir: &Path) -> Result<gix::Repository, GitError> {
    let local = |why: String| GitError::Local {
        dir: dir.display().to_string(),
        why,
    };
    if !dir.join("HEAD").exists() {
        std::fs::create_dir_all(dir).map_err(|e| local(e.to_string()))?;
        gix::init_bare(dir).map_err(|e| local(e.to_string()))?;
        // The limit lives in the repository's own config, read when it is opened.
        let add = format!("[gitoxide \"objects\"]\n\tallocLimit = {FETCH_OBJECT_LIMIT}\n");
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("config"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, add.as_bytes()))
            .map_err(|e| local(e.to_string()))?;
    }
    gix::open(dir).map_err(|e| local(e.to_string()))
}

/// Fetches `want` from `url` into the bare repository at `dir` (made when missing),
/// depth 1, unless the remote ref still names `known` and that commit is here.
pub fn fetch(dir: &Path, url: &str, want: &Want, known: Option<&str>) -> Result<Fetched, GitError> {
    fetch_with(dir, url, want, known, &Access::default())
}

/// A user name and password (or token) for an HTTP(S) remote.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({}, <password>)", self.username)
    }
}

/// How [`fetch_with`] reaches the remote.
#[derive(Debug, Clone, Default)]
pub struct Access<'a> {
    /// Run this for `ssh://` URLs instead of plain `ssh` (git's `core.sshCommand`,
    /// set for this fetch only, in memory).
    pub ssh_command: Option<&'a str>,
    /// Credentials an HTTP(S) remote asks for. Without them none are given: no git
    /// credential helper or prompt is ever consulted.
    pub auth: Option<&'a Auth>,
}

/// [`fetch`], reaching the remote as `access` says.
pub fn fetch_with(
    dir: &Path,
    url: &str,
    want: &Want,
    known: Option<&str>,
    access: &Access<'_>,
) -> Result<Fetched, GitError> {
    let ssh_command = access.ssh_command;
    // gix's HTTP transport builds a reqwest client, which (with the workspace's
    // `rustls-no-provider`) panics without a process-wide provider: ring's, as
    // elsewhere in motley (a no-op when one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut repo = open_or_init(dir)?;
    if let Some(cmd) = ssh_command {
        let mut config = repo.config_snapshot_mut();
        config
            .set_value(&gix::config::tree::Core::SSH_COMMAND, cmd)
            .map_err(|e| GitError::Local {
                dir: dir.display().to_string(),
                why: format!("core.sshCommand: {e}"),
            })?;
        config.commit().map_err(|e| GitError::Local {
            dir: dir.display().to_string(),
            why: format!("core.sshCommand: {e}"),
        })?;
    }
    let wanted = want.remote_ref();
    if let Want::Commit(c) = want {
        if gix::ObjectId::from_hex(c.as_bytes()).is_err() {
            return Err(GitError::NoRef {
                url: url.to_string(),
                wanted: format!("commit {c:?} (a commit is its full 40-digit hex id)"),
            });
        }
        // A pinned commit never moves: when it is here, the remote is not asked.
        if has_commit(&repo, &wanted) {
            return Ok(Fetched {
                commit: wanted,
                fetched: false,
            });
        }
    }
    let refspec = format!("+{wanted}:{LOCAL_REF}");
    let err = remote_err(url);
    let remote = repo
        .remote_at(url)
        .map_err(|e| err(chain(&e)))?
        .with_refspecs([refspec.as_str()], gix::remote::Direction::Fetch)
        .map_err(|e| err(chain(&e)))?;
    let auth = access.auth.cloned();
    let connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| err(chain(&e)))?
        .with_credentials(move |action| match (action, &auth) {
            (gix::credentials::helper::Action::Get(ctx), Some(a)) => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: a.username.clone(),
                        password: a.password.clone(),
                        oauth_refresh_token: None,
                    },
                    next: ctx.into(),
                }))
            }
            _ => Ok(None),
        });
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| err(chain(&e)))?;
    let tip = match want {
        Want::Commit(_) => wanted.clone(),
        Want::Branch(_) | Want::Tag(_) => prepare
            .ref_map()
            .remote_refs
            .iter()
            .find_map(|r| {
                let (name, target, peeled) = r.unpack();
                (name == wanted.as_bytes())
                    .then(|| peeled.or(target).map(|id| id.to_hex().to_string()))
            })
            .flatten()
            .ok_or_else(|| GitError::NoRef {
                url: url.to_string(),
                wanted: wanted.clone(),
            })?,
    };
    if known == Some(tip.as_str()) && has_commit(&repo, &tip) {
        return Ok(Fetched {
            commit: tip,
            fetched: false,
        });
    }
    prepare
        .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(NonZeroU32::MIN))
        .receive(gix::progress::Discard, &AtomicBool::new(false))
        .map_err(|e| {
            let mut why = chain(&e);
            if why.contains("too large to fit in memory") {
                why.push_str(&format!(
                    " (an object of the commit is over {} MiB, the most a source fetches)",
                    FETCH_OBJECT_LIMIT >> 20
                ));
            }
            err(why)
        })?;
    if !has_commit(&repo, &tip) {
        return Err(err(format!(
            "{wanted} names {tip}, which the fetch did not bring"
        )));
    }
    Ok(Fetched {
        commit: tip,
        fetched: true,
    })
}

fn has_commit(repo: &gix::Repository, hex: &str) -> bool {
    gix::ObjectId::from_hex(hex.as_bytes())
        .ok()
        .and_then(|id| repo.find_commit(id).ok())
        .is_some()
}

/// True for the files a source reads: `*.yaml` and `*.yml`, and those encrypted
/// whole with age (`*.yaml.age`, `*.yml.age`).
pub fn is_manifest(name: &str) -> bool {
    let plain = name.strip_suffix(".age").unwrap_or(name);
    plain.ends_with(".yaml") || plain.ends_with(".yml")
}

/// The manifests (`*.yaml`, `*.yml`, and those with `.age` after) under `path` (`""`: the whole tree) of `commit`
/// in the repository at `dir`, sorted by path, within `limits`. A missing path, a
/// symlinked manifest, a file that is not UTF-8 and every limit passed are errors.
pub fn manifests(
    dir: &Path,
    commit: &str,
    path: &str,
    limits: &Limits,
) -> Result<Vec<File>, GitError> {
    let repo = gix::open(dir).map_err(|e| GitError::Local {
        dir: dir.display().to_string(),
        why: e.to_string(),
    })?;
    let path = path.trim_matches('/');
    let tree_err = |at: &str, why: String| GitError::Tree {
        commit: commit.to_string(),
        path: if at.is_empty() {
            "/".to_string()
        } else {
            at.to_string()
        },
        why,
    };
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| tree_err("", e.to_string()))?;
    let root = repo
        .find_commit(id)
        .and_then(|c| c.tree())
        .map_err(|e| tree_err("", e.to_string()))?;
    let start = if path.is_empty() {
        root
    } else {
        let entry = root
            .lookup_entry_by_path(path)
            .map_err(|e| tree_err(path, e.to_string()))?
            .ok_or_else(|| GitError::NoPath {
                commit: commit.to_string(),
                path: path.to_string(),
            })?;
        if !entry.mode().is_tree() {
            return Err(tree_err(path, "not a directory".into()));
        }
        entry
            .object()
            .map_err(|e| tree_err(path, e.to_string()))?
            .into_tree()
    };
    let mut out = Vec::new();
    let (mut entries, mut total) = (0usize, 0u64);
    // (tree id, its path, depth below `path`)
    let mut todo = vec![(start.id, path.to_string(), 0usize)];
    while let Some((tree_id, at, depth)) = todo.pop() {
        let tree = repo
            .find_tree(tree_id)
            .map_err(|e| tree_err(&at, e.to_string()))?;
        for entry in tree.iter() {
            let entry = entry.map_err(|e| tree_err(&at, e.to_string()))?;
            entries += 1;
            if entries > limits.max_entries {
                return Err(tree_err(
                    path,
                    format!(
                        "more than {} files and directories (a source reads at most that many)",
                        limits.max_entries
                    ),
                ));
            }
            let name = entry.filename().to_string();
            let child = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}/{name}")
            };
            let mode = entry.mode();
            if mode.is_tree() {
                if depth + 1 > limits.max_depth {
                    return Err(tree_err(
                        &child,
                        format!(
                            "more than {} directory levels below {}",
                            limits.max_depth,
                            if path.is_empty() { "/" } else { path }
                        ),
                    ));
                }
                todo.push((entry.oid().to_owned(), child, depth + 1));
                continue;
            }
            if !is_manifest(&name) {
                continue;
            }
            if mode.is_link() {
                return Err(tree_err(
                    &child,
                    "a symlink: sources read regular files only (a link may point out of the path)"
                        .into(),
                ));
            }
            if !mode.is_blob() {
                continue;
            }
            let size = repo
                .find_header(entry.oid())
                .map_err(|e| tree_err(&child, e.to_string()))?
                .size();
            if size > limits.max_file_bytes {
                return Err(tree_err(
                    &child,
                    format!(
                        "{size} bytes, more than a manifest may have ({})",
                        limits.max_file_bytes
                    ),
                ));
            }
            total += size;
            if total > limits.max_total_bytes {
                return Err(tree_err(
                    path,
                    format!(
                        "manifests of more than {} bytes in all",
                        limits.max_total_bytes
                    ),
                ));
            }
            let blob = repo
                .find_blob(entry.oid())
                .map_err(|e| tree_err(&child, e.to_string()))?;
            let file = File {
                path: child,
                data: blob.data.clone(),
            };
            if !file.is_age()
                && let Err(e) = file.text()
            {
                return Err(tree_err(&file.path, format!("not UTF-8: {e}")));
            }
            out.push(file);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
