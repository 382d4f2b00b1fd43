//! Secrets at rest: AES-256-GCM under a key that lives in a file beside the server's
//! data (`<data-dir>/server/secrets.key`, mode 0600) and never enters the store.
//!
//! A sealed value is `v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`. The key id is
//! the first 8 bytes of the key's SHA-256, so a server can tell "sealed with a key I do
//! not have" from "tampered with". The additional data binds each value to its secret
//! and key (`<secret>/<key>`): a sealed value copied to another place does not open.
//!
//! Rotation writes the new key to `secrets.key.next`, makes it the key new values are
//! sealed with, re-seals every stored value, then renames it over `secrets.key`. A
//! server that stops half-way loads both files and can open either kind of value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use motley_core::model::{Allocation, Desired, Kind, Spec, Workload, WorkloadRef};
use motley_core::proto::SecretDelivery;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Why a value could not be sealed or opened, or a key not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Sealed with a key this server does not hold.
    #[error(
        "sealed with key {0}, which this server does not have (copy secrets.key from the server that sealed it)"
    )]
    UnknownKey(String),
    /// Not a sealed value, or altered.
    #[error("the sealed value is damaged or was moved from another secret")]
    Damaged,
    /// The key file.
    #[error("{path}: {why}")]
    KeyFile {
        /// Which file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// No randomness.
    #[error("the system random number generator failed")]
    Random,
}

struct Key {
    id: String,
    key: LessSafeKey,
}

fn make_key(bytes: &[u8]) -> Result<Key, SecretError> {
    let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SecretError::Damaged)?;
    Ok(Key {
        id: hex::encode(&Sha256::digest(bytes)[..8]),
        key: LessSafeKey::new(unbound),
    })
}

fn read_key(path: &Path) -> Result<Option<Key>, SecretError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SecretError::KeyFile {
                path: path.into(),
                why: e.to_string(),
            });
        }
    };
    let bytes = hex::decode(text.trim()).map_err(|e| SecretError::KeyFile {
        path: path.into(),
        why: format!("not a hex key: {e}"),
    })?;
    if bytes.len() != 32 {
        return Err(SecretError::KeyFile {
            path: path.into(),
            why: format!("a key is 32 bytes (64 hex digits), this is {}", bytes.len()),
        });
    }
    make_key(&bytes).map(Some)
}

fn new_key_file(path: &Path) -> Result<Key, SecretError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    let text = format!("{}\n", hex::encode(bytes));
    motley_net::write_private(path, text.as_bytes(), 0o600).map_err(|e| SecretError::KeyFile {
        path: path.into(),
        why: e.to_string(),
    })?;
    make_key(&bytes)
}

/// The keys a server seals and opens secret values with.
pub struct Keyring {
    path: PathBuf,
    /// The key new values are sealed with is the last one.
    keys: Vec<Key>,
}

impl Keyring {
    /// Loads `path` (and `path.next` from an unfinished rotation), creating `path` with a
    /// fresh random key when neither exists.
    pub fn load_or_create(path: &Path) -> Result<Keyring, SecretError> {
        let mut keys = Vec::new();
        if let Some(k) = read_key(path)? {
            keys.push(k);
        }
        if let Some(k) = read_key(&next_path(path))? {
            tracing::warn!(
                "{} is left from an unfinished key rotation: values sealed with either key open; run `motley secrets rotate-key` to finish",
                next_path(path).display()
            );
            keys.push(k);
        }
        if keys.is_empty() {
            keys.push(new_key_file(path)?);
            tracing::info!("created the secrets key {}", path.display());
        }
        Ok(Keyring {
            path: path.into(),
            keys,
        })
    }

    /// The id of the key new values are sealed with.
    pub fn id(&self) -> &str {
        self.keys.last().map_or("", |k| k.id.as_str())
    }

    /// True when a value sealed as `sealed` was sealed with the current key.
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed_parts(sealed).is_some_and(|(id, _)| id == self.id())
    }

    /// True when this keyring holds the key with this id.
    fn has(&self, id: &str) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// Seals `plain`, the value of `key` in secret `secret`.
    pub fn seal(&self, secret: &str, key: &str, plain: &[u8]) -> Result<String, SecretError> {
        let k = self.keys.last().ok_or(SecretError::Random)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut buf = plain.to_vec();
        k.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(secret, key).as_bytes()),
                &mut buf,
            )
            .map_err(|_| SecretError::Damaged)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("v1:{}:{}", k.id, B64.encode(out)))
    }

    /// Opens a value sealed by [`Keyring::seal`] for the same secret and key.
    pub fn open(&self, secret: &str, key: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let (id, body) = sealed_parts(sealed).ok_or(SecretError::Damaged)?;
        let k = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SecretError::UnknownKey(id.to_string()))?;
        let raw = B64.decode(body).map_err(|_| SecretError::Damaged)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Damaged);
        }
        let (n, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| SecretError::Damaged)?;
        let mut buf = ct.to_vec();
        let plain = k
            .key
            .open_in_place(nonce, Aad::from(aad(secret, key).as_bytes()), &mut buf)
            .map_err(|_| SecretError::Damaged)?;
        Ok(plain.to_vec())
    }

    /// Starts a rotation: a new key in `secrets.key.next`, used for sealing from now on.
    /// Returns its id.
    pub fn begin_rotation(&mut self) -> Result<String, SecretError> {
        let next = next_path(&self.path);
        // A rotation left unfinished keeps its key: values may already be sealed with it.
        if self.keys.len() < 2 {
            self.keys.push(new_key_file(&next)?);
        }
        Ok(self.id().to_string())
    }

    /// Finishes a rotation once every stored value is sealed with the new key: the new
    /// key replaces the old in `secrets.key`, and the old one is forgotten.
    pub fn finish_rotation(&mut self) -> Result<(), SecretError> {
        let next = next_path(&self.path);
        std::fs::rename(&next, &self.path).map_err(|e| SecretError::KeyFile {
            path: next.clone(),
            why: e.to_string(),
        })?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        let keep = self.keys.len().saturating_sub(1);
        self.keys.drain(..keep);
        Ok(())
    }
}

/// The Secret values allocation `a` is to be given, opened from the stored secrets,
/// and its Config values; `None` when it references none or is not to run.
pub fn deliver(
    keyring: &Keyring,
    workloads: &BTreeMap<WorkloadRef, Workload>,
    a: &Allocation,
) -> Option<SecretDelivery> {
    if !a.task.uses_secrets() || a.desired != Desired::Run || a.state.is_terminal() {
        return None;
    }
    let mut out = SecretDelivery::default();
    for r in &a.task.secrets {
        let wr = a.workload.sibling(Kind::Secret, &r.secret);
        let value = match workloads.get(&wr).map(|w| &w.spec) {
            Some(Spec::Secret(s)) => match s.data.get(&r.key).and_then(|v| v.sealed.as_deref()) {
                Some(sealed) => keyring
                    .open(&wr.scoped_name(), &r.key, sealed)
                    .map_err(|e| format!("secret {} key {}: {e}", r.secret, r.key))
                    .and_then(|v| {
                        String::from_utf8(v)
                            .map_err(|_| format!("secret {} key {}: not text", r.secret, r.key))
                    }),
                None => Err(format!("secret {} has no key {}", r.secret, r.key)),
            },
            _ => Err(format!("secret {} not found", r.secret)),
        };
        match value {
            Ok(v) => {
                if let Some(e) = &r.env {
                    out.env.insert(e.clone(), v);
                } else if let Some(f) = &r.file {
                    out.files.insert(f.clone(), v);
                }
            }
            Err(e) => {
                return Some(SecretDelivery {
                    error: Some(e),
                    ..SecretDelivery::default()
                });
            }
        }
    }
    match motley_core::config::values(workloads, &a.workload, &a.task) {
        Ok((env, files)) => {
            out.config_env = env;
            out.config_files = files;
        }
        Err(e) => {
            return Some(SecretDelivery {
                error: Some(e),
                ..SecretDelivery::default()
            });
        }
    }
    if let Some(name) = &a.task.image_secret {
        match registry_credentials(keyring, workloads, &a.workload.sibling(Kind::Secret, name)) {
            Ok(c) => out.registry = Some(c),
            Err(e) => {
                return Some(SecretDelivery {
                    error: Some(e),
                    ..SecretDelivery::default()
                });
            }
        }
    }
    Some(out)
}

/// The user name and password of a registry Secret (keys `username`, `password`).
pub fn registry_credentials(
    keyring: &Keyring,
    workloads: &BTreeMap<WorkloadRef, Workload>,
    wr: &WorkloadRef,
) -> Result<(String, String), String> {
    let name = wr.scoped_name();
    let Some(Spec::Secret(s)) = workloads.get(wr).map(|w| &w.spec) else {
        return Err(format!("secret {name} not found"));
    };
    registry_credentials_of(keyring, s)
}

/// [`registry_credentials`] of a Secret at hand (one being applied).
pub fn registry_credentials_of(
    keyring: &Keyring,
    s: &motley_core::model::SecretSpec,
) -> Result<(String, String), String> {
    let text = |key: &str| {
        let v = value_of(keyring, s, key).map_err(|e| {
            if e.contains("has no key") {
                format!("{e} (it needs username and password)")
            } else {
                e
            }
        })?;
        String::from_utf8(v).map_err(|_| format!("secret {} key {key}: not text", s.name))
    };
    Ok((text("username")?, text("password")?))
}

/// One value of a Secret at hand, opened (in memory only).
pub fn value_of(
    keyring: &Keyring,
    s: &motley_core::model::SecretSpec,
    key: &str,
) -> Result<Vec<u8>, String> {
    use motley_core::model::namespace_or_default;
    let name =
        &WorkloadRef::in_namespace(namespace_or_default(&s.namespace), Kind::Secret, &s.name)
            .scoped_name();
    let sealed = s
        .data
        .get(key)
        .and_then(|v| v.sealed.as_deref())
        .ok_or_else(|| format!("secret {name} has no key {key}"))?;
    keyring
        .open(name, key, sealed)
        .map_err(|e| format!("secret {name} key {key}: {e}"))
}

/// One value of a stored Secret, opened (in memory only).
pub fn value(
    keyring: &Keyring,
    workloads: &BTreeMap<WorkloadRef, Workload>,
    wr: &WorkloadRef,
    key: &str,
) -> Result<Vec<u8>, String> {
    let name = wr.scoped_name();
    let Some(Spec::Secret(s)) = workloads.get(wr).map(|w| &w.spec) else {
        return Err(format!("secret {name} not found"));
    };
    value_of(keyring, s, key)
}

/// Secrets sealed with a key this keyring lacks: `(secret, key id)`, one per secret.
pub fn foreign_keys(
    ring: &Keyring,
    workloads: &BTreeMap<WorkloadRef, Workload>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for w in workloads.values() {
        let Spec::Secret(s) = &w.spec else { continue };
        let foreign = s.data.values().find_map(|v| {
            let (id, _) = sealed_parts(v.sealed.as_deref()?)?;
            (!ring.has(id)).then(|| id.to_string())
        });
        if let Some(id) = foreign {
            out.push((s.name.clone(), id));
        }
    }
    out
}

/// `v1:<key id>:<body>` → `(key id, body)`.
fn sealed_parts(sealed: &str) -> Option<(&str, &str)> {
    sealed.strip_prefix("v1:")?.split_once(':')
}

fn next_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".next");
    PathBuf::from(p)
}

fn aad(secret: &str, key: &str) -> String {
    format!("{secret}/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refuse_moved_or_altered_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let ring = Keyring::load_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let sealed = ring.seal("db", "password", b"hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, ring.seal("db", "password", b"hunter2").unwrap());
        assert_eq!(ring.open("db", "password", &sealed).unwrap(), b"hunter2");
        // Moved to another secret or key: refused.
        assert!(matches!(
            ring.open("web", "password", &sealed),
            Err(SecretError::Damaged)
        ));
        assert!(ring.open("db", "user", &sealed).is_err());
        // One flipped character: refused.
        let mut bad = sealed.clone().into_bytes();
        let last = bad.len() - 3;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(ring.open("db", "password", &bad).is_err());
        // Reloading gives the same key.
        let again = Keyring::load_or_create(&path).unwrap();
        assert_eq!(again.id(), ring.id());
        assert_eq!(again.open("db", "password", &sealed).unwrap(), b"hunter2");
        // Another server's key: named as such.
        let other = Keyring::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(matches!(
            other.open("db", "password", &sealed),
            Err(SecretError::UnknownKey(_))
        ));
    }

    #[test]
    fn rotation_survives_a_stop_half_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let mut ring = Keyring::load_or_create(&path).unwrap();
        let old = ring.seal("s", "k", b"v").unwrap();
        let old_id = ring.id().to_string();
        let new_id = ring.begin_rotation().unwrap();
        assert_ne!(old_id, new_id);
        let new = ring.seal("s", "k", b"v").unwrap();
        assert!(ring.is_current(&new) && !ring.is_current(&old));
        // Stopped here: a restarted server opens both.
        let restarted = Keyring::load_or_create(&path).unwrap();
        assert_eq!(restarted.id(), new_id);
        assert_eq!(restarted.open("s", "k", &old).unwrap(), b"v");
        assert_eq!(restarted.open("s", "k", &new).unwrap(), b"v");
        ring.finish_rotation().unwrap();
        assert!(!next_path(&path).exists());
        let after = Keyring::load_or_create(&path).unwrap();
        assert_eq!(after.id(), new_id);
        assert!(matches!(
            after.open("s", "k", &old),
            Err(SecretError::UnknownKey(_))
        ));
        assert_eq!(after.open("s", "k", &new).unwrap(), b"v");
    }
}
