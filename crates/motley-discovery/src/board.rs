//! The board: its model, a normalized family, and its SoC.
//!
//! - Device-tree boards (every SBC): `model` is the board's name as its vendor writes
//!   it; `compatible` is a NUL-separated list from the most specific (`radxa,rock-5b`) to
//!   the SoC (`rockchip,rk3588`). The family comes from the first entry's vendor prefix,
//!   the SoC from the last entry.
//! - PCs: DMI `sys_vendor` and `product_name` (placeholders such as "To be filled by
//!   O.E.M." ignored); the family is the vendor.
//! - Old ARM kernels without a device tree in `/proc`: cpuinfo's `Model` (a Pi) and
//!   `Hardware` (the SoC) lines.

use std::path::Path;

use crate::cpuinfo::CpuInfo;
use crate::read_trim;

/// DMI strings that vendors leave as placeholders.
fn dmi_placeholder(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.is_empty()
        || l.contains("to be filled")
        || l.contains("system product name")
        || l.contains("system manufacturer")
        || l == "default string"
        || l == "not applicable"
        || l == "none"
        || l == "o.e.m."
}

fn dt(root: &Path, name: &str) -> Option<String> {
    read_trim(&root.join("proc/device-tree").join(name))
        .or_else(|| read_trim(&root.join("sys/firmware/devicetree/base").join(name)))
        .filter(|m| !m.is_empty())
}

/// The device tree's `compatible` entries, most specific first.
pub fn compatible(root: &Path) -> Vec<String> {
    dt(root, "compatible")
        .map(|c| {
            c.split('\0')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn dmi(root: &Path, f: &str) -> Option<String> {
    read_trim(&root.join("sys/class/dmi/id").join(f)).filter(|v| !dmi_placeholder(v))
}

/// The family for a device-tree vendor prefix (the part of `compatible` before `,`).
pub fn family_of_vendor(vendor: &str) -> String {
    match vendor {
        "raspberrypi" => "raspberry-pi",
        "nvidia" => "jetson",
        "xunlong" => "orange-pi",
        "hardkernel" => "odroid",
        "friendlyarm" | "friendlyelec" => "nanopi",
        "libretech" => "libre-computer",
        "milkv" => "milk-v",
        "beagle" | "beagleboard" => "beagle",
        "brcm" | "bcm" => "broadcom",
        other => other,
    }
    .to_string()
}

/// The family for a DMI vendor (`Dell Inc.` → `dell`).
pub fn family_of_dmi(vendor: &str) -> String {
    let l = vendor.to_ascii_lowercase();
    let known = [
        ("dell", "dell"),
        ("lenovo", "lenovo"),
        ("hewlett", "hp"),
        ("asustek", "asus"),
        ("micro-star", "msi"),
        ("gigabyte", "gigabyte"),
        ("acer", "acer"),
        ("apple", "apple"),
        ("intel", "intel"),
        ("supermicro", "supermicro"),
        ("innotek", "virtualbox"),
        ("qemu", "qemu"),
        ("vmware", "vmware"),
        ("microsoft", "microsoft"),
    ];
    if l == "hp" {
        return "hp".into();
    }
    known
        .iter()
        .find(|(k, _)| l.contains(k))
        .map(|(_, f)| f.to_string())
        .unwrap_or_else(|| motley_core::hw::label_value(vendor))
}

/// The board's model, family and SoC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Board {
    /// Device-tree model, a Pi's cpuinfo `Model`, or DMI vendor and product.
    pub model: Option<String>,
    /// Label-safe family: the first `compatible` vendor, a Pi or Jetson by its model,
    /// or the DMI vendor.
    pub family: Option<String>,
    /// The SoC from the last `compatible` entry (`rockchip,rk3588` → `rk3588`).
    pub soc: Option<String>,
}

/// Reads the board, each file at most once: the device tree's `model` and
/// `compatible`, and DMI only where they say nothing.
pub fn board(root: &Path, info: &CpuInfo) -> Board {
    let compat = compatible(root);
    let dmi_vendor = std::cell::OnceCell::new();
    let vendor = || {
        dmi_vendor
            .get_or_init(|| dmi(root, "sys_vendor").or_else(|| dmi(root, "board_vendor")))
            .clone()
    };
    let model = dt(root, "model").or(info.board.clone()).or_else(|| {
        let product = dmi(root, "product_name").or_else(|| dmi(root, "board_name"));
        let both: Vec<String> = vendor().into_iter().chain(product).collect();
        (!both.is_empty()).then(|| both.join(" "))
    });
    let m = model.as_deref().unwrap_or_default();
    let family = match compat.first().and_then(|c| c.split_once(',')) {
        Some((v, _)) => Some(family_of_vendor(v)),
        None if m.starts_with("Raspberry Pi") => Some("raspberry-pi".into()),
        None if m.contains("Jetson") => Some("jetson".into()),
        None => vendor()
            .map(|v| family_of_dmi(&v))
            .filter(|f| !f.is_empty()),
    };
    Board {
        family,
        soc: soc_from(&compat),
        model,
    }
}

fn soc_from(compat: &[String]) -> Option<String> {
    let last = compat.last()?;
    let (_, soc) = last.split_once(',')?;
    Some(soc.to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt_tree(model: &str, compatible: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let base = d.path().join("proc/device-tree");
        std::fs::create_dir_all(&base).expect("mkdir");
        std::fs::write(base.join("model"), format!("{model}\0")).expect("model");
        let mut c = compatible.join("\0");
        c.push('\0');
        std::fs::write(base.join("compatible"), c).expect("compatible");
        d
    }

    #[test]
    fn device_tree_boards() {
        // (model, compatible as the board's device-tree source gives it, family, SoC)
        let cases: &[(&str, &[&str], &str, &str)] = &[
            (
                "Raspberry Pi 4 Model B Rev 1.4",
                &["raspberrypi,4-model-b", "brcm,bcm2711"],
                "raspberry-pi",
                "bcm2711",
            ),
            (
                "Radxa ROCK 5B",
                &["radxa,rock-5b", "rockchip,rk3588"],
                "radxa",
                "rk3588",
            ),
            (
                "NVIDIA Jetson Orin Nano Developer Kit",
                &[
                    "nvidia,p3768-0000+p3767-0005",
                    "nvidia,p3767-0005",
                    "nvidia,tegra234",
                ],
                "jetson",
                "tegra234",
            ),
            (
                "StarFive VisionFive 2 v1.3B",
                &["starfive,visionfive-2-v1.3b", "starfive,jh7110"],
                "starfive",
                "jh7110",
            ),
            (
                "Milk-V Mars",
                &["milkv,mars", "starfive,jh7110"],
                "milk-v",
                "jh7110",
            ),
            (
                "SiFive HiFive Unmatched A00",
                &[
                    "sifive,hifive-unmatched-a00",
                    "sifive,fu740-c000",
                    "sifive,fu740",
                ],
                "sifive",
                "fu740",
            ),
            (
                "OrangePi Zero3",
                &["xunlong,orangepi-zero3", "allwinner,sun50i-h618"],
                "orange-pi",
                "sun50i-h618",
            ),
            (
                "Hardkernel ODROID-N2Plus",
                &["hardkernel,odroid-n2-plus", "amlogic,s922x", "amlogic,g12b"],
                "odroid",
                "g12b",
            ),
        ];
        for (m, compat, fam, soc_name) in cases {
            let t = dt_tree(m, compat);
            let b = board(t.path(), &CpuInfo::default());
            assert_eq!(b.model.as_deref(), Some(*m));
            assert_eq!(b.family.as_deref(), Some(*fam), "{m}");
            assert_eq!(b.soc.as_deref(), Some(*soc_name), "{m}");
        }
    }

    #[test]
    fn pcs_and_old_kernels() {
        assert_eq!(family_of_dmi("Dell Inc."), "dell");
        assert_eq!(family_of_dmi("LENOVO"), "lenovo");
        assert_eq!(family_of_dmi("HP"), "hp");
        assert_eq!(family_of_dmi("ASUSTeK COMPUTER INC."), "asus");
        assert_eq!(family_of_dmi("Framework"), "framework");
        let d = tempfile::tempdir().expect("tempdir");
        let info = CpuInfo {
            board: Some("Raspberry Pi 3 Model B Rev 1.2".into()),
            ..CpuInfo::default()
        };
        let b = board(d.path(), &info);
        assert_eq!(b.family.as_deref(), Some("raspberry-pi"));
        assert_eq!(b.soc, None);
        assert_eq!(board(d.path(), &CpuInfo::default()).family, None);
    }
}
