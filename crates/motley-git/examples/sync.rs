//! One source sync as the server will do it, timed, for `bench/git_sync.py`:
//! `sync DIR URL BRANCH PATH [KNOWN_COMMIT]` prints one JSON line: the commit, whether
//! it fetched, the manifests read, the wall time of each step, the process's peak
//! resident memory and the bytes it wrote (from /proc/self).
#![forbid(unsafe_code)]

use std::time::Instant;

fn proc_field(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, url, branch, path, rest @ ..] = args.as_slice() else {
        return Err("usage: sync DIR URL BRANCH PATH [KNOWN_COMMIT]".into());
    };
    let known = rest.first().map(String::as_str);
    let t0 = Instant::now();
    let got = motley_git::fetch(
        std::path::Path::new(dir),
        url,
        &motley_git::Want::Branch(branch.clone()),
        known,
    )?;
    let fetch_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let files = motley_git::manifests(
        std::path::Path::new(dir),
        &got.commit,
        path,
        &motley_git::Limits::default(),
    )?;
    let read_ms = t1.elapsed().as_secs_f64() * 1e3;
    let bytes: usize = files.iter().map(|f| f.data.len()).sum();
    println!(
        "{{\"commit\":\"{}\",\"fetched\":{},\"files\":{},\"bytes\":{},\"fetch_ms\":{:.1},\"read_ms\":{:.1},\"peak_rss_kib\":{},\"write_bytes\":{}}}",
        got.commit,
        got.fetched,
        files.len(),
        bytes,
        fetch_ms,
        read_ms,
        proc_field("/proc/self/status", "VmHWM:"),
        proc_field("/proc/self/io", "write_bytes:"),
    );
    Ok(())
}
