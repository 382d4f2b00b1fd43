//! The embedded store's log of lazy transactions ([`crate::Txn::lazy`]): what redb
//! holds only in memory until the next durable commit, appended here with a plain
//! `write` (no fsync), so that a process killed in between loses nothing: the file's
//! bytes are in the page cache, and the next open applies them again. A power cut may
//! take the file's tail; every record carries its length and a CRC-32, and reading stops
//! at the first record that is cut short or does not match, so what is applied is a
//! prefix of the lazy transactions, each whole.
//!
//! Record: length of the rest (u32 LE), CRC-32 of the rest (u32 LE), then the revision
//! (u64 LE) and the transaction's events as the history table encodes them. The file is
//! emptied after every durable commit (everything in it is then in redb).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The log file, appended to by the one writer.
pub struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
}

/// One lazy transaction read back: its revision and encoded events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The revision it committed at.
    pub revision: u64,
    /// Its events, encoded as the history table holds them.
    pub events: Vec<u8>,
}

/// Encodes one record.
pub fn encode(revision: u64, events: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + events.len());
    body.extend_from_slice(&revision.to_le_bytes());
    body.extend_from_slice(events);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The whole records at the start of `bytes`, in order, up to the first one cut short
/// or damaged (the rest is what a power cut left: nothing after it is trusted).
pub fn decode(mut bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while bytes.len() >= 8 {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let Some(body) = bytes.get(8..8 + len) else {
            break;
        };
        if len < 8 || crc32fast::hash(body) != crc {
            break;
        }
        let mut rev = [0u8; 8];
        rev.copy_from_slice(&body[..8]);
        out.push(Record {
            revision: u64::from_le_bytes(rev),
            events: body[8..].to_vec(),
        });
        bytes = &bytes[8 + len..];
    }
    out
}

impl Wal {
    /// Opens (creating) the log beside the store file, returning what it holds.
    pub fn open(store: &Path) -> std::io::Result<(Wal, Vec<Record>)> {
        let mut name = store.as_os_str().to_owned();
        name.push(".wal");
        let path = PathBuf::from(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        Ok((Wal { path, file, len }, decode(&bytes)))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (not synced). On an error the log is cut back to where it
    /// was, so that it never holds a transaction that did not commit.
    pub fn append(&mut self, revision: u64, events: &[u8]) -> std::io::Result<()> {
        let rec = encode(revision, events);
        match self.file.write_all(&rec) {
            Ok(()) => {
                self.len += rec.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Cuts the last record off again (its transaction failed to commit after all).
    pub fn undo(&mut self, revision: u64, events: &[u8]) -> std::io::Result<()> {
        self.len = self
            .len
            .saturating_sub(encode(revision, events).len() as u64);
        self.file.set_len(self.len)
    }

    /// Empties it: everything it held is durable in the store.
    pub fn clear(&mut self) -> std::io::Result<()> {
        if self.len > 0 {
            self.file.set_len(0)?;
            self.len = 0;
        }
        Ok(())
    }

    /// Whether it holds anything.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_whole_and_a_cut_or_damaged_tail_ends_the_log() {
        let mut bytes = encode(7, b"first");
        bytes.extend(encode(8, b""));
        bytes.extend(encode(9, b"third, longer"));
        let all = decode(&bytes);
        assert_eq!(
            all.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
        assert_eq!(all[2].events, b"third, longer");
        // Cut anywhere inside the last record: the first two only.
        for cut in bytes.len() - encode(9, b"third, longer").len()..bytes.len() {
            assert_eq!(decode(&bytes[..cut]).len(), 2, "cut at {cut}");
        }
        // A flipped byte in the second record ends the log before it.
        let mut damaged = bytes.clone();
        let at = encode(7, b"first").len() + 9;
        damaged[at] ^= 0x40;
        assert_eq!(decode(&damaged).len(), 1);
        // Zeros where a record should be (an extended file whose data never arrived).
        let mut zeros = encode(7, b"first");
        zeros.extend([0u8; 64]);
        assert_eq!(decode(&zeros).len(), 1);
    }
}
