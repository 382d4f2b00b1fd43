//! The userland's platform: what the system's own programs are built for, read from
//! their ELF headers. This, not the kernel's architecture, decides which image a node
//! pulls (a 32-bit Raspberry Pi OS on a 64-bit kernel pulls `linux/arm/v7`).
//!
//! The first ELF file among the system's init, its shell and its busybox decides
//! (symbolic links followed inside the root). Without one, the dynamic loaders under
//! `lib*/` decide if they name exactly one architecture; otherwise the platform is
//! unknown. The ARM variant comes from the CPU (`CPU architecture`, with ARM11 read as
//! v6, capped at v7 for a 32-bit userland), as containerd derives it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use motley_core::platform::Platform;

/// Programs whose ELF header says what the userland is, in order.
const PROGRAMS: &[&str] = &[
    "sbin/init",
    "lib/systemd/systemd",
    "usr/lib/systemd/systemd",
    "bin/sh",
    "usr/bin/sh",
    "bin/busybox",
];

/// Dynamic loaders and the architecture each belongs to.
const LOADERS: &[(&str, &str)] = &[
    ("lib64/ld-linux-x86-64.so.2", "amd64"),
    ("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "amd64"),
    ("lib/ld-musl-x86_64.so.1", "amd64"),
    ("lib/ld-linux.so.2", "386"),
    ("lib/ld-musl-i386.so.1", "386"),
    ("lib/ld-linux-aarch64.so.1", "arm64"),
    ("lib/ld-musl-aarch64.so.1", "arm64"),
    ("lib/ld-linux-armhf.so.3", "arm"),
    ("lib/ld-musl-armhf.so.1", "arm"),
    ("lib/ld-linux.so.3", "arm"),
    ("lib/ld-linux-riscv64-lp64d.so.1", "riscv64"),
    ("lib/ld-musl-riscv64.so.1", "riscv64"),
    ("lib64/ld64.so.2", "ppc64le"),
    ("lib/ld64.so.1", "s390x"),
];

/// What an ELF header says: class, byte order, machine and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elf {
    /// 64-bit (`ELFCLASS64`).
    pub bits64: bool,
    /// Little-endian (`ELFDATA2LSB`).
    pub little_endian: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `e_flags`.
    pub flags: u32,
}

/// Parses the start of an ELF file; `None` when it is not one.
pub fn parse_elf(head: &[u8]) -> Option<Elf> {
    if head.len() < 52 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let bits64 = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little_endian = match head[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = head.get(o..o + 2)?.try_into().ok()?;
        Some(if little_endian {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = head.get(o..o + 4)?.try_into().ok()?;
        Some(if little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    Some(Elf {
        bits64,
        little_endian,
        machine: u16_at(18)?,
        flags: u32_at(if bits64 { 48 } else { 36 })?,
    })
}

/// The OCI architecture of an ELF file; `None` for what images are not built for.
pub fn architecture(e: &Elf) -> Option<&'static str> {
    Some(match (e.machine, e.bits64, e.little_endian) {
        (62, true, true) => "amd64",
        (3, false, true) => "386",
        (183, true, true) => "arm64",
        (40, false, true) => "arm",
        (243, true, true) => "riscv64",
        (21, true, true) => "ppc64le",
        (21, true, false) => "ppc64",
        (22, true, false) => "s390x",
        (258, true, true) => "loong64",
        (8, true, true) => "mips64le",
        (8, true, false) => "mips64",
        (8, false, true) => "mipsle",
        (8, false, false) => "mips",
        _ => return None,
    })
}

/// The variant of a 32-bit ARM userland on a CPU of ARM architecture `arm_arch` (6, 7,
/// 8...): v5 for ARMv5, v6 for ARMv6, v7 from ARMv7 up (a 32-bit userland on an ARMv8
/// core runs ARMv7 code).
pub fn arm_variant(arm_arch: Option<u32>) -> &'static str {
    match arm_arch {
        Some(n) if n <= 5 => "v5",
        Some(6) => "v6",
        _ => "v7",
    }
}

/// The parts of a path: names and `..`, nothing else.
fn parts(p: &Path) -> VecDeque<OsString> {
    use std::path::Component;
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Resolves `rel` inside `root` one component at a time, following symbolic links as
/// the system at `root` would see them (absolute targets from `root`, `..` never above
/// it), at most 16 links; `None` when it leads nowhere.
fn resolve(root: &Path, rel: &str) -> Option<PathBuf> {
    let join = |done: &[OsString]| done.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    let mut todo = parts(Path::new(rel));
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        done.push(c);
        let path = join(&done);
        if std::fs::symlink_metadata(&path)
            .ok()?
            .file_type()
            .is_symlink()
        {
            links += 1;
            if links > 16 {
                return None;
            }
            let target = std::fs::read_link(&path).ok()?;
            done.pop();
            if target.is_absolute() {
                done.clear();
            }
            let mut next = parts(&target);
            next.extend(todo);
            todo = next;
        }
    }
    Some(join(&done))
}

fn read_head(p: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).ok()?;
    let mut head = vec![0u8; 64];
    let n = f.read(&mut head).ok()?;
    head.truncate(n);
    Some(head)
}

/// What [`platform`] found, per root and ARM architecture, for the life of the process.
type Found = Option<(Platform, String)>;
static CACHE: std::sync::Mutex<Vec<(PathBuf, Option<u32>, Found)>> =
    std::sync::Mutex::new(Vec::new());

/// [`platform`], read once per root for the life of the process: a userland's
/// architecture does not change under a running agent (replacing it replaces the
/// agent's own binary too), so each facts refresh need not open its files again.
pub fn platform_cached(root: &Path, arm_arch: Option<u32>) -> Found {
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, f)) = c.iter().find(|(r, a, _)| r == root && *a == arm_arch) {
        return f.clone();
    }
    let f = platform(root, arm_arch);
    // A handful of roots at most (the host, or the fixture trees of a test run).
    if c.len() >= 64 {
        c.clear();
    }
    c.push((root.to_path_buf(), arm_arch, f.clone()));
    f
}

/// The userland platform of the system at `root` and what decided it.
pub fn platform(root: &Path, arm_arch: Option<u32>) -> Option<(Platform, String)> {
    let make = |arch: &str| {
        let variant = match arch {
            "arm" => arm_variant(arm_arch),
            _ => "",
        };
        Platform::new("linux", arch, variant)
    };
    for prog in PROGRAMS {
        let Some(path) = resolve(root, prog) else {
            continue;
        };
        let Some(elf) = read_head(&path).and_then(|h| parse_elf(&h)) else {
            continue;
        };
        let shown = path
            .strip_prefix(root)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_else(|_| path.display().to_string());
        return architecture(&elf).map(|a| (make(a), format!("ELF of {shown}")));
    }
    let mut found: Vec<&str> = LOADERS
        .iter()
        .filter(|(p, _)| resolve(root, p).is_some())
        .map(|(_, a)| *a)
        .collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [one] => Some((make(one), format!("the only dynamic loader is for {one}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF header: class, byte order, machine, flags.
    pub(crate) fn elf(bits64: bool, le: bool, machine: u16, flags: u32) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = if bits64 { 2 } else { 1 };
        h[5] = if le { 1 } else { 2 };
        let m = if le {
            machine.to_le_bytes()
        } else {
            machine.to_be_bytes()
        };
        h[18..20].copy_from_slice(&m);
        let f = if le {
            flags.to_le_bytes()
        } else {
            flags.to_be_bytes()
        };
        let at = if bits64 { 48 } else { 36 };
        h[at..at + 4].copy_from_slice(&f);
        h
    }

    #[test]
    fn elf_headers() {
        let e = parse_elf(&elf(false, true, 40, 0x0500_0400)).expect("elf");
        assert_eq!(
            e,
            Elf {
                bits64: false,
                little_endian: true,
                machine: 40,
                flags: 0x0500_0400
            }
        );
        assert_eq!(architecture(&e), Some("arm"));
        let cases = [
            (true, true, 62, Some("amd64")),
            (false, true, 3, Some("386")),
            (true, true, 183, Some("arm64")),
            (true, true, 243, Some("riscv64")),
            (true, false, 22, Some("s390x")),
            (true, true, 21, Some("ppc64le")),
            (false, true, 62, None), // x32
            (true, true, 2, None),   // SPARC
        ];
        for (b, le, m, want) in cases {
            let e = parse_elf(&elf(b, le, m, 0)).expect("elf");
            assert_eq!(architecture(&e), want, "machine {m}");
        }
        assert_eq!(parse_elf(b"#!/bin/sh\n"), None);
        assert_eq!(parse_elf(&[0x7f, b'E', b'L', b'F']), None);
        let mut bad = elf(true, true, 62, 0);
        bad[4] = 9;
        assert_eq!(parse_elf(&bad), None);
    }

    #[test]
    fn arm_variants() {
        assert_eq!(arm_variant(Some(8)), "v7");
        assert_eq!(arm_variant(Some(7)), "v7");
        assert_eq!(arm_variant(Some(6)), "v6");
        assert_eq!(arm_variant(Some(5)), "v5");
        assert_eq!(arm_variant(None), "v7");
    }

    fn tree(files: &[(&str, Vec<u8>)], links: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (p, bytes) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, bytes).expect("write");
        }
        for (link, target) in links {
            let p = d.path().join(link);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::os::unix::fs::symlink(target, p).expect("symlink");
        }
        d
    }

    #[test]
    fn a_32_bit_userland_on_a_64_bit_kernel() {
        // Raspberry Pi OS 32-bit: /sbin/init -> /lib/systemd/systemd, an ARM EABI5
        // hard-float executable; the CPU is ARMv8.
        let t = tree(
            &[("lib/systemd/systemd", elf(false, true, 40, 0x0500_0400))],
            &[("sbin/init", "/lib/systemd/systemd")],
        );
        let (p, why) = platform(t.path(), Some(8)).expect("platform");
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert_eq!(why, "ELF of /lib/systemd/systemd");
        // The same userland on a Pi Zero (ARMv6).
        let (p, _) = platform(t.path(), Some(6)).expect("platform");
        assert_eq!(p.to_string(), "linux/arm/v6");
    }

    #[test]
    fn init_before_shell_and_loaders_as_a_fallback() {
        let t = tree(
            &[
                ("sbin/init", elf(true, true, 183, 0)),
                ("bin/sh", elf(false, true, 40, 0)),
            ],
            &[],
        );
        assert_eq!(
            platform(t.path(), Some(8)).map(|(p, _)| p.to_string()),
            Some("linux/arm64/v8".into())
        );
        // No program, one loader: that loader's architecture.
        let t = tree(&[("lib/ld-linux-riscv64-lp64d.so.1", vec![0])], &[]);
        let (p, why) = platform(t.path(), None).expect("platform");
        assert_eq!(p.to_string(), "linux/riscv64");
        assert!(why.contains("loader"), "{why}");
        // Two loaders (multiarch): unknown, not a guess.
        let t = tree(
            &[
                ("lib64/ld-linux-x86-64.so.2", vec![0]),
                ("lib/ld-linux.so.2", vec![0]),
            ],
            &[],
        );
        assert_eq!(platform(t.path(), None), None);
        // Nothing at all (a capture of /proc and /sys): unknown.
        let t = tree(&[("proc/cpuinfo", b"processor : 0\n".to_vec())], &[]);
        assert_eq!(platform(t.path(), None), None);
    }

    #[test]
    fn links_stay_inside_the_root_and_loops_end() {
        // A capture's links point into the captured system, never at this machine's:
        // neither a relative link climbing out nor an absolute one reaches the host's
        // /sbin/init (which this machine surely has).
        let t = tree(&[], &[("sbin/init", "../../../../../../sbin/init")]);
        assert_eq!(platform(t.path(), None), None);
        let t = tree(&[], &[("bin", "/usr/bin"), ("sbin/init", "/bin/init")]);
        assert_eq!(platform(t.path(), None), None);
        // A directory link inside the root (merged /usr) is followed.
        let t = tree(
            &[("usr/lib/systemd/systemd", elf(true, true, 62, 0))],
            &[("lib", "usr/lib"), ("sbin/init", "../lib/systemd/systemd")],
        );
        assert_eq!(
            platform(t.path(), None).map(|(p, w)| (p.to_string(), w)),
            Some((
                "linux/amd64".into(),
                "ELF of /usr/lib/systemd/systemd".into()
            ))
        );
        let t = tree(&[], &[("sbin/init", "/sbin/init")]);
        assert_eq!(platform(t.path(), None), None, "a link to itself ends");
    }
}
