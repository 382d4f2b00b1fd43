//! Version skew, read from recordings: every agent ⇄ server message a released
//! version sent (`tests/fixtures/protocol/<version>/transcript.jsonl`, recorded with
//! `MOTLEY_PROTOCOL_RECORD` from real processes) must still be read by this one. A
//! server must take an older agent's messages, and an agent an older server's.

use std::collections::BTreeSet;
use std::path::Path;

use motley_core::proto::{AgentMsg, PROTOCOL_VERSION, ServerMsg};

#[test]
fn every_recorded_message_of_every_version_is_read_by_this_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/protocol");
    let dirs = match std::fs::read_dir(&root) {
        Ok(d) => d,
        Err(e) => panic!("{}: {e}", root.display()),
    };
    let mut versions = 0;
    for d in dirs {
        let dir = match d {
            Ok(d) => d.path(),
            Err(e) => panic!("{e}"),
        };
        let file = dir.join("transcript.jsonl");
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => panic!("{}: {e}", file.display()),
        };
        let mut kinds = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => panic!("{}:{}: {e}", file.display(), i + 1),
            };
            let msg = v["msg"].to_string();
            let kind = format!("{} {}", v["from"], v["msg"]["type"]);
            match v["from"].as_str() {
                Some("agent") => {
                    let m: AgentMsg = match serde_json::from_str(&msg) {
                        Ok(m) => m,
                        Err(e) => panic!(
                            "{}:{}: an agent message this version cannot read: {e}",
                            file.display(),
                            i + 1
                        ),
                    };
                    if let AgentMsg::Hello { version, .. } = m {
                        assert_eq!(
                            version,
                            PROTOCOL_VERSION,
                            "{}: a new protocol version needs a server that still speaks the old one",
                            file.display()
                        );
                    }
                }
                Some("server") => {
                    if let Err(e) = serde_json::from_str::<ServerMsg>(&msg) {
                        panic!(
                            "{}:{}: a server message this version cannot read: {e}",
                            file.display(),
                            i + 1
                        );
                    }
                }
                other => panic!("{}:{}: from {other:?}", file.display(), i + 1),
            }
            kinds.insert(kind);
        }
        // The recording covers a session's life: hello to logs to removal.
        for needed in [
            "\"agent\" \"hello\"",
            "\"agent\" \"heartbeat\"",
            "\"agent\" \"update\"",
            "\"agent\" \"log_data\"",
            "\"server\" \"welcome\"",
            "\"server\" \"sync\"",
            "\"server\" \"upsert\"",
            "\"server\" \"remove\"",
            "\"server\" \"catalog\"",
            "\"server\" \"ack\"",
            "\"server\" \"logs\"",
        ] {
            assert!(
                kinds.contains(needed),
                "{}: no {needed} in {kinds:?}",
                file.display()
            );
        }
        versions += 1;
    }
    assert!(
        versions >= 1,
        "no recorded version under {}",
        root.display()
    );
}
