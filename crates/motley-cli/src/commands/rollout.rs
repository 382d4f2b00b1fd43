//! `motley rollout status|history|undo NAME`, `motley promote NAME`, and the wait of
//! `motley apply` on a terminal: a service's update as it goes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use motley_core::api::{ManifestFile, ManifestSet, ObjectResults, WorkloadDetail};
use motley_core::rollout::{State, Status};

use super::*;

/// The service in `-n`'s namespace; `?namespace=` comes last (see `promote`).
fn service_path(client: &Client, name: &str) -> String {
    client.scoped(&format!("/v1/workloads/service/{name}"))
}

/// A bar and the counts: `[######----] 2/3 updated, 2 healthy`.
fn bar(s: &Status) -> String {
    let width = 10usize;
    let done = (s.healthy as usize * width)
        .checked_div(s.desired as usize)
        .unwrap_or(width)
        .min(width);
    format!(
        "[{}{}] {}/{} updated, {} healthy",
        "#".repeat(done),
        "-".repeat(width - done),
        s.updated.min(s.desired),
        s.desired,
        s.healthy.min(s.desired)
    )
}

fn line(name: &str, s: &Status) -> String {
    let state = match s.state {
        State::Progressing => "progressing",
        State::WaitingForPromotion => "waiting for promotion",
        State::Complete => "complete",
        State::Failed => "failed",
    };
    format!(
        "service/{name} generation {}: {} {state}: {}",
        s.generation,
        bar(s),
        s.reason
    )
}

/// Waits until `name`'s update ends (complete, failed, waiting for promotion, or
/// replaced by a revert that ends) or `timeout` passes, printing each change. Exit
/// code: 0 complete (or waiting for promotion), 1 failed or reverted, 2 timed out.
pub async fn wait(client: &Client, name: &str, timeout: Duration) -> anyhow::Result<i32> {
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let d: WorkloadDetail = client.get(&service_path(client, name)).await?;
        let Some(s) = d.view.rollout else {
            anyhow::bail!("service/{name} has no rollout to follow");
        };
        let text = line(name, &s);
        if text != last {
            if tty {
                print!("\r\x1b[2K{text}");
            } else {
                println!("{text}");
            }
            let _ = std::io::stdout().flush();
            last = text;
        }
        let done = match s.state {
            State::Complete if s.reverted_from.is_some() => Some(1),
            State::Complete | State::WaitingForPromotion => Some(0),
            State::Failed => Some(1),
            State::Progressing => None,
        };
        if let Some(code) = done {
            if tty {
                println!();
            }
            if let Some(from) = s.reverted_from {
                println!("service/{name}: generation {from} failed and was reverted");
            }
            return Ok(code);
        }
        if started.elapsed() > timeout {
            if tty {
                println!();
            }
            eprintln!("service/{name}: still progressing after {timeout:?}");
            return Ok(2);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `motley rollout status NAME [--once]`.
pub async fn status(
    client: &Client,
    name: &str,
    once: bool,
    timeout: Duration,
) -> anyhow::Result<i32> {
    if once {
        let d: WorkloadDetail = match client.get(&service_path(client, name)).await {
            Ok(d) => d,
            Err(e) => return report(e),
        };
        let Some(s) = d.view.rollout else {
            anyhow::bail!("service/{name} has no rollout");
        };
        println!("{}", line(name, &s));
        return Ok(match s.state {
            State::Complete | State::WaitingForPromotion => 0,
            State::Failed => 1,
            State::Progressing => 2,
        });
    }
    wait(client, name, timeout).await
}

/// `motley rollout history NAME`.
pub async fn history(client: &Client, name: &str) -> anyhow::Result<i32> {
    let d: WorkloadDetail = match client.get(&service_path(client, name)).await {
        Ok(d) => d,
        Err(e) => return report(e),
    };
    let w = &d.view.workload;
    let now = now_ms();
    let summary = |spec: &Spec| {
        let t = spec.task();
        match &t.image {
            Some(i) => format!("image {i}"),
            None => t.command.join(" "),
        }
    };
    let mut rows: Vec<Vec<String>> = w
        .history
        .iter()
        .map(|r| {
            vec![
                r.generation.to_string(),
                format!("{} ago", age(r.at, now)),
                if r.failed { "failed" } else { "-" }.to_string(),
                summary(&r.spec),
            ]
        })
        .collect();
    let current = match (&w.rollout, &d.view.rollout) {
        (Some(r), _) if r.reverted_from.is_some() && r.generation == w.generation => {
            format!("current (revert of {})", r.reverted_from.unwrap_or(0))
        }
        (_, Some(s)) if s.state == State::Failed => "current, failed".into(),
        _ => "current".into(),
    };
    rows.push(vec![
        w.generation.to_string(),
        format!("{} ago", age(w.updated_at, now)),
        current,
        summary(&w.spec),
    ]);
    print!(
        "{}",
        table(&["GENERATION", "APPLIED", "NOTE", "TASK"], &rows)
    );
    Ok(0)
}

/// `motley rollout undo NAME [--to-generation N]`: applies an earlier spec again (as a
/// new generation).
pub async fn undo(client: &Client, name: &str, to: Option<u64>) -> anyhow::Result<i32> {
    let d: WorkloadDetail = match client.get(&service_path(client, name)).await {
        Ok(d) => d,
        Err(e) => return report(e),
    };
    let w = &d.view.workload;
    let target = match to {
        Some(g) => w.history.iter().find(|r| r.generation == g),
        None => w.history.iter().rev().find(|r| r.spec != w.spec),
    };
    let Some(target) = target else {
        let kept: Vec<String> = w.history.iter().map(|r| r.generation.to_string()).collect();
        eprintln!(
            "error: service/{name} has no earlier generation {}to go back to (kept: {})",
            to.map(|g| format!("{g} ")).unwrap_or_default(),
            if kept.is_empty() {
                "none".into()
            } else {
                kept.join(", ")
            }
        );
        return Ok(1);
    };
    // JSON is YAML: the spec as stored is a manifest.
    let set = ManifestSet {
        files: vec![ManifestFile {
            name: format!("service/{name}@{}", target.generation),
            content: serde_json::to_string_pretty(&target.spec)?,
        }],
        dry_run: false,
        inputs: Vec::new(),
    };
    match client
        .post::<_, ObjectResults>(&client.scoped("/v1/apply"), &set)
        .await
    {
        Ok(_) => {
            println!(
                "service/{name} rolled back to generation {}'s spec",
                target.generation
            );
            Ok(0)
        }
        Err(e) => report(e),
    }
}

/// `motley promote NAME`.
pub async fn promote(client: &Client, name: &str) -> anyhow::Result<i32> {
    let path = client.scoped(&format!("/v1/workloads/service/{name}/promote"));
    match client
        .post::<_, WorkloadDetail>(&path, &serde_json::json!({}))
        .await
    {
        Ok(d) => {
            println!("service/{name} promoted");
            if let Some(s) = d.view.rollout {
                println!("{}", line(name, &s));
            }
            Ok(0)
        }
        Err(e) => report(e),
    }
}
