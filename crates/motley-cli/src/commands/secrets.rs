//! `get secret NAME --reveal` and `secrets rotate-key` (admins).

use super::*;

/// `get secret NAME --reveal`.
pub(crate) async fn reveal(
    client: &Client,
    res: &str,
    name: Option<&str>,
    format: Format,
) -> anyhow::Result<i32> {
    anyhow::ensure!(
        Kind::parse(res) == Some(Kind::Secret),
        "--reveal shows secrets only: get secret NAME --reveal"
    );
    let name = name.ok_or_else(|| anyhow::anyhow!("get secret NAME --reveal: name one secret"))?;
    let r: motley_core::api::RevealedSecret = match client
        .get(&client.scoped(&format!("/v1/secrets/{name}/reveal")))
        .await
    {
        Ok(r) => r,
        Err(e) => return report(e),
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(&r)?),
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = r
                .data
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect();
            print(&crate::output::table(&["KEY", "VALUE"], &rows));
        }
    }
    Ok(0)
}

/// `secrets rotate-key`.
pub(crate) async fn rotate_key(client: &Client) -> anyhow::Result<i32> {
    let r: anyhow::Result<motley_core::api::KeyRotated> = client
        .post("/v1/secrets/rotate-key", &serde_json::json!({}))
        .await;
    match r {
        Ok(r) => {
            println!(
                "secrets key is now {}; {} value(s) encrypted again",
                r.key_id, r.resealed
            );
            Ok(0)
        }
        Err(e) => report(e),
    }
}
