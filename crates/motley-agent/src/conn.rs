//! The agent's one outbound connection: TLS pinned to the cluster CA, a
//! WebSocket at `/v1/agent/connect`, reconnecting with jittered exponential
//! backoff and failing over across the server list (the configured servers and those
//! the servers announce).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use motley_core::proto::{AgentMsg, ServerMsg};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::{Agent, Fatal};

/// First reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay (before jitter of ×0.5 to ×1.5).
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Connect and handshake timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs forever: connect, serve, reconnect.
pub async fn run(agent: Agent) {
    let tls = match motley_net::client_tls(&agent.inner.cfg.ca_pem) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!("agent TLS setup: {e}");
            return;
        }
    };
    if agent.servers().is_empty() {
        tracing::error!("the agent has no server to connect to");
        return;
    }
    let mut attempt: u32 = 0;
    let mut idx = 0usize;
    loop {
        // The list grows as servers announce the others (Welcome), so an agent started
        // with one server fails over to all of them.
        let servers = agent.servers();
        let url = &servers[idx % servers.len()];
        match session(&agent, url, tls.clone()).await {
            Ok(()) => {
                attempt = 0;
                tracing::warn!("connection to {url} closed; reconnecting");
            }
            Err(e) => {
                if let Some(Fatal(why)) = e.downcast_ref::<Fatal>() {
                    tracing::error!("{url}: {why}");
                    agent.set_connected(false);
                    agent.set_fatal(format!("{url}: {why}"));
                    return;
                }
                attempt = attempt.saturating_add(1);
                idx += 1;
                tracing::warn!("cannot reach {url}: {e:#}");
            }
        }
        agent.set_connected(false);
        let base = BACKOFF_MIN
            .saturating_mul(1u32 << attempt.min(7))
            .min(BACKOFF_MAX);
        let jitter = rand::rng().random_range(0.5..1.5);
        tokio::time::sleep(base.mul_f64(jitter)).await;
    }
}

async fn session(agent: &Agent, url: &str, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
    let ws = motley_net::ws::connect(
        url,
        "/v1/agent/connect",
        &agent.inner.cfg.token,
        &[],
        tls,
        CONNECT_TIMEOUT,
    )
    .await
    .map_err(|e| match e {
        motley_net::ws::WsError::Refused { status, body } => {
            let msg = format!("the server refused this node's credential: {status} {body}");
            if status == 401 || status == 403 {
                anyhow::Error::new(Fatal(msg))
            } else {
                anyhow::anyhow!(msg)
            }
        }
        other => anyhow::anyhow!(other),
    })?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<AgentMsg>();
    let hello = agent.hello(tx.clone());
    let heartbeat: Duration;
    sink.send(Message::Text(serde_json::to_string(&hello)?.into()))
        .await?;
    // The server answers Welcome first.
    match tokio::time::timeout(CONNECT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ServerMsg>(&t)? {
            ServerMsg::Welcome {
                heartbeat_ms,
                lease_ms,
                servers,
                ..
            } => {
                agent.learn_servers(&servers);
                heartbeat = Duration::from_millis(heartbeat_ms.max(50));
                agent.set_lease(Duration::from_millis(lease_ms));
                agent.touch();
            }
            other => anyhow::bail!("expected Welcome, got {other:?}"),
        },
        Ok(Some(Ok(Message::Close(frame)))) => {
            let code = frame.as_ref().map(|f| u16::from(f.code));
            let why = format!(
                "server closed the connection: {}",
                frame.map(|f| f.reason.to_string()).unwrap_or_default()
            );
            if code == Some(4003) {
                return Err(Fatal(why).into());
            }
            anyhow::bail!(why)
        }
        _ => anyhow::bail!("no Welcome from the server"),
    }
    agent.set_connected(true);
    tracing::info!("connected to {url}");
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                sink.send(Message::Text(serde_json::to_string(&AgentMsg::Heartbeat {})?.into())).await?;
            }
            frame = stream.next() => {
                if let Some(Ok(_)) = &frame {
                    agent.touch();
                }
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ServerMsg>(&text) {
                    Ok(msg) => agent.handle(msg, &tx),
                    Err(e) => tracing::warn!("invalid message from the server: {e}"),
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                let mut queued = vec![msg];
                while let Ok(more) = rx.try_recv() {
                    queued.push(more);
                }
                for msg in superseded_dropped(queued) {
                    sink.feed(Message::Text(serde_json::to_string(&msg)?.into())).await?;
                }
                sink.flush().await?;
            }
        }
    }
}

/// Queued messages less the reports a later report of the same allocation replaces
/// (a task that started and ended before its start was sent is reported ended only).
fn superseded_dropped(mut queued: Vec<AgentMsg>) -> Vec<AgentMsg> {
    if queued.len() < 2 {
        return queued;
    }
    // From the newest back: keep the first report seen of each allocation.
    let mut seen = std::collections::HashSet::new();
    queued.reverse();
    queued.retain(|m| match m {
        AgentMsg::Update(r) => seen.insert(r.id.clone()),
        _ => true,
    });
    queued.reverse();
    queued
}

#[cfg(test)]
mod tests {
    use super::*;
    use motley_core::model::AllocState;
    use motley_core::proto::AllocReport;

    fn update(id: &str, state: AllocState) -> AgentMsg {
        AgentMsg::Update(AllocReport {
            id: id.into(),
            state,
            pid: None,
            exit_code: None,
            restarts: 0,
            reason: None,
            at: 0,
        })
    }

    #[test]
    fn a_later_report_of_the_same_allocation_replaces_an_earlier_one() {
        let out = superseded_dropped(vec![
            update("a", AllocState::Running),
            AgentMsg::Heartbeat {},
            update("b", AllocState::Running),
            update("a", AllocState::Complete),
        ]);
        let seen: Vec<(String, AllocState)> = out
            .iter()
            .filter_map(|m| match m {
                AgentMsg::Update(r) => Some((r.id.clone(), r.state)),
                _ => None,
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("b".to_string(), AllocState::Running),
                ("a".to_string(), AllocState::Complete)
            ]
        );
        assert_eq!(out.len(), 3, "the heartbeat stays");
    }
}
