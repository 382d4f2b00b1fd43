//! Snapshots: every key of a store at one revision, in a checksummed file that any
//! backend can restore (the path from an embedded store on one Pi to etcd on three).
//!
//! ```text
//! motley-snapshot 1
//! {"revision":42,"keys":2,"taken_at":1763800000000}
//! {"key":"/motley/nodes/pi","value":"7b22…"}
//! {"key":"/motley/workloads/service/web","value":"7b22…"}
//! sha256 3f1a…   (of every byte above this line)
//! ```
//!
//! Values are hex. A file that is truncated, edited or not a snapshot is refused
//! before anything is written.

use sha2::{Digest, Sha256};

use crate::{Store, StoreError, Txn};

/// The first line of every snapshot.
pub const MAGIC: &str = "motley-snapshot 1";

/// Keys written per transaction on restore (etcd allows 128 operations per txn).
pub const RESTORE_CHUNK: usize = 100;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision it was taken at.
    pub revision: u64,
    /// When (ms since the epoch).
    pub taken_at: u64,
    /// Every key and value under the prefix, sorted by key.
    pub entries: Vec<(String, Vec<u8>)>,
}

/// Why a snapshot file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a motley snapshot at all.
    #[error("not a motley snapshot (the first line is not {MAGIC:?})")]
    NotASnapshot,
    /// Cut short: the checksum line or entries are missing.
    #[error("truncated snapshot: {0}")]
    Truncated(String),
    /// The checksum does not match the content.
    #[error("corrupt snapshot: checksum {found} does not match the content ({expected})")]
    Checksum {
        /// In the file.
        found: String,
        /// Of the content.
        expected: String,
    },
    /// A line could not be read.
    #[error("corrupt snapshot: line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        why: String,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    revision: u64,
    keys: usize,
    taken_at: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: String,
    value: String,
}

impl Snapshot {
    /// Reads every key under `prefix` at one revision.
    pub async fn take(store: &dyn Store, prefix: &str, now: u64) -> Result<Snapshot, StoreError> {
        let r = store.range(prefix).await?;
        Ok(Snapshot {
            revision: r.revision,
            taken_at: now,
            entries: r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        })
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        out.push_str(MAGIC);
        out.push('\n');
        let header = Header {
            revision: self.revision,
            keys: self.entries.len(),
            taken_at: self.taken_at,
        };
        out.push_str(&serde_json::to_string(&header).unwrap_or_default());
        out.push('\n');
        for (k, v) in &self.entries {
            let e = Entry {
                key: k.clone(),
                value: hex::encode(v),
            };
            out.push_str(&serde_json::to_string(&e).unwrap_or_default());
            out.push('\n');
        }
        let sum = hex::encode(Sha256::digest(out.as_bytes()));
        out.push_str("sha256 ");
        out.push_str(&sum);
        out.push('\n');
        out.into_bytes()
    }

    /// Parses and verifies a file: magic, checksum, header, every entry, the count.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let text = std::str::from_utf8(bytes).map_err(|_| SnapshotError::NotASnapshot)?;
        if !text.starts_with(&format!("{MAGIC}\n")) {
            return Err(SnapshotError::NotASnapshot);
        }
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .ok_or_else(|| SnapshotError::Truncated("no checksum line".into()))?
            + 1;
        let (body, last) = text.split_at(body_end);
        let found = last
            .trim_end_matches('\n')
            .strip_prefix("sha256 ")
            .ok_or_else(|| SnapshotError::Truncated("the last line is not the checksum".into()))?;
        let expected = hex::encode(Sha256::digest(body.as_bytes()));
        if found != expected {
            return Err(SnapshotError::Checksum {
                found: found.to_string(),
                expected,
            });
        }
        let mut lines = body.lines().enumerate().skip(1);
        let (_, h) = lines
            .next()
            .ok_or_else(|| SnapshotError::Truncated("no header".into()))?;
        let header: Header = serde_json::from_str(h).map_err(|e| SnapshotError::Line {
            line: 2,
            why: e.to_string(),
        })?;
        let mut entries = Vec::with_capacity(header.keys);
        for (i, l) in lines {
            let e: Entry = serde_json::from_str(l).map_err(|e| SnapshotError::Line {
                line: i + 1,
                why: e.to_string(),
            })?;
            let value = hex::decode(&e.value).map_err(|err| SnapshotError::Line {
                line: i + 1,
                why: format!("value of {}: {err}", e.key),
            })?;
            entries.push((e.key, value));
        }
        if entries.len() != header.keys {
            return Err(SnapshotError::Truncated(format!(
                "{} keys, the header says {}",
                entries.len(),
                header.keys
            )));
        }
        Ok(Snapshot {
            revision: header.revision,
            taken_at: header.taken_at,
            entries,
        })
    }

    /// Writes every entry into `store`, which must hold nothing under `prefix` (restore
    /// into an empty store: a fresh data dir, or an empty etcd). Returns the keys written.
    pub async fn restore(&self, store: &dyn Store, prefix: &str) -> Result<usize, StoreError> {
        let existing = store.range(prefix).await?;
        if !existing.kvs.is_empty() {
            return Err(StoreError::Backend(format!(
                "the target already holds {} key(s) under {prefix}; restore into an empty store",
                existing.kvs.len()
            )));
        }
        for chunk in self.entries.chunks(RESTORE_CHUNK) {
            let mut t = Txn::new();
            for (k, v) in chunk {
                // Each key must still be absent: two restores at once cannot interleave.
                t = t.when(k.as_str(), 0).put(k.as_str(), v.clone());
            }
            let r = store.txn(t).await?;
            if !r.succeeded {
                return Err(StoreError::Backend(
                    "the target changed during the restore".into(),
                ));
            }
        }
        Ok(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            revision: 7,
            taken_at: 1,
            entries: vec![
                ("/motley/a".into(), b"{\"x\":1}".to_vec()),
                ("/motley/b".into(), vec![0, 255, 10]),
            ],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(Snapshot::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn damage_is_refused() {
        let bytes = sample().encode();
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        // Truncated anywhere: the checksum line is missing or does not match.
        for cut in [10, text.len() / 2, text.len() - 20] {
            assert!(Snapshot::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // One changed byte in a value.
        let edited = text.replacen("7b", "7c", 1);
        assert!(matches!(
            Snapshot::decode(edited.as_bytes()),
            Err(SnapshotError::Checksum { .. })
        ));
        assert_eq!(
            Snapshot::decode(b"hello\n"),
            Err(SnapshotError::NotASnapshot)
        );
        assert_eq!(
            Snapshot::decode(&[0xff, 0xfe]),
            Err(SnapshotError::NotASnapshot)
        );
    }
}
