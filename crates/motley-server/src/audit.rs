//! Denied requests — no token, a bad token, a role that may not, too many failures —
//! with who, what and when: a bounded ring in memory (`GET /v1/audit`) and a bounded
//! file, `<data-dir>/server/audit.log` (JSON lines, moved to `audit.log.1` at 1 MiB, so
//! at most 2 MiB on disk). Nothing is written unless a request is denied.
//!
//! Also the limit on failed authentication: after [`MAX_FAILURES`] failures from one
//! address within [`WINDOW_MS`], every request from it is answered 429 until the window
//! ends, so tokens cannot be guessed at speed.

use motley_rt::HashMap;
use std::collections::VecDeque;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use motley_core::api::AuditEntry;

use crate::util::lock;

/// Entries kept in memory.
pub const RING: usize = 1000;
/// Size at which the file is rotated.
pub const FILE_MAX: u64 = 1 << 20;
/// Failed authentications allowed per address and window.
pub const MAX_FAILURES: u32 = 10;
/// The window (ms).
pub const WINDOW_MS: u64 = 10_000;

/// The audit log.
pub struct Audit {
    ring: Mutex<VecDeque<AuditEntry>>,
    file: Option<PathBuf>,
    failures: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl Audit {
    /// An audit log kept in memory and, with `file`, on disk.
    pub fn new(file: Option<PathBuf>) -> Audit {
        Audit {
            ring: Mutex::new(VecDeque::new()),
            file,
            failures: Mutex::new(HashMap::default()),
        }
    }

    /// Records a denied request.
    pub fn record(&self, e: AuditEntry) {
        tracing::warn!(
            target: "motley::audit",
            "{} {} {} from {} ({}): {} {}",
            if e.status >= 400 { "denied" } else { "allowed" },
            e.method,
            e.path,
            e.peer,
            e.who,
            e.status,
            e.why
        );
        if let Some(path) = &self.file
            && let Ok(mut line) = serde_json::to_vec(&e)
        {
            line.push(b'\n');
            let big = std::fs::metadata(path).is_ok_and(|m| m.len() + line.len() as u64 > FILE_MAX);
            if big {
                let _ = std::fs::rename(path, path.with_extension("log.1"));
            }
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(&line));
            if let Err(err) = written {
                tracing::warn!("writing the audit log {}: {err}", path.display());
            }
        }
        let mut ring = lock(&self.ring);
        if ring.len() >= RING {
            ring.pop_front();
        }
        ring.push_back(e);
    }

    /// The latest entries, oldest first.
    pub fn recent(&self) -> Vec<AuditEntry> {
        lock(&self.ring).iter().cloned().collect()
    }

    /// If `ip` is locked out at `now`: how long until it may try again (ms).
    pub fn locked_out(&self, ip: IpAddr, now: u64) -> Option<u64> {
        let f = lock(&self.failures);
        let (start, n) = f.get(&ip)?;
        let end = start + WINDOW_MS;
        (*n >= MAX_FAILURES && now < end).then(|| end - now)
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr, now: u64) {
        let mut f = lock(&self.failures);
        if f.len() > 10_000 {
            f.retain(|_, (start, _)| now < *start + WINDOW_MS);
        }
        let e = f.entry(ip).or_insert((now, 0));
        if now >= e.0 + WINDOW_MS {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> AuditEntry {
        AuditEntry {
            at: i as u64,
            who: "anonymous".into(),
            peer: "127.0.0.1".into(),
            method: "GET".into(),
            path: format!("/v1/x{i}"),
            status: 401,
            why: "missing bearer token".into(),
        }
    }

    #[test]
    fn ring_and_file_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let a = Audit::new(Some(path.clone()));
        for i in 0..12_000 {
            a.record(entry(i));
        }
        let recent = a.recent();
        assert_eq!(recent.len(), RING);
        assert_eq!(recent.last().map(|e| e.at), Some(11_999));
        let size = std::fs::metadata(&path).expect("file").len();
        let old = std::fs::metadata(path.with_extension("log.1"))
            .expect("rotated")
            .len();
        assert!(size <= FILE_MAX && old <= FILE_MAX, "{size} {old}");
        let last = std::fs::read_to_string(&path).expect("read");
        assert!(
            last.lines()
                .last()
                .is_some_and(|l| l.contains("/v1/x11999"))
        );
    }

    #[test]
    fn failures_lock_an_address_out_for_the_window() {
        let a = Audit::new(None);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for i in 0..MAX_FAILURES {
            assert_eq!(a.locked_out(ip, 1000), None, "after {i}");
            a.failed(ip, 1000);
        }
        assert_eq!(a.locked_out(ip, 1000), Some(WINDOW_MS));
        assert_eq!(a.locked_out(other, 1000), None);
        assert_eq!(a.locked_out(ip, 1000 + WINDOW_MS), None);
        a.failed(ip, 1000 + WINDOW_MS);
        assert_eq!(a.locked_out(ip, 1000 + WINDOW_MS), None);
    }
}
