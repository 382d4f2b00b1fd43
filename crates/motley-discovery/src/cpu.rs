//! CPU topology and core types from `/sys/devices/system/cpu` (with `/proc/cpuinfo`
//! as the fallback for captures that have only that file).
//!
//! Core types: the ARM core names when cpuinfo gives several (big.LITTLE, Apple P/E);
//! otherwise groups by `cpu_capacity`, then by per-CPU maximum frequency when the groups
//! differ by more than 10 % (Intel P- and E-cores; "favoured" turbo cores differ by
//! a few percent and are not a separate type).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use motley_core::hw::{CoreType, Cpu};

use crate::cpuinfo::CpuInfo;
use crate::read_trim;

#[derive(Debug, Default, Clone)]
struct PerCpu {
    package: Option<u32>,
    core: Option<(u32, u32, u32)>,
    max_khz: Option<u64>,
    min_khz: Option<u64>,
    capacity: Option<u32>,
}

fn num<T: std::str::FromStr>(p: &Path) -> Option<T> {
    read_trim(p)?.parse().ok()
}

/// Parses a CPU list (`0-3,8-11`), at most 65,536 entries.
pub fn cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.trim().split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>(), b.trim().parse::<u32>()),
            None => (part.trim().parse::<u32>(), part.trim().parse::<u32>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            for i in a..=b.min(a.saturating_add(65_535)) {
                out.push(i);
                if out.len() >= 65_536 {
                    return out;
                }
            }
        }
    }
    out
}

/// The CPU of the machine at `root`, from its cpuinfo and sysfs.
pub fn cpu(root: &Path, info: &CpuInfo) -> Cpu {
    let base = root.join("sys/devices/system/cpu");
    let mut ids: Vec<u32> = read_trim(&base.join("present"))
        .map(|t| cpu_list(&t))
        .unwrap_or_default();
    if ids.is_empty() {
        ids = crate::entries(&base)
            .into_iter()
            .filter_map(|(n, _)| n.strip_prefix("cpu")?.parse().ok())
            .collect();
        ids.sort();
    }
    let per: Vec<PerCpu> = ids
        .iter()
        .map(|i| {
            let d = base.join(format!("cpu{i}"));
            let t = d.join("topology");
            let package = num(&t.join("physical_package_id"));
            let core = num::<u32>(&t.join("core_id")).map(|c| {
                (
                    num::<i64>(&t.join("die_id")).unwrap_or(0).max(0) as u32,
                    num::<i64>(&t.join("cluster_id")).unwrap_or(0).max(0) as u32,
                    c,
                )
            });
            let freq = |f: &str| {
                num::<u64>(&d.join("cpufreq").join(f))
                    .or_else(|| num(&base.join(format!("cpufreq/policy{i}/{f}"))))
            };
            PerCpu {
                package,
                core,
                max_khz: freq("cpuinfo_max_freq"),
                min_khz: freq("cpuinfo_min_freq"),
                capacity: num(&d.join("cpu_capacity")),
            }
        })
        .collect();
    let logical = if info.processors > 0 {
        info.processors
    } else if !ids.is_empty() {
        ids.len() as u32
    } else if info.model.is_some() || !info.arch.is_empty() {
        1 // an old kernel's single "Processor :" line
    } else {
        0
    };
    let packages: BTreeSet<u32> = per.iter().filter_map(|p| p.package).collect();
    let cores: BTreeSet<(u32, (u32, u32, u32))> = per
        .iter()
        .filter_map(|p| Some((p.package.unwrap_or(0), p.core?)))
        .collect();
    let sockets = if !packages.is_empty() {
        packages.len() as u32
    } else if info.sockets > 0 {
        info.sockets
    } else {
        (logical > 0) as u32
    };
    let physical = if !cores.is_empty() {
        cores.len() as u32
    } else if info.cores > 0 {
        // cpuinfo's core ids are per package.
        info.cores
    } else {
        logical
    };
    let max_mhz = per
        .iter()
        .filter_map(|p| p.max_khz)
        .max()
        .map(|k| (k / 1000) as u32);
    let min_mhz = per
        .iter()
        .filter_map(|p| p.min_khz)
        .min()
        .map(|k| (k / 1000) as u32);
    Cpu {
        vendor: info.vendor.clone(),
        model: info.model.clone(),
        soc: info.hardware.clone(),
        unknown_parts: info.unknown_parts.clone(),
        sockets,
        cores: physical,
        logical,
        core_types: core_types(info, &per, logical),
        max_mhz,
        min_mhz,
    }
}

fn core_types(info: &CpuInfo, per: &[PerCpu], logical: u32) -> Vec<CoreType> {
    let x86 = matches!(info.arch.as_str(), "amd64" | "386");
    let at = |i: usize| per.get(i).cloned().unwrap_or_default();
    let named: Vec<(usize, &String)> = info
        .per_cpu_core
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((i, n.as_ref()?)))
        .collect();
    let distinct: BTreeSet<&String> = named.iter().map(|(_, n)| *n).collect();
    let mhz = |k: Option<u64>| k.map(|k| (k / 1000) as u32);
    if distinct.len() > 1 {
        let mut groups: BTreeMap<&String, CoreType> = BTreeMap::new();
        for (i, n) in &named {
            let p = at(*i);
            let g = groups.entry(n).or_insert_with(|| CoreType {
                name: (*n).clone(),
                ..CoreType::default()
            });
            g.logical += 1;
            g.max_mhz = g.max_mhz.max(mhz(p.max_khz));
            g.capacity = g.capacity.max(p.capacity);
        }
        let mut v: Vec<CoreType> = groups.into_values().collect();
        v.sort_by_key(|t| std::cmp::Reverse((t.capacity, t.max_mhz)));
        return v;
    }
    let single = || {
        vec![CoreType {
            name: info
                .core_types
                .first()
                .cloned()
                .or_else(|| info.model.clone())
                .unwrap_or_else(|| "unknown".into()),
            logical,
            max_mhz: mhz(per.iter().filter_map(|p| p.max_khz).max()),
            capacity: per.iter().filter_map(|p| p.capacity).max(),
        }]
    };
    if logical == 0 {
        return Vec::new();
    }
    // Group by capacity, else by maximum frequency.
    let caps: BTreeSet<u32> = per.iter().filter_map(|p| p.capacity).collect();
    let by_capacity = caps.len() > 1;
    let key = |p: &PerCpu| {
        if by_capacity {
            p.capacity.map(u64::from)
        } else {
            p.max_khz
        }
    };
    let mut groups: BTreeMap<u64, Vec<&PerCpu>> = BTreeMap::new();
    for p in per {
        if let Some(k) = key(p) {
            groups.entry(k).or_default().push(p);
        }
    }
    // Merge groups within 10 % of each other (favoured turbo cores).
    let mut merged: Vec<(u64, Vec<&PerCpu>)> = Vec::new();
    for (k, v) in groups.into_iter().rev() {
        match merged.last_mut() {
            Some((top, g)) if k * 110 >= *top * 100 => g.extend(v),
            _ => merged.push((k, v)),
        }
    }
    if merged.len() < 2 {
        return single();
    }
    let n = merged.len();
    merged
        .into_iter()
        .enumerate()
        .map(|(i, (_, g))| CoreType {
            name: match (x86, n, i) {
                (true, 2, 0) => "P-core".into(),
                (true, 2, 1) => "E-core".into(),
                (false, 2, 0) => "big".into(),
                (false, 2, 1) => "LITTLE".into(),
                (_, _, i) => format!("tier {i}"),
            },
            logical: g.len() as u32,
            max_mhz: mhz(g.iter().filter_map(|p| p.max_khz).max()),
            capacity: g.iter().filter_map(|p| p.capacity).max(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists() {
        assert_eq!(super::cpu_list("0-3,8\n"), [0, 1, 2, 3, 8]);
        assert!(super::cpu_list("x-y").is_empty());
        assert_eq!(super::cpu_list("0-4294967295").len(), 65_536);
    }
}
