//! Block devices and their media class, mounts, and the device under a directory.
//!
//! * `nvme*` → nvme; `mmcblk*` → sd or emmc by `device/type` (`SD`, `MMC`; an eMMC
//!   also has `mmcblkNboot0/1` and `rpmb` areas, which are not disks); `sr*` → optical;
//!   `loop`, `ram`, `zram`, `nbd`, `vd`, `xvd` → virtual.
//! * `sd*`: through a USB bus (its `/sys/block` link runs through `usbN`): rotational →
//!   usb-hdd; otherwise `removable` (the SCSI RMB bit, set by flash sticks and card
//!   readers, clear on SSD enclosures) → usb-flash, else usb-ssd. QEMU/VMware/VirtualBox
//!   and virtio disks are virtual; otherwise `queue/rotational` decides hdd or ssd.
//! * `dm-*` (LVM, LUKS) and `md*` (RAID) take their members' class (`slaves/`), the
//!   most wear-sensitive one when they differ (LVM on an SD card is an SD card); without
//!   members they are virtual.
//! * `removable` alone says nothing for built-in readers: SD cards there report 0.

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
            let removable = read_trim(&dir.join("removable")).is_some_and(|v| v == "1");
            return match (rotational, removable) {
                (Some(true), _) => Media::UsbHdd,
                (_, true) => Media::UsbFlash,
                (_, false) => Media::UsbSsd,
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

/// How wear-sensitive or slow a class is, for a volume over several members: the
/// highest decides.
fn constraint(m: Media) -> u8 {
    match m {
        Media::Sd => 9,
        Media::UsbFlash => 8,
        Media::Emmc => 7,
        Media::UsbHdd => 6,
        Media::Hdd => 5,
        Media::UsbSsd => 4,
        Media::Ssd => 3,
        Media::Nvme => 2,
        Media::Virtual => 1,
        Media::Optical | Media::Unknown => 10,
    }
}

/// The class of a volume made of `members` (device names, disks or partitions).
fn composite(members: &[String], found: &[Found]) -> Media {
    members
        .iter()
        .map(|m| {
            found
                .iter()
                .find(|f| f.disk.name == *m || f.devs.iter().any(|(_, n)| n == m))
                .map_or(Media::Unknown, |f| f.disk.media)
        })
        .max_by_key(|m| constraint(*m))
        .unwrap_or(Media::Virtual)
}

/// A disk and its partitions' `major:minor` numbers.
struct Found {
    disk: Disk,
    /// What a device-mapper or RAID volume is made of (`slaves/`).
    members: Vec<String>,
    devs: Vec<(String, String)>, // (major:minor, device name)
}

fn scan(root: &Path) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
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
        let members: Vec<String> = entries(&dir.join("slaves"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        out.push(Found {
            members,
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
    // Volumes over members (dm over md over disks): resolve in rounds, at most as deep
    // as there are devices.
    for _ in 0..out.len().min(8) {
        let mut changed = false;
        for i in 0..out.len() {
            if out[i].members.is_empty() {
                continue;
            }
            let m = composite(&out[i].members, &out);
            if out[i].disk.media != m {
                out[i].disk.media = m;
                changed = true;
            }
        }
        if !changed {
            break;
        }
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
                members: Vec::new(),
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

    /// A `/sys/block` entry: a link to its device directory (`path` under
    /// `sys/devices`) with its attributes, as the kernel lays it out.
    fn disk(root: &Path, name: &str, path: &str, attrs: &[(&str, &str)], slaves: &[&str]) {
        let real = root.join("sys/devices").join(path).join(name);
        std::fs::create_dir_all(real.join("queue")).expect("mkdir");
        std::fs::create_dir_all(real.join("device")).expect("mkdir");
        for (k, v) in attrs {
            std::fs::write(real.join(k), v).expect("attr");
        }
        if !slaves.is_empty() {
            std::fs::create_dir_all(real.join("slaves")).expect("mkdir");
            for s in slaves {
                std::fs::write(real.join("slaves").join(s), "").expect("slave");
            }
        }
        std::fs::create_dir_all(root.join("sys/block")).expect("mkdir");
        let target = format!("../devices/{path}/{name}");
        std::os::unix::fs::symlink(target, root.join("sys/block").join(name)).expect("link");
    }

    fn part(root: &Path, disk_path: &str, disk: &str, part: &str, dev: &str) {
        let p = root
            .join("sys/devices")
            .join(disk_path)
            .join(disk)
            .join(part);
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::write(p.join("partition"), "1").expect("partition");
        std::fs::write(p.join("dev"), dev).expect("dev");
    }

    #[test]
    fn every_medium_of_a_home_lab() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        let usb = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block";
        let usb2 = "pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0/block";
        let usb3 = "pci0000:00/0000:00:14.0/usb2/2-3/2-3:1.0/host8/target8:0:0/8:0:0:0/block";
        let ata = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block";
        let ata2 = "pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0/block";
        let mmc = "platform/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block";
        let emmc = "platform/fe310000.mmc/mmc_host/mmc1/mmc1:0001/block";
        let rot = |v: &'static str| ("queue/rotational", v);
        let rem = |v: &'static str| ("removable", v);
        // USB: an SSD in a UAS enclosure, a spinning disk, a stick.
        disk(
            r,
            "sda",
            usb,
            &[rot("0"), rem("0"), ("size", "1000215216")],
            &[],
        );
        disk(
            r,
            "sdb",
            usb2,
            &[rot("1"), rem("0"), ("size", "7814037168")],
            &[],
        );
        disk(
            r,
            "sdc",
            usb3,
            &[rot("0"), rem("1"), ("size", "60063744")],
            &[],
        );
        // SATA: an SSD and a disk; a DVD drive.
        disk(
            r,
            "sdd",
            ata,
            &[rot("0"), rem("0"), ("size", "500118192")],
            &[],
        );
        disk(
            r,
            "sde",
            ata2,
            &[rot("1"), rem("0"), ("size", "3907029168")],
            &[],
        );
        disk(
            r,
            "sr0",
            ata2,
            &[rot("1"), rem("1"), ("size", "2097151")],
            &[],
        );
        // SD card and eMMC (with its boot areas, which are no disks).
        disk(
            r,
            "mmcblk0",
            mmc,
            &[rot("0"), ("device/type", "SD"), ("size", "62333952")],
            &[],
        );
        part(r, mmc, "mmcblk0", "mmcblk0p2", "179:2");
        disk(
            r,
            "mmcblk1",
            emmc,
            &[rot("0"), ("device/type", "MMC"), ("size", "30535680")],
            &[],
        );
        disk(r, "mmcblk1boot0", emmc, &[("size", "8192")], &[]);
        part(r, ata, "sdd", "sdd1", "8:49");
        part(r, ata2, "sde", "sde1", "8:65");
        // LVM on the SD card; RAID 1 over the SATA SSD and disk; LVM over that RAID;
        // a virtio disk; LVM with no members listed.
        disk(
            r,
            "dm-0",
            "virtual/block",
            &[("size", "62000000")],
            &["mmcblk0p2"],
        );
        disk(
            r,
            "md0",
            "virtual/block",
            &[("size", "500000000")],
            &["sdd1", "sde1"],
        );
        disk(
            r,
            "dm-1",
            "virtual/block",
            &[("size", "400000000")],
            &["md0"],
        );
        disk(
            r,
            "vda",
            "pci0000:00/0000:00:04.0/virtio1/block",
            &[("size", "1000")],
            &[],
        );
        disk(r, "dm-2", "virtual/block", &[("size", "1000")], &[]);
        let (disks, _) = disks(r, None);
        let got: Vec<(String, &str)> = disks
            .iter()
            .map(|d| (d.name.clone(), d.media.as_str()))
            .collect();
        let want: Vec<(String, &str)> = [
            ("dm-0", "sd"),
            ("dm-1", "hdd"),
            ("dm-2", "virtual"),
            ("md0", "hdd"),
            ("mmcblk0", "sd"),
            ("mmcblk1", "emmc"),
            ("sda", "usb-ssd"),
            ("sdb", "usb-hdd"),
            ("sdc", "usb-flash"),
            ("sdd", "ssd"),
            ("sde", "hdd"),
            ("sr0", "optical"),
            ("vda", "virtual"),
        ]
        .iter()
        .map(|(n, m)| (n.to_string(), *m))
        .collect();
        assert_eq!(got, want);
    }
}
