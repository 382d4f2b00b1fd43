//! `motley experiment run -f FILE --dry-run`: an experiment checked against the live
//! cluster, and its timeline.

use super::*;
use motley_core::experiment::{self, Action, Experiment, Known};

/// `experiment run`.
pub async fn run(client: &Client, file: &std::path::Path, dry_run: bool) -> anyhow::Result<i32> {
    let files = files::read_all(&[file.to_path_buf()])?;
    let srcs = sources(&files);
    let (docs, rest) = match manifest::take_kind::<Experiment>(&srcs, "Experiment") {
        Ok(x) => x,
        Err(errors) => {
            print_manifest_errors(&errors);
            return Ok(1);
        }
    };
    let [doc] = docs.as_slice() else {
        eprintln!(
            "error: {}: one `kind: Experiment` per file ({} found)",
            file.display(),
            docs.len()
        );
        return Ok(1);
    };
    if rest.iter().any(|t| {
        t.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "---")
    }) {
        eprintln!(
            "error: {}: only the experiment belongs in its file",
            file.display()
        );
        return Ok(1);
    }
    let nodes: Vec<motley_core::api::NodeView> = match client.get("/v1/nodes").await {
        Ok(n) => n,
        Err(e) => return report(e),
    };
    let views: Vec<motley_core::api::WorkloadView> = match client.get("/v1/workloads").await {
        Ok(v) => v,
        Err(e) => return report(e),
    };
    let known = Known {
        nodes: nodes.into_iter().map(|n| n.node.name).collect(),
        workloads: views
            .into_iter()
            .map(|v| v.workload.spec.reference())
            .collect(),
    };
    let errors = experiment::validate(doc, Some(&known));
    if !errors.is_empty() {
        print_manifest_errors(&errors);
        eprintln!("{} error(s); nothing was done", errors.len());
        return Ok(1);
    }
    if !dry_run {
        eprintln!(
            "error: carrying faults out is not built yet (issue 24); `--dry-run` checks the experiment and prints its timeline"
        );
        return Ok(1);
    }
    let e = &doc.value;
    let mut rows = Vec::new();
    for s in experiment::timeline(e) {
        let f = &e.faults[s.fault];
        let action = f.actions().first().copied().unwrap_or(Action::Kill);
        let target = match (&f.kill, f.nodes().as_slice()) {
            (Some(k), _) => format!("an allocation of {}", k.allocation_of),
            (None, nodes) => nodes.join(", "),
        };
        let what = if s.start {
            if s.deadline > 0 {
                format!(
                    "start (undone by its agent at {} s at the latest)",
                    s.deadline / 1000
                )
            } else {
                "now".to_string()
            }
        } else {
            "undo".to_string()
        };
        rows.push(vec![
            format!("{:.1}s", s.at as f64 / 1000.0),
            format!("faults[{}]", s.fault),
            action.as_str().to_string(),
            target,
            what,
        ]);
    }
    print(&format!(
        "experiment {} (dry run: nothing was done)\n",
        e.name
    ));
    print(&table(&["AT", "FAULT", "ACTION", "ON", "WHAT"], &rows));
    for p in &e.steady_state {
        match (&p.service, &p.http) {
            (Some(svc), _) => print(&format!(
                "steady state: {} has at least {} ready\n",
                experiment::service_ref(svc),
                p.ready_at_least.unwrap_or(0)
            )),
            (None, Some(url)) => print(&format!(
                "steady state: {url} answers {} every {}\n",
                p.expect_status.unwrap_or(200),
                p.every.map_or_else(|| "1s".to_string(), |d| d.to_string())
            )),
            (None, None) => {}
        }
    }
    if let Some(g) = &e.guard {
        let r = &g.abort_if.ready_below;
        print(&format!(
            "guard: abort when {} has fewer than {} ready\n",
            experiment::service_ref(&r.service),
            r.count
        ));
    }
    Ok(0)
}
