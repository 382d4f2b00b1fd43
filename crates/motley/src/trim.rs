//! Letting go of code pages that only startup needed.
//!
//! A daemon's resident set counts every page of its executable it has ever run: for
//! `motley`, one 21 MB binary holding the server, agent, CLI and hardware discovery,
//! startup (argument parsing, discovery, calibration, TLS setup) leaves some 10 MiB of
//! code resident that an idle agent never runs again. The kernel drops such clean pages
//! only when memory runs short. [`code_pages`] unmaps them from this process once it has
//! settled (`MADV_DONTNEED` on the executable's read-execute mappings): the pages stay
//! in the page cache, and the ones the idle process does run come back by a minor fault,
//! so its RSS becomes the code it really uses. Only text is touched: it is never written
//! (no relocations in position-independent code), so nothing can be lost; writable and
//! relocated read-only data (RELRO) are left alone.

/// How long after `ready` a server or agent lets go of its startup code.
pub const AFTER_STARTUP: std::time::Duration = std::time::Duration::from_secs(15);

/// Calls [`code_pages`] once, [`AFTER_STARTUP`] from now, in the background.
pub fn after_startup() {
    tokio::spawn(async {
        tokio::time::sleep(AFTER_STARTUP).await;
        match tokio::task::spawn_blocking(code_pages).await {
            Ok(Ok(bytes)) => tracing::debug!("unmapped {} KiB of startup code", bytes >> 10),
            Ok(Err(e)) => tracing::debug!("unmapping startup code: {e}"),
            Err(_) => {}
        }
    });
}

/// Unmaps this process's executable code pages; returns how many bytes were mapped.
pub fn code_pages() -> std::io::Result<u64> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut total = 0;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        // offset, device, inode, then the path (which may hold spaces).
        let path = f.skip(3).collect::<Vec<_>>().join(" ");
        if perms != "r-xp" || path != exe {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: a read-execute private mapping of our own executable, as the kernel
        // lists it: its pages equal the file's (text is never written), so dropping
        // them loses nothing; they fault back in from the page cache when run.
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
        assert!(mapped > 0, "the executable's text was found");
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
        println!("TRIM-CHILD-OK {before} -> {after}");
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
