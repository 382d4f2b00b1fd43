//! Authorization, table-driven: every route × every role against a real server, with a
//! real agent holding an allocation. Node credentials see only their own node; refusals
//! are audited; failed authentication is rate-limited; expired, revoked and foreign
//! credentials are refused.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use motley_core::api::{AuditEntry, CreatedToken, JoinResponse};
use reqwest::Method;
use serde_json::Value;

use crate::common::*;

/// The roles of the table's columns.
const ROLES: [&str; 5] = ["admin", "viewer", "n1", "n2", "join"];

/// (method, path, body, expectations per role: A allowed, D denied with 403, and the
/// status an allowed call answers: a 404 or a 500 where a 200 is due fails).
/// `{alloc}` is an allocation of node n1.
const TABLE: &[(&str, &str, &str, &str, u16)] = &[
    ("GET", "/v1/version", "", "AADDD", 200),
    ("POST", "/v1/apply", r#"{"files":[]}"#, "ADDDD", 200),
    ("POST", "/v1/delete", r#"{"files":[]}"#, "ADDDD", 200),
    ("POST", "/v1/plan", r#"{"files":[]}"#, "AADDD", 200),
    ("GET", "/v1/workloads", "", "AADDD", 200),
    ("GET", "/v1/workloads/service/web", "", "AADDD", 200),
    ("DELETE", "/v1/workloads/service/nope", "", "ADDDD", 404),
    ("GET", "/v1/nodes", "", "AADDD", 200),
    ("GET", "/v1/nodes/n1", "", "AAADD", 200),
    ("GET", "/v1/nodes/n2", "", "AADAD", 404),
    ("POST", "/v1/nodes/nope/cordon", "", "ADDDD", 404),
    ("GET", "/v1/allocs", "", "AADDD", 200),
    ("GET", "/v1/allocs?node=n1", "", "AAADD", 200),
    ("GET", "/v1/allocs?node=n2", "", "AADAD", 200),
    ("GET", "/v1/allocs/{alloc}", "", "AAADD", 200),
    ("GET", "/v1/allocs/{alloc}/logs?tail=10", "", "AAADD", 200),
    ("GET", "/metrics", "", "AADDD", 200),
    ("GET", "/v1/tokens", "", "ADDDD", 200),
    ("POST", "/v1/tokens", r#"{"role":"viewer"}"#, "ADDDD", 200),
    ("DELETE", "/v1/tokens/nope", "", "ADDDD", 404),
    ("GET", "/v1/snapshot", "", "ADDDD", 200),
    ("GET", "/v1/servers", "", "AADDD", 200),
    ("GET", "/v1/audit", "", "ADDDD", 200),
    ("GET", "/v1/secrets/db/reveal", "", "ADDDD", 200),
    ("POST", "/v1/secrets/rotate-key", "", "ADDDD", 200),
    ("GET", "/v1/agent/connect", "", "DDAAD", 400),
    // An experiment: run only by an admin (checked, not started: a dry run).
    (
        "POST",
        "/v1/experiments",
        r#"{"file":{"name":"e.yaml","content":"kind: Experiment\nname: e\nfaults:\n  - { at: 0s, latency: { node: n1, ms: 10 }, for: 1s }\n"},"dry_run":true}"#,
        "ADDDD",
        200,
    ),
    ("GET", "/v1/experiments", "", "AADDD", 200),
    ("GET", "/v1/experiments/nope", "", "AADDD", 404),
    ("POST", "/v1/experiments/nope/abort", "", "ADDDD", 409),
    (
        "POST",
        "/v1/join",
        r#"{"node":"Not A Name!"}"#,
        "DDDDA",
        422,
    ),
];

struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if !body.is_empty() {
            rb = rb
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = rb.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

/// An agent connection with `token` that says it is node `node`.
async fn agent_hello(
    url: &str,
    token: &str,
    node: &str,
    tls: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
) -> motley_net::ws::WsStream {
    let mut ws = motley_net::ws::connect(
        url,
        "/v1/agent/connect",
        token,
        &[],
        tls,
        Duration::from_secs(5),
    )
    .await
    .expect("connect");
    let hello = motley_core::proto::AgentMsg::Hello {
        version: motley_core::proto::PROTOCOL_VERSION,
        node: node.into(),
        // An agent says its version; the server checks it against the skew policy.
        facts: motley_core::model::NodeFacts {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        },
        labels: Default::default(),
        allocs: vec![],
        readings: None,
        address: None,
    };
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        serde_json::to_string(&hello).expect("json").into(),
    ))
    .await
    .expect("send hello");
    ws
}

#[test]
fn every_route_and_role_is_authorized_as_the_table_says() {
    let dir = test_dir();
    let data = dir.path().join("server");
    let (_server, url) = spawn_server(dir.path());
    let join = std::fs::read_to_string(data.join("server/join-token")).expect("join token");
    let agent_dir = dir.path().join("n1");
    let _agent = Proc::spawn(
        &[
            "agent",
            "--server",
            &url,
            "--token",
            join.trim(),
            "--data-dir",
            agent_dir.to_str().expect("path"),
            "--name",
            "n1",
        ],
        dir.path().join("n1.log"),
    )
    .expect("agent");
    let config = data.join("client.yaml").display().to_string();
    let cfg = motley_net::ClientConfig::load(std::path::Path::new(&config)).expect("config");
    let admin = cfg.token.clone();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(motley_net::client_tls(&cfg.ca).expect("tls"))
        .build()
        .expect("client");
    let api = Api {
        http,
        url: url.clone(),
    };
    let manifest = dir.path().join("web.yaml");
    let password = format!("pw-{}", motley_net::new_id());
    std::fs::write(
        &manifest,
        format!(
            "kind: Secret\nname: db\ndata:\n  password: {password}\n---\n\
             kind: Service\nname: web\ntask:\n  command: [sleep, \"100000\"]\n  secrets:\n    - {{ secret: db, key: password, env: DB_PASSWORD }}\n"
        ),
    )
    .expect("manifest");
    let out = cli_with(&config, &["apply", "-f", manifest.to_str().expect("path")]);
    assert!(out.status.success(), "{out:?}");
    let n1_cred = std::fs::read_to_string(agent_dir.join("agent/credential")).expect("credential");
    let rt = rt();
    let alloc: String = wait_for("web runs on n1", Duration::from_secs(30), || {
        let v: Value =
            serde_json::from_slice(&cli_with(&config, &["get", "allocs", "-o", "json"]).stdout)
                .ok()?;
        v.as_array()?
            .iter()
            .find(|a| a["state"] == "running" && a["node"] == "n1")
            .and_then(|a| a["id"].as_str().map(str::to_string))
    });

    rt.block_on(async {
        let (_, body) = api
            .call("POST", "/v1/tokens", Some(&admin), r#"{"role":"viewer"}"#)
            .await;
        let viewer = serde_json::from_str::<CreatedToken>(&body)
            .expect("viewer token")
            .token;
        let (_, body) = api
            .call("POST", "/v1/join", Some(join.trim()), r#"{"node":"n2"}"#)
            .await;
        let n2 = serde_json::from_str::<JoinResponse>(&body)
            .expect("n2 joins")
            .credential;
        let tokens = [admin.as_str(), &viewer, n1_cred.trim(), &n2, join.trim()];

        let mut denied = 0;
        for (method, path, body, expect, ok_status) in TABLE {
            let path = path.replace("{alloc}", &alloc);
            for (i, want) in expect.chars().enumerate() {
                let (status, text) = api.call(method, &path, Some(tokens[i]), body).await;
                let role = ROLES[i];
                match want {
                    'A' => assert_eq!(
                        status, *ok_status,
                        "{role} {method} {path}: {status} {text}"
                    ),
                    _ => {
                        assert_eq!(status, 403, "{role} {method} {path}: {text}");
                        denied += 1;
                    }
                }
            }
        }

        // Lists are scoped: n2 has no allocation, n1 sees only its own.
        let (_, body) = api.call("GET", "/v1/allocs?node=n2", Some(&n2), "").await;
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(0), "{body}");
        let (_, body) = api
            .call("GET", "/v1/allocs?node=n1", Some(n1_cred.trim()), "")
            .await;
        let v: Value = serde_json::from_str(&body).expect("json");
        let nodes: Vec<&str> = v
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|a| a["node"].as_str())
            .collect();
        assert!(
            !nodes.is_empty() && nodes.iter().all(|n| *n == "n1"),
            "{nodes:?}"
        );

        // A node credential cannot register as another node.
        let tls = std::sync::Arc::new(motley_net::client_tls(&cfg.ca).expect("tls"));
        let mut ws = agent_hello(&url, &n2, "n1", tls.clone()).await;
        match ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 4003);
                assert!(f.reason.contains("belongs to node \"n2\""), "{}", f.reason);
            }
            other => panic!("expected a close, got {other:?}"),
        }

        // As itself, n2 gets its (empty) assignment and never n1's secret; n1's task
        // has it.
        let mut ws = agent_hello(&url, &n2, "n2", tls.clone()).await;
        let mut frames = String::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
            frames.push_str(&m.to_string());
        }
        assert!(frames.contains("\"sync\""), "{frames}");
        assert!(!frames.contains(&password), "n2 was sent n1's secret");
        let pid = wait_for("web's pid", Duration::from_secs(10), || {
            let v: Value =
                serde_json::from_slice(&cli_with(&config, &["get", "allocs", "-o", "json"]).stdout)
                    .ok()?;
            v.as_array()?
                .iter()
                .find(|a| a["id"] == alloc.as_str())
                .and_then(|a| a["pid"].as_u64())
        });
        assert!(
            environ(pid as u32).contains(&format!("DB_PASSWORD={password}")),
            "n1's task lacks its secret"
        );
        drop(ws);

        // A frame over the limit (4 MiB) ends the connection; the server goes on. One
        // just under it (log data for a stream nobody asked for) is read and answered.
        let mut ws = agent_hello(&url, &n2, "n2", tls.clone()).await;
        let near = motley_core::proto::AgentMsg::LogData {
            req: 12345,
            data: "x".repeat((4 << 20) - 1024),
            eof: false,
            error: None,
        };
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            serde_json::to_string(&near).expect("json").into(),
        ))
        .await
        .expect("send a large frame");
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut answered = false;
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
            if m.to_string().contains("logs_cancel") {
                answered = true;
                break;
            }
        }
        assert!(answered, "a frame under the limit was not read");
        let over = "x".repeat((4 << 20) + 1);
        let _ = ws
            .send(tokio_tungstenite::tungstenite::Message::Text(over.into()))
            .await;
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let closed = loop {
            match tokio::time::timeout_at(until, ws.next()).await {
                Err(_) => break false,
                Ok(None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) => break true,
                Ok(Some(Ok(_))) => {}
            }
        };
        assert!(closed, "a frame over the limit did not end the connection");
        let (status, _) = api.call("GET", "/v1/nodes", Some(&admin), "").await;
        assert_eq!(status, 200, "the server stopped answering after an oversized frame");

        // Every refusal is in the audit log, with who.
        let (_, body) = api.call("GET", "/v1/audit", Some(&admin), "").await;
        let audit: Vec<AuditEntry> = serde_json::from_str(&body).expect("audit");
        assert!(audit.len() >= denied, "{} < {denied}", audit.len());
        assert!(audit.iter().any(|e| e.status == 403
            && e.path == format!("/v1/allocs/{alloc}")
            && e.who.contains("(node)")
            && e.peer == "127.0.0.1"));
        let file = std::fs::read_to_string(data.join("server/audit.log")).expect("audit.log");
        assert_eq!(file.lines().count(), audit.len());

        // Expired and revoked tokens are refused. Five seconds to live: long enough for
        // the first call to come before the end even on a loaded machine (a 1 s token
        // once expired before its first use while the whole suite ran on two cores).
        let created = std::time::Instant::now();
        let (_, body) = api
            .call(
                "POST",
                "/v1/tokens",
                Some(&admin),
                r#"{"role":"viewer","ttl_seconds":5}"#,
            )
            .await;
        let short = serde_json::from_str::<CreatedToken>(&body).expect("token");
        assert_eq!(
            api.call("GET", "/v1/version", Some(&short.token), "")
                .await
                .0,
            200,
            "a fresh token works ({:?} after creating it)",
            created.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5100).saturating_sub(created.elapsed())).await;
        assert_eq!(
            api.call("GET", "/v1/version", Some(&short.token), "")
                .await
                .0,
            401
        );
        let viewer_id = serde_json::from_str::<Vec<Value>>(
            &api.call("GET", "/v1/tokens", Some(&admin), "").await.1,
        )
        .expect("tokens")
        .iter()
        .find(|t| t["role"] == "viewer" && t["expires_at"].is_null())
        .and_then(|t| t["id"].as_str().map(str::to_string))
        .expect("viewer listed");
        let (status, _) = api
            .call(
                "DELETE",
                &format!("/v1/tokens/{viewer_id}"),
                Some(&admin),
                "",
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            api.call("GET", "/v1/version", Some(&viewer), "").await.0,
            401
        );

        // A client that trusts another CA gets no answer at all.
        let other_ca = motley_net::Ca::load_or_create(&dir.path().join("other-ca")).expect("ca");
        let foreign = reqwest::Client::builder()
            .use_preconfigured_tls(motley_net::client_tls(other_ca.cert_pem()).expect("tls"))
            .build()
            .expect("client");
        assert!(
            foreign
                .get(format!("{url}/v1/version"))
                .bearer_auth(&admin)
                .send()
                .await
                .is_err()
        );

        // Slow clients are cut off and hold nothing: one never starts TLS, one never
        // sends its request, one sends half a body. Checked at the end.
        let slow_started = tokio::time::Instant::now();
        let port = url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).expect("port");
        let silent_tcp = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
            let mut b = [0u8; 16];
            let _ = s.read(&mut b).await;
            slow_started.elapsed()
        });
        let tls_client = |tls: std::sync::Arc<tokio_rustls::rustls::ClientConfig>| async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .expect("tls")
        };
        let silent_tls = {
            let c = tls_client(tls.clone());
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut s = c.await;
                let mut b = [0u8; 64];
                let _ = s.read(&mut b).await;
                slow_started.elapsed()
            })
        };
        // Guessing tokens: after 10 failures from one address within 10 s, everything
        // from it is refused (even a valid token) until the window ends. Two failures
        // (expired, revoked) happened above.
        let mut statuses = Vec::new();
        for i in 0..10 {
            let (status, _) = api
                .call("GET", "/v1/version", Some(&format!("guess-{i}")), "")
                .await;
            statuses.push(status);
        }
        assert_eq!(statuses[..8], [401; 8], "{statuses:?}");
        assert_eq!(statuses[8..], [429; 2], "{statuses:?}");
        assert_eq!(
            api.call("GET", "/v1/version", Some(&admin), "").await.0,
            429
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(
            api.call("GET", "/v1/version", Some(&admin), "").await.0,
            200
        );
        // Half a body, sent once the lockout is over: a request that arrived while its
        // address was locked out would be refused (429) before its body was awaited.
        // (Sent before the guesses, it raced them: its TLS handshake, a full one since
        // the server resumes no sessions, could end after the eighth guess.)
        let half_started = tokio::time::Instant::now();
        let half_body = {
            let c = tls_client(tls.clone());
            let admin = admin.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = c.await;
                let head = format!(
                    "POST /v1/apply HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {admin}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"files\": ["
                );
                s.write_all(head.as_bytes()).await.expect("write");
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.expect("read the answer");
                (half_started.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned())
            })
        };
        let (_, body) = api.call("GET", "/v1/audit", Some(&admin), "").await;
        let audit: Vec<AuditEntry> = serde_json::from_str(&body).expect("audit");
        assert!(audit.iter().any(|e| e.status == 429));
        assert!(
            audit
                .iter()
                .any(|e| e.status == 401 && e.who == "invalid token")
        );

        // (After the lockout window: these four failures stay under the limit.)
        // Routes are not disclosed before authentication: a path that does not exist
        // answers 401 without a token, 404 only to a valid one.
        for path in ["/v1/no/such/route", "/nope", "/v1/allocs/x/y/z"] {
            assert_eq!(api.call("GET", path, None, "").await.0, 401, "{path}");
            assert_eq!(
                api.call("GET", path, Some(&admin), "").await.0,
                404,
                "{path}"
            );
        }
        assert_eq!(api.call("POST", "/v1/nothing", None, "{}").await.0, 401);

        let window = Duration::from_secs(9)..Duration::from_secs(14);
        let t = silent_tcp.await.expect("silent tcp");
        assert!(window.contains(&t), "no TLS handshake: closed after {t:?}");
        let t = silent_tls.await.expect("silent tls");
        assert!(window.contains(&t), "no request: closed after {t:?}");
        let (t, answer) = half_body.await.expect("half body");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            (Duration::from_secs(14)..Duration::from_secs(19)).contains(&t),
            "half a body: answered after {t:?}"
        );
    });
}
