//! `motley what-if [--lose NODE]... [--drain NODE]... [--each-node]`: what the control
//! plane would do, from the live cluster, changing nothing.

use super::*;
use motley_scheduler::whatif::{Change, NodeLoss, Outcome, Verdict};

#[derive(serde::Deserialize)]
struct Answer {
    outcome: Option<Outcome>,
    each_node: Option<Vec<NodeLoss>>,
}

fn verdict(v: &Verdict) -> &'static str {
    match v {
        Verdict::Unaffected => "unaffected",
        Verdict::Moved => "moved",
        Verdict::Degraded => "degraded",
        Verdict::Down => "DOWN",
    }
}

fn names(v: &[motley_core::model::WorkloadRef]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `what-if`.
pub async fn what_if(
    client: &Client,
    change: Change,
    each_node: bool,
    output: Format,
) -> anyhow::Result<i32> {
    if !each_node && change.lose.is_empty() && change.drain.is_empty() {
        return report(anyhow::anyhow!(
            "say what changes: --lose NODE, --drain NODE, or --each-node"
        ));
    }
    let body = serde_json::json!({
        "lose": change.lose,
        "drain": change.drain,
        "each_node": each_node,
    });
    let answer: Answer = match client.post("/v1/what-if", &body).await {
        Ok(a) => a,
        Err(e) => return report(e),
    };
    if matches!(output, Format::Json | Format::Yaml) {
        let v = match (&answer.outcome, &answer.each_node) {
            (Some(o), _) => serde_json::to_value(o)?,
            (None, Some(e)) => serde_json::to_value(e)?,
            (None, None) => serde_json::Value::Null,
        };
        print(&output::structured(&v, output)?);
        return Ok(0);
    }
    if let Some(losses) = &answer.each_node {
        let rows: Vec<Vec<String>> = losses
            .iter()
            .map(|l| {
                vec![
                    l.node.clone(),
                    names(&l.down),
                    names(&l.degraded),
                    l.moved.len().to_string(),
                ]
            })
            .collect();
        print(&table(
            &["NODE IF LOST", "DOWN", "DEGRADED", "MOVED"],
            &rows,
        ));
        for l in losses.iter().filter(|l| !l.down.is_empty()) {
            print(&format!(
                "{} is a single point of failure for {}\n",
                l.node,
                names(&l.down)
            ));
        }
        return Ok(0);
    }
    let Some(o) = answer.outcome else {
        return report(anyhow::anyhow!("the server gave no answer"));
    };
    let rows: Vec<Vec<String>> = o
        .workloads
        .iter()
        .filter(|e| e.verdict != Verdict::Unaffected)
        .map(|e| {
            vec![
                e.workload.to_string(),
                verdict(&e.verdict).into(),
                format!("{}/{}", e.before, e.desired),
                format!("{}/{}", e.after, e.desired),
                e.lost.to_string(),
                e.why.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let unaffected = o.workloads.len() - rows.len();
    if rows.is_empty() {
        print("nothing runs on those nodes: every workload is unaffected\n");
    } else {
        print(&table(
            &["WORKLOAD", "VERDICT", "BEFORE", "AFTER", "LOST", "WHY"],
            &rows,
        ));
        print(&format!(
            "{unaffected} more unaffected; settled in {} controller passes ({:.1} s of cluster time)\n",
            o.passes,
            o.settled_ms as f64 / 1000.0
        ));
    }
    Ok(0)
}
