//! Block devices and their media class, mounts, and the device under a directory.
//!
//! * `nvme*` → nvme; `mmcblk*` → sd or emmc by `device/type` (`SD`, `MMC`);
//!   `sr*` → optical; `loop`, `ram`, `zram`, `dm-`, `md`, `nbd`, `vd`, `xvd` → virtual.
//! * `sd*`: through a USB bus (its `/sys/block` link runs through `usbN`) it is
//!   usb-flash unless rotational; QEMU/VMware/virtio disks are virtual; otherwise
//!   `queue/rotational` decides between hdd and ssd.
//! * `removable` alone says nothing: SD cards in built-in readers report 0.

use std::collections::BTreeMap;
use std::path::Path;

pub use motley_core::hw::{DataDisk, Disk, Media};

use crate::{entries, read_trim};

/// One line of `/proc/mounts` or `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `/dev/mmcblk0p2`, `/dev/root`, `tmpfs`.
    pub source: String,
    /// Where it is mounted.
    pub target: String,
    /// Filesystem type.
    pub fstype: String,
    /// `major:minor`, from mountinfo.
    pub dev: Option<String>,
}

/// Undoes the octal escapes of mount tables (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/mounts` text.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(Mount {
                source: unescape(f.next()?),
                target: unescape(f.next()?),
                fstype: f.next().unwrap_or_default().to_string(),
                dev: None,
            })
        })
        .collect()
}

/// Parses `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split_whitespace().collect();
            let r: Vec<&str> = right.split_whitespace().collect();
            Some(Mount {
                dev: Some(f.get(2)?.to_string()),
                target: unescape(f.get(4)?),
                fstype: r.first()?.to_string(),
                source: unescape(r.get(1).copied().unwrap_or_default()),
            })
        })
        .collect()
}

fn virtual_name(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md", "nbd", "vd", "xvd", "zd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The media class of the disk `name` whose sysfs directory is `dir`.
pub fn classify(name: &str, dir: &Path) -> Media {
    let rotational = read_trim(&dir.join("queue/rotational")).map(|v| v == "1");
    if name.starts_with("nvme") {
        return Media::Nvme;
    }
    if name.starts_with("mmcblk") {
        return match read_trim(&dir.join("device/type")).as_deref() {
            Some("SD") | Some("SDcombo") => Media::Sd,
            Some("MMC") => Media::Emmc,
            _ => Media::Unknown,
        };
    }
    if name.starts_with("sr") {
        return Media::Optical;
    }
    if virtual_name(name) {
        return Media::Virtual;
    }
    if name.starts_with("sd") || name.starts_with("hd") {
        let link = std::fs::read_link(dir)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let vendor = read_trim(&dir.join("device/vendor")).unwrap_or_default();
        let model = read_trim(&dir.join("device/model")).unwrap_or_default();
        if link.contains("/virtio")
            || ["QEMU", "VMware", "VBOX"]
                .iter()
                .any(|v| vendor.starts_with(v) || model.starts_with(v))
        {
            return Media::Virtual;
        }
        if link.split('/').any(|c| c.starts_with("usb")) {
            return if rotational == Some(true) {
                Media::Hdd
            } else {
                Media::UsbFlash
            };
        }
        return match rotational {
            Some(true) => Media::Hdd,
            Some(false) => Media::Ssd,
            None => Media::Unknown,
        };
    }
    Media::Unknown
}

/// A disk and its partitions' `major:minor` numbers.
struct Found {
    disk: Disk,
    devs: Vec<(String, String)>, // (major:minor, device name)
}

fn scan(root: &Path) -> Vec<Found> {
    let mut out = Vec::new();
    for (name, dir) in entries(&root.join("sys/block")) {
        // eMMC boot and RPMB areas are parts of the same chip, not disks.
        if name.starts_with("mmcblk") && (name.contains("boot") || name.contains("rpmb")) {
            continue;
        }
        let size = read_trim(&dir.join("size"))
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(0, |s| s.saturating_mul(512));
        if size == 0 && ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let model = read_trim(&dir.join("device/model"))
            .or_else(|| read_trim(&dir.join("device/name")))
            .filter(|m| !m.is_empty());
        let mut devs = Vec::new();
        if let Some(d) = read_trim(&dir.join("dev")) {
            devs.push((d, name.clone()));
        }
        for (part, pdir) in entries(&dir) {
            if pdir.join("partition").exists()
                && let Some(d) = read_trim(&pdir.join("dev"))
            {
                devs.push((d, part));
            }
        }
        out.push(Found {
            disk: Disk {
                media: classify(&name, &dir),
                size,
                model,
                removable: read_trim(&dir.join("removable")).is_some_and(|v| v == "1"),
                mounts: Vec::new(),
                name,
            },
            devs,
        });
    }
    // Composite captures have NVMe controllers without a /sys/block entry.
    for (ctrl, dir) in entries(&root.join("sys/class/nvme")) {
        for (ns, nsdir) in entries(&dir) {
            if !ns.starts_with(&ctrl) || out.iter().any(|f| f.disk.name == ns) {
                continue;
            }
            if !nsdir.is_dir() {
                continue;
            }
            out.push(Found {
                disk: Disk {
                    name: ns,
                    media: Media::Nvme,
                    size: read_trim(&nsdir.join("size"))
                        .and_then(|s| s.parse::<u64>().ok())
                        .map_or(0, |s| s.saturating_mul(512)),
                    model: read_trim(&dir.join("model")),
                    removable: false,
                    mounts: Vec::new(),
                },
                devs: Vec::new(),
            });
        }
    }
    out
}

/// The mount table of the machine at `root`: mountinfo when present, else mounts.
pub fn mounts(root: &Path) -> Vec<Mount> {
    if let Some(t) = crate::read(root, "proc/self/mountinfo") {
        let m = parse_mountinfo(&t);
        if !m.is_empty() {
            return m;
        }
    }
    crate::read(root, "proc/mounts")
        .map(|t| parse_mounts(&t))
        .unwrap_or_default()
}

/// Block devices with their mounts, and the device holding `data_dir` (a path as seen
/// inside `root`).
pub fn disks(root: &Path, data_dir: Option<&str>) -> (Vec<Disk>, Option<DataDisk>) {
    let mut found = scan(root);
    let table = mounts(root);
    // Which disk (index) and device name a mount's source is.
    let locate = |m: &Mount, found: &[Found]| -> Option<(usize, String)> {
        if let Some(dev) = &m.dev {
            for (i, f) in found.iter().enumerate() {
                if let Some((_, n)) = f.devs.iter().find(|(d, _)| d == dev) {
                    return Some((i, n.clone()));
                }
            }
        }
        let name = m.source.strip_prefix("/dev/")?;
        for (i, f) in found.iter().enumerate() {
            if f.devs.iter().any(|(_, n)| n == name) || f.disk.name == name {
                return Some((i, name.to_string()));
            }
            // A partition with no `dev` file in a constructed tree: mmcblk0p2, sda1, nvme0n1p1.
            if name.starts_with(&f.disk.name)
                && name[f.disk.name.len()..]
                    .trim_start_matches('p')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            {
                return Some((i, name.to_string()));
            }
        }
        None
    };
    let mut per_disk: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for m in &table {
        if let Some((i, _)) = locate(m, &found) {
            per_disk.entry(i).or_default().push(m.target.clone());
        }
    }
    for (i, mut targets) in per_disk {
        targets.sort();
        targets.dedup();
        found[i].disk.mounts = targets;
    }
    let data = data_dir.and_then(|dir| {
        let m = table
            .iter()
            .filter(|m| under(dir, &m.target))
            .max_by_key(|m| m.target.len())?;
        let (disk, device) = match locate(m, &found) {
            Some((i, dev)) => (Some(found[i].disk.name.clone()), dev),
            None => (None, m.source.clone()),
        };
        let media = match &disk {
            Some(d) => found
                .iter()
                .find(|f| &f.disk.name == d)
                .map_or(Media::Unknown, |f| f.disk.media),
            None if matches!(m.fstype.as_str(), "tmpfs" | "ramfs" | "overlay" | "zfs") => {
                Media::Virtual
            }
            None => Media::Unknown,
        };
        Some(DataDisk {
            path: dir.to_string(),
            mount: m.target.clone(),
            device,
            disk,
            media,
        })
    });
    let mut disks: Vec<Disk> = found.into_iter().map(|f| f.disk).collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    (disks, data)
}

/// `path` is `mount` or below it.
fn under(path: &str, mount: &str) -> bool {
    mount == "/"
        || path == mount
        || path
            .strip_prefix(mount)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_tables() {
        let m =
            parse_mounts("/dev/mmcblk0p2 / ext4 rw 0 0\n/dev/sda1 /mnt/my\\040disk ext4 rw 0 0");
        assert_eq!(m[1].target, "/mnt/my disk");
        let mi = parse_mountinfo(
            "29 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n30 29 0:5 / /dev rw - devtmpfs udev rw",
        );
        assert_eq!(mi[0].dev.as_deref(), Some("179:2"));
        assert_eq!(mi[0].source, "/dev/root");
        assert_eq!(mi[1].fstype, "devtmpfs");
        assert!(parse_mountinfo("garbage without separator").is_empty());
        assert!(under("/var/lib/motley", "/"));
        assert!(under("/var/lib/motley", "/var"));
        assert!(!under("/variable", "/var"));
        assert_eq!(unescape("a\\"), "a\\");
    }
}
