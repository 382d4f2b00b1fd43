//! Joining a cluster: a join token (which pins the cluster CA's hash) is exchanged for
//! the node's own credential, kept in the agent's directory for every later start.

use std::path::Path;

use anyhow::Context;
use motley_core::api::{ErrorBody, JoinRequest, JoinResponse};

/// The node's credential and the cluster CA, from the agent's directory or by joining.
pub async fn credentials(
    dir: &Path,
    servers: &[String],
    token: Option<&str>,
    node: &str,
) -> anyhow::Result<(String, String)> {
    let cred_path = dir.join("credential");
    let ca_path = dir.join("ca.crt");
    if cred_path.exists() && ca_path.exists() {
        let cred = std::fs::read_to_string(&cred_path)
            .with_context(|| format!("reading {}", cred_path.display()))?;
        let ca = std::fs::read_to_string(&ca_path)
            .with_context(|| format!("reading {}", ca_path.display()))?;
        return Ok((cred.trim().to_string(), ca));
    }
    let token = token.ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no credential yet: pass --token with a join token (motley token create)",
            dir.display()
        )
    })?;
    let joined = join(servers, token, node).await?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    motley_net::write_private(&ca_path, joined.ca.as_bytes(), 0o644)?;
    motley_net::write_private(&cred_path, joined.credential.as_bytes(), 0o600)?;
    Ok((joined.credential, joined.ca))
}

/// Exchanges a join token for a node credential, trusting only a server whose CA matches
/// the token's pinned hash.
pub async fn join(servers: &[String], token: &str, node: &str) -> anyhow::Result<JoinResponse> {
    let pin = motley_net::join_token_pin(token)
        .ok_or_else(|| anyhow::anyhow!("--token is not a join token (they start with {}); create one with `motley token create`", motley_net::JOIN_PREFIX))?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(motley_net::pinned_client_tls(&pin))
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .context("building the HTTP client")?;
    let mut errors = Vec::new();
    for server in servers {
        let url = format!("{}/v1/join", server.trim_end_matches('/'));
        let resp = match http
            .post(&url)
            .bearer_auth(token)
            .json(&JoinRequest {
                node: node.to_string(),
            })
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{server}: {}", motley_net::error_chain(&e)));
                continue;
            }
        };
        let status = resp.status();
        if status.is_success() {
            let joined: JoinResponse = resp.json().await.context("decoding the join answer")?;
            anyhow::ensure!(
                motley_net::ca_hash(&joined.ca)? == pin,
                "the server answered with a CA that does not match the join token"
            );
            return Ok(joined);
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        anyhow::bail!("{server} refused to join node {node:?}: {msg} ({status})");
    }
    anyhow::bail!("could not join: {}", errors.join("; "))
}
