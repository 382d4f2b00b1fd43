//! Bad input is an error message, not an outage: every invalid manifest is
//! refused with file, line, column and field, and the store does not change.

use std::time::Duration;

use crate::common::*;

/// (case, manifest, line, field, part of the message)
const CASES: &[(&str, &str, u64, &str, &str)] = &[
    (
        "syntax",
        "kind: Service\nname: a\ntask: [unclosed\n",
        3,
        "",
        "YAML syntax",
    ),
    (
        "unknown-field",
        "kind: Service\nname: a\nreplcas: 2\ntask:\n  command: [x]\n",
        3,
        "replcas",
        "unknown field",
    ),
    (
        "wrong-type",
        "kind: Service\nname: a\nreplicas: two\ntask:\n  command: [x]\n",
        3,
        "replicas",
        "whole number",
    ),
    (
        "negative-replicas",
        "kind: Service\nname: a\nreplicas: -1\ntask:\n  command: [x]\n",
        3,
        "replicas",
        "whole number",
    ),
    (
        "bad-memory",
        "kind: Service\nname: a\ntask:\n  command: [x]\n  resources:\n    memory: 256Mx\n",
        6,
        "task.resources.memory",
        "256Mx",
    ),
    (
        "bad-cpu",
        "kind: Service\nname: a\ntask:\n  command: [x]\n  resources: { cpu: fast }\n",
        5,
        "task.resources.cpu",
        "fast",
    ),
    (
        "duplicate-names",
        "kind: Service\nname: a\ntask:\n  command: [x]\n---\nkind: Service\nname: a\ntask:\n  command: [y]\n",
        7,
        "name",
        "duplicate",
    ),
    (
        "bad-image",
        "kind: Service\nname: a\ntask:\n  image: \"Not A Ref\"\n",
        4,
        "task.image",
        "must not contain whitespace",
    ),
    (
        "image-secret-without-image",
        "kind: Service\nname: a\ntask:\n  command: [x]\n  image_secret: regcred\n",
        5,
        "task.image_secret",
        "is for images",
    ),
    (
        "args-without-image",
        "kind: Service\nname: a\ntask:\n  command: [x]\n  args: [y]\n",
        5,
        "task.args",
        "is for images",
    ),
    (
        "missing-command",
        "kind: Service\nname: a\ntask:\n  env: { A: b }\n",
        3,
        "task.command",
        "must name a program to run (or set task.image to run a container)",
    ),
    (
        "empty-command",
        "kind: Service\nname: a\ntask:\n  command: []\n",
        4,
        "task.command",
        "program",
    ),
    (
        "bad-selector",
        "kind: Service\nname: a\nplacement:\n  require: \"arch in amd64\"\ntask:\n  command: [x]\n",
        4,
        "placement.require",
        "selector",
    ),
    (
        "bad-name",
        "kind: Service\nname: Web_1\ntask:\n  command: [x]\n",
        2,
        "name",
        "lowercase",
    ),
    (
        "unknown-kind",
        "kind: Deployment\nname: a\n",
        1,
        "kind",
        "unknown kind",
    ),
    (
        "missing-kind",
        "name: a\ntask:\n  command: [x]\n",
        1,
        "kind",
        "missing field `kind`",
    ),
    (
        "zero-parallelism",
        "kind: Job\nname: a\nparallelism: 0\ntask:\n  command: [x]\n",
        3,
        "parallelism",
        "at least 1",
    ),
    (
        "zero-completions",
        "kind: Job\nname: a\ncompletions: 0\ntask:\n  command: [x]\n",
        3,
        "completions",
        "between",
    ),
    (
        "relative-workdir",
        "kind: Job\nname: a\ntask:\n  command: [x]\n  workdir: tmp\n",
        5,
        "task.workdir",
        "absolute",
    ),
    (
        "limit-below-request",
        "kind: Job\nname: a\ntask:\n  command: [x]\n  resources: { memory: 1Gi }\n  limits: { memory: 512Mi }\n",
        6,
        "task.limits.memory",
        "below",
    ),
    (
        "bad-duration",
        "kind: Job\nname: a\ntask:\n  command: [x]\n  stop_grace: 10x\n",
        5,
        "task.stop_grace",
        "10x",
    ),
    (
        "reserved-env",
        "kind: Job\nname: a\ntask:\n  command: [x]\n  env:\n    MOTLEY_INDEX: \"3\"\n",
        6,
        "task.env.MOTLEY_INDEX",
        "MOTLEY_",
    ),
    (
        "duplicate-key",
        "kind: Service\nname: a\nreplicas: 1\nreplicas: 2\ntask:\n  command: [x]\n",
        4,
        "",
        "duplicate",
    ),
    ("not-a-mapping", "- a\n- b\n", 1, "", "mapping"),
    (
        "bad-restart-policy",
        "kind: Service\nname: a\nrestart:\n  policy: sometimes\ntask:\n  command: [x]\n",
        4,
        "restart.policy",
        "sometimes",
    ),
    (
        "one-bad-in-a-set",
        "kind: Service\nname: good\ntask:\n  command: [x]\n---\nkind: Job\nname: bad\ncompletions: 0\ntask:\n  command: [x]\n",
        8,
        "completions",
        "between",
    ),
    (
        "alias-bomb",
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nkind: Service\n",
        5,
        "",
        "alias bomb",
    ),
    (
        "nested-too-deep",
        "kind: Service\nname: a\nx: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
        3,
        "",
        "nested deeper than 32",
    ),
    (
        "larger-than-any-node",
        "kind: Service\nname: huge\ntask:\n  command: [x]\n  resources:\n    memory: 1000Ti\n",
        6,
        "task.resources.memory",
        "largest node",
    ),
    (
        "service-port-out-of-range",
        "kind: Service\nname: b\ntask:\n  command: [x]\nports:\n  - { name: http, service_port: 70000 }\n",
        6,
        "ports[0].service_port",
        "invalid u16",
    ),
    (
        "two-ports-one-name",
        "kind: Service\nname: b\ntask:\n  command: [x]\nports:\n  - { name: http }\n  - { name: http }\n",
        7,
        "ports.1.name",
        "used twice",
    ),
    (
        "check-on-an-undeclared-port",
        "kind: Service\nname: b\ntask:\n  command: [x]\nports:\n  - { name: http }\ncheck:\n  tcp: { port: web }\n",
        8,
        "check.tcp.port",
        "not declared",
    ),
    (
        "route-claimed-by-another-service",
        "kind: Service\nname: b\ntask:\n  command: [x]\nports:\n  - { name: http }\nexpose:\n  - { port: http, host: a.test }\n",
        8,
        "expose.0.host",
        "already exposed by service a",
    ),
    (
        "periodic-bad-schedule",
        "kind: Job\nname: nightly\nschedule: \"0 25 * * *\"\ntask:\n  command: [x]\n",
        3,
        "schedule",
        "hour 25 is out of range 0-23",
    ),
    (
        "periodic-unknown-zone",
        "kind: Job\nname: nightly\nschedule: \"@daily\"\ntime_zone: Europe/Atlantis\ntask:\n  command: [x]\n",
        4,
        "time_zone",
        "is not known",
    ),
];

fn snapshot(c: &mut Cluster) -> String {
    let mut s = String::new();
    for kind in ["services", "jobs", "daemons", "volumes", "secrets"] {
        let v = c.json(&["get", kind]);
        let list = v
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("get {kind} -o json is not a list: {v}"));
        for w in list {
            s.push_str(&w["workload"].to_string());
        }
    }
    s
}

#[test]
fn invalid_manifests_are_refused_with_location_and_change_nothing() {
    let mut c = Cluster::up(&[]);
    let base = "kind: Service\nname: a\nreplicas: 0\ntask:\n  command: [sleep, \"100\"]\nports:\n  - { name: http }\nexpose:\n  - { port: http, host: a.test }\n";
    assert!(c.apply_yaml("base.yaml", base).status.success());
    let before = snapshot(&mut c);
    assert!(before.contains("\"replicas\":0"), "{before}");
    assert!(CASES.len() >= 20);
    for (case, yaml, line, field, message) in CASES {
        let file = format!("{case}.yaml");
        let out = c.apply_yaml(&file, yaml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case}: expected exit 1, got {:?}; stderr: {err}",
            out.status.code()
        );
        let path = c.dir.path().join(&file);
        let location = if *line == 0 {
            format!("{}:", path.display())
        } else {
            format!("{}:{line}:", path.display())
        };
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("error: {location}")),
            "{case}: wrong location in {first:?} (want {location})"
        );
        if !field.is_empty() {
            assert!(
                first.contains(&format!(": {field}: ")),
                "{case}: field {field} missing in {first:?}"
            );
        }
        assert!(
            first.contains(message),
            "{case}: {message:?} missing in {first:?}"
        );
        let col: Vec<&str> = first.trim_start_matches("error: ").splitn(4, ':').collect();
        if *line != 0 {
            assert!(
                col[2].parse::<u64>().is_ok_and(|c| c > 0),
                "{case}: no column in {first:?}"
            );
        }
        assert_eq!(snapshot(&mut c), before, "{case}: the store changed");
    }
    // The server validates too: a client that skips local validation gets the same
    // answer, for every case, with the same location and field.
    let (http, url, token) = c.http();
    let rt = rt();
    let post = |body: serde_json::Value| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        rt.block_on(async move {
            let r = http
                .post(format!("{url}/v1/apply"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let text = match r.text().await {
                Ok(t) => t,
                Err(e) => panic!("reading the answer ({status}): {e}"),
            };
            let v: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => panic!("answer {status} is not JSON ({e}): {text}"),
            };
            (status, v)
        })
    };
    for (case, yaml, line, field, message) in CASES {
        let name = format!("{case}.yaml");
        let (status, v) = post(serde_json::json!({"files": [{"name": name, "content": yaml}]}));
        assert_eq!(status, 422, "{case}: {v}");
        let d = &v["details"][0];
        assert_eq!(d["file"], name.as_str(), "{case}: {v}");
        if *line != 0 {
            assert_eq!(d["line"], *line, "{case}: {v}");
            assert!(d["column"].as_u64().is_some_and(|c| c > 0), "{case}: {v}");
        }
        assert_eq!(d["field"], *field, "{case}: {v}");
        assert!(
            d["message"].as_str().is_some_and(|m| m.contains(message)),
            "{case}: {message:?} missing in {v}"
        );
        assert_eq!(snapshot(&mut c), before, "{case} (API): the store changed");
    }
    // Refusals only the server can make, inside a set whose other documents are valid:
    // the whole set is refused and nothing in it is written.
    let valid = "kind: Service\nname: fine\nreplicas: 0\ntask:\n  command: [sleep, \"1\"]\n";
    let sets: [(&str, &str, &str); 3] = [
        (
            "missing-tls-secret",
            "kind: Service\nname: tls\nreplicas: 0\ntask:\n  command: [x]\nports:\n  - { name: http }\nexpose:\n  - { port: http, host: tls.test, tls: { secret: nowhere } }\n",
            "secret nowhere is neither in this set nor in the cluster",
        ),
        (
            "missing-secret",
            "kind: Service\nname: needs-key\nreplicas: 0\ntask:\n  command: [x]\n  secrets: [{ secret: nowhere, key: k, env: K }]\n",
            "nowhere",
        ),
        (
            "larger-than-any-node",
            "kind: Service\nname: huge\nreplicas: 1\ntask:\n  command: [x]\n  resources: { memory: 64Ti }\n",
            "largest node",
        ),
    ];
    for (case, bad, message) in sets {
        let (status, v) = post(serde_json::json!({"files": [
            {"name": "fine.yaml", "content": valid},
            {"name": format!("{case}.yaml"), "content": bad},
        ]}));
        assert_eq!(status, 422, "{case}: {v}");
        assert_eq!(
            v["details"][0]["file"],
            format!("{case}.yaml"),
            "{case}: {v}"
        );
        assert!(
            v["details"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{case}: {message:?} missing in {v}"
        );
        assert_eq!(
            snapshot(&mut c),
            before,
            "{case}: part of the set was written"
        );
    }
    let (status, v) = post(serde_json::json!({"files": 3}));
    assert_eq!(status, 422, "a malformed request body is refused: {v}");
    assert_eq!(snapshot(&mut c), before);

    // A bound volume may grow but not shrink: refused inside a set, nothing written.
    let bound = "kind: Volume\nname: data\nsize: 64Mi\n---\nkind: Service\nname: db\ntask:\n  command: [sleep, \"1000\"]\n  volumes: [data]\n";
    assert!(c.apply_yaml("bound.yaml", bound).status.success());
    wait_for("the volume bound", Duration::from_secs(30), || {
        let v = c.json(&["get", "volumes", "data"]);
        let v = if v.is_array() { v[0].clone() } else { v };
        v["workload"]["binding"]["node"].as_str().map(|_| ())
    });
    let before = snapshot(&mut c);
    assert!(before.contains("\"binding\""), "{before}");
    let (status, v) = post(serde_json::json!({"files": [
        {"name": "fine.yaml", "content": valid},
        {"name": "shrink.yaml", "content": "kind: Volume\nname: data\nsize: 32Mi\n"},
    ]}));
    assert_eq!(status, 422, "shrinking a bound volume: {v}");
    assert_eq!(v["details"][0]["file"], "shrink.yaml", "{v}");
    assert!(
        v["details"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("may grow but not shrink")),
        "{v}"
    );
    assert_eq!(
        snapshot(&mut c),
        before,
        "shrink: part of the set was written"
    );
}

/// A file name on Linux may be any bytes: an argument that is not UTF-8 gets an error
/// that names it, never a panic of the binary (the check for the internal
/// `chaos-stress` command read the first arguments as UTF-8 before clap saw them).
#[test]
fn an_argument_that_is_not_utf8_is_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::OsStr::from_bytes(b"/nonexistent/\xff.yaml");
    let out = match std::process::Command::new(motley_bin())
        .args(["validate", "-f"])
        .arg(name)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("running motley: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert_ne!(out.status.code(), Some(101), "panicked: {stderr}");
    assert!(
        stderr.contains(".yaml"),
        "the error does not name the file: {stderr}"
    );
}
