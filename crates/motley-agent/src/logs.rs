//! Bounded per-allocation logs, and serving them over the agent's connection.
//!
//! A task appends to `output.log`. When that grows past [`LOG_MAX`], its last
//! half is copied to `output.log.1` and it is truncated in place (the task
//! writes with O_APPEND, so it simply continues at the new end). Reading gives
//! `output.log.1` then `output.log`: at most 1.5 × [`LOG_MAX`] per allocation.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use motley_core::proto::AgentMsg;
use tokio::sync::mpsc;

use crate::driver::log_path;

/// Size at which a log is trimmed.
pub const LOG_MAX: u64 = 4 << 20;
/// Largest piece sent in one message.
const CHUNK: usize = 64 << 10;
/// How often a followed log is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Trims a log that outgrew `max` (normally [`LOG_MAX`]). Does nothing (and writes
/// nothing) otherwise.
pub fn trim(dir: &Path, max: u64) -> std::io::Result<()> {
    let path = log_path(dir);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(_) => return Ok(()),
    };
    if len <= max {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    let keep = max / 2;
    f.seek(SeekFrom::Start(len - keep))?;
    let mut tail = Vec::with_capacity(keep as usize);
    (&mut f).take(keep).read_to_end(&mut tail)?;
    std::fs::write(dir.join("output.log.1"), &tail)?;
    f.set_len(0)?;
    Ok(())
}

/// Bytes an allocation's log takes (`output.log` and `output.log.1`).
pub fn usage(dir: &Path) -> u64 {
    ["output.log", "output.log.1"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Cuts an allocation's log to its newest `keep` bytes (the node's logs together were
/// over budget: [`motley_core::logbudget`]). The older file goes first; when the current
/// one alone is larger, its tail becomes the older file and it is truncated in place
/// (writers append, as for [`trim`]). Writes nothing when the log fits.
pub fn trim_to(dir: &Path, keep: u64) -> std::io::Result<()> {
    let current = log_path(dir);
    let older = dir.join("output.log.1");
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let (cur, old) = (len(&current), len(&older));
    if cur.saturating_add(old) <= keep {
        return Ok(());
    }
    let tail_of = |path: &Path, from: u64, n: u64| -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(from))?;
        let mut out = Vec::with_capacity(n as usize);
        f.take(n).read_to_end(&mut out)?;
        Ok(out)
    };
    if cur <= keep {
        let n = keep - cur;
        if n == 0 {
            return std::fs::remove_file(&older);
        }
        let tail = tail_of(&older, old - n, n)?;
        return std::fs::write(&older, tail);
    }
    let tail = tail_of(&current, cur - keep, keep)?;
    std::fs::write(&older, &tail)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&current)?
        .set_len(0)
}

/// Keeps the logs in `dirs` (one place: memory or disk) within `budget` together,
/// cutting the largest to a common level ([`motley_core::logbudget::level`]). Returns
/// the level and how many were cut, when any was.
pub fn enforce_budget(dirs: &[std::path::PathBuf], budget: u64) -> Option<(u64, usize)> {
    let sizes: Vec<u64> = dirs.iter().map(|d| usage(d)).collect();
    let level = motley_core::logbudget::level(&sizes, budget)?;
    let mut cut = 0;
    for (d, size) in dirs.iter().zip(&sizes) {
        if *size > level && trim_to(d, level).is_ok() {
            cut += 1;
        }
    }
    Some((level, cut))
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Replaces every occurrence of a masked value (the task's secret values) by
/// `<redacted>`. A value split across two reads of a growing log is not caught.
pub fn redact(mut data: String, mask: &[String]) -> String {
    for v in mask {
        if data.contains(v.as_str()) {
            data = data.replace(v.as_str(), "<redacted>");
        }
    }
    data
}

/// [`redact`] on raw log bytes; nothing to do (and no copy) without a mask.
fn masked(bytes: Vec<u8>, mask: &[String]) -> Vec<u8> {
    if mask.is_empty() {
        return bytes;
    }
    redact(String::from_utf8_lossy(&bytes).into_owned(), mask).into_bytes()
}

/// Sends an allocation's log as `LogData` messages; with `follow`, keeps sending as it
/// grows until `done()` says the task has ended and everything was sent. Values in
/// `mask` (the task's secrets) are sent as `<redacted>`.
pub async fn serve(
    dir: std::path::PathBuf,
    req: u64,
    tail: Option<u64>,
    follow: bool,
    out: mpsc::UnboundedSender<AgentMsg>,
    done: impl Fn() -> bool,
    mask: Vec<String>,
) {
    let send = |data: String, eof: bool, error: Option<String>| {
        out.send(AgentMsg::LogData {
            req,
            data,
            eof,
            error,
        })
        .is_ok()
    };
    let current = log_path(&dir);
    let mut all = std::fs::read(dir.join("output.log.1")).unwrap_or_default();
    let mut offset = match read_from(&current, 0) {
        Ok(b) => {
            let n = b.len() as u64;
            all.extend(b);
            n
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            send(String::new(), true, Some(format!("reading the log: {e}")));
            return;
        }
    };
    if let Some(t) = tail {
        let t = t.min(all.len() as u64) as usize;
        all.drain(..all.len() - t);
    }
    if all.is_empty() && !send(String::new(), false, None) {
        return;
    }
    // Masked before chunking, so a value is not cut in two by a chunk boundary.
    let all = masked(all, &mask);
    for chunk in all.chunks(CHUNK) {
        if !send(String::from_utf8_lossy(chunk).into_owned(), false, None) {
            return;
        }
    }
    if follow {
        loop {
            let finished = done();
            let len = std::fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0; // trimmed
            }
            if len > offset {
                match read_from(&current, offset) {
                    Ok(b) => {
                        offset += b.len() as u64;
                        let b = masked(b, &mask);
                        for chunk in b.chunks(CHUNK) {
                            if !send(String::from_utf8_lossy(chunk).into_owned(), false, None) {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        send(String::new(), true, Some(format!("reading the log: {e}")));
                        return;
                    }
                }
            }
            if finished || out.is_closed() {
                break;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
    send(String::new(), true, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_every_occurrence_and_nothing_else() {
        let mask = vec!["hunter2".to_string(), "s3cr3t-token".to_string()];
        assert_eq!(
            redact(
                "pw=hunter2 token=s3cr3t-token again hunter2\n".into(),
                &mask
            ),
            "pw=<redacted> token=<redacted> again <redacted>\n"
        );
        assert_eq!(redact("nothing here".into(), &mask), "nothing here");
    }

    #[tokio::test]
    async fn served_logs_are_masked_even_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = "hunter2-hunter2";
        // The value straddles the first chunk boundary.
        let mut text = "x".repeat(CHUNK - 5);
        text.push_str(secret);
        text.push('\n');
        std::fs::write(log_path(dir.path()), &text).expect("log");
        let (tx, mut rx) = mpsc::unbounded_channel();
        serve(
            dir.path().to_path_buf(),
            1,
            None,
            false,
            tx,
            || true,
            vec![secret.to_string()],
        )
        .await;
        let mut got = String::new();
        while let Ok(AgentMsg::LogData { data, .. }) = rx.try_recv() {
            got.push_str(&data);
        }
        assert!(!got.contains(secret), "a masked value was sent");
        assert!(!got.contains("hunter2"), "part of it was sent");
        assert!(got.ends_with("<redacted>\n"), "{}", &got[got.len() - 20..]);
    }

    #[test]
    fn trim_to_keeps_the_newest_bytes_and_drops_the_older_file_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("output.log.1"), b"0123456789").expect("write");
        std::fs::write(d.join("output.log"), b"abcdef").expect("write");
        trim_to(d, 16).expect("fits");
        assert_eq!(usage(d), 16);
        trim_to(d, 9).expect("trim");
        assert_eq!(std::fs::read(d.join("output.log.1")).expect("read"), b"789");
        assert_eq!(
            std::fs::read(d.join("output.log")).expect("read"),
            b"abcdef"
        );
        trim_to(d, 6).expect("trim");
        assert!(!d.join("output.log.1").exists());
        assert_eq!(usage(d), 6);
        trim_to(d, 2).expect("trim");
        assert_eq!(std::fs::read(d.join("output.log.1")).expect("read"), b"ef");
        assert_eq!(std::fs::read(d.join("output.log")).expect("read"), b"");
        assert_eq!(usage(d), 2);
    }

    #[test]
    fn trim_keeps_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..(LOG_MAX + 10)).map(|i| (i % 251) as u8).collect();
        std::fs::write(log_path(dir.path()), &big).expect("write");
        trim(dir.path(), LOG_MAX).expect("trim");
        let kept = std::fs::read(dir.path().join("output.log.1")).expect("rotated");
        assert_eq!(kept.as_slice(), &big[big.len() - (LOG_MAX / 2) as usize..]);
        assert_eq!(
            std::fs::metadata(log_path(dir.path())).expect("log").len(),
            0
        );
    }
}
