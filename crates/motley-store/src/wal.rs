//! The embedded store's log: every transaction goes here first, then into redb as a
//! commit without a sync (`Durability::None`: in memory, visible to every reader). A
//! durable transaction (an apply a user is told is stored) is acknowledged once its
//! record is synced (`fdatasync`: one page); a lazy one ([`crate::Txn::lazy`]) is only
//! written (the page cache has it, so a killed process loses nothing). A durable redb
//! commit at most the commit interval after the first unsynced transaction puts them
//! all in the file at once and empties the log: many transactions cost one copy of the
//! B-tree pages they touched instead of one each.
//!
//! A power cut may take the log's unsynced tail. Every record carries its length and a
//! CRC-32, and reading stops at the first record that is cut short or does not match,
//! so what the next open applies is a prefix of the history, each transaction whole,
//! holding every synced one (a sync flushes everything written before it).
//!
//! Record: length of the rest (u32 LE), CRC-32 of the rest (u32 LE), then the revision
//! (u64 LE) and the transaction's events as the history table encodes them.

use std::path::{Path, PathBuf};

/// Where the log lives: a file, or (in the power-loss tests) a disk that keeps only
/// what was synced.
pub trait LogFile: Send + 'static {
    /// Everything in it.
    fn read_all(&mut self) -> std::io::Result<Vec<u8>>;
    /// Writes `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Makes what was written durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cuts or extends it to `len` bytes.
    fn set_len(&mut self, len: u64) -> std::io::Result<()>;
}

impl LogFile for std::fs::File {
    fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek};
        let mut out = Vec::new();
        self.seek(std::io::SeekFrom::Start(0))?;
        self.read_to_end(&mut out)?;
        Ok(out)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, data, offset)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        std::fs::File::set_len(self, len)
    }
}

/// The log, written by the store's one writer.
pub struct Wal {
    name: String,
    file: Box<dyn LogFile>,
    len: u64,
    /// Its length before the last record (what [`Wal::undo`] cuts back to).
    before_last: u64,
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
    let rev = revision.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&rev);
    crc.update(events);
    let mut out = Vec::with_capacity(16 + events.len());
    out.extend_from_slice(&((8 + events.len()) as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&rev);
    out.extend_from_slice(events);
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
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        Wal::on(Box::new(file), path.display().to_string())
    }

    /// The log on `file`, named `name` in messages, and what it holds.
    pub fn on(mut file: Box<dyn LogFile>, name: String) -> std::io::Result<(Wal, Vec<Record>)> {
        let bytes = file.read_all()?;
        let len = bytes.len() as u64;
        let wal = Wal {
            name,
            file,
            len,
            before_last: len,
        };
        Ok((wal, decode(&bytes)))
    }

    /// What it is called in messages (its path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends one record, synced with `sync`. On an error the log is cut back to
    /// where it was, so that it never holds a transaction that did not commit.
    pub fn append(&mut self, revision: u64, events: &[u8], sync: bool) -> std::io::Result<()> {
        let rec = encode(revision, events);
        let written = self
            .file
            .write_at(self.len, &rec)
            .and_then(|()| if sync { self.file.sync() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.before_last = self.len;
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
    pub fn undo(&mut self) -> std::io::Result<()> {
        self.len = self.before_last;
        self.file.set_len(self.len)
    }

    /// Empties it: everything it held is durable in the store.
    pub fn clear(&mut self) -> std::io::Result<()> {
        if self.len > 0 {
            self.file.set_len(0)?;
            self.len = 0;
            self.before_last = 0;
        }
        Ok(())
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
