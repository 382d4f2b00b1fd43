//! Letting go of file pages that only startup needed.
//!
//! A daemon's resident set counts every page of its executable and libraries it has
//! ever touched: for `motley`, one 21 MB binary holding the server, agent, CLI and
//! hardware discovery, startup (argument parsing, discovery, calibration, TLS setup)
//! leaves several MiB of code and read-only data resident that an idle agent never
//! touches again. The kernel drops such clean pages only when memory runs short.
//! [`code_pages`] unmaps them from this process once it has settled, and again every
//! minute for what later work (an apply, a burst of task starts) brought back
//! (`MADV_DONTNEED`): the pages stay in the page cache, and the ones the idle process
//! does use come back by a minor fault, so its RSS becomes what it really uses.
//!
//! Only mappings that cannot hold anything but the file's bytes are touched: private,
//! not writable, backed by a file, and with no anonymous (copied-on-write) page, as
//! `/proc/self/smaps` says. That takes in code (`r-xp`, never written in
//! position-independent code) and read-only data (`r--p`), and leaves out what the
//! loader relocated (RELRO: `r--p` but written once, so its pages are anonymous copies
//! that dropping would lose), writable data, the heap and stacks.

/// How long after `ready` a server or agent lets go of its startup pages.
pub const AFTER_STARTUP: std::time::Duration = std::time::Duration::from_secs(15);

/// How often it lets go again of what it has touched since: an apply, a burst of task
/// starts or a log stream bring their code back, and an idle process then holds it
/// until memory runs short. Each time costs the idle working set's minor faults (about
/// a thousand, a millisecond or two).
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Calls [`code_pages`] [`AFTER_STARTUP`] from now, then every [`EVERY`], in the
/// background.
pub fn periodically() {
    tokio::spawn(async {
        tokio::time::sleep(AFTER_STARTUP).await;
        loop {
            match tokio::task::spawn_blocking(|| {
                free_heap();
                code_pages()
            })
            .await
            {
                Ok(Ok(bytes)) => tracing::trace!("unmapped {} KiB of clean pages", bytes >> 10),
                Ok(Err(e)) => {
                    tracing::debug!("unmapping clean pages: {e}");
                    return;
                }
                Err(_) => return,
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}

/// Gives free heap memory back to the kernel (glibc's `malloc_trim`: the free pages
/// inside every arena, not only the top of the main heap): what a burst of work
/// allocated and freed stays resident otherwise.
fn free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A mapping [`code_pages`] may drop: `(start, end)`.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read: its range, if its header qualifies it.
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && !first.ends_with(':')
        {
            // A header: range, perms, offset, device, inode, path.
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            let range = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            );
            current = match range {
                (Ok(s), Ok(e)) if (perms == "r-xp" || perms == "r--p") && path.starts_with('/') => {
                    Some((s, e))
                }
                _ => None,
            };
        } else if first == "Anonymous:" {
            // The last field of interest before the next header: decide now.
            if let Some(range) = current.take()
                && f.next() == Some("0")
            {
                out.push(range);
            }
        }
    }
    out
}

/// Unmaps this process's clean, read-only file pages (its code and read-only data, and
/// its libraries'); returns how many bytes of mappings were dropped.
pub fn code_pages() -> std::io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut total = 0;
    for (start, end) in clean_file_mappings(&smaps) {
        // SAFETY: a private, read-only file mapping without one anonymous page, as the
        // kernel listed it: every page equals the file's and cannot be written, so
        // dropping them loses nothing; they fault back in from the page cache when used.
        let r =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        total += (end - start) as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    /// Resident KiB of this process's executable text (the mappings [`super::code_pages`]
    /// unmaps), from `/proc/self/smaps`: other files (libc, the loader) and other
    /// threads' faults in them do not count.
    fn exe_text_rss_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let exe = exe.to_string_lossy().into_owned();
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut in_text = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let mut f = line.split_whitespace();
            match f.next() {
                Some(first) if first.contains('-') && !first.ends_with(':') => {
                    let perms = f.next();
                    let path = f.skip(3).collect::<Vec<_>>().join(" ");
                    in_text = perms == Some("r-xp") && path == exe;
                }
                Some("Rss:") if in_text => {
                    kib += f.next().and_then(|v| v.parse::<u64>().ok()).expect("Rss");
                }
                _ => {}
            }
        }
        kib
    }

    /// Runs in its own process (see the test below) so that no other test thread faults
    /// code in between the two measurements.
    #[test]
    fn trim_child() {
        if std::env::var_os("MOTLEY_TRIM_CHILD").is_none() {
            return;
        }
        let before = exe_text_rss_kib();
        let mapped = super::code_pages().expect("madvise");
        assert!(mapped > 0, "clean file mappings were found");
        let after = exe_text_rss_kib();
        assert!(
            after < before,
            "executable text resident {before} KiB -> {after} KiB"
        );
        // Code runs again (faulted back in): formatting, allocation, a thread.
        let s = std::thread::spawn(|| format!("{:?}", vec![1, 2, 3]))
            .join()
            .expect("thread");
        assert_eq!(s, "[1, 2, 3]");
        // Relocated data survived: a trait object's vtable and a static string.
        let shown: Box<dyn std::fmt::Display> = Box::new(42u8);
        assert_eq!(shown.to_string(), "42");
        println!("TRIM-CHILD-OK {before} -> {after}");
    }

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let entry = |range: &str, perms: &str, path: &str, anon: u32| {
            format!(
                "{range} {perms} 00000000 fe:01 1234 {path}\nSize: 8 kB\nRss: 8 kB\n\
                 Private_Dirty: {anon} kB\nAnonymous: {anon} kB\nVmFlags: rd mr mw me\n"
            )
        };
        let smaps = [
            entry("1000-3000", "r--p", "/usr/bin/motley", 0),
            entry("3000-9000", "r-xp", "/usr/bin/motley", 0),
            // RELRO: read-only now, but the loader wrote relocations into it.
            entry("9000-a000", "r--p", "/usr/bin/motley", 4),
            entry("a000-b000", "rw-p", "/usr/bin/motley", 4),
            entry("b000-c000", "rw-p", "", 4),
            entry("c000-d000", "r-xp", "[vdso]", 0),
            entry("d000-e000", "r-xp", "/usr/lib/my lib.so", 0),
            entry("e000-f000", "r--s", "/dev/shm/x", 0),
        ]
        .concat();
        assert_eq!(
            super::clean_file_mappings(&smaps),
            [(0x1000, 0x3000), (0x3000, 0x9000), (0xd000, 0xe000)]
        );
    }

    #[test]
    fn unmapping_code_pages_shrinks_the_resident_set_and_the_process_runs_on() {
        let exe = std::env::current_exe().expect("current_exe");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "trim::tests::trim_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MOTLEY_TRIM_CHILD", "1")
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("TRIM-CHILD-OK"),
            "child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
