//! `motley upgrade --plan`.

use super::*;
use motley_core::version::{Skew, upgrade_plan};

/// Prints every server's and agent's version, the policy's verdict on each agent,
/// and the order of an upgrade.
pub(crate) async fn plan(client: &Client) -> anyhow::Result<i32> {
    let servers: Vec<ServerInfo> = match client.get("/v1/servers").await {
        Ok(s) => s,
        Err(e) => return report(e),
    };
    let nodes: Vec<NodeView> = match client.get("/v1/nodes").await {
        Ok(n) => n,
        Err(e) => return report(e),
    };
    let unknown = |v: &str| {
        if v.is_empty() {
            "(older than 0.1)".to_string()
        } else {
            v.to_string()
        }
    };
    let srv: Vec<(String, String)> = servers
        .iter()
        .map(|s| (s.name.clone(), s.version.clone()))
        .collect();
    let agents: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.node.name.clone(), n.node.facts.agent_version.clone()))
        .collect();
    let (target, steps, now) = upgrade_plan(&srv, &agents);
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            vec![
                "server".into(),
                s.name.clone(),
                unknown(&s.version),
                if s.leader { "leader" } else { "" }.into(),
            ]
        })
        .chain(nodes.iter().zip(&now).map(|(n, (_, skew))| {
            vec![
                "agent".into(),
                n.node.name.clone(),
                unknown(&n.node.facts.agent_version),
                match skew {
                    Skew::Same => "ok".to_string(),
                    Skew::Behind => "ok, one minor version behind".to_string(),
                    Skew::TooOld(m) | Skew::Newer(m) | Skew::Unknown(m) => m.clone(),
                },
            ]
        }))
        .collect();
    print(&table(&["ROLE", "NAME", "VERSION", "NOTE"], &rows));
    println!(
        "policy: servers first, one at a time; each agent at the servers' minor version or one behind, never ahead"
    );
    match target {
        None => println!("no version is known"),
        Some(t) if steps.is_empty() => println!("nothing to upgrade: everything runs {t}"),
        Some(t) => {
            println!("to {t}, in this order:");
            for (i, s) in steps.iter().enumerate() {
                println!(
                    "  {}. {} {} ({} -> {})",
                    i + 1,
                    s.role,
                    s.name,
                    unknown(&s.from),
                    s.to
                );
            }
            println!(
                "an agent's tasks keep running while its binary is replaced and it restarts (the new agent adopts them)"
            );
        }
    }
    Ok(0)
}
