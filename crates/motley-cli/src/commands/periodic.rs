//! `motley job run`, and what `describe` says of a periodic job.

use super::*;

/// `motley job …`.
pub(super) async fn dispatch(c: &Client, command: crate::args::JobCommand) -> anyhow::Result<i32> {
    match command {
        crate::args::JobCommand::Run { name } => run(c, &name).await,
    }
}

/// Starts a run of periodic job `name` now and names it.
async fn run(c: &Client, name: &str) -> anyhow::Result<i32> {
    let path = c.scoped(&format!("/v1/workloads/job/{name}/run"));
    match c
        .post::<_, WorkloadDetail>(&path, &serde_json::json!({}))
        .await
    {
        Ok(d) => {
            println!(
                "job/{} started (a run of job/{name})",
                d.view.workload.spec.name()
            );
            Ok(0)
        }
        Err(e) => report(e),
    }
}

/// `describe`'s lines for a periodic job (none for another workload).
pub(super) fn describe(v: &WorkloadView, now: u64) -> String {
    let Some(p) = &v.periodic else {
        return String::new();
    };
    let mut out = format!("Schedule:    {} ({})\n", p.schedule, p.time_zone);
    if let Some(next) = p.next_run {
        out.push_str(&format!(
            "Next run:    in {} ({})\n",
            age(now, next),
            motley_core::periodic::at(next)
        ));
    }
    match (&p.last_run, p.last_due) {
        (Some(run), Some(due)) => out.push_str(&format!(
            "Last run:    {run}, {} ago ({} active, {} kept)\n",
            age(due, now),
            p.active,
            p.runs
        )),
        _ => out.push_str("Last run:    none yet\n"),
    }
    if let Some(late) = p.last_late_by {
        out.push_str(&format!(
            "             started {} late: due while the control plane was down (missed: run_once)\n",
            motley_core::quantity::Duration(late)
        ));
    }
    if let Some(note) = &p.note {
        out.push_str(&format!("Note:        {note}\n"));
    }
    out
}
