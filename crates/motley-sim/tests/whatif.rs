//! `what-if --lose` against the simulator actually powering the node off (issue 24):
//! for 20 clusters drawn from seeds (3 to 6 nodes; services of 1 to 5 replicas, one
//! fenced, one pinned to a labelled node, a daemon), the real server is asked what
//! losing a node does (`POST /v1/what-if`, through its router), then that node loses
//! power in the simulator and the real server and agents carry on for a minute of
//! virtual time. Where each workload runs afterwards must be where the answer said.

use std::collections::BTreeMap;
use std::time::Duration;

use motley_core::model::{AllocState, Desired};
use motley_sim::rng::Rng;
use motley_sim::world::{World, apply};

/// Where each service and daemon runs now, by the leader's cache: workload → nodes.
fn placements(w: &World) -> BTreeMap<String, Vec<String>> {
    let Some(leader) = w.leader() else {
        return BTreeMap::new();
    };
    let cache = leader.shared.cache();
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in cache.allocs.values() {
        if a.desired == Desired::Run && a.state == AllocState::Running {
            by.entry(a.workload.to_string())
                .or_default()
                .push(a.node.clone());
        }
    }
    for v in by.values_mut() {
        v.sort();
    }
    by
}

async fn post(w: &World, path: &str, body: serde_json::Value) -> Option<serde_json::Value> {
    use tower::ServiceExt;
    let leader = w.leader()?;
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {}", w.admin))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .ok()?;
    let router = motley_server::api::router(leader.shared.clone());
    let call = leader.process.spawn(async move {
        let resp = router.oneshot(req).await.ok()?;
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    });
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .ok()?
        .ok()?
}

/// What one cluster showed: instances that were on the lost node, and whether the
/// pinned service went down with it.
struct Seen {
    moved: usize,
    pinned_lost: bool,
}

/// One cluster: `Ok` when the answer and the simulator agree.
async fn one(seed: u64) -> Result<Seen, String> {
    motley_rt::simulate(1_800_000_000_000, seed);
    let rng = Rng::new(seed);
    let n = 3 + rng.below(4) as usize;
    let mut w = World::build(rng.fork(), 1, n, Duration::from_millis(5))
        .await
        .map_err(|e| format!("build: {e}"))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pinned = rng.below(n as u64) as usize;
    let mut yaml = String::new();
    let services = 2 + rng.below(3);
    for i in 0..services {
        yaml.push_str(&format!(
            "kind: Service\nname: s{i}\nreplicas: {}\ntask:\n  command: [s]\n  resources: {{ cpu: 10m, memory: 8Mi }}\n---\n",
            1 + rng.below(5)
        ));
    }
    yaml.push_str("kind: Service\nname: db\non_node_loss: fence\ntask:\n  command: [db]\n  resources: { cpu: 10m, memory: 8Mi }\n---\n");
    yaml.push_str("kind: Daemon\nname: logs\ntask:\n  command: [ship]\n  resources: { cpu: 10m, memory: 8Mi }\n");
    // One service only the labelled node may run.
    let leader = w.leader().ok_or("no leader")?.clone();
    let label = post(
        &w,
        &format!("/v1/nodes/n{pinned}/labels"),
        serde_json::json!({ "set": { "vault": "yes" } }),
    )
    .await;
    if label.is_none() {
        return Err("labelling failed".into());
    }
    yaml.push_str("---\nkind: Service\nname: vault\nplacement: { require: vault = yes }\ntask:\n  command: [v]\n");
    match apply(&leader, &w.admin, &yaml).await {
        Some(200) => {}
        other => return Err(format!("apply answered {other:?}")),
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = placements(&w);
    let running: usize = before.values().map(Vec::len).sum();
    if running == 0 {
        return Err("nothing runs".into());
    }
    let lost = rng.below(n as u64) as usize;
    let node = format!("n{lost}");
    let answer = post(&w, "/v1/what-if", serde_json::json!({ "lose": [node] }))
        .await
        .ok_or("no answer to what-if")?;
    let said: BTreeMap<String, Vec<String>> = answer["outcome"]["workloads"]
        .as_array()
        .ok_or_else(|| format!("not an outcome: {answer}"))?
        .iter()
        .filter_map(|e| {
            let nodes: Vec<String> = e["nodes_after"]
                .as_array()?
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect();
            Some((e["workload"].as_str()?.to_string(), nodes))
        })
        .filter(|(_, nodes)| !nodes.is_empty())
        .collect();
    // Now the node really loses power, and stays off.
    w.agents[lost].gone = true;
    w.kill_agent(lost, true);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = placements(&w);
    if said != after {
        return Err(format!(
            "{n} nodes, {node} lost: what-if said {said:?}, the simulator ran {after:?} (before: {before:?})"
        ));
    }
    let moved = before.values().flatten().filter(|n| **n == node).count();
    if before.get("service/vault").is_none_or(|v| v.len() != 1) {
        return Err(format!("vault did not run before: {before:?}"));
    }
    Ok(Seen {
        moved,
        pinned_lost: lost == pinned && !after.contains_key("service/vault"),
    })
}

#[test]
fn what_if_agrees_with_powering_the_node_off_on_20_clusters() {
    let mut disagreed = Vec::new();
    let (mut moved, mut pinned) = (0, 0);
    for seed in 1..=20u64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        match rt.block_on(one(seed)) {
            Ok(seen) => {
                moved += seen.moved;
                pinned += usize::from(seen.pinned_lost);
            }
            Err(e) => disagreed.push(format!("seed {seed}: {e}")),
        }
    }
    assert!(disagreed.is_empty(), "{}", disagreed.join("\n"));
    // Not vacuous: work had to move, and in some clusters the pinned service went down.
    eprintln!(
        "20 clusters: {moved} instances on the lost nodes, the pinned service lost in {pinned}"
    );
    assert!(moved >= 40, "only {moved} instances were on the lost nodes");
    assert!(
        pinned >= 2,
        "the pinned service was lost in only {pinned} clusters"
    );
}
