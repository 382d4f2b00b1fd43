//! The bodies of the cargo-fuzz targets `discovery_text` and `discovery_tree` as library
//! functions, so that stable `cargo test` replays every committed corpus file through
//! them (`tests/fuzz_corpus.rs`) and the nightly fuzzer runs the same checks. Each
//! panics when a property fails.

use std::path::Path;

use crate::{block, cpu, cpuinfo, gpu, throttle};

/// Every text parser on arbitrary text: no panic, bounded results.
pub fn discovery_text(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let info = cpuinfo::parse(&s);
    assert!(info.per_cpu_core.len() <= info.processors.max(1) as usize + 1);
    if let Some(t) = throttle::parse(&s) {
        let _ = t.describe();
    }
    let _ = crate::mem_total(&s);
    let _ = crate::meminfo_field(&s, "MemAvailable");
    let _ = crate::psi_some_avg10(&s);
    let _ = crate::os_release_name(&s);
    let _ = block::parse_mounts(&s);
    let _ = block::parse_mountinfo(&s);
    assert!(cpu::cpu_list(&s).len() <= 65_536);
    let _ = gpu::nvidia_information(&s);
    let _ = motley_core::hw::label_value(&s);
}

/// The files a tree built from fuzz input holds, in turn.
pub const FILES: &[&str] = &[
    "proc/cpuinfo",
    "proc/meminfo",
    "proc/mounts",
    "proc/self/mountinfo",
    "proc/pressure/memory",
    "proc/device-tree/model",
    "sys/devices/system/cpu/present",
    "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
    "sys/devices/system/cpu/cpu0/topology/core_id",
    "sys/devices/system/cpu/cpu0/cpu_capacity",
    "sys/block/mmcblk0/size",
    "sys/block/mmcblk0/device/type",
    "sys/block/mmcblk0/mmcblk0p2/dev",
    "sys/block/sda/queue/rotational",
    "sys/class/nvme/nvme0/nvme0n1/size",
    "sys/class/drm/card0/device/uevent",
    "sys/class/drm/card0/device/mem_info_vram_total",
    "proc/driver/nvidia/gpus/0000:01:00.0/information",
    "sys/class/hwmon/hwmon0/name",
    "sys/class/hwmon/hwmon0/temp1_input",
    "sys/class/hwmon/hwmon0/in0_lcrit_alarm",
    "sys/class/thermal/thermal_zone0/temp",
    "sys/class/thermal/thermal_zone0/trip_point_0_temp",
    "sys/devices/platform/soc/soc:firmware/get_throttled",
    "sys/class/power_supply/BAT0/capacity",
    "sys/class/powercap/intel-rapl:0/energy_uj",
    "sys/class/dmi/id/product_name",
];

/// A whole tree in `dir` (an empty directory) built from `data` (files separated by
/// 0xff bytes), discovered, judged and split: no panic, readings never stored.
pub fn discovery_tree(data: &[u8], dir: &Path) {
    for (i, chunk) in data.split(|b| *b == 0xff).enumerate().take(FILES.len() * 2) {
        let p = dir.join(FILES[i % FILES.len()]);
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&p, chunk);
    }
    // Always have a hwmon chip that raises alarms.
    let _ = std::fs::write(dir.join("sys/class/hwmon/hwmon0/name"), "rpi_volt");
    let hw = crate::discover(
        dir,
        &crate::Options {
            data_dir: Some("/var/lib/motley".into()),
        },
    );
    let c = motley_core::hw::conditions(&hw, Some(95), &Default::default(), &[], 1);
    let _ = motley_core::hw::TaintPolicy::default().taints(&c);
    let _ = motley_core::hw::labels(&hw, Some(1000), "disk");
    let (stable, _) = hw.split(Some((&hw, 0)), 1000, None);
    assert!(stable.memory_available.is_none());
}
