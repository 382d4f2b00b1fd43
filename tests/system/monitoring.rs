//! The shipped monitoring (docs/monitoring): the alerting rules pass `promtool check
//! rules` and their unit tests, the Grafana dashboard's queries are valid PromQL, and
//! every metric either names is one motley documents — and every metric a running
//! motley exports is documented (docs/api.md), so neither can drift.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn promtool(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

/// `motley_…` names in `text`, without a histogram's or counter's suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("motley_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        let base = ["_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        out.insert(base.to_string());
    }
    out
}

#[test]
fn shipped_rules_and_dashboard_are_valid_and_name_only_documented_metrics() {
    let dir = repo_root().join("docs/monitoring");
    let checked = promtool(&["check", "rules", "motley.rules.yaml"], &dir);
    assert!(checked.contains("SUCCESS: 10 rules found"), "{checked}");
    promtool(&["test", "rules", "motley.rules.test.yaml"], &dir);

    // The dashboard's queries, as recording rules, through promtool's parser.
    let text = std::fs::read_to_string(dir.join("grafana-dashboard.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 14, "{exprs:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(e).expect("quote")
        ));
    }
    std::fs::write(tmp.path().join("dash.rules.yaml"), rules).expect("write");
    promtool(&["check", "rules", "dash.rules.yaml"], tmp.path());

    // Every metric they name is documented; every metric motley exports is too.
    let api = std::fs::read_to_string(repo_root().join("docs/api.md")).expect("api.md");
    let table = &api[api.find("## Metrics").expect("metrics section")..];
    let documented = metric_names(&table[..table.find("## Agent protocol").unwrap_or(table.len())]);
    let rules_text = std::fs::read_to_string(dir.join("motley.rules.yaml")).expect("rules");
    let named: BTreeSet<String> = metric_names(&rules_text)
        .union(&metric_names(&exprs.join("\n")))
        .cloned()
        .collect();
    let undocumented: Vec<&String> = named.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "named but not documented: {undocumented:?}"
    );

    let c = Cluster::up(&[]);
    let out = c.apply_yaml(
        "web.yaml",
        "kind: Service\nname: web\ntask:\n  command: [sleep, '3600']\n  resources: { cpu: 10m, memory: 8Mi }\n",
    );
    assert!(out.status.success(), "{out:?}");
    let live = wait_for(
        "the service's replica counts in /metrics",
        std::time::Duration::from_secs(30),
        || {
            let text = c.metrics();
            text.contains("motley_service_replicas{").then_some(text)
        },
    );
    let exported = metric_names(
        &live
            .lines()
            .filter(|l| l.starts_with("# TYPE "))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(exported.len() >= 10, "{exported:?}");
    let missing: Vec<&String> = exported.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "exported but not in docs/api.md: {missing:?}"
    );
}

/// Energy per workload (issue 24): with `--watts 10,30` (no RAPL here), a service that
/// keeps a core busy is given energy, one that sleeps next to nothing; `describe`,
/// the workload's JSON and `/metrics` say the same, and no figure exceeds what the
/// whole machine could draw at full load over the time.
#[test]
fn energy_goes_to_the_workloads_that_use_the_cpu() {
    let c = Cluster::up(&["--watts", "10,30"]);
    let started = std::time::Instant::now();
    assert!(c
        .apply_yaml(
            "e.yaml",
            "kind: Service\nname: burn\ntask:\n  command: [sh, -c, 'while :; do :; done']\n  resources: { cpu: 10m, memory: 8Mi }\n  stop_grace: 1s\n---\nkind: Service\nname: rest\ntask:\n  command: [sleep, '3600']\n  resources: { cpu: 10m, memory: 8Mi }\n  stop_grace: 1s\n",
        )
        .status
        .success());
    let joules = |name: &str| -> f64 {
        let v: serde_json::Value = rt().block_on(async {
            let (http, base, token) = c.http();
            let resp = http
                .get(format!("{base}/v1/workloads/service/{name}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("GET the workload");
            assert!(resp.status().is_success(), "{resp:?}");
            resp.json().await.expect("the workload as JSON")
        });
        // The API leaves `energy_mj` out while nothing was given: 0 J, not an error.
        let mj: u64 = match v.get("energy_mj") {
            None => 0,
            Some(m) => m
                .as_object()
                .unwrap_or_else(|| panic!("energy_mj is not a map: {v}"))
                .values()
                .map(|x| x.as_u64().unwrap_or_else(|| panic!("not millijoules: {v}")))
                .sum(),
        };
        mj as f64 / 1000.0
    };
    let burn = wait_for("burn given energy", Duration::from_secs(60), || {
        Some(joules("burn")).filter(|j| *j > 1.0)
    });
    let rest = joules("rest");
    assert!(rest * 10.0 < burn, "rest {rest} J, burn {burn} J");
    let most = 30.0 * started.elapsed().as_secs_f64();
    assert!(
        burn <= most,
        "burn {burn} J is more than the machine's {most} J"
    );
    let d = c.ok(&["describe", "service", "burn"]);
    eprintln!("{d}");
    assert!(
        d.contains("Energy:") && d.contains("(estimated from the nodes' power models)"),
        "{d}"
    );
    let m = c.metrics();
    let line = m
        .lines()
        .find(|l| {
            l.starts_with("motley_workload_energy_joules{")
                && l.contains("workload=\"service/burn\"")
        })
        .unwrap_or_else(|| panic!("no energy metric for burn:\n{m}"));
    let value: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {line}"));
    assert!(value > 1.0, "{line}");
}
