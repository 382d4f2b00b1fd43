//! `motley what-if [--lose NODE]... [--drain NODE]... [--each-node]`: what the control
//! plane would do, from the live cluster (or a snapshot, computed here), changing
//! nothing; `--trace HISTORY` replays a recorded history against the changed cluster.

use super::*;
use motley_scheduler::whatif::{Change, NodeLoss, Outcome, State, Verdict};

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
    /// A snapshot file to ask instead of the live cluster.
    pub snapshot: Option<std::path::PathBuf>,
    /// A history to replay.
    pub trace: Option<std::path::PathBuf>,
    /// The timeline's pace, with `trace`.
    pub speed: Option<f64>,
}

/// An empty question's cluster, now, with the server's default fence delay.
fn empty_state() -> State {
    State {
        workloads: Default::default(),
        applied: None,
        nodes: Default::default(),
        ready: Default::default(),
        allocs: Default::default(),
        now: now_ms(),
        fence_after_ms: motley_core::failure::FailureConfig::default().fence_after_ms(),
        readings: Default::default(),
    }
}

/// The cluster a snapshot file holds, every node ready.
fn snapshot_state(path: &std::path::Path) -> anyhow::Result<State> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let snap = motley_store::snapshot::Snapshot::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut s = empty_state();
    let bad = |k: &str, e: serde_json::Error| anyhow::anyhow!("{}: {k}: {e}", path.display());
    for (k, v) in &snap.entries {
        use motley_core::keys;
        if k.starts_with(keys::WORKLOADS) {
            let w: motley_core::model::Workload =
                serde_json::from_slice(v).map_err(|e| bad(k, e))?;
            s.workloads.insert(w.spec.reference(), w);
        } else if k.starts_with(keys::NODES) {
            let n: motley_core::model::Node = serde_json::from_slice(v).map_err(|e| bad(k, e))?;
            s.ready.insert(n.name.clone());
            s.nodes.insert(n.name.clone(), n);
        } else if k.starts_with(keys::ALLOCS) {
            let a: motley_core::model::Allocation =
                serde_json::from_slice(v).map_err(|e| bad(k, e))?;
            s.allocs.insert(a.id.clone(), a);
        }
    }
    Ok(s)
}

/// The live cluster's workloads and ready nodes, for a replay (it places afresh: no
/// allocation is needed).
async fn live_state(client: &Client) -> anyhow::Result<State> {
    let views: Vec<motley_core::api::WorkloadView> = client.get("/v1/workloads").await?;
    let nodes: Vec<motley_core::api::NodeView> = client.get("/v1/nodes").await?;
    Ok(State {
        workloads: views
            .into_iter()
            .map(|v| (v.workload.spec.reference(), v.workload))
            .collect(),
        ready: nodes
            .iter()
            .filter(|n| n.state == "ready")
            .map(|n| n.node.name.clone())
            .collect(),
        nodes: nodes
            .into_iter()
            .map(|n| (n.node.name.clone(), n.node))
            .collect(),
        ..empty_state()
    })
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), |m| format!("{:.1}s", m as f64 / 1000.0))
}

/// `what-if --trace`.
async fn trace(
    state: State,
    change: &Change,
    history: &std::path::Path,
    speed: Option<f64>,
    output: Format,
) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(history)
        .with_context(|| format!("reading {}", history.display()))?;
    let events: Vec<motley_core::events::Event> =
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a history as `motley events -o json` prints it",
                history.display()
            )
        })?;
    let arrivals = motley_scheduler::replay::arrivals(&events);
    if arrivals.is_empty() {
        return report(anyhow::anyhow!(
            "{}: no job or service is applied in this history",
            history.display()
        ));
    }
    let cfg = motley_scheduler::Config::default();
    let started = std::time::Instant::now();
    let r = match motley_scheduler::replay::replay(&state, change, &arrivals, &cfg) {
        Ok(r) => r,
        Err(e) => return report(anyhow::anyhow!(e)),
    };
    let took = started.elapsed();
    if matches!(output, Format::Json | Format::Yaml) {
        print(&output::structured(&r, output)?);
        return Ok(0);
    }
    if let Some(n) = speed.filter(|n| *n > 0.0) {
        let t0 = std::time::Instant::now();
        for (at, line) in &r.timeline {
            let due = std::time::Duration::from_secs_f64(*at as f64 / 1000.0 / n);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            print(&format!(
                "{:>9}  {line}\n",
                format!("+{:.1}s", *at as f64 / 1000.0)
            ));
        }
    }
    let rows: Vec<Vec<String>> = r
        .workloads
        .iter()
        .map(|w| {
            vec![
                w.workload.to_string(),
                secs(Some(w.arrived_ms)),
                secs(w.waited_ms),
                secs(w.waits_ms),
                secs(w.took_ms),
                secs(w.takes_ms),
                w.delay_ms()
                    .map_or_else(|| "-".into(), |d| format!("{:+.1}s", d as f64 / 1000.0)),
                w.why.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print(&table(
        &[
            "WORKLOAD", "ARRIVED", "WAITED", "WAITS", "TOOK", "TAKES", "DELAY", "WHY",
        ],
        &rows,
    ));
    for m in &r.missing {
        print(&format!("{m}: not in the cluster any more, not replayed\n"));
    }
    print(&format!(
        "replayed {:.1} s of history ({} workloads) in {} ms, {} controller passes\n",
        r.span_ms as f64 / 1000.0,
        r.workloads.len(),
        took.as_millis(),
        r.passes
    ));
    Ok(0)
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
pub async fn what_if(
    client: impl FnOnce() -> anyhow::Result<Client>,
    q: Question,
    output: Format,
) -> anyhow::Result<i32> {
    let Question {
        change,
        each_node,
        add_node,
        files,
        snapshot,
        trace: history,
        speed,
    } = q;
    if let Some(h) = &history {
        let state = match &snapshot {
            Some(p) => snapshot_state(p),
            None => live_state(&client()?).await,
        };
        return match state {
            Ok(st) => trace(st, &change, h, speed, output).await,
            Err(e) => report(e),
        };
    }
    if let Some(p) = &snapshot {
        let st = match snapshot_state(p) {
            Ok(s) => s,
            Err(e) => return report(e),
        };
        let cfg = motley_scheduler::Config::default();
        let answer = if each_node {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            Answer {
                outcome: None,
                each_node: Some(motley_scheduler::whatif::each_node(&st, &cfg, threads)),
            }
        } else if change.lose.is_empty() && change.drain.is_empty() {
            return report(anyhow::anyhow!(
                "say what changes: --lose NODE, --drain NODE, or --each-node"
            ));
        } else {
            match motley_scheduler::whatif::run(&st, &change, &cfg) {
                Ok(o) => Answer {
                    outcome: Some(o),
                    each_node: None,
                },
                Err(e) => return report(anyhow::anyhow!(e)),
            }
        };
        return show(answer, output);
    }
    let client = client()?;
    let client = &client;
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
    show(answer, output)
}

/// Prints an answer.
fn show(answer: Answer, output: Format) -> anyhow::Result<i32> {
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
