//! Power supplies (`/sys/class/power_supply`) and RAPL energy counters
//! (`/sys/class/powercap/intel-rapl*`, also used on AMD).

use std::path::Path;

pub use motley_core::hw::{PowerSupply, RaplDomain};

use crate::{entries, read_trim};

/// Reads every power supply under `root`, sorted by name.
pub fn supplies(root: &Path) -> Vec<PowerSupply> {
    let mut out: Vec<PowerSupply> = entries(&root.join("sys/class/power_supply"))
        .into_iter()
        .map(|(name, d)| PowerSupply {
            kind: read_trim(&d.join("type")).unwrap_or_default(),
            online: read_trim(&d.join("online")).map(|v| v != "0"),
            capacity_pct: read_trim(&d.join("capacity"))
                .and_then(|v| v.parse::<u32>().ok())
                .map(|v| v.min(100) as u8),
            status: read_trim(&d.join("status")),
            name,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Reads every RAPL domain (`intel-rapl:0`, `intel-rapl:0:0`) with its counter.
pub fn rapl(root: &Path) -> Vec<RaplDomain> {
    let mut out: Vec<RaplDomain> = entries(&root.join("sys/class/powercap"))
        .into_iter()
        .filter(|(name, d)| name.contains("rapl:") && d.join("energy_uj").exists())
        .map(|(name, d)| RaplDomain {
            domain: read_trim(&d.join("name")).unwrap_or_default(),
            energy_uj: read_trim(&d.join("energy_uj")).and_then(|v| v.parse().ok()),
            max_energy_uj: read_trim(&d.join("max_energy_range_uj")).and_then(|v| v.parse().ok()),
            name,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
