//! Whole-tree discovery on arbitrary file contents: the fuzzer's bytes are split into
//! the files of a small machine tree (cpuinfo, meminfo, cpufreq, block devices, DRM,
//! hwmon, thermal, throttle, power, RAPL), then `discover` runs on it. It must not
//! panic, and conditions and labels must follow from any result.
#![no_main]

use libfuzzer_sys::fuzz_target;

const FILES: &[&str] = &[
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

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    for (i, chunk) in data.split(|b| *b == 0xff).enumerate().take(FILES.len() * 2) {
        let rel = FILES[i % FILES.len()];
        let p = dir.path().join(rel);
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&p, chunk);
    }
    // Always have a thermal zone type and a hwmon chip that raises alarms.
    let _ = std::fs::write(dir.path().join("sys/class/hwmon/hwmon0/name"), "rpi_volt");
    let hw = motley_discovery::discover(
        dir.path(),
        &motley_discovery::Options {
            data_dir: Some("/var/lib/motley".into()),
        },
    );
    let c = motley_core::hw::conditions(&hw, Some(95), &Default::default(), &[], 1);
    let _ = motley_core::hw::TaintPolicy::default().taints(&c);
    let _ = motley_core::hw::labels(&hw, Some(1000), "disk");
    let (stable, _) = hw.split(Some((&hw, 0)), 1000, None);
    assert!(stable.memory_available.is_none());
});
