//! `motley capacity -f inventory.yaml -f workloads/ [--tolerate N]`: whether the
//! workloads fit the inventory's machines, with N failures, the headroom, power and
//! cost, and the cheapest machine to add. Runs here, with no cluster; with
//! `--cluster`, on the live cluster's nodes (and its workloads, unless files give
//! them), the inventory adding candidates.

use super::*;
use motley_core::inventory::{self, Inventory};
use motley_core::model::{Workload, WorkloadRef};
use motley_scheduler::capacity::{Existing, Report, Short, plan_on};

/// The live cluster's ready nodes, the power each measures, and its workloads.
async fn live(
    client: &Client,
) -> anyhow::Result<(Existing, std::collections::BTreeMap<WorkloadRef, Workload>)> {
    let nodes: Vec<motley_core::api::NodeView> = client.get("/v1/nodes").await?;
    let mut existing = Existing::default();
    for n in nodes.into_iter().filter(|n| n.state == "ready") {
        if let Some(w) = n.readings.as_ref().and_then(|r| r.watts()) {
            existing.watts.insert(n.node.name.clone(), w);
        }
        existing.nodes.insert(n.node.name.clone(), n.node);
    }
    let views: Vec<motley_core::api::WorkloadView> = client.get("/v1/workloads").await?;
    let workloads = views
        .into_iter()
        .map(|v| (v.workload.spec.reference(), v.workload))
        .collect();
    Ok((existing, workloads))
}

/// `capacity`.
pub async fn capacity(
    client: Option<&Client>,
    paths: &[std::path::PathBuf],
    tolerate: u32,
    schedule: &[String],
    power: bool,
    output: Format,
) -> anyhow::Result<i32> {
    // `NODE: HH:MM-HH:MM`, checked before anything is read.
    let mut hours: Vec<(String, String)> = Vec::new();
    for s in schedule {
        let Some((node, window)) = s.split_once(':').filter(|(n, _)| !n.trim().is_empty()) else {
            return report(anyhow::anyhow!(
                "--schedule {s:?}: expected \"NODE: HH:MM-HH:MM\""
            ));
        };
        let (node, window) = (node.trim(), window.trim());
        if let Err(e) = motley_core::hours::Window::parse(window) {
            return report(anyhow::anyhow!("--schedule {s:?}: {e}"));
        }
        hours.push((node.to_string(), window.to_string()));
    }
    if paths.is_empty() && client.is_none() {
        return report(anyhow::anyhow!(
            "say which machines: -f inventory.yaml, or --cluster for the live one"
        ));
    }
    let files = if paths.is_empty() {
        Vec::new()
    } else {
        files::read_all(paths)?
    };
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
        [] if client.is_some() => None,
        [] => {
            eprintln!(
                "error: no `kind: Inventory` among the files: say which machines there are (or --cluster)"
            );
            return Ok(1);
        }
        [_, second, ..] => {
            print_manifest_errors(&[second.error_at("kind", "one Inventory at a time")]);
            return Ok(1);
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
    if !errors.is_empty() {
        print_manifest_errors(&errors);
        eprintln!("{} error(s)", errors.len());
        return Ok(1);
    }
    let empty = Inventory {
        kind: Default::default(),
        name: "the cluster".into(),
        price_per_kwh: None,
        currency: None,
        models: Vec::new(),
    };
    let (inv_value, at) = match inv {
        Some(i) => (&i.value, format!("{}:{}", i.file, i.line)),
        None => (&empty, "the cluster".to_string()),
    };
    let (existing, live_workloads) = match client {
        Some(c) => match live(c).await {
            Ok(x) => x,
            Err(e) => return report(e),
        },
        None => Default::default(),
    };
    let from_files: std::collections::BTreeMap<WorkloadRef, Workload> =
        motley_core::manifest::created(docs, 0);
    // Without workload files, the cluster's own workloads.
    let workloads = if from_files.is_empty() && client.is_some() {
        live_workloads
    } else {
        from_files
    };
    let cfg = motley_scheduler::Config::default();
    let r = match plan_on(&existing, inv_value, &workloads, tolerate, &cfg) {
        Ok(r) => r,
        Err(e) => return report(anyhow::anyhow!("{at}: {e}")),
    };
    let scheduled = if hours.is_empty() {
        Vec::new()
    } else {
        match motley_scheduler::capacity::schedules(&existing, inv_value, &workloads, &hours, &cfg)
        {
            Ok(s) => s,
            Err(e) => return report(anyhow::anyhow!("{at}: {e}")),
        }
    };
    if matches!(output, Format::Json | Format::Yaml) {
        let mut v = serde_json::to_value(&r)?;
        if !scheduled.is_empty() {
            v["schedules"] = serde_json::to_value(&scheduled)?;
        }
        print(&output::structured(&v, output)?);
    } else {
        let mut t = text(&r, inv_value.currency.as_deref().unwrap_or(""), power);
        t.push_str(&schedule_text(&scheduled));
        if !existing.nodes.is_empty() {
            t = format!(
                "{} nodes of the cluster (power as measured now, where it is)\n{t}",
                existing.nodes.len()
            );
        }
        print(&t);
    }
    Ok(if r.fits { 0 } else { 3 })
}

/// What machines' hours cost, in words.
fn schedule_text(s: &[motley_scheduler::capacity::Scheduled]) -> String {
    let h = |ms: u64| format!("{:.1} h", ms as f64 / 3_600_000.0);
    let mut out = String::new();
    for x in s {
        out.push_str(&format!(
            "{} on {} ({:.1} h a day):",
            x.node, x.window, x.on_hours
        ));
        if x.while_off.is_empty() {
            out.push_str(" nothing waits for it; its work runs elsewhere while it is off\n");
            continue;
        }
        out.push('\n');
        for (r, mean, worst) in &x.job_waits {
            out.push_str(&format!(
                "  {r} waits for it: {} on average, {} at worst\n",
                h(*mean),
                h(*worst)
            ));
        }
        for (r, off) in &x.services_short_hours {
            out.push_str(&format!("  {r} is short {off:.1} h a day\n"));
        }
        for w in &x.while_off {
            out.push_str(&format!(
                "    while off, {} runs {} of {}: {}\n",
                w.workload, w.running, w.wanted, w.why
            ));
        }
    }
    out
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

fn text(r: &Report, cur: &str, per_model: bool) -> String {
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
        if per_model {
            for (m, n, w) in &p.models {
                out.push_str(&format!("  {n} × {m}: {w:.1} W\n"));
            }
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
