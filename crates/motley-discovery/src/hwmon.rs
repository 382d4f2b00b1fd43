//! hwmon chips: `/sys/class/hwmon/hwmon*/{name,tempN_input,tempN_label,tempN_crit}`,
//! `rpi_volt`'s `in0_lcrit_alarm` (a Raspberry Pi's under-voltage alarm), and power
//! (`power1_average` or `power1_input`, as GPU drivers give it).
//!
//! Older drivers keep the attributes under `device/`; both places are read.

use std::path::Path;

pub use motley_core::hw::{Hwmon, HwmonTemp};

use crate::{entries, read_trim};

/// Reads every hwmon chip under `root`, sorted by name.
pub fn chips(root: &Path) -> Vec<Hwmon> {
    let mut out: Vec<Hwmon> = entries(&root.join("sys/class/hwmon"))
        .into_iter()
        .filter(|(name, _)| name.starts_with("hwmon"))
        .map(|(name, dir)| {
            let base = if dir.join("name").exists() {
                dir.clone()
            } else {
                dir.join("device")
            };
            let chip = read_trim(&base.join("name")).unwrap_or_default();
            let mut temps: Vec<(u32, HwmonTemp)> = entries(&base)
                .into_iter()
                .filter_map(|(f, _)| {
                    let n = f.strip_prefix("temp")?.strip_suffix("_input")?;
                    let idx: u32 = n.parse().ok()?;
                    let at = |suffix: &str| read_trim(&base.join(format!("temp{n}_{suffix}")));
                    Some((
                        idx,
                        HwmonTemp {
                            sensor: format!("temp{n}"),
                            label: at("label"),
                            temp_mc: at("input").and_then(|t| t.parse().ok()),
                            crit_mc: at("crit").and_then(|t| t.parse().ok()),
                        },
                    ))
                })
                .collect();
            temps.sort_by_key(|(i, _)| *i);
            let undervoltage_alarm = if chip == "rpi_volt" {
                read_trim(&base.join("in0_lcrit_alarm")).map(|v| v != "0")
            } else {
                None
            };
            // A GPU driver's power reading (amdgpu's `power1_average`, others'
            // `power1_input`), µW.
            let power_uw = ["power1_average", "power1_input"]
                .iter()
                .find_map(|f| read_trim(&base.join(f)).and_then(|v| v.parse().ok()));
            Hwmon {
                name,
                chip,
                temps: temps.into_iter().map(|(_, t)| t).collect(),
                undervoltage_alarm,
                power_uw,
            }
        })
        .collect();
    out.sort_by_key(|h| natural(&h.name));
    out
}

/// Sort key that puts `hwmon2` before `hwmon10`.
pub(crate) fn natural(name: &str) -> (String, u64) {
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    let prefix = &name[..name.len() - digits.len()];
    (prefix.to_string(), digits.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_drivers_power_is_read_from_either_attribute() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let class = root.path().join("sys/class/hwmon");
        for (name, chip, file, value) in [
            ("hwmon4", "amdgpu", "power1_average", "31000000"),
            ("hwmon5", "nouveau", "power1_input", "12500000"),
            ("hwmon6", "coretemp", "", ""),
        ] {
            let d = class.join(name);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("name"), format!("{chip}\n"))?;
            if !file.is_empty() {
                std::fs::write(d.join(file), format!("{value}\n"))?;
            }
        }
        let got: Vec<(String, Option<u64>)> = chips(root.path())
            .into_iter()
            .map(|h| (h.chip, h.power_uw))
            .collect();
        assert_eq!(
            got,
            [
                ("amdgpu".to_string(), Some(31_000_000)),
                ("nouveau".to_string(), Some(12_500_000)),
                ("coretemp".to_string(), None)
            ]
        );
        Ok(())
    }
}
