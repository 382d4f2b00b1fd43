//! Namespaces (issue 22): names are unique per namespace, a task's Secrets are its
//! namespace's, quotas refuse a set at the field, tokens limited to namespaces are
//! refused everywhere else, and every refusal is in the audit log.

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

const SLEEPER: &str = "kind: Secret\nname: db\ndata: { password: VALUE }\n---\n\
kind: Service\nname: web\nreplicas: 1\ntask:\n  command: [sleep, '3600']\n  resources: { cpu: 100m, memory: 64Mi }\n  secrets:\n    - { secret: db, key: password, env: DB_PASSWORD }\n";

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `motley ARGS` with `token` instead of the config's.
fn as_token(c: &Cluster, token: &str, args: &[&str]) -> Output {
    Command::new(motley_bin())
        .arg("--config")
        .arg(c.config())
        .args(args)
        .env("MOTLEY_TOKEN", token)
        .env_remove("MOTLEY_NAMESPACE")
        .output()
        .expect("run motley")
}

fn refused(o: &Output, says: &str) {
    let (out, err) = text(o);
    assert!(!o.status.success(), "expected a refusal, got: {out}");
    assert!(err.contains(says), "expected {says:?} in: {err}");
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|w| {
            format!(
                "{}/{}",
                w["workload"]["spec"]["namespace"]
                    .as_str()
                    .unwrap_or("default"),
                w["workload"]["spec"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no name: {w}"))
            )
        })
        .collect()
}

#[test]
fn namespaces_isolate_names_secrets_tokens_and_quotas_and_refusals_are_audited() {
    let c = Cluster::up(&[]);
    let ns = "kind: Namespace\nname: dev\nquota: { cpu: 500m, memory: 1Gi, allocations: 2 }\n";
    let out = c.apply_yaml("ns.yaml", ns);
    assert!(out.status.success(), "{:?}", text(&out));

    // Into a namespace that does not exist: refused at the field, nothing applied.
    let path = c.dir.path().join("app.yaml");
    let p = path.to_str().expect("utf-8");
    std::fs::write(&path, SLEEPER.replace("VALUE", "in-default")).expect("write");
    refused(
        &c.cli(&["apply", "-n", "nope", "-f", p]),
        "namespace nope does not exist",
    );
    assert!(names(&c.json(&["get", "services", "-A"])).is_empty());

    // The same names in default and in dev: two services, two secrets.
    c.ok(&["apply", "-f", p]);
    std::fs::write(&path, SLEEPER.replace("VALUE", "in-dev")).expect("write");
    let applied = c.ok(&["apply", "-n", "dev", "-f", p]);
    assert!(applied.contains("dev/service/web created"), "{applied}");
    assert_eq!(names(&c.json(&["get", "services"])), ["default/web"]);
    assert_eq!(
        names(&c.json(&["get", "services", "-n", "dev"])),
        ["dev/web"]
    );
    assert_eq!(
        names(&c.json(&["get", "services", "-A"])),
        ["default/web", "dev/web"]
    );
    let wide = c.ok(&["get", "services", "-A"]);
    assert!(wide.starts_with("NAMESPACE"), "{wide}");

    // Each task has its own namespace's secret.
    let pid_of = |c: &Cluster, ns: &str| {
        wait_for(
            &format!("{ns}/service/web running"),
            Duration::from_secs(60),
            || {
                let v = c.json(&["get", "allocs", "-n", ns]);
                v.as_array()?.iter().find_map(|a| {
                    (a["state"] == "running")
                        .then(|| a["pid"].as_u64())
                        .flatten()
                })
            },
        ) as u32
    };
    let (p_default, p_dev) = (pid_of(&c, "default"), pid_of(&c, "dev"));
    let env = |pid: u32, name: &str| {
        environ(pid)
            .into_iter()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    assert_eq!(env(p_default, "DB_PASSWORD").as_deref(), Some("in-default"));
    assert_eq!(env(p_dev, "DB_PASSWORD").as_deref(), Some("in-dev"));
    assert_eq!(env(p_dev, "MOTLEY_NAMESPACE").as_deref(), Some("dev"));
    assert_eq!(
        env(p_default, "MOTLEY_NAMESPACE").as_deref(),
        Some("default")
    );
    let dev_allocs = c.json(&["get", "allocs", "-n", "dev"]);
    assert!(
        dev_allocs
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|x| x["workload"] == "dev/service/web")),
        "{dev_allocs}"
    );

    // The quota: 3 × 100m fits cpu but 3 allocations do not; refused at `replicas`
    // with the file, line and column, and nothing changes.
    std::fs::write(
        &path,
        SLEEPER
            .replace("VALUE", "in-dev")
            .replace("replicas: 1", "replicas: 3"),
    )
    .expect("write");
    let out = c.cli(&["apply", "-n", "dev", "-f", p]);
    refused(
        &out,
        "app.yaml:7:11: replicas: namespace dev would exceed its quota",
    );
    refused(&out, "allocations 3 of 2");
    let dev = c.json(&["get", "services", "web", "-n", "dev"]);
    assert_eq!(dev[0]["workload"]["spec"]["replicas"], 1, "{dev}");
    // In default there is no quota.
    c.ok(&["apply", "-f", p]);

    // A token limited to dev.
    let token = c
        .ok(&["token", "create", "--role", "admin", "--namespaces", "dev"])
        .trim()
        .to_string();
    let ok = |args: &[&str]| {
        let o = as_token(&c, &token, args);
        assert!(o.status.success(), "{args:?}: {:?}", text(&o));
        text(&o).0
    };
    assert!(ok(&["get", "services", "-n", "dev"]).contains("web"));
    let job = c.dir.path().join("job.yaml");
    std::fs::write(&job, "kind: Job\nname: once\ntask:\n  command: ['true']\n  resources: { cpu: 100m, memory: 32Mi }\n")
        .expect("write");
    let j = job.to_str().expect("utf-8");
    let plan: serde_json::Value =
        serde_json::from_str(&ok(&["plan", "-n", "dev", "-f", j, "-o", "json"]))
            .expect("plan JSON");
    let placed = plan["placements"].as_array().expect("placements");
    assert!(
        !placed.is_empty() && placed.iter().all(|p| p["workload"] == "dev/job/once"),
        "{plan}"
    );
    assert!(ok(&["apply", "-n", "dev", "-f", j]).contains("dev/job/once created"));
    let default_alloc = c
        .json(&["get", "allocs"])
        .as_array()
        .and_then(|a| a.first()?["id"].as_str().map(str::to_string))
        .expect("an allocation in default, with an id");
    let refusals: [(&[&str], &str); 7] = [
        (&["get", "services"], "may not reach namespace default"),
        (&["get", "services", "-A"], "must name one"),
        (&["get", "nodes"], "cluster-wide"),
        (
            &["delete", "service/web"],
            "may not reach namespace default",
        ),
        (
            &["get", "secret", "db", "--reveal"],
            "may not reach namespace default",
        ),
        (
            &["get", "allocs", &default_alloc, "-n", "dev"],
            "is not in namespace dev",
        ),
        (&["apply", "-f", j], "must name one"),
    ];
    for (args, says) in refusals {
        refused(&as_token(&c, &token, args), says);
    }
    // It cannot make or change a namespace (its quota) either.
    std::fs::write(&path, ns.replace("allocations: 2", "allocations: 200")).expect("write");
    refused(
        &as_token(&c, &token, &["apply", "-n", "dev", "-f", p]),
        "cluster-wide",
    );
    let quota = c.json(&["get", "namespace", "dev"]);
    assert_eq!(
        quota[0]["workload"]["spec"]["quota"]["allocations"], 2,
        "{quota}"
    );
    // Nothing changed in default: still one service named web, not deleted.
    assert_eq!(names(&c.json(&["get", "services"])), ["default/web"]);

    // Every refusal is in the audit log, with who it was.
    let audit = c.json(&["get", "audit"]);
    let theirs: Vec<&serde_json::Value> = audit
        .as_array()
        .expect("audit list")
        .iter()
        .filter(|e| {
            e["who"]
                .as_str()
                .is_some_and(|w| w.contains("(admin in dev)"))
        })
        .collect();
    assert!(theirs.len() >= 7, "{audit}");
    assert!(theirs.iter().all(|e| e["status"] == 403), "{audit}");
    for says in [
        "may not reach namespace default",
        "cluster-wide",
        "is not in namespace dev",
    ] {
        assert!(
            theirs
                .iter()
                .any(|e| e["why"].as_str().is_some_and(|w| w.contains(says))),
            "no audited refusal saying {says:?}: {audit}"
        );
    }

    // A namespace that holds objects is not deleted; an empty one is.
    refused(&c.cli(&["delete", "namespace/dev"]), "holds");
    for target in ["service/web", "secret/db", "job/once"] {
        c.ok(&["delete", "-n", "dev", target]);
    }
    c.ok(&["delete", "namespace/dev"]);
    assert!(names(&c.json(&["get", "namespaces"])).is_empty());
}
