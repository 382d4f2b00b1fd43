//! `motley capacity -f inventory.yaml -f workloads/ [--tolerate N]`: whether the
//! workloads fit the inventory's machines, with N failures, the headroom, power and
//! cost, and the cheapest machine to add. Runs here, with no cluster.

use super::*;
use motley_core::inventory::{self, Inventory};
use motley_core::model::{Workload, WorkloadRef};
use motley_scheduler::capacity::{Report, Short, plan};

/// `capacity`.
pub fn capacity(
    paths: &[std::path::PathBuf],
    tolerate: u32,
    output: Format,
) -> anyhow::Result<i32> {
    let files = files::read_all(paths)?;
    let srcs = sources(&files);
    let (invs, rest) = match manifest::take_kind::<Inventory>(&srcs, "Inventory") {
        Ok(x) => x,
        Err(errors) => {
            print_manifest_errors(&errors);
            return Ok(1);
        }
    };
    let mut errors: Vec<ManifestError> = invs.iter().flat_map(inventory::validate).collect();
    let inv = match invs.as_slice() {
        [one] => Some(one),
        [] => {
            eprintln!("error: no `kind: Inventory` among the files: say which machines there are");
            return Ok(1);
        }
        [_, second, ..] => {
            errors.push(second.error_at("kind", "one Inventory at a time"));
            None
        }
    };
    let rest_sources: Vec<Source<'_>> = files
        .iter()
        .zip(&rest)
        .map(|(f, text)| Source {
            name: &f.name,
            text,
        })
        .collect();
    let docs = match manifest::parse_set(&rest_sources) {
        Ok(d) => d,
        Err(e) => {
            errors.extend(e);
            Vec::new()
        }
    };
    let Some(inv) = inv.filter(|_| errors.is_empty()) else {
        print_manifest_errors(&errors);
        eprintln!("{} error(s)", errors.len());
        return Ok(1);
    };
    let workloads: std::collections::BTreeMap<WorkloadRef, Workload> = docs
        .into_iter()
        .map(|d| {
            let r = d.spec.reference();
            let w = Workload {
                spec: d.spec,
                generation: 1,
                uid: r.name.clone(),
                created_at: 0,
                updated_at: 0,
                binding: None,
                image_platforms: Vec::new(),
                history: Vec::new(),
                rollout: None,
                source: None,
            };
            (r, w)
        })
        .collect();
    let report = match plan(
        &inv.value,
        &workloads,
        tolerate,
        &motley_scheduler::Config::default(),
    ) {
        Ok(r) => r,
        Err(e) => return report(anyhow::anyhow!("{}:{}: {e}", inv.file, inv.line)),
    };
    if matches!(output, Format::Json | Format::Yaml) {
        print(&output::structured(&report, output)?);
    } else {
        print(&text(&report, inv.value.currency.as_deref().unwrap_or("")));
    }
    Ok(if report.fits { 0 } else { 3 })
}

fn shorts(s: &[Short]) -> String {
    s.iter()
        .map(|x| {
            format!(
                "  {} runs {} of {}: {}\n",
                x.workload, x.running, x.wanted, x.why
            )
        })
        .collect()
}

fn pct(used: u64, of: u64) -> u64 {
    (used * 100).checked_div(of).unwrap_or(0)
}

fn text(r: &Report, cur: &str) -> String {
    let mut out = String::new();
    let nodes: Vec<String> = r
        .nodes
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(m, n)| format!("{n} × {m}"))
        .collect();
    out.push_str(&format!(
        "inventory {}: {}\n",
        r.inventory,
        nodes.join(", ")
    ));
    if !r.short.is_empty() {
        out.push_str("does not fit with every node up:\n");
        out.push_str(&shorts(&r.short));
    } else if let Some((lost, hurt)) = &r.failure {
        out.push_str(&format!(
            "fits with every node up, not with {} failure(s): losing {} leaves\n",
            r.tolerate,
            lost.join(" and ")
        ));
        out.push_str(&shorts(hurt));
    } else if r.tolerate > 0 {
        out.push_str(&format!(
            "fits, also with any {} node(s) failed ({} combinations checked)\n",
            r.tolerate, r.failures_checked
        ));
    } else {
        out.push_str("fits\n");
    }
    let h = &r.headroom;
    out.push_str(&format!(
        "requested: cpu {:.2} of {} cores ({} %), memory {} of {} ({} %)\n",
        h.cpu_used as f64 / 1000.0,
        h.cpu / 1000,
        pct(h.cpu_used, h.cpu),
        output::mem(h.memory_used),
        output::mem(h.memory),
        pct(h.memory_used, h.memory)
    ));
    let p = &r.power;
    if !p.models.is_empty() {
        out.push_str(&format!(
            "power at this load: {:.1} W, {:.1} kWh a month",
            p.watts, p.kwh_month
        ));
        if let Some(c) = p.cost_month {
            out.push_str(&format!(", {cur}{c:.2} a month"));
        }
        out.push('\n');
        for (m, n, w) in &p.models {
            out.push_str(&format!("  {n} × {m}: {w:.1} W\n"));
        }
    }
    if !p.unknown.is_empty() {
        out.push_str(&format!("no watts given for: {}\n", p.unknown.join(", ")));
    }
    if !r.fits {
        match &r.addition {
            Some(a) => out.push_str(&format!(
                "cheapest addition that makes it fit: {} × {}{}\n",
                a.count,
                a.model,
                a.price
                    .map_or_else(String::new, |p| format!(" ({cur}{p:.2})"))
            )),
            None => out.push_str(&format!(
                "no addition of up to {} machines of one model makes it fit\n",
                motley_scheduler::capacity::MAX_ADDED
            )),
        }
    }
    out
}
