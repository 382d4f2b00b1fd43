//! GPUs: DRM cards (`/sys/class/drm/cardN/device/{uevent,vendor,device,mem_info_vram_total}`)
//! and NVIDIA's proprietary driver (`/proc/driver/nvidia/gpus/*/information`).

use std::path::Path;

pub use motley_core::hw::Gpu;

use crate::{entries, read_trim};

/// A PCI vendor id's name.
pub fn pci_vendor(id: u32) -> Option<&'static str> {
    Some(match id {
        0x1002 => "amd",
        0x10de => "nvidia",
        0x8086 => "intel",
        0x14e4 => "broadcom",
        0x1a03 => "aspeed",
        0x1af4 => "virtio",
        0x15ad => "vmware",
        0x1234 => "qemu",
        0x5143 => "qualcomm",
        _ => return None,
    })
}

/// The vendor of a platform (non-PCI) GPU, by its driver.
fn driver_vendor(driver: &str) -> Option<&'static str> {
    Some(match driver {
        "vc4" | "v3d" => "broadcom",
        "panfrost" | "lima" | "panthor" => "arm",
        "msm" => "qualcomm",
        "etnaviv" => "vivante",
        "tegra" | "nouveau" => "nvidia",
        "amdgpu" | "radeon" => "amd",
        "i915" | "xe" => "intel",
        "asahi" => "apple",
        _ => return None,
    })
}

fn hex(text: &str) -> Option<u32> {
    let t = text.trim();
    u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
}

/// Reads the DRM cards in `drm` (a `/sys/class/drm` directory), sorted by name.
/// Connectors (`card0-HDMI-A-1`) and render nodes are skipped, and so are firmware
/// framebuffers (`simpledrm`) and the Pi's display-only `vc4` when a `v3d` is present.
pub fn scan_drm(drm: &Path) -> Vec<Gpu> {
    let mut out: Vec<Gpu> = entries(drm)
        .into_iter()
        .filter(|(name, _)| {
            name.strip_prefix("card")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|(name, card)| {
            let dev = card.join("device");
            let uevent = read_trim(&dev.join("uevent")).unwrap_or_default();
            let field = |k: &str| {
                uevent.lines().find_map(|l| {
                    l.strip_prefix(k)
                        .and_then(|v| v.strip_prefix('='))
                        .map(|v| v.trim().to_string())
                })
            };
            let driver = field("DRIVER").or_else(|| {
                std::fs::read_link(dev.join("driver"))
                    .ok()
                    .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            });
            if driver.as_deref() == Some("simpledrm") {
                return None;
            }
            let (mut vendor_id, mut device_id) = (None, None);
            if let Some((v, d)) = field("PCI_ID").and_then(|p| {
                let (v, d) = p.split_once(':')?;
                Some((hex(v)?, hex(d)?))
            }) {
                (vendor_id, device_id) = (Some(v), Some(d));
            }
            vendor_id = vendor_id.or_else(|| read_trim(&dev.join("vendor")).and_then(|v| hex(&v)));
            device_id = device_id.or_else(|| read_trim(&dev.join("device")).and_then(|v| hex(&v)));
            let vendor = vendor_id
                .and_then(pci_vendor)
                .or_else(|| driver.as_deref().and_then(driver_vendor))
                .map(str::to_string)
                .or_else(|| vendor_id.map(|v| format!("{v:04x}")))
                .unwrap_or_else(|| "unknown".into());
            Some(Gpu {
                name,
                vendor,
                pci_id: vendor_id
                    .zip(device_id)
                    .map(|(v, d)| format!("{v:04x}:{d:04x}")),
                driver,
                model: field("PCI_SLOT_NAME"),
                vram: read_trim(&dev.join("mem_info_vram_total")).and_then(|v| v.parse().ok()),
            })
        })
        .collect();
    if out.iter().any(|g| g.driver.as_deref() == Some("v3d")) {
        out.retain(|g| g.driver.as_deref() != Some("vc4"));
    }
    out.sort_by_key(|g| crate::hwmon::natural(&g.name));
    // `model` held the PCI slot until now, to match NVIDIA's /proc entries.
    out
}

/// Fields of one `/proc/driver/nvidia/gpus/<bus>/information` file.
pub fn nvidia_information(text: &str) -> (Option<String>, Option<String>) {
    let get = |k: &str| {
        text.lines().find_map(|l| {
            let (key, v) = l.split_once(':')?;
            (key.trim() == k)
                .then(|| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
    };
    (get("Model"), get("Bus Location"))
}

/// Every GPU of the machine at `root`.
pub fn gpus(root: &Path) -> Vec<Gpu> {
    let mut out = scan_drm(&root.join("sys/class/drm"));
    for (bus, dir) in entries(&root.join("proc/driver/nvidia/gpus")) {
        let (model, location) = read_trim(&dir.join("information"))
            .map(|t| nvidia_information(&t))
            .unwrap_or_default();
        let slot = location.unwrap_or_else(|| bus.clone());
        let same = |g: &Gpu| {
            g.model
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(&slot) || s.ends_with(&bus))
        };
        match out.iter_mut().find(|g| same(g)) {
            Some(g) => g.model = model,
            None => out.push(Gpu {
                name: bus,
                vendor: "nvidia".into(),
                pci_id: None,
                driver: Some("nvidia".into()),
                model,
                vram: None,
            }),
        }
    }
    for g in &mut out {
        // What is left in `model` from DRM is a PCI slot, not a model name.
        if g.model.as_deref().is_some_and(|m| m.starts_with("0000:")) {
            g.model = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn nvidia_proc_file() {
        let t = "Model: \t\t NVIDIA GeForce RTX 4080\nIRQ:   123\nBus Location: \t 0000:09:00.0\n";
        assert_eq!(
            super::nvidia_information(t),
            (
                Some("NVIDIA GeForce RTX 4080".into()),
                Some("0000:09:00.0".into())
            )
        );
        assert_eq!(super::nvidia_information("junk"), (None, None));
    }
}
