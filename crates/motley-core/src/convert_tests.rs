use std::path::PathBuf;

use super::*;
use crate::model::{Kind, Spec};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Reads beside a fixture; the environment is the test's own map.
struct At {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

impl Reader for At {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.dir.join(path)).map_err(|e| e.to_string())
    }
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn absolute(&self, path: &str) -> Option<String> {
        let p = path.trim_start_matches("./").trim_end_matches('/');
        Some(if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/srv/app/{p}")
        })
    }
}

fn compose(app: &str) -> (String, Result<Translation, Vec<ManifestError>>) {
    let dir = fixtures().join("compose").join(app);
    let text = std::fs::read_to_string(dir.join("compose.yaml")).expect("fixture");
    let at = At {
        dir,
        env: BTreeMap::new(),
    };
    let t = translate(&format!("{app}/compose.yaml"), &text, &at);
    (text, t)
}

fn object<'a>(t: &'a Translation, kind: Kind, name: &str) -> &'a Spec {
    t.objects
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {:?}", names(t)))
}

fn names(t: &Translation) -> Vec<String> {
    t.objects
        .iter()
        .map(|o| format!("{}/{}", o.kind(), o.name()))
        .collect()
}

fn warned(t: &Translation, field: &str, says: &str) -> bool {
    t.warnings
        .iter()
        .any(|w| w.field == field && w.message.contains(says))
}

/// The keys every service of the ten fixtures uses that are translated in full (the
/// rest must be warned about or refused, at their field).
const MAPPED: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "configs",
    "secrets",
    "healthcheck",
    "restart",
    "deploy",
    "depends_on",
    "working_dir",
    "labels",
    "network_mode",
    "stop_grace_period",
    "user",
];

const APPS: [&str; 10] = [
    "uptime-kuma",
    "vaultwarden",
    "nextcloud",
    "gitea",
    "home-assistant",
    "jellyfin",
    "paperless-ngx",
    "pihole",
    "prometheus-grafana",
    "traefik-whoami",
];

#[test]
fn every_key_of_ten_real_compose_files_is_translated_warned_or_refused() {
    let mut refused = Vec::new();
    for app in APPS {
        let (text, t) = compose(app);
        let notes: Vec<ManifestError> = match &t {
            Ok(t) => t.warnings.clone(),
            Err(e) => {
                refused.push(app);
                // Without what was refused, the rest translates, every other key
                // accounted for by a warning.
                let mut lines: Vec<&str> = text.lines().collect();
                for err in e.iter().rev() {
                    let first = err.line as usize - 1;
                    let indent = lines[first].len() - lines[first].trim_start().len();
                    let mut end = first + 1;
                    while end < lines.len()
                        && lines[end].len() - lines[end].trim_start().len() > indent
                    {
                        end += 1;
                    }
                    lines.drain(first..end);
                }
                let rest = lines.join("\n");
                let at = At {
                    dir: fixtures().join("compose").join(app),
                    env: BTreeMap::new(),
                };
                let again = translate(app, &rest, &at)
                    .unwrap_or_else(|e| panic!("{app} without its refusals: {e:?}"));
                e.iter().cloned().chain(again.warnings).collect()
            }
        };
        let root = crate::manifest::tree_of(&text).expect("YAML");
        let services = root.get("services").expect("services");
        for (svc, body) in entries(services) {
            for (key, node) in entries(body) {
                let field = format!("services.{svc}.{key}");
                let noted = notes.iter().any(|n| n.field.starts_with(&field));
                assert!(
                    MAPPED.contains(&key.as_str()) || noted,
                    "{app}: {field} neither translated nor warned about nor refused"
                );
                if noted && !MAPPED.contains(&key.as_str()) {
                    let n = notes
                        .iter()
                        .find(|n| n.field.starts_with(&field))
                        .expect("noted");
                    assert_eq!(
                        (n.line, n.column),
                        (node.line, node.column),
                        "{app}: {field} is noted where it is written: {n}"
                    );
                }
            }
        }
        for (key, node) in entries(&root) {
            let known = [
                "services", "volumes", "configs", "secrets", "version", "name",
            ];
            assert!(
                known.contains(&key.as_str()) || notes.iter().any(|n| n.field == *key),
                "{app}: top-level {key} at {}:{} unaccounted",
                node.line,
                node.column
            );
        }
    }
    // Two of the ten ask for what motley refuses to give a container.
    assert_eq!(refused, ["home-assistant", "pihole"]);
}

#[test]
fn what_motley_refuses_is_said_with_file_line_column_and_what_to_do() {
    let (_, t) = compose("home-assistant");
    let e = t.expect_err("privileged is refused");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].file, "home-assistant/compose.yaml");
    assert_eq!(
        (e[0].line, e[0].column, e[0].field.as_str()),
        (10, 17, "services.homeassistant.privileged")
    );
    assert!(e[0].message.contains("not supported"), "{}", e[0]);
    let (_, t) = compose("pihole");
    let e = t.expect_err("cap_add is refused");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].field, "services.pihole.cap_add");
    assert_eq!(e[0].line, 16);
    assert!(e[0].message.contains("capabilities"), "{}", e[0]);
}

#[test]
fn a_simple_app_becomes_a_service_with_its_volume_port_and_route() {
    let (_, t) = compose("uptime-kuma");
    let t = t.expect("translated");
    assert_eq!(names(&t), ["volume/uptime-kuma", "service/uptime-kuma"]);
    let Spec::Service(s) = object(&t, Kind::Service, "uptime-kuma") else {
        panic!("a service")
    };
    assert_eq!(
        s.task.image.as_deref(),
        Some("docker.io/louislam/uptime-kuma:1")
    );
    assert_eq!(s.task.volumes, ["uptime-kuma"]);
    assert_eq!(s.task.mounts[0].path, "/app/data");
    assert_eq!(s.ports[0].service_port, Some(3001));
    assert_eq!(s.ports[0].container_port, Some(3001));
    assert_eq!(s.expose_tcp[0].node_port, 3001);
    assert_eq!(s.task.network, Some(crate::model::NetworkMode::Bridge));
    assert!(warned(&t, "services.uptime-kuma.container_name", "ignored"));
    assert!(warned(&t, "volumes.uptime-kuma", "1Gi"));
}

#[test]
fn commands_environment_env_files_and_interpolation_are_kept() {
    let (_, t) = compose("nextcloud");
    let t = t.expect("translated");
    let Spec::Service(db) = object(&t, Kind::Service, "db") else {
        panic!("a service")
    };
    assert_eq!(
        db.task.args,
        [
            "--transaction-isolation=READ-COMMITTED",
            "--log-bin=binlog",
            "--binlog-format=ROW"
        ]
    );
    assert_eq!(db.task.env["MYSQL_DATABASE"], "nextcloud");
    assert_eq!(
        db.task.image.as_deref(),
        Some("docker.io/library/mariadb:10.6")
    );
    assert!(warned(&t, "services.app.links", "by its name"));
    let (_, t) = compose("paperless-ngx");
    let t = t.expect("translated");
    let Spec::Service(web) = object(&t, Kind::Service, "webserver") else {
        panic!("a service")
    };
    // From the env file, and the service's own environment over it.
    assert_eq!(web.task.env["PAPERLESS_TIME_ZONE"], "Europe/Berlin");
    assert_eq!(web.task.env["PAPERLESS_DBHOST"], "db");
    assert!(!web.task.env.contains_key("USERMAP_UID"), "a comment");
    assert_eq!(web.depends_on, ["db", "broker"]);
    let (_, t) = compose("prometheus-grafana");
    let t = t.expect("translated");
    let Spec::Service(g) = object(&t, Kind::Service, "grafana") else {
        panic!("a service")
    };
    assert_eq!(g.task.env["GF_SECURITY_ADMIN_PASSWORD"], "grafana");
    assert_eq!(g.depends_on, ["prometheus"]);
    let Spec::Service(p) = object(&t, Kind::Service, "prometheus") else {
        panic!("a service")
    };
    let check = p.check.as_ref().expect("a check");
    assert_eq!(
        check.exec,
        ["wget", "-q", "--spider", "http://localhost:9090/-/healthy"]
    );
    assert_eq!(check.interval.as_millis(), 10_000);
    assert_eq!(
        p.task.configs[0].file.as_deref(),
        Some("/etc/prometheus/prometheus.yml")
    );
    let Spec::Config(c) = object(&t, Kind::Config, "prometheus-config") else {
        panic!("a config")
    };
    assert_eq!(
        c.data["content"].from_file.as_deref(),
        Some("./prometheus.yml")
    );
}

#[test]
fn bind_mounts_host_networks_and_traefik_labels() {
    let (_, t) = compose("jellyfin");
    let t = t.expect("translated");
    let Spec::Service(j) = object(&t, Kind::Service, "jellyfin") else {
        panic!("a service")
    };
    assert_eq!(j.task.network, None, "network_mode: host");
    let media2 = j
        .task
        .mounts
        .iter()
        .find(|m| m.path == "/media2")
        .expect("media2");
    assert_eq!(media2.host_path.as_deref(), Some("/path/to/media2"));
    assert!(media2.read_only);
    assert_eq!(j.task.user.as_deref(), Some("1000:1000"));
    assert!(warned(
        &t,
        "services.jellyfin.volumes[0]",
        "pins the service"
    ));
    let (_, t) = compose("vaultwarden");
    let t = t.expect("translated");
    let Spec::Service(v) = object(&t, Kind::Service, "vaultwarden") else {
        panic!("a service")
    };
    assert_eq!(
        v.task.mounts[0].host_path.as_deref(),
        Some("/srv/app/vw-data")
    );
    assert_eq!(v.expose_tcp[0].node_port, 8000);
    assert!(warned(&t, "services.vaultwarden.ports[0]", "host address"));
    let (_, t) = compose("traefik-whoami");
    let t = t.expect("translated");
    let Spec::Service(w) = object(&t, Kind::Service, "whoami") else {
        panic!("a service")
    };
    assert_eq!(w.expose.len(), 1);
    assert_eq!(w.expose[0].host, "whoami.docker.localhost");
    assert_eq!(w.ports[0].container_port, Some(80));
    assert!(
        w.labels.is_empty(),
        "traefik labels are consumed: {:?}",
        w.labels
    );
    let Spec::Service(proxy) = object(&t, Kind::Service, "reverse-proxy") else {
        panic!("a service")
    };
    assert_eq!(
        proxy.task.args,
        ["--api.insecure=true", "--providers.docker"]
    );
    assert!(warned(&t, "services.reverse-proxy.ports[0]", "ingress"));
}

#[test]
fn traefik_rules_deploy_and_swarm_constraints() {
    let text = "services:\n  app:\n    image: registry.home.arpa:5000/app:2\n    ports: [\"8080\"]\n    labels:\n      traefik.enable: \"true\"\n      traefik.http.routers.app.rule: Host(`a.home.arpa`) || Host(`b.home.arpa`) && PathPrefix(`/api`)\n      traefik.http.routers.app.tls.certresolver: le\n      traefik.http.services.app.loadbalancer.server.port: \"8080\"\n      traefik.http.routers.app.middlewares: auth\n      com.example.team: infra\n    deploy:\n      replicas: 3\n      resources:\n        limits: { cpus: '0.5', memory: 32M }\n        reservations:\n          devices:\n            - { driver: nvidia, count: 1, capabilities: [gpu] }\n      placement:\n        constraints: [node.labels.disk == ssd, node.platform.arch == aarch64]\n      update_config: { parallelism: 2, failure_action: rollback }\n";
    let at = At {
        dir: PathBuf::from("/nonexistent"),
        env: BTreeMap::new(),
    };
    let t = translate("c.yml", text, &at).expect("translated");
    let Spec::Service(s) = object(&t, Kind::Service, "app") else {
        panic!("a service")
    };
    assert_eq!(
        s.task.image.as_deref(),
        Some("registry.home.arpa:5000/app:2")
    );
    assert_eq!(s.replicas, 3);
    let hosts: Vec<(&str, &str, bool)> = s
        .expose
        .iter()
        .map(|e| (e.host.as_str(), e.path.as_str(), e.tls.is_some()))
        .collect();
    assert_eq!(
        hosts,
        [("a.home.arpa", "/api", true), ("b.home.arpa", "/api", true)]
    );
    assert_eq!(
        s.labels.get("com.example.team").map(String::as_str),
        Some("infra")
    );
    let limits = s.task.limits.as_ref().expect("limits");
    assert_eq!(limits.cpu.map(|c| c.0), Some(500));
    assert_eq!(limits.memory.map(|m| m.0), Some(32 << 20));
    // The request is fitted under the limit (motley's default is 64Mi).
    assert_eq!(s.task.resources.memory.map(|m| m.0), Some(32 << 20));
    assert_eq!(s.task.resources.gpu.as_ref().map(|g| g.count), Some(1));
    assert_eq!(
        s.placement.require.as_deref(),
        Some("disk = ssd, arch = arm64")
    );
    assert_eq!(s.update.max_parallel, 2);
    assert!(s.update.auto_revert);
    assert!(warned(
        &t,
        "services.app.labels.traefik.http.routers.app.middlewares",
        "ignored"
    ));
    assert!(warned(
        &t,
        "services.app.labels.traefik.http.routers.app.tls.certresolver",
        "cluster CA"
    ));
    // A role constraint is refused, with what to do.
    let bad = text.replace("node.labels.disk == ssd", "node.role == manager");
    let e = translate("c.yml", &bad, &at).expect_err("refused");
    assert!(e[0].message.contains("label the nodes"), "{}", e[0]);
    assert_eq!(e[0].field, "services.app.deploy.placement.constraints[0]");
}

#[test]
fn interpolation_follows_compose() {
    let env: BTreeMap<String, String> = [
        ("A".to_string(), "1".to_string()),
        ("E".to_string(), String::new()),
    ]
    .into();
    let look = |k: &str| env.get(k).cloned();
    let s = |t: &str| compose::substitute(t, &look);
    assert_eq!(s("$A ${A} $$A"), Ok(("1 1 $A".into(), vec![])));
    assert_eq!(s("${B:-x} ${E:-y} ${E-z}"), Ok(("x y ".into(), vec![])));
    assert_eq!(s("${B}"), Ok(("".into(), vec!["B".into()])));
    assert!(s("${B:?needed}").is_err_and(|m| m.contains("needed")));
    assert_eq!(s("${A:+set}${B:+set}"), Ok(("set".into(), vec![])));
    assert_eq!(
        split_words("a 'b c' \"d \\\"e\\\"\" f\\ g"),
        Ok(vec![
            "a".into(),
            "b c".into(),
            "d \"e\"".into(),
            "f g".into()
        ])
    );
    assert_eq!(duration_ms("1m30s"), Some(90_000));
    assert_eq!(duration_ms("1.5s"), Some(1500));
    assert_eq!(compose_bytes("512m"), Some(512 << 20));
    assert_eq!(compose_bytes("1gb"), Some(1 << 30));
}

fn kube(file: &str) -> Result<Translation, Vec<ManifestError>> {
    let path = fixtures().join("kubernetes").join(file);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let at = At {
        dir: fixtures(),
        env: BTreeMap::new(),
    };
    translate(file, &text, &at)
}

#[test]
fn a_helm_rendered_app_becomes_motley_objects_in_any_order() {
    let t = kube("home-app.yaml").expect("translated");
    assert_eq!(t.format, "kubernetes");
    assert!(t.native.is_none());
    let mut got = names(&t);
    got.sort();
    assert_eq!(
        got,
        [
            "config/wiki-config",
            "daemon/node-exporter",
            "job/db-backup",
            "job/db-migrate",
            "namespace/home",
            "secret/db-credentials",
            "secret/wiki-tls",
            "service/db",
            "service/wiki",
            "volume/backups",
            "volume/data-db",
        ]
    );
    assert!(
        t.objects
            .iter()
            .all(|o| o.kind() == Kind::Namespace || o.namespace() == "home")
    );
    let Spec::Service(wiki) = object(&t, Kind::Service, "wiki") else {
        panic!("a service")
    };
    assert_eq!(wiki.replicas, 2);
    assert_eq!(wiki.placement.require.as_deref(), Some("arch = arm64"));
    let web = &wiki.ports[0];
    assert_eq!(
        (web.name.as_str(), web.service_port, web.container_port),
        ("web", Some(80), Some(3000))
    );
    let check = wiki
        .check
        .as_ref()
        .and_then(|c| c.http.as_ref())
        .expect("http check");
    assert_eq!(
        (check.port.as_str(), check.path.as_str()),
        ("web", "/healthz")
    );
    assert_eq!(wiki.expose[0].host, "wiki.home.arpa");
    assert_eq!(wiki.expose[0].port, "web");
    assert_eq!(
        wiki.expose[0]
            .tls
            .as_ref()
            .and_then(|t| t.secret.as_deref()),
        Some("wiki-tls")
    );
    let cfg = &wiki.task.configs;
    assert!(
        cfg.iter()
            .any(|c| c.key == "mode" && c.env.as_deref() == Some("WIKI_MODE"))
    );
    assert!(
        cfg.iter()
            .any(|c| c.key == "config.yml" && c.file.as_deref() == Some("/wiki/config/config.yml"))
    );
    assert!(
        wiki.task
            .secrets
            .iter()
            .any(|s| s.key == "password" && s.env.as_deref() == Some("DB_PASS"))
    );
    let Spec::Service(db) = object(&t, Kind::Service, "db") else {
        panic!("a service")
    };
    assert_eq!(db.on_node_loss, Some(crate::model::NodeLoss::Fence));
    assert_eq!(db.task.volumes, ["data-db"]);
    assert_eq!(db.task.mounts[0].volume.as_deref(), Some("data-db"));
    assert_eq!(db.ports[0].service_port, Some(5432));
    assert_eq!(
        db.check.as_ref().map(|c| c.exec.clone()),
        Some(vec!["pg_isready".into(), "-U".into(), "wiki".into()])
    );
    let Spec::Job(backup) = object(&t, Kind::Job, "db-backup") else {
        panic!("a job")
    };
    assert_eq!(backup.schedule.as_deref(), Some("30 3 * * *"));
    assert_eq!(backup.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(backup.concurrency, crate::model::Concurrency::Forbid);
    assert_eq!(backup.history, Some(5));
    assert_eq!(backup.retries, 2);
    assert_eq!(backup.task.volumes, ["backups"]);
    let Spec::Job(migrate) = object(&t, Kind::Job, "db-migrate") else {
        panic!("a job")
    };
    assert_eq!(migrate.retries, 4);
    assert_eq!(
        migrate.ttl_after_finished.map(|d| d.as_millis()),
        Some(3_600_000)
    );
    let Spec::Daemon(ne) = object(&t, Kind::Daemon, "node-exporter") else {
        panic!("a daemon")
    };
    assert_eq!(ne.task.network, Some(crate::model::NetworkMode::Host));
    assert_eq!(ne.task.mounts[0].host_path.as_deref(), Some("/"));
    assert_eq!(ne.placement.tolerations[0].key, "motley.io/undervoltage");
    let Spec::Secret(s) = object(&t, Kind::Secret, "db-credentials") else {
        panic!("a secret")
    };
    assert_eq!(s.data["password"].value.as_deref(), Some("hunter2"));
    assert_eq!(s.data["user"].value.as_deref(), Some("wiki"));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.field == "spec.clusterIP" && w.message.contains("headless"))
    );
}

#[test]
fn rbac_and_custom_resources_are_refused_with_what_motley_does_instead() {
    let e = kube("rbac.yaml").expect_err("refused");
    let said: Vec<(u64, &str)> = e.iter().map(|e| (e.line, e.message.as_str())).collect();
    assert_eq!(e.len(), 3, "{said:#?}");
    assert_eq!(e[0].line, 3);
    assert!(e[0].message.contains("motley token create"), "{}", e[0]);
    assert!(e[1].message.contains("RBAC"), "{}", e[1]);
    assert_eq!(e[2].line, 19);
    assert!(e[2].message.contains("custom resources"), "{}", e[2]);
}

#[test]
fn motley_documents_beside_kubernetes_ones_keep_their_lines() {
    let t = kube("mixed.yaml").expect("translated");
    assert_eq!(names(&t), ["config/echo-config"]);
    let native = t.native.as_deref().expect("motley documents");
    let docs = crate::manifest::parse_set(&[crate::manifest::Source {
        name: "mixed.yaml",
        text: native,
    }])
    .expect("the motley part parses");
    let lines: Vec<(String, u64)> = docs
        .iter()
        .map(|d| (d.spec.name().to_string(), d.line))
        .collect();
    assert_eq!(lines, [("echo".to_string(), 2), ("once".to_string(), 16)]);
}

#[test]
fn what_convert_prints_parses_to_the_same_objects() {
    for app in APPS {
        let (_, t) = compose(app);
        let Ok(t) = t else { continue };
        let yaml = t.text.clone();
        let docs = crate::manifest::parse_set(&[crate::manifest::Source {
            name: "out.yaml",
            text: &yaml,
        }])
        .unwrap_or_else(|e| panic!("{app}: {e:?}\n{yaml}"));
        let back: Vec<&Spec> = docs.iter().map(|d| &d.spec).collect();
        let objects: Vec<&Spec> = t.objects.iter().collect();
        assert_eq!(back, objects, "{app}");
    }
}
