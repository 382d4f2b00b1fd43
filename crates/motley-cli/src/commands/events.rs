//! `motley events [-w] [--for KIND/NAME] [--since 10m]`, and the events `describe`
//! ends with.

use super::*;
use motley_core::events::Event;

/// The path of a query: `-n` narrows it to a namespace only when given (node and
/// server events belong to none).
fn path(client: &Client, object: Option<&str>, since: Option<&str>, watch: bool) -> String {
    let mut q = Vec::new();
    if let Some(o) = object {
        q.push(format!("for={o}"));
    }
    if let Some(s) = since {
        q.push(format!("since={s}"));
    }
    if watch {
        q.push("watch=true".to_string());
    }
    let base = if q.is_empty() {
        "/v1/events".to_string()
    } else {
        format!("/v1/events?{}", q.join("&"))
    };
    client.scoped_set(&base)
}

/// One row of an event: AGE, EVENT, OBJECT, ALLOC, NODE, MESSAGE.
fn row(e: &Event, now: u64) -> Vec<String> {
    vec![
        age(e.at, now),
        e.kind.as_str().to_string(),
        e.object.clone(),
        e.alloc.clone().unwrap_or_else(|| "-".into()),
        e.node.clone().unwrap_or_else(|| "-".into()),
        e.message.clone(),
    ]
}

const HEADERS: [&str; 6] = ["AGE", "EVENT", "OBJECT", "ALLOC", "NODE", "MESSAGE"];

/// `events`.
pub async fn events(
    client: &Client,
    watch: bool,
    object: Option<&str>,
    since: Option<&str>,
    output: Format,
) -> anyhow::Result<i32> {
    let json = matches!(output, Format::Json);
    if !watch {
        let list: Vec<Event> = match client.get(&path(client, object, since, false)).await {
            Ok(l) => l,
            Err(e) => return report(e),
        };
        if matches!(output, Format::Json | Format::Yaml) {
            print(&output::structured(&list, output)?);
        } else {
            let now = now_ms();
            let rows: Vec<Vec<String>> = list.iter().map(|e| row(e, now)).collect();
            print(&table(&HEADERS, &rows));
        }
        return Ok(0);
    }
    let resp = client
        .request(Method::GET, &path(client, object, since, true), None)
        .await?;
    if !resp.status().is_success() {
        let err = crate::client::decode::<serde_json::Value>(resp).await.err();
        return report(err.unwrap_or_else(|| anyhow::anyhow!("unexpected answer")));
    }
    if !json {
        print(&format!("{}\n", HEADERS.join("  ")));
    }
    let mut stream = resp.bytes_stream();
    let mut pending = String::new();
    while let Some(chunk) = stream.next().await {
        pending.push_str(&String::from_utf8_lossy(&chunk.context("reading events")?));
        while let Some(i) = pending.find('\n') {
            let line: String = pending.drain(..=i).collect();
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if json {
                print(&format!("{line}\n"));
                continue;
            }
            let e: Event = serde_json::from_str(line).context("an event from the server")?;
            print(&format!("{}\n", row(&e, now_ms()).join("  ")));
        }
    }
    Ok(0)
}

/// The last events of an object (`service/web`, `node/pi-2`, `alloc/ID`), for
/// `describe`: a titled table, or nothing when there are none (or the caller may not
/// read them).
pub(crate) async fn recent(client: &Client, object: &str) -> String {
    let Ok(list) = client
        .get::<Vec<Event>>(&path(client, Some(object), None, false))
        .await
    else {
        return String::new();
    };
    if list.is_empty() {
        return "Events: none kept\n".to_string();
    }
    let now = now_ms();
    let start = list.len().saturating_sub(15);
    let rows: Vec<Vec<String>> = list[start..].iter().map(|e| row(e, now)).collect();
    let mut out = String::from("Events:\n");
    indented(&mut out, &table(&HEADERS, &rows));
    out
}
