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
        Verdict::New => "new",
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

/// What is asked.
pub struct Question {
    /// Nodes lost or drained.
    pub change: Change,
    /// Every node's loss in turn.
    pub each_node: bool,
    /// `NAME=FILE` of machines added.
    pub add_node: Vec<String>,
    /// Manifests applied.
    pub files: Vec<std::path::PathBuf>,
}

/// What `motley facts -o json` printed.
#[derive(serde::Deserialize)]
struct Facts {
    hardware: motley_core::hw::Hardware,
    #[serde(default)]
    conditions: Vec<motley_core::hw::Condition>,
}

fn added(spec: &str) -> anyhow::Result<serde_json::Value> {
    let (name, file) = spec
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--add-node {spec}: give NAME=FILE"))?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--add-node {spec}: reading {file}"))?;
    let f: Facts = serde_json::from_str(&text).with_context(|| {
        format!("--add-node {spec}: {file} is not the output of `motley facts -o json`")
    })?;
    let facts = motley_core::node::facts_of(name, f.hardware, f.conditions);
    Ok(serde_json::json!({ "name": name, "facts": facts }))
}

/// `what-if`.
pub async fn what_if(client: &Client, q: Question, output: Format) -> anyhow::Result<i32> {
    let Question {
        change,
        each_node,
        add_node,
        files,
    } = q;
    if !each_node
        && change.lose.is_empty()
        && change.drain.is_empty()
        && add_node.is_empty()
        && files.is_empty()
    {
        return report(anyhow::anyhow!(
            "say what changes: --lose NODE, --drain NODE, --add-node NAME=FILE, -f MANIFESTS, or --each-node"
        ));
    }
    let add = match add_node
        .iter()
        .map(|s| added(s))
        .collect::<anyhow::Result<Vec<_>>>()
    {
        Ok(a) => a,
        Err(e) => return report(e),
    };
    let (manifests, inputs) = if files.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        // Checked here first, as `plan` does (errors with file, line, column, field).
        let Some(set) = read_set(&files, "asked about")? else {
            return Ok(1);
        };
        (set.files, set.inputs)
    };
    let body = serde_json::json!({
        "lose": change.lose,
        "drain": change.drain,
        "each_node": each_node,
        "add": add,
        "files": manifests,
        "inputs": inputs,
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
