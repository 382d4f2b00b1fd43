//! What a machine is: hardware facts, the readings that change, and what follows
//! from them (labels, conditions, taints).
//!
//! `motley-discovery` fills [`Hardware`] from `/proc` and `/sys`; everything here is
//! plain data and pure functions. Temperatures are integer millidegrees Celsius and
//! power is integer milliwatts, so facts compare exactly and serialize stably.
//!
//! Facts are split in two ([`Hardware::split`]): the stable part, stored with the
//! node and sent only when it changes, and [`Readings`] (temperatures, battery level,
//! power draw, free memory), kept in the server's memory only. An idle cluster
//! therefore writes nothing however warm its nodes run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The prefix of labels motley derives from facts. Users cannot set labels under it.
pub const LABEL_PREFIX: &str = "motley.io/";

/// Everything discovery knows about one machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hardware {
    /// Kernel architecture in Go/OCI naming (`amd64`, `arm64`, `arm`, `386`, `riscv64`);
    /// empty when unknown.
    pub arch: String,
    /// What the kernel architecture was decided from (`uname`, `cpuinfo Features`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch_source: Option<String>,
    /// The userland's OCI platform (`linux/arm/v7` for a 32-bit OS on a 64-bit kernel):
    /// what images this node pulls. `None` when it cannot be known (no ELF program to
    /// read, as in a capture of `/proc` and `/sys` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<crate::platform::Platform>,
    /// What the userland platform was decided from (`ELF of /sbin/init`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_source: Option<String>,
    /// The cores can run 64-bit code even when the kernel is 32-bit.
    pub arch64_capable: bool,
    /// Operating system (`linux`).
    pub os: String,
    /// Distribution (`PRETTY_NAME` of os-release).
    pub distro: Option<String>,
    /// Kernel release (`6.1.0-18-amd64`).
    pub kernel: Option<String>,
    /// Board model: device tree, a Pi's `Model` line, or DMI vendor and product.
    pub board: Option<String>,
    /// The board's family as a label value (`raspberry-pi`, `jetson`, `orange-pi`,
    /// `starfive`, `lenovo`...): the device tree's first `compatible` vendor, a Pi's
    /// `Model` line, or the DMI vendor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board_family: Option<String>,
    /// The CPU.
    pub cpu: Cpu,
    /// Total memory, bytes.
    pub memory: u64,
    /// Memory available now, bytes (a reading).
    pub memory_available: Option<u64>,
    /// Memory pressure: PSI `some avg10`, in hundredths of a percent (a reading).
    pub memory_psi_some_avg10: Option<u32>,
    /// Block devices (disks, not partitions), sorted by name.
    pub disks: Vec<Disk>,
    /// Where the agent's data directory lives.
    pub data_disk: Option<DataDisk>,
    /// GPUs, sorted by name.
    pub gpus: Vec<Gpu>,
    /// Thermal zones, sorted by name.
    pub thermal: Vec<ThermalZone>,
    /// hwmon chips with temperature sensors, sorted by name.
    pub hwmon: Vec<Hwmon>,
    /// The Raspberry Pi firmware's throttle flags.
    pub throttle: Option<Throttle>,
    /// Power supplies (mains, batteries, USB).
    pub power: Vec<PowerSupply>,
    /// RAPL energy domains.
    pub rapl: Vec<RaplDomain>,
}

/// The CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    /// Vendor (`intel`, `amd`, `arm`, `apple`, `broadcom`...).
    pub vendor: Option<String>,
    /// Model name (`Cortex-A76`, `Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz`).
    pub model: Option<String>,
    /// The SoC (`BCM2711`), from cpuinfo's `Hardware` line.
    pub soc: Option<String>,
    /// Sockets (packages).
    pub sockets: u32,
    /// Physical cores.
    pub cores: u32,
    /// Logical CPUs.
    pub logical: u32,
    /// Core types on hybrid chips; one entry on the others.
    pub core_types: Vec<CoreType>,
    /// Highest maximum frequency of any CPU, MHz.
    pub max_mhz: Option<u32>,
    /// Lowest minimum frequency, MHz.
    pub min_mhz: Option<u32>,
    /// ARM `implementer:part` pairs motley's table does not know (`0x41:0xd99`): the
    /// model then comes from cpuinfo's `model name`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_parts: Vec<String>,
}

/// One kind of core on a chip.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoreType {
    /// `Cortex-A76`, `Firestorm`, `P-core`, `E-core`, or the CPU model.
    pub name: String,
    /// Logical CPUs of this type.
    pub logical: u32,
    /// Their maximum frequency, MHz.
    pub max_mhz: Option<u32>,
    /// Their `cpu_capacity` (1024 = the biggest core), where the kernel gives it.
    pub capacity: Option<u32>,
}

/// The media a block device is made of.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Media {
    /// NVMe solid state.
    Nvme,
    /// SATA/SAS solid state.
    Ssd,
    /// Spinning disk.
    Hdd,
    /// SD card.
    Sd,
    /// Soldered or socketed eMMC.
    Emmc,
    /// USB flash stick (removable USB mass storage).
    UsbFlash,
    /// A solid-state disk in a USB enclosure (non-removable USB mass storage).
    UsbSsd,
    /// A spinning disk in a USB enclosure.
    UsbHdd,
    /// CD/DVD/BD.
    Optical,
    /// A virtual disk (virtio, QEMU/VMware/VirtualBox, loop, zram; device-mapper and
    /// RAID volumes take their members' class when they have members).
    Virtual,
    /// Not known.
    #[default]
    Unknown,
}

impl Media {
    /// Lowercase name, as in labels and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Nvme => "nvme",
            Media::Ssd => "ssd",
            Media::Hdd => "hdd",
            Media::Sd => "sd",
            Media::Emmc => "emmc",
            Media::UsbFlash => "usb-flash",
            Media::UsbSsd => "usb-ssd",
            Media::UsbHdd => "usb-hdd",
            Media::Optical => "optical",
            Media::Virtual => "virtual",
            Media::Unknown => "unknown",
        }
    }
    /// Flash that wears out under constant writes (SD, eMMC, USB sticks).
    pub fn is_fragile_flash(self) -> bool {
        matches!(self, Media::Sd | Media::Emmc | Media::UsbFlash)
    }
}

/// A block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    /// Kernel name (`nvme0n1`, `mmcblk0`, `sda`).
    pub name: String,
    /// Media class.
    pub media: Media,
    /// Size in bytes.
    pub size: u64,
    /// Model (or an SD card's name).
    pub model: Option<String>,
    /// Removable, as the kernel says (SD cards in built-in readers say no).
    pub removable: bool,
    /// Mount points of the disk and its partitions.
    pub mounts: Vec<String>,
}

/// The device holding the agent's data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataDisk {
    /// The directory looked up.
    pub path: String,
    /// The mount point it sits under.
    pub mount: String,
    /// The block device of that mount (a partition or a disk).
    pub device: String,
    /// The whole disk.
    pub disk: Option<String>,
    /// Its media class.
    pub media: Media,
}

/// A GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpu {
    /// DRM card name (`card0`), or the PCI bus id for NVIDIA's proprietary driver.
    pub name: String,
    /// Vendor (`amd`, `nvidia`, `intel`, `broadcom`...).
    pub vendor: String,
    /// PCI `vendor:device` (`1002:73ff`).
    pub pci_id: Option<String>,
    /// Kernel driver (`amdgpu`, `i915`, `xe`, `nvidia`, `v3d`).
    pub driver: Option<String>,
    /// Model, where a driver names it.
    pub model: Option<String>,
    /// Video memory in bytes, where exposed.
    pub vram: Option<u64>,
}

/// A thermal zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThermalZone {
    /// `thermal_zone0`.
    pub name: String,
    /// Driver type (`cpu-thermal`, `x86_pkg_temp`, `acpitz`).
    pub kind: String,
    /// Temperature now, m°C (a reading; may be negative).
    pub temp_mc: Option<i32>,
    /// Trip points: (type, m°C).
    pub trips: Vec<(String, i32)>,
}

/// A hwmon chip.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hwmon {
    /// `hwmon0`.
    pub name: String,
    /// Chip (`coretemp`, `k10temp`, `amdgpu`, `rpi_volt`).
    pub chip: String,
    /// Temperature sensors.
    pub temps: Vec<HwmonTemp>,
    /// An under-voltage alarm (`rpi_volt`'s `in0_lcrit_alarm`) is raised now.
    pub undervoltage_alarm: Option<bool>,
    /// Power now, µW (a reading: `power1_average` or `power1_input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_uw: Option<u64>,
}

/// One hwmon temperature sensor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HwmonTemp {
    /// `temp1`.
    pub sensor: String,
    /// `Package id 0`, `edge`, `Tctl`.
    pub label: Option<String>,
    /// Now, m°C (a reading).
    pub temp_mc: Option<i32>,
    /// Critical limit, m°C.
    pub crit_mc: Option<i32>,
}

/// The Raspberry Pi firmware's throttle flags. Bits 0–3: now; bits 16–19: since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Throttle {
    /// The raw value.
    pub raw: u32,
    /// Where it was read (`sysfs`, `vcgencmd`).
    pub source: ThrottleSource,
    /// Under-voltage now.
    pub undervoltage_now: bool,
    /// ARM frequency capped now.
    pub freq_capped_now: bool,
    /// Throttled now.
    pub throttled_now: bool,
    /// Soft temperature limit active now.
    pub soft_temp_limit_now: bool,
    /// Under-voltage has occurred since boot.
    pub undervoltage_since_boot: bool,
    /// Frequency capping has occurred since boot.
    pub freq_capped_since_boot: bool,
    /// Throttling has occurred since boot.
    pub throttled_since_boot: bool,
    /// The soft temperature limit was reached since boot.
    pub soft_temp_limit_since_boot: bool,
    /// Bits the documentation does not name, kept rather than rejected.
    pub unknown_bits: u32,
}

/// Where throttle flags came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThrottleSource {
    /// The firmware's sysfs attribute `get_throttled`.
    #[default]
    Sysfs,
    /// `vcgencmd get_throttled`.
    Vcgencmd,
}

const THROTTLE_KNOWN: u32 = 0xF | 0xF_0000;

impl Throttle {
    /// Decodes a raw value.
    pub fn decode(raw: u32, source: ThrottleSource) -> Throttle {
        let bit = |n: u32| raw & (1 << n) != 0;
        Throttle {
            raw,
            source,
            undervoltage_now: bit(0),
            freq_capped_now: bit(1),
            throttled_now: bit(2),
            soft_temp_limit_now: bit(3),
            undervoltage_since_boot: bit(16),
            freq_capped_since_boot: bit(17),
            throttled_since_boot: bit(18),
            soft_temp_limit_since_boot: bit(19),
            unknown_bits: raw & !THROTTLE_KNOWN,
        }
    }
    /// Names of the bits set now, then since boot (`undervoltage`, `throttled`...).
    pub fn describe(&self) -> String {
        let names = [
            "undervoltage",
            "frequency capped",
            "throttled",
            "soft temperature limit",
        ];
        let pick = |bits: [bool; 4]| -> Vec<&str> {
            names
                .iter()
                .zip(bits)
                .filter(|(_, set)| *set)
                .map(|(n, _)| *n)
                .collect()
        };
        let now = pick([
            self.undervoltage_now,
            self.freq_capped_now,
            self.throttled_now,
            self.soft_temp_limit_now,
        ]);
        let past = pick([
            self.undervoltage_since_boot,
            self.freq_capped_since_boot,
            self.throttled_since_boot,
            self.soft_temp_limit_since_boot,
        ]);
        let mut parts = vec![format!("0x{:x}", self.raw)];
        if !now.is_empty() {
            parts.push(format!("now: {}", now.join(", ")));
        }
        if !past.is_empty() {
            parts.push(format!("since boot: {}", past.join(", ")));
        }
        if self.unknown_bits != 0 {
            parts.push(format!("unknown bits 0x{:x}", self.unknown_bits));
        }
        parts.join("; ")
    }
}

/// A power supply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PowerSupply {
    /// `AC`, `BAT0`.
    pub name: String,
    /// `Mains`, `Battery`, `USB`.
    pub kind: String,
    /// Online (mains connected), where reported.
    pub online: Option<bool>,
    /// Battery level in percent (a reading).
    pub capacity_pct: Option<u8>,
    /// `Charging`, `Discharging`, `Full` (a reading).
    pub status: Option<String>,
}

/// A RAPL energy domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaplDomain {
    /// `intel-rapl:0`.
    pub name: String,
    /// `package-0`, `core`, `dram`.
    pub domain: String,
    /// Energy counter, µJ (a reading; wraps at `max_energy_uj`).
    pub energy_uj: Option<u64>,
    /// Where the counter wraps.
    pub max_energy_uj: Option<u64>,
}

/// The values that change from one refresh to the next. Kept in memory only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Readings {
    /// Temperatures by sensor (`thermal_zone0 cpu-thermal`, `hwmon1 coretemp Package id 0`),
    /// whole °C.
    pub temps_c: BTreeMap<String, i32>,
    /// Memory available, MiB.
    pub memory_available_mib: Option<u64>,
    /// Data disk usage in percent.
    pub data_disk_used_pct: Option<u8>,
    /// Battery level, percent, by supply.
    pub battery_pct: BTreeMap<String, u8>,
    /// Mains online.
    pub on_mains: Option<bool>,
    /// Power by RAPL domain, milliwatts (averaged since the previous refresh).
    pub power_mw: BTreeMap<String, u64>,
    /// GPUs' power by hwmon chip (`hwmon3 amdgpu`), milliwatts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gpu_power_mw: BTreeMap<String, u64>,
}

/// hwmon chips of GPU drivers, whose power is the GPU's.
pub const GPU_DRIVERS: &[&str] = &["amdgpu", "radeon", "nouveau", "i915", "xe"];

impl Readings {
    /// The machine's power draw in watts as its RAPL domains measure it: the platform
    /// (`psys`) when it has one, else its packages and DRAM (their `core` and `uncore`
    /// parts are inside the packages, not added again); `None` when nothing measures.
    pub fn watts(&self) -> Option<f64> {
        if let Some(p) = self.power_mw.get("psys") {
            return Some(*p as f64 / 1000.0);
        }
        let mw: u64 = self
            .power_mw
            .iter()
            .filter(|(k, _)| k.starts_with("package") || k.as_str() == "dram")
            .map(|(_, v)| *v)
            .sum();
        (mw > 0).then_some(mw as f64 / 1000.0)
    }
}

impl Hardware {
    /// The stable facts (readings cleared) and the readings. `prev_energy` gives the RAPL
    /// counters and time (ms) of the previous refresh, to turn energy into power.
    pub fn split(
        &self,
        prev: Option<(&Hardware, u64)>,
        now_ms: u64,
        data_disk_used_pct: Option<u8>,
    ) -> (Hardware, Readings) {
        let mut r = Readings {
            memory_available_mib: self.memory_available.map(|b| b >> 20),
            data_disk_used_pct,
            ..Readings::default()
        };
        let round = |mc: i32| (mc as f64 / 1000.0).round() as i32;
        for z in &self.thermal {
            if let Some(t) = z.temp_mc {
                r.temps_c.insert(format!("{} {}", z.name, z.kind), round(t));
            }
        }
        for h in &self.hwmon {
            if let Some(uw) = h.power_uw
                && GPU_DRIVERS.contains(&h.chip.as_str())
            {
                r.gpu_power_mw
                    .insert(format!("{} {}", h.name, h.chip), uw / 1000);
            }
            for t in &h.temps {
                if let Some(v) = t.temp_mc {
                    let label = t.label.as_deref().unwrap_or(&t.sensor);
                    r.temps_c
                        .insert(format!("{} {} {}", h.name, h.chip, label), round(v));
                }
            }
        }
        for p in &self.power {
            if let Some(c) = p.capacity_pct {
                r.battery_pct.insert(p.name.clone(), c);
            }
            if p.kind == "Mains"
                && let Some(o) = p.online
            {
                r.on_mains = Some(r.on_mains.unwrap_or(false) || o);
            }
        }
        if let Some((old, then)) = prev {
            let dt = now_ms.saturating_sub(then);
            for d in &self.rapl {
                let before = old
                    .rapl
                    .iter()
                    .find(|o| o.name == d.name)
                    .and_then(|o| o.energy_uj);
                if let (Some(a), Some(b)) = (before, d.energy_uj)
                    && dt > 0
                {
                    let used = if b >= a {
                        b - a
                    } else {
                        d.max_energy_uj.unwrap_or(0).saturating_sub(a) + b
                    };
                    // µJ / ms = mW.
                    r.power_mw.insert(d.domain.clone(), used / dt);
                }
            }
        }
        let mut s = self.clone();
        s.memory_available = None;
        s.memory_psi_some_avg10 = None;
        for z in &mut s.thermal {
            z.temp_mc = None;
        }
        for h in &mut s.hwmon {
            h.power_uw = None;
            for t in &mut h.temps {
                t.temp_mc = None;
            }
        }
        for p in &mut s.power {
            p.capacity_pct = None;
            p.status = None;
        }
        for d in &mut s.rapl {
            d.energy_uj = None;
        }
        (s, r)
    }
}

/// A node condition: something wrong with the machine now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConditionKind {
    /// The supply voltage is too low (Raspberry Pi firmware flags or `rpi_volt` alarm).
    Undervoltage,
    /// The firmware is throttling or capping the CPU now.
    Throttled,
    /// A temperature is near a trip point.
    Thermal,
    /// The data disk is nearly full.
    DiskPressure,
    /// Little memory is available.
    MemoryPressure,
}

impl ConditionKind {
    /// All kinds.
    pub const ALL: [ConditionKind; 5] = [
        ConditionKind::Undervoltage,
        ConditionKind::Throttled,
        ConditionKind::Thermal,
        ConditionKind::DiskPressure,
        ConditionKind::MemoryPressure,
    ];
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionKind::Undervoltage => "undervoltage",
            ConditionKind::Throttled => "throttled",
            ConditionKind::Thermal => "thermal",
            ConditionKind::DiskPressure => "disk-pressure",
            ConditionKind::MemoryPressure => "memory-pressure",
        }
    }
    /// Parses a kebab-case name.
    pub fn parse(s: &str) -> Option<ConditionKind> {
        ConditionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
    /// The key of the taint it maps to (`motley.io/undervoltage`).
    pub fn taint_key(self) -> String {
        format!("{LABEL_PREFIX}{}", self.as_str())
    }
}

/// A condition that holds, with why and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// What.
    pub kind: ConditionKind,
    /// Why, in words that stay the same while it holds (values go in [`Readings`]).
    pub reason: String,
    /// Since when (ms since the epoch, agent's clock).
    pub since: u64,
}

/// When conditions are raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Thermal: within this many m°C of a passive, hot or critical trip point.
    pub thermal_margin_mc: i32,
    /// Disk pressure: the data disk is at least this full, percent.
    pub disk_full_pct: u8,
    /// Memory pressure: less than this share of memory available, percent.
    pub memory_available_pct: u8,
    /// Memory pressure: PSI `some avg10` at least this, percent.
    pub memory_psi_pct: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            thermal_margin_mc: 5000,
            disk_full_pct: 90,
            memory_available_pct: 5,
            memory_psi_pct: 20,
        }
    }
}

/// The conditions that hold for `hw` now. A condition already in `prev` keeps its
/// `since`; a new one starts at `now`.
pub fn conditions(
    hw: &Hardware,
    data_disk_used_pct: Option<u8>,
    t: &Thresholds,
    prev: &[Condition],
    now: u64,
) -> Vec<Condition> {
    let mut out: Vec<(ConditionKind, String)> = Vec::new();
    let alarm = hw.hwmon.iter().find(|h| h.undervoltage_alarm == Some(true));
    match (&hw.throttle, alarm) {
        (Some(th), _) if th.undervoltage_now => out.push((
            ConditionKind::Undervoltage,
            format!("firmware reports under-voltage now ({})", th.describe()),
        )),
        (_, Some(h)) => out.push((
            ConditionKind::Undervoltage,
            format!("{} ({}) raises its under-voltage alarm", h.chip, h.name),
        )),
        _ => {}
    }
    if let Some(th) = &hw.throttle
        && (th.throttled_now || th.freq_capped_now || th.soft_temp_limit_now)
    {
        let mut what = Vec::new();
        if th.throttled_now {
            what.push("throttled");
        }
        if th.freq_capped_now {
            what.push("frequency capped");
        }
        if th.soft_temp_limit_now {
            what.push("soft temperature limit");
        }
        out.push((
            ConditionKind::Throttled,
            format!("firmware reports {} now", what.join(", ")),
        ));
    }
    let mut hot: Vec<String> = Vec::new();
    for z in &hw.thermal {
        let Some(temp) = z.temp_mc else { continue };
        let trip = z
            .trips
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "passive" | "hot" | "critical"))
            .min_by_key(|(_, v)| *v);
        if let Some((kind, at)) = trip
            && temp >= at.saturating_sub(t.thermal_margin_mc)
        {
            hot.push(format!(
                "{} ({}) within {} °C of its {kind} trip point {} °C",
                z.name,
                z.kind,
                t.thermal_margin_mc / 1000,
                at / 1000
            ));
        }
    }
    for h in &hw.hwmon {
        for s in &h.temps {
            if let (Some(temp), Some(crit)) = (s.temp_mc, s.crit_mc)
                && crit > 0
                && temp >= crit.saturating_sub(t.thermal_margin_mc)
            {
                hot.push(format!(
                    "{} {} {} within {} °C of its critical limit {} °C",
                    h.name,
                    h.chip,
                    s.label.as_deref().unwrap_or(&s.sensor),
                    t.thermal_margin_mc / 1000,
                    crit / 1000
                ));
            }
        }
    }
    if !hot.is_empty() {
        out.push((ConditionKind::Thermal, hot.join("; ")));
    }
    if let Some(used) = data_disk_used_pct
        && used >= t.disk_full_pct
    {
        let dev = hw
            .data_disk
            .as_ref()
            .map(|d| format!(" ({} on {})", d.mount, d.device))
            .unwrap_or_default();
        out.push((
            ConditionKind::DiskPressure,
            format!("data disk{dev} is at least {}% full", t.disk_full_pct),
        ));
    }
    let low_mem = hw.memory > 0
        && hw.memory_available.is_some_and(|a| {
            (a as u128) * 100 < (hw.memory as u128) * t.memory_available_pct as u128
        });
    let psi = hw
        .memory_psi_some_avg10
        .is_some_and(|p| p >= t.memory_psi_pct as u32 * 100);
    if low_mem || psi {
        let mut why = Vec::new();
        if low_mem {
            why.push(format!(
                "less than {}% of memory available",
                t.memory_available_pct
            ));
        }
        if psi {
            why.push(format!(
                "tasks stalled on memory at least {}% of the time (PSI)",
                t.memory_psi_pct
            ));
        }
        out.push((ConditionKind::MemoryPressure, why.join("; ")));
    }
    out.into_iter()
        .map(|(kind, reason)| Condition {
            kind,
            since: prev
                .iter()
                .find(|c| c.kind == kind)
                .map_or(now, |c| c.since),
            reason,
        })
        .collect()
}

/// What a taint does to workloads that do not tolerate it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum TaintEffect {
    /// Placed elsewhere when another node can take it.
    #[default]
    PreferNoSchedule,
    /// Never placed there.
    NoSchedule,
    /// Never placed there, and moved away if already running there.
    Evict,
}

impl TaintEffect {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::PreferNoSchedule => "prefer-no-schedule",
            TaintEffect::NoSchedule => "no-schedule",
            TaintEffect::Evict => "evict",
        }
    }
    /// Parses a kebab-case name.
    pub fn parse(s: &str) -> Option<TaintEffect> {
        [
            TaintEffect::PreferNoSchedule,
            TaintEffect::NoSchedule,
            TaintEffect::Evict,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }
}

/// A taint on a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Taint {
    /// `motley.io/undervoltage`.
    pub key: String,
    /// What it does.
    pub effect: TaintEffect,
}

/// A workload's permission to run on tainted nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    /// The taint key (`motley.io/thermal`), or `*` for every key.
    pub key: String,
    /// Only this effect (`prefer-no-schedule`, `no-schedule`, `evict`); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration covers `taint`. The key `*` covers every key; so does the
    /// empty key, which manifests cannot give (validation refuses it) and which the
    /// reconciler uses for what daemons tolerate.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        (self.key == "*" || self.key.is_empty() || self.key == taint.key)
            && self.effect.is_none_or(|e| e == taint.effect)
    }
}

/// Whether some toleration covers `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// The effect each condition's taint has: prefer-no-schedule unless configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaintPolicy(pub BTreeMap<ConditionKind, TaintEffect>);

impl TaintPolicy {
    /// The effect for `kind`.
    pub fn effect(&self, kind: ConditionKind) -> TaintEffect {
        self.0.get(&kind).copied().unwrap_or_default()
    }
    /// The taints for a set of conditions, sorted by key.
    pub fn taints(&self, conditions: &[Condition]) -> Vec<Taint> {
        let mut t: Vec<Taint> = conditions
            .iter()
            .map(|c| Taint {
                key: c.kind.taint_key(),
                effect: self.effect(c.kind),
            })
            .collect();
        t.sort();
        t.dedup();
        t
    }
    /// Parses `KIND=EFFECT` (`undervoltage=no-schedule`).
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        let (k, e) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected CONDITION=EFFECT"))?;
        let kind = ConditionKind::parse(k.trim()).ok_or_else(|| {
            format!(
                "{spec:?}: unknown condition {k:?} (one of: {})",
                ConditionKind::ALL.map(|c| c.as_str()).join(", ")
            )
        })?;
        let effect = TaintEffect::parse(e.trim()).ok_or_else(|| {
            format!(
                "{spec:?}: unknown effect {e:?} (one of: prefer-no-schedule, no-schedule, evict)"
            )
        })?;
        self.0.insert(kind, effect);
        Ok(())
    }
}

/// Turns free text into a label value: lowercase `[a-z0-9._-]`, at most 63 characters,
/// starting and ending with an alphanumeric.
pub fn label_value(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.chars().take(63).collect();
    while out.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.pop();
    }
    while out.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.remove(0);
    }
    out
}

/// The labels derived from facts, all under [`LABEL_PREFIX`].
pub fn labels(hw: &Hardware, cpu_score: Option<u32>, task_logs: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            l.insert(format!("{LABEL_PREFIX}{k}"), v);
        }
    };
    put("arch", hw.arch.clone());
    put("os", hw.os.clone());
    if let Some(p) = &hw.platform {
        put("platform", label_value(&p.to_string()));
    }
    if let Some(b) = &hw.board {
        put("board", label_value(b));
    }
    if let Some(f) = &hw.board_family {
        put("board-family", label_value(f));
    }
    if let Some(v) = &hw.cpu.vendor {
        put("cpu-vendor", label_value(v));
    }
    if let Some(m) = &hw.cpu.model {
        put("cpu-model", label_value(m));
    }
    if hw.cpu.cores > 0 {
        put("cores", hw.cpu.cores.to_string());
    }
    if hw.cpu.logical > 0 {
        put("cpus", hw.cpu.logical.to_string());
    }
    if hw.cpu.core_types.len() > 1 {
        put("hybrid", "true".into());
    }
    if let Some(m) = hw.cpu.max_mhz {
        put("cpu-max-mhz", m.to_string());
    }
    if let Some(s) = cpu_score {
        put("cpu-score", s.to_string());
        put(
            "cpu-score-total",
            (s as u64 * hw.cpu.logical.max(1) as u64).to_string(),
        );
    }
    if hw.memory > 0 {
        put("memory-mib", (hw.memory >> 20).to_string());
    }
    if let Some(d) = &hw.data_disk {
        put("storage", d.media.as_str().into());
    }
    let mut media: BTreeMap<Media, u32> = BTreeMap::new();
    for d in &hw.disks {
        if !matches!(d.media, Media::Virtual | Media::Optical) || d.size > 0 {
            *media.entry(d.media).or_default() += 1;
        }
    }
    for (m, n) in media {
        put(&format!("disk.{}", m.as_str()), n.to_string());
    }
    if !hw.gpus.is_empty() {
        put("gpu-count", hw.gpus.len().to_string());
        let mut vendors: BTreeMap<&str, u32> = BTreeMap::new();
        for g in &hw.gpus {
            *vendors.entry(g.vendor.as_str()).or_default() += 1;
        }
        for (v, n) in &vendors {
            put(&format!("gpu.{}", label_value(v)), n.to_string());
        }
        if let Some(g) = hw.gpus.first() {
            put("gpu", label_value(&g.vendor));
            if let Some(d) = &g.driver {
                put("gpu-driver", label_value(d));
            }
        }
    }
    if hw.power.iter().any(|p| p.kind == "Battery") {
        put("battery", "true".into());
    }
    if hw.throttle.is_some() {
        put("throttle-flags", "true".into());
    }
    put("task-logs", task_logs.into());
    l
}

#[cfg(test)]
#[path = "hw_tests.rs"]
mod tests;
