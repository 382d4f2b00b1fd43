//! `motley source sync|plan`, and the source views of `get sources` and `describe
//! source`.

use super::*;
use motley_core::api::{SourceView, SyncRequest};
use motley_core::source::short_commit;

fn short(c: &Option<String>) -> String {
    c.as_deref()
        .map_or_else(|| "-".to_string(), |c| short_commit(c).to_string())
}

/// `motley source …`.
pub(crate) async fn run(client: &Client, cmd: crate::args::SourceCommand) -> anyhow::Result<i32> {
    use crate::args::SourceCommand as S;
    match cmd {
        S::Sync { name, allow_empty } => {
            let r: anyhow::Result<SourceView> = client
                .post(
                    &client.scoped_set(&format!("/v1/sources/{name}/sync")),
                    &SyncRequest { allow_empty },
                )
                .await;
            match r {
                Ok(v) => {
                    println!("source/{} {}: {}", v.name, v.result, v.message);
                    Ok(if matches!(v.result.as_str(), "failed" | "refused") {
                        1
                    } else {
                        0
                    })
                }
                Err(e) => report(e),
            }
        }
        S::Plan { name, wide } => {
            let r: anyhow::Result<SourceView> = client
                .get(&client.scoped_set(&format!("/v1/sources/{name}")))
                .await;
            match r {
                Ok(v) => {
                    print(&plan_of(&v, wide));
                    Ok(0)
                }
                Err(e) => report(e),
            }
        }
    }
}

fn plan_of(v: &SourceView, wide: bool) -> String {
    match &v.plan {
        None => format!(
            "source/{} has no plan yet: no commit of it has changed anything ({}: {})\n",
            v.name, v.result, v.message
        ),
        Some(p) => format!(
            "Plan of commit {} (at store revision {}, {} ago):\n{}",
            p.commit,
            p.revision,
            age(p.at, now_ms()),
            plan_text(&p.plan, wide)
        ),
    }
}

/// `get sources`.
pub(crate) fn source_rows(views: &[SourceView]) -> Rows {
    let now = now_ms();
    let rows = views
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.url.clone(),
                v.wanted.clone(),
                short(&v.applied),
                if v.last_sync == 0 {
                    "-".into()
                } else {
                    format!("{} ago", age(v.last_sync, now))
                },
                v.result.clone(),
                if v.drift.is_empty() {
                    "-".into()
                } else {
                    v.drift
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                },
                v.owned.to_string(),
            ]
        })
        .collect();
    (
        vec![
            "NAME",
            "URL",
            "REF",
            "REVISION",
            "LAST SYNC",
            "RESULT",
            "DRIFT",
            "OBJECTS",
        ],
        rows,
    )
}

/// `describe source NAME`.
pub(crate) fn describe_source(v: &SourceView) -> String {
    use std::fmt::Write;
    let now = now_ms();
    let mut out = format!(
        "Name:        {}\nKind:        source\nURL:         {}\nRef:         {}\nPath:        {}\n\
         Fetched:     {}\nApplied:     {}\nHealthy:     {}\n",
        v.name,
        v.url,
        v.wanted,
        if v.path.is_empty() { "/" } else { &v.path },
        short(&v.fetched),
        short(&v.applied),
        short(&v.healthy),
    );
    if v.failed.is_some() {
        let _ = writeln!(out, "Failed:      {} (held back)", short(&v.failed));
    }
    let _ = writeln!(out, "Objects:     {}", v.owned);
    let _ = writeln!(out, "Result:      {}: {}", v.result, v.message);
    if !v.drift.is_empty() {
        let d: Vec<String> = v.drift.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(out, "Drift:       {}", d.join(", "));
    }
    out.push_str(&plan_of(v, false));
    out.push_str("Events:\n");
    for e in &v.events {
        let _ = writeln!(
            out,
            "  {} ago  {}  {}  {}",
            age(e.at, now),
            if e.commit.is_empty() {
                "-".to_string()
            } else {
                short_commit(&e.commit).to_string()
            },
            e.result,
            e.message
        );
    }
    out
}
