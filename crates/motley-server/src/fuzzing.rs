//! The body of the cargo-fuzz target `agent_session` as a library function: stable
//! `cargo test` replays its corpus and drives it with generated input
//! (`tests/fuzz_corpus.rs`), the nightly fuzzer runs the same checks. It panics when
//! a property fails.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use motley_core::proto::{AgentMsg, PROTOCOL_VERSION};
use motley_store::Store;
use tokio::sync::mpsc;

use crate::agents::{AgentCaller, ChanLink, Frame, session};
use crate::state::{Guards, Shared};

/// What every run shares: a CA and a secrets key, made once (and kept for later
/// processes) in `motley-fuzz-agent-session` under the system's temporary directory.
fn cluster() -> Option<&'static (String, String, std::path::PathBuf)> {
    static CLUSTER: OnceLock<Option<(String, String, std::path::PathBuf)>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let dir = std::env::temp_dir().join("motley-fuzz-agent-session");
            std::fs::create_dir_all(&dir).ok()?;
            let ca = motley_net::Ca::load_or_create(&dir).ok()?;
            let hash = ca.hash().ok()?;
            // Created once here; every run then only reads it (runs go in parallel).
            let key = dir.join("secrets.key");
            crate::secrets::Keyring::load_or_create(&key).ok()?;
            Some((ca.cert_pem().to_string(), hash, key))
        })
        .as_ref()
}

/// pi1's allocation, which pi2's session must not be able to change.
const PI1_ALLOC: &str = r#"{"id":"web-1","workload":"service/web","workload_uid":"u","generation":1,"index":0,"node":"pi1","task":{"command":["true"]},"restart":{"mode":"always","max_restarts":null,"backoff":{}},"desired":"run","state":"running","pid":4242,"created_at":0,"updated_at":0}"#;

/// The agent session after `hello`, on arbitrary input: each line of `data` is one
/// frame from node pi2 (a line that is not a valid message ends the connection, as the
/// WebSocket layer does). Checks: no panic; the session ends when its frames do; pi2
/// is no longer connected after it; pi1's allocation is exactly as it was, whatever
/// pi2 said.
pub fn agent_session(data: &[u8]) {
    on_a_server(|s, store| async move {
        let (frames, rx) = mpsc::unbounded_channel();
        let (out, mut answers) = mpsc::channel(crate::state::OUTBOX_LIMIT);
        // The "agent" reads what it is sent.
        tokio::spawn(async move { while answers.recv().await.is_some() {} });
        let hello = AgentMsg::Hello {
            version: PROTOCOL_VERSION,
            node: "pi2".into(),
            facts: Default::default(),
            labels: Default::default(),
            allocs: vec![],
            readings: None,
            address: None,
        };
        let _ = frames.send(Frame::Msg(hello));
        for line in String::from_utf8_lossy(data).lines() {
            match serde_json::from_str::<AgentMsg>(line) {
                Ok(m) => {
                    let _ = frames.send(Frame::Msg(m));
                }
                Err(_) => {
                    let _ = frames.send(Frame::End);
                    break;
                }
            }
        }
        drop(frames);
        let caller = AgentCaller {
            who: "token pi2 (node)".into(),
            peer: "10.0.0.2:5000".into(),
        };
        let run = session(s.clone(), "pi2".into(), caller, ChanLink { rx, out });
        if tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .is_err()
        {
            panic!("the session did not end when its frames did");
        }
        assert!(
            !s.hub.connected().contains("pi2"),
            "pi2 still connected after its session"
        );
        match store.get(&crate::keys::alloc("web-1")).await {
            Ok(Some(kv)) => assert_eq!(
                kv.value,
                PI1_ALLOC.as_bytes(),
                "pi2 changed pi1's allocation"
            ),
            other => panic!("pi1's allocation is gone: {other:?}"),
        }
    });
}

/// Runs `f` on a fresh server (in-memory store holding pi1's allocation, its cache
/// started), on a runtime of its own.
fn on_a_server<F, Fut>(f: F)
where
    F: FnOnce(Arc<Shared>, Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((ca_pem, ca_hash, key)) = cluster() else {
        panic!("no CA for the fuzz target (temporary directory not writable)");
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async {
        let store: Arc<dyn Store> = match motley_store::embedded::Embedded::in_memory(100) {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("store: {e}"),
        };
        let put = motley_store::Txn::new().put(crate::keys::alloc("web-1"), PI1_ALLOC);
        if let Err(e) = store.txn(put).await {
            panic!("seeding the store: {e}");
        }
        let me = motley_core::api::ServerInfo {
            id: "s1".into(),
            name: "s1".into(),
            url: "https://127.0.0.1:1".into(),
            started_at: crate::state::now_ms(),
            leader: false,
            leading_since: None,
            version: motley_core::version::THIS.into(),
        };
        let ha = match crate::ha::Ha::new(me, None, Duration::from_secs(10), ca_pem) {
            Ok(h) => h,
            Err(e) => panic!("ha: {e}"),
        };
        let keyring = match crate::secrets::Keyring::load_or_create(key) {
            Ok(k) => k,
            Err(e) => panic!("keyring: {e}"),
        };
        let s = Shared::new(
            store.clone(),
            ca_pem.clone(),
            ca_hash.clone(),
            Default::default(),
            Default::default(),
            ha,
            Guards {
                audit: crate::audit::Audit::new(None),
                keyring,
            },
        );
        if let Err(e) = s.start_cache().await {
            panic!("cache: {e}");
        }
        f(s, store).await;
    });
}

/// The HTTP layer with authentication, on arbitrary requests: the first byte picks the
/// method, the second the credential (none, an unknown token, a viewer's, pi1's node
/// credential, an admin's), the rest is the path up to a newline and then the body.
/// Checks: no panic and no 500; without a valid credential every path answers 401
/// (routes are not disclosed before authentication); a viewer or a node changes
/// nothing (no 2xx to a method other than GET or HEAD, but a node's agent connection);
/// pi1's allocation is unchanged unless an admin asked.
pub fn http_request(data: &[u8]) {
    use tower::ServiceExt;
    const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];
    let (Some(m), Some(c)) = (data.first(), data.get(1)) else {
        return;
    };
    let method = METHODS[usize::from(*m) % METHODS.len()];
    let rest = String::from_utf8_lossy(&data[2..]).into_owned();
    let (path, body) = rest.split_once('\n').unwrap_or((&rest, ""));
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let who = c % 5;
    let body = body.to_string();
    on_a_server(|s, store| async move {
        let mut token = match who {
            0 => None,
            1 => Some("not-a-token".to_string()),
            _ => None,
        };
        let role = match who {
            2 => Some(crate::auth::Role::Viewer),
            3 => Some(crate::auth::Role::Node { node: "pi1".into() }),
            4 => Some(crate::auth::Role::Admin),
            _ => None,
        };
        if let Some(role) = role {
            match s.create_token(role, None, "fuzz").await {
                Ok((_, t)) => token = Some(t),
                Err(e) => panic!("token: {e}"),
            }
        }
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path.as_str());
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        // A path the URI parser refuses never reaches a server either.
        let Ok(req) = req.body(axum::body::Body::from(body)) else {
            return;
        };
        let router = crate::api::router(s.clone());
        let resp = match tokio::time::timeout(Duration::from_secs(30), router.oneshot(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => match e {},
            Err(_) => panic!("{method} {path}: no answer in 30 s"),
        };
        let status = resp.status().as_u16();
        assert_ne!(status, 500, "{method} {path} (credential {who}): 500");
        if who < 2 {
            assert_eq!(status, 401, "{method} {path} without a valid credential");
        }
        let reads = method == "GET" || method == "HEAD";
        if (who == 2 || who == 3) && !reads && path != "/v1/agent/connect" {
            assert!(
                !(200..300).contains(&status),
                "{method} {path} answered {status} to a {} credential",
                if who == 2 { "viewer" } else { "node" }
            );
        }
        if who != 4 {
            match store.get(&crate::keys::alloc("web-1")).await {
                Ok(Some(kv)) => assert_eq!(kv.value, PI1_ALLOC.as_bytes(), "{method} {path}"),
                other => panic!("{method} {path}: pi1's allocation is gone: {other:?}"),
            }
        }
    });
}
