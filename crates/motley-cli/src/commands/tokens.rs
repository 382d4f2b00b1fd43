//! `motley token create|list|revoke`.

use super::*;

/// `token create|list|revoke`.
pub async fn token(client: &Client, command: crate::args::TokenCommand) -> anyhow::Result<i32> {
    use crate::args::TokenCommand;
    use motley_core::api::{CreatedToken, TokenInfo, TokenRequest};
    let res: anyhow::Result<String> = async {
        Ok(match command {
            TokenCommand::Create {
                role,
                ttl,
                description,
                namespaces,
            } => {
                let ttl_seconds = match ttl {
                    Some(t) => Some(
                        motley_core::quantity::Duration::parse(&t)
                            .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?
                            .as_millis()
                            / 1000,
                    ),
                    None => None,
                };
                let created: CreatedToken = client
                    .post(
                        "/v1/tokens",
                        &TokenRequest {
                            role,
                            ttl_seconds,
                            description,
                            namespaces,
                        },
                    )
                    .await?;
                format!("{}\n", created.token)
            }
            TokenCommand::List { output: format } => {
                let tokens: Vec<TokenInfo> = client.get("/v1/tokens").await?;
                if matches!(format, Format::Json | Format::Yaml) {
                    output::structured(&tokens, format)?
                } else {
                    let now = now_ms();
                    let rows: Vec<Vec<String>> = tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.id.clone(),
                                t.role.clone(),
                                t.node.clone().unwrap_or_else(|| t.namespaces.join(",")),
                                age(t.created_at, now),
                                match t.expires_at {
                                    Some(e) if e <= now => "expired".into(),
                                    Some(e) => format!("in {}", age(now, e)),
                                    None => "never".into(),
                                },
                                t.description.clone(),
                            ]
                        })
                        .collect();
                    table(
                        &[
                            "ID",
                            "ROLE",
                            "NODE/NAMESPACES",
                            "AGE",
                            "EXPIRES",
                            "DESCRIPTION",
                        ],
                        &rows,
                    )
                }
            }
            TokenCommand::Revoke { id } => {
                let t: TokenInfo = client.delete(&format!("/v1/tokens/{id}")).await?;
                format!("token {} ({}) revoked\n", t.id, t.role)
            }
        })
    }
    .await;
    match res {
        Ok(s) => {
            print(&s);
            Ok(0)
        }
        Err(e) => report(e),
    }
}
