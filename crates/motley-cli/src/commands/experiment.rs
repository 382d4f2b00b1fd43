//! `motley experiment run/report/list/abort` (issue 24): an experiment checked here
//! (each error at its line and field), then against the live cluster by the server,
//! which carries it out; its report as Markdown or JSON.

use super::*;
use motley_core::api::{ExperimentAccepted, ExperimentRequest, ExperimentSummary, ManifestFile};
use motley_core::experiment::{self, Action, Experiment};
use motley_core::experiment_run::{Phase, Report};

/// Exit code of a run whose steady state did not hold (or that was aborted).
pub const EXIT_NOT_STEADY: i32 = 3;

/// `experiment run`.
pub async fn run(
    client: &Client,
    file: &std::path::Path,
    dry_run: bool,
    detach: bool,
) -> anyhow::Result<i32> {
    let files = files::read_all(&[file.to_path_buf()])?;
    let Some(f) = files.first() else {
        anyhow::bail!("{}: nothing to read", file.display());
    };
    let doc = match experiment::from_text(&f.name, &f.content, None) {
        Ok(d) => d,
        Err(errors) => {
            print_manifest_errors(&errors);
            eprintln!("{} error(s); nothing was done", errors.len());
            return Ok(1);
        }
    };
    let body = ExperimentRequest {
        file: ManifestFile {
            name: f.name.clone(),
            content: f.content.clone(),
        },
        dry_run,
    };
    let accepted: ExperimentAccepted = match client.post("/v1/experiments", &body).await {
        Ok(a) => a,
        Err(e) => return report(e),
    };
    if dry_run {
        print_timeline(&doc.value);
        return Ok(0);
    }
    eprintln!(
        "experiment {} started: waiting for the steady state, then {} fault(s)",
        accepted.name,
        doc.value.faults.len()
    );
    if detach {
        return Ok(0);
    }
    // Follow it: a line per change of phase, the report at the end.
    let path = format!("/v1/experiments/{}", accepted.name);
    let mut said = None;
    loop {
        let r: Report = match client.get(&path).await {
            Ok(r) => r,
            Err(e) => return report(e),
        };
        if said != Some(r.phase) {
            eprintln!("experiment {}: {}", r.name, r.phase.as_str());
            said = Some(r.phase);
        }
        if r.phase.ended() {
            print(&r.markdown());
            return Ok(exit_of(&r));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn exit_of(r: &Report) -> i32 {
    let steady = r.verdict.as_ref().is_some_and(|v| v.steady);
    if r.phase == Phase::Finished && steady {
        0
    } else {
        EXIT_NOT_STEADY
    }
}

/// `experiment report NAME`: Markdown, or the whole report as JSON.
pub async fn show(client: &Client, name: &str, output: Format) -> anyhow::Result<i32> {
    let r: Report = match client.get(&format!("/v1/experiments/{name}")).await {
        Ok(r) => r,
        Err(e) => return report(e),
    };
    match output {
        Format::Json => print(&format!("{}\n", serde_json::to_string_pretty(&r)?)),
        Format::Yaml => print(&serde_saphyr::to_string(&r)?),
        Format::Table | Format::Wide => print(&r.markdown()),
    }
    Ok(0)
}

/// `experiment list`.
pub async fn list(client: &Client, output: Format) -> anyhow::Result<i32> {
    let rows: Vec<ExperimentSummary> = match client.get("/v1/experiments").await {
        Ok(r) => r,
        Err(e) => return report(e),
    };
    if matches!(output, Format::Json) {
        print(&format!("{}\n", serde_json::to_string_pretty(&rows)?));
        return Ok(0);
    }
    let now = crate::output::now_ms();
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.phase.as_str().to_string(),
                match r.steady {
                    Some(true) => "held".into(),
                    Some(false) => "NOT held".into(),
                    None => "-".into(),
                },
                motley_core::hwview::age(r.created, now),
                r.why.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print(&table(
        &["NAME", "PHASE", "STEADY STATE", "AGE", "WHY"],
        &table_rows,
    ));
    Ok(0)
}

/// `experiment abort NAME`.
pub async fn abort(client: &Client, name: &str) -> anyhow::Result<i32> {
    let path = format!("/v1/experiments/{name}/abort");
    match client
        .post::<_, serde_json::Value>(&path, &serde_json::json!({}))
        .await
    {
        Ok(_) => {
            eprintln!("experiment {name}: aborting (every fault held is undone)");
            Ok(0)
        }
        Err(e) => report(e),
    }
}

/// The dry run's table: when each fault starts and is undone.
fn print_timeline(e: &Experiment) {
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
}

/// `motley experiment …`.
pub(super) async fn dispatch(
    c: &Client,
    command: crate::args::ExperimentCommand,
) -> anyhow::Result<i32> {
    use crate::args::ExperimentCommand as E;
    match command {
        E::Run {
            file,
            dry_run,
            detach,
        } => run(c, &file, dry_run, detach).await,
        E::Report { name, output } => show(c, &name, output).await,
        E::List { output } => list(c, output).await,
        E::Abort { name } => abort(c, &name).await,
    }
}
