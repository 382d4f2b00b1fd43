//! The agent of `motley up` and its own server, in one process, talk over channels:
//! the same session (`motley_server::agents::session`), the same messages, without a
//! TLS connection to itself, WebSocket framing or JSON. In a trivial job's profile that
//! connection was about a tenth of the process's CPU (docs/decisions.md, "The local
//! agent's link"). A URL that is not this server's, or a server that does not lead,
//! goes over the network as from any agent.

use std::sync::Arc;

use motley_agent::conn::{BoxFuture, Channel, Dialer, Received, WsDialer};
use motley_core::proto::AgentMsg;
use motley_server::agents::{self, AgentCaller, Frame, Link};
use motley_server::auth::Role;
use motley_server::state::{OUTBOX_LIMIT, Queued, Shared};
use tokio::sync::mpsc;

/// Dials this process's server in memory; anything else over the network.
pub struct LocalDialer {
    shared: Arc<Shared>,
    /// This server's URLs.
    urls: Vec<String>,
    network: WsDialer,
}

impl LocalDialer {
    /// A dialer for the agent beside the server `shared`, reached at `urls`.
    pub fn new(shared: Arc<Shared>, urls: Vec<String>, ca_pem: &str) -> anyhow::Result<Self> {
        Ok(LocalDialer {
            shared,
            urls,
            network: WsDialer::new(ca_pem)?,
        })
    }
}

impl std::fmt::Debug for LocalDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDialer")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl Dialer for LocalDialer {
    fn dial<'a>(
        &'a self,
        url: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Channel>>> {
        if !self.urls.iter().any(|u| u == url) || self.shared.ha.leading().is_none() {
            return self.network.dial(url, token);
        }
        Box::pin(async move {
            // The credential, checked as the API's authentication checks a bearer token.
            let known = {
                let cache = self.shared.cache();
                cache
                    .tokens
                    .get(&motley_net::token_hash(token))
                    .filter(|t| !t.expired(motley_server::state::now_ms()))
                    .map(|t| (t.role.clone(), t.id.clone()))
            };
            let Some((Role::Node { node }, id)) = known else {
                return Err(anyhow::Error::new(motley_agent::Fatal(
                    "the server refused this node's credential: 401".into(),
                )));
            };
            let caller = AgentCaller {
                who: format!("token {id} (node)"),
                // The address a connection from this host to `url` would come from.
                peer: host_of(url).unwrap_or_else(|| "127.0.0.1".into()),
            };
            let (up_tx, up_rx) = mpsc::unbounded_channel::<AgentMsg>();
            let (down_tx, down_rx) = mpsc::channel::<Queued>(OUTBOX_LIMIT);
            let refused = Arc::new(std::sync::Mutex::new(None));
            let link = LocalLink {
                rx: up_rx,
                tx: down_tx,
                refused: refused.clone(),
            };
            tokio::spawn(agents::session(self.shared.clone(), node, caller, link));
            Ok(Box::new(LocalChannel {
                tx: up_tx,
                rx: down_rx,
                refused,
            }) as Box<dyn Channel>)
        })
    }
}

/// The IP address in `url`'s host (`https://127.0.0.1:7443` → `127.0.0.1`).
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// Why the server turned the agent away for good, as the WebSocket's close reason.
type Refused = Arc<std::sync::Mutex<Option<String>>>;

/// The agent's end.
struct LocalChannel {
    tx: mpsc::UnboundedSender<AgentMsg>,
    rx: mpsc::Receiver<Queued>,
    refused: Refused,
}

impl Channel for LocalChannel {
    fn send(&mut self, msgs: Vec<AgentMsg>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { motley_agent::conn::send_in_memory(&self.tx, msgs) })
    }
    fn recv(&mut self) -> BoxFuture<'_, Received> {
        Box::pin(async move {
            let m = self.rx.recv().await;
            m.map_or_else(
                || match motley_server::state::lock(&self.refused).take() {
                    // Close code 4003, as over a WebSocket: the agent stops reconnecting.
                    Some(why) => Received::Closed(Some(4003), why),
                    None => Received::Failed("the server ended the session".into()),
                },
                |m| Received::Msg(*m),
            )
        })
    }
}

/// The server's end.
struct LocalLink {
    rx: mpsc::UnboundedReceiver<AgentMsg>,
    tx: mpsc::Sender<Queued>,
    refused: Refused,
}

impl Link for LocalLink {
    async fn recv(&mut self) -> Frame {
        agents::recv_in_memory(&mut self.rx).await
    }
    fn try_recv(&mut self) -> Option<Frame> {
        agents::try_recv_in_memory(&mut self.rx)
    }
    fn sender(&mut self) -> mpsc::Sender<Queued> {
        self.tx.clone()
    }
    async fn refuse(self, why: String) {
        *motley_server::state::lock(&self.refused) = Some(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_is_the_address_in_the_url() {
        assert_eq!(
            host_of("https://127.0.0.1:7443").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            host_of("https://192.168.1.5:7443/").as_deref(),
            Some("192.168.1.5")
        );
        assert_eq!(host_of("https://[::1]:7443").as_deref(), Some("::1"));
        assert_eq!(host_of("https://pi.local:7443"), None);
    }
}
