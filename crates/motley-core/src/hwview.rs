//! Hardware facts, readings, conditions and taints as text: `motley facts`,
//! `describe node` and the dashboard's node pages say them alike.

use crate::hw::{Condition, Hardware, Readings, Taint};
use crate::quantity::{Bytes, MilliCpu};

/// `5s`, `3m`, `2h`, `4d` since `ms` (ms since the epoch).
pub fn age(ms: u64, now: u64) -> String {
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Human CPU.
pub fn cpu(m: u64) -> String {
    MilliCpu(m).to_string()
}

/// Human memory, rounded to Mi or Gi.
pub fn mem(b: u64) -> String {
    if b >= 10 << 30 {
        format!("{}Gi", b >> 30)
    } else if b >= 1 << 20 {
        format!("{}Mi", b >> 20)
    } else {
        Bytes(b).to_string()
    }
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// Bytes in decimal units, as disk vendors count (`512 GB`, `4.0 TB`).
pub fn disk_size(b: u64) -> String {
    if b >= 1_000_000_000_000 {
        format!("{:.1} TB", b as f64 / 1e12)
    } else if b >= 1_000_000_000 {
        format!("{} GB", (b as f64 / 1e9).round())
    } else {
        format!("{} MB", b / 1_000_000)
    }
}

/// m°C as `49.9 °C`.
fn celsius(mc: i32) -> String {
    format!("{:.1} °C", mc as f64 / 1000.0)
}

/// (fact, value) rows describing the hardware. Readings inside `hw` (temperatures,
/// battery, free memory) are shown when present.
pub fn rows(hw: &Hardware) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| r.push((k.to_string(), v));
    put(
        "arch",
        format!(
            "{}{}",
            hw.arch,
            if hw.arch64_capable && matches!(hw.arch.as_str(), "arm" | "386" | "riscv32") {
                " (64-bit capable cores)"
            } else {
                ""
            }
        ),
    );
    if let Some(src) = &hw.arch_source {
        put("arch from", src.clone());
    }
    put(
        "platform",
        match (&hw.platform, &hw.platform_source) {
            (Some(p), Some(src)) => format!("{p} (userland: {src}; images are pulled for it)"),
            (Some(p), None) => p.to_string(),
            (None, _) => "unknown (no system program to read)".into(),
        },
    );
    put(
        "os",
        [Some(hw.os.clone()), hw.distro.clone(), hw.kernel.clone()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
    );
    put("board", opt(&hw.board));
    let c = &hw.cpu;
    put(
        "cpu",
        [
            c.vendor.clone(),
            c.model.clone(),
            c.soc.clone().map(|s| format!("({s})")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" "),
    );
    put(
        "cpu topology",
        format!(
            "{} socket(s), {} core(s), {} logical",
            c.sockets, c.cores, c.logical
        ),
    );
    if c.core_types.len() > 1 {
        for t in &c.core_types {
            put(
                "core type",
                format!(
                    "{} × {}{}{}",
                    t.logical,
                    t.name,
                    t.max_mhz
                        .map(|m| format!(", up to {m} MHz"))
                        .unwrap_or_default(),
                    t.capacity
                        .map(|m| format!(", capacity {m}"))
                        .unwrap_or_default()
                ),
            );
        }
    }
    put(
        "mhz",
        match (c.min_mhz, c.max_mhz) {
            (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
            (None, Some(hi)) => format!("up to {hi}"),
            _ => "-".into(),
        },
    );
    put(
        "memory",
        format!(
            "{}{}",
            mem(hw.memory),
            hw.memory_available
                .map(|a| format!(" ({} available)", mem(a)))
                .unwrap_or_default()
        ),
    );
    for d in &hw.disks {
        put(
            &format!("disk {}", d.name),
            format!(
                "{} {}{}{}",
                d.media.as_str(),
                disk_size(d.size),
                d.model
                    .as_ref()
                    .map(|m| format!(" {m}"))
                    .unwrap_or_default(),
                if d.mounts.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", d.mounts.join(", "))
                }
            ),
        );
    }
    if let Some(d) = &hw.data_disk {
        put(
            "data dir",
            format!(
                "{} on {} ({}, {})",
                d.path,
                d.mount,
                d.device,
                d.media.as_str()
            ),
        );
    }
    for g in &hw.gpus {
        put(
            &format!("gpu {}", g.name),
            [
                Some(g.vendor.clone()),
                g.model.clone(),
                g.pci_id.clone().map(|p| format!("[{p}]")),
                g.driver.clone().map(|d| format!("driver {d}")),
                g.vram.map(|v| format!("{} VRAM", mem(v))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        );
    }
    for z in &hw.thermal {
        let trips: Vec<String> = z
            .trips
            .iter()
            .map(|(k, t)| format!("{k} {}", celsius(*t)))
            .collect();
        put(
            &format!("thermal {}", z.name),
            format!(
                "{}{}{}",
                z.kind,
                z.temp_mc
                    .map(|t| format!(" {}", celsius(t)))
                    .unwrap_or_default(),
                if trips.is_empty() {
                    String::new()
                } else {
                    format!(" (trips: {})", trips.join(", "))
                }
            ),
        );
    }
    for h in &hw.hwmon {
        let temps: Vec<String> = h
            .temps
            .iter()
            .map(|t| {
                format!(
                    "{}{}",
                    t.label.as_deref().unwrap_or(&t.sensor),
                    t.temp_mc
                        .map(|v| format!(" {}", celsius(v)))
                        .unwrap_or_default()
                )
            })
            .collect();
        let mut v = h.chip.clone();
        if !temps.is_empty() {
            v.push_str(&format!(": {}", temps.join(", ")));
        }
        if let Some(a) = h.undervoltage_alarm {
            v.push_str(if a {
                " (under-voltage alarm)"
            } else {
                " (voltage ok)"
            });
        }
        put(&format!("hwmon {}", h.name), v);
    }
    if let Some(t) = &hw.throttle {
        put(
            "throttled",
            format!("{} (from {:?})", t.describe(), t.source).to_lowercase(),
        );
    }
    for p in &hw.power {
        put(
            &format!("power {}", p.name),
            [
                Some(p.kind.clone()),
                p.online
                    .map(|o| if o { "online" } else { "offline" }.to_string()),
                p.capacity_pct.map(|c| format!("{c}%")),
                p.status.clone(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        );
    }
    for d in &hw.rapl {
        put(&format!("rapl {}", d.name), d.domain.clone());
    }
    r
}

/// Readings as (name, value) rows.
pub fn reading_rows(r: &Readings) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(m) = r.memory_available_mib {
        out.push(("memory available".into(), format!("{m}Mi")));
    }
    if let Some(d) = r.data_disk_used_pct {
        out.push(("data disk used".into(), format!("{d}%")));
    }
    for (k, v) in &r.temps_c {
        out.push((k.clone(), format!("{v} °C")));
    }
    for (k, v) in &r.battery_pct {
        out.push((format!("battery {k}"), format!("{v}%")));
    }
    if let Some(m) = r.on_mains {
        out.push(("on mains".into(), m.to_string()));
    }
    for (k, v) in &r.power_mw {
        out.push((format!("power {k}"), format!("{:.1} W", *v as f64 / 1000.0)));
    }
    out
}

/// Conditions as lines: `undervoltage since 3m: reason`.
pub fn condition_lines(conditions: &[Condition], now: u64) -> Vec<String> {
    conditions
        .iter()
        .map(|c| {
            format!(
                "{} (for {}): {}",
                c.kind.as_str(),
                age(c.since, now),
                c.reason
            )
        })
        .collect()
}

/// Taints as `key:effect`.
pub fn taint_text(taints: &[Taint]) -> String {
    if taints.is_empty() {
        return "-".into();
    }
    taints
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}
