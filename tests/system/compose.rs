//! Bringing apps as they are: a docker-compose.yml applied with `motley apply -f`, its
//! images busybox stand-ins built here and served by a real registry, run by a real
//! containerd; and what `motley convert` prints applied again changes nothing.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::*;
use crate::containers::{ONE_AT_A_TIME, parts, runtime};

/// `GET path` on 127.0.0.1:`port` with `Host: host`: the whole response.
fn get(port: u16, host: &str, path: &str) -> Option<String> {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn a_compose_file_runs_with_its_config_volume_start_order_and_routes_and_converts_to_the_same_objects()
 {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, registry, arch) = runtime(dir.path());
    let db_image = parts::push_busybox(dir.path(), &registry.host, "stand-in/postgres:16", &arch);
    let app_image = parts::push_busybox(dir.path(), &registry.host, "stand-in/app:1", &arch);
    let socket = daemon.socket.display().to_string();
    let ingress = free_port();
    let ingress_addr = format!("127.0.0.1:{ingress}");
    let node_port = free_port();
    let c = Cluster::up(&[
        "--containerd",
        socket.as_str(),
        "--insecure-registry",
        registry.host.as_str(),
        "--ingress-listen",
        ingress_addr.as_str(),
    ]);
    let app_dir = dir.path().join("app");
    std::fs::create_dir_all(&app_dir).expect("app dir");
    std::fs::write(
        app_dir.join("app.ini"),
        "[server]\nmode = from-a-compose-config\n",
    )
    .expect("app.ini");
    std::fs::write(app_dir.join(".env"), "APP_MODE=staging\n").expect(".env");
    let compose = format!(
        r#"name: shop
services:
  db:
    image: {db_image}
    container_name: shop-db
    # The stand-in's entrypoint is /bin/sh: the command is its arguments, as Compose
    # gives them.
    command: ["-c", "exec /bin/httpd -f -p 5432 -h /www"]
    volumes:
      - dbdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:5432/"]
      interval: 1s
      timeout: 1s
      retries: 3
    expose: ["5432"]
    restart: unless-stopped
  app:
    image: {app_image}
    command: -c 'exec /bin/httpd -f -p 8080 -h /etc/app'
    user: "1000:1000"
    depends_on:
      db:
        condition: service_healthy
    configs:
      - source: app_ini
        target: /etc/app/app.ini
    environment:
      MODE: ${{APP_MODE:-production}}
    ports:
      - "{node_port}:8080"
    labels:
      - traefik.enable=true
      - traefik.http.routers.app.rule=Host(`app.test`)
      - traefik.http.services.app.loadbalancer.server.port=8080
    networks: [shop]
networks:
  shop: {{}}
configs:
  app_ini:
    file: ./app.ini
volumes:
  dbdata: {{}}
"#
    );
    let file = app_dir.join("compose.yaml");
    std::fs::write(&file, &compose).expect("compose.yaml");
    let file = file.display().to_string();
    let out = c.cli(&["apply", "-f", &file]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{out:?}");
    // Warned, with where: what motley does not need or keep.
    assert!(
        stderr.contains("compose.yaml:5:21: services.db.container_name: ignored"),
        "{stderr}"
    );
    assert!(stderr.contains("services.app.networks"), "{stderr}");
    let applied = String::from_utf8_lossy(&out.stdout).to_string();
    for object in [
        "volume/dbdata",
        "config/app-ini",
        "service/db",
        "service/app",
    ] {
        assert!(applied.contains(object), "{object} applied: {applied}");
    }

    // The app waited for a healthy db, then serves its Config file through the
    // ingress (its Traefik rule) and through its published port (a TCP route).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let through_ingress = loop {
        if let Some(b) = get(ingress, "app.test", "/app.ini").filter(|b| b.contains(" 200 ")) {
            break b;
        }
        if std::time::Instant::now() > deadline {
            let said: Vec<String> = [
                ["describe", "service", "db"],
                ["describe", "service", "app"],
            ]
            .iter()
            .map(|a| String::from_utf8_lossy(&c.cli(a).stdout).to_string())
            .collect();
            let logs: Vec<String> = c
                .json(&["get", "allocs"])
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["id"].as_str().map(str::to_string))
                .map(|id| {
                    let out = c.cli(&["logs", "--tail", "20", &id]);
                    format!("{id}: {}", String::from_utf8_lossy(&out.stdout))
                })
                .collect();
            panic!(
                "the app never answered through the ingress ({:?}):\n{}\n{}",
                get(ingress, "app.test", "/app.ini"),
                said.join("\n"),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        through_ingress.contains("mode = from-a-compose-config"),
        "{through_ingress}"
    );
    let published = wait_for(
        "the app on its published port",
        Duration::from_secs(30),
        || get(node_port, "x", "/app.ini").filter(|b| b.contains(" 200 ")),
    );
    assert!(
        published.contains("mode = from-a-compose-config"),
        "{published}"
    );
    let allocs = c.json(&["get", "allocs"]);
    let list = allocs.as_array().expect("allocations are a list");
    let find = |w: &str| {
        list.iter()
            .find(|a| a["workload"] == w && a["state"] == "running")
            .unwrap_or_else(|| panic!("{w} runs: {allocs}"))
    };
    let (db, app) = (find("service/db"), find("service/app"));
    let db_ready = db["ready_at"].as_u64().expect("db became ready");
    let app_created = app["created_at"].as_u64().expect("created_at");
    assert!(
        app_created >= db_ready,
        "the app was placed ({app_created}) only once the db was healthy ({db_ready})"
    );
    // Compose's numeric user: the container's process runs as it.
    let pid = app["pid"].as_u64().expect("the app's pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert_eq!(uid.split_whitespace().nth(1), Some("1000"), "{uid}");
    assert_eq!(
        app["task"]["env"]["MODE"], "staging",
        "${{APP_MODE:-production}} from .env: {app}"
    );
    let volumes = String::from_utf8_lossy(&c.cli(&["get", "volumes"]).stdout).to_string();
    assert!(
        volumes
            .lines()
            .any(|l| l.starts_with("dbdata") && l.contains("bound")),
        "{volumes}"
    );

    // What `convert` prints is what was applied: applied again, nothing changes.
    let converted = c.cli(&["convert", "-f", &file]);
    assert!(converted.status.success(), "{converted:?}");
    let yaml = String::from_utf8_lossy(&converted.stdout).to_string();
    assert!(
        yaml.contains("kind: Service") && yaml.contains("host: app.test"),
        "{yaml}"
    );
    let again_file = app_dir.join("converted.yaml");
    std::fs::write(&again_file, &yaml).expect("converted.yaml");
    let again = c.cli(&["apply", "-f", again_file.to_str().expect("path")]);
    assert!(again.status.success(), "{again:?}");
    let said = String::from_utf8_lossy(&again.stdout).to_string();
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 4, "{said}");
    assert!(lines.iter().all(|l| l.ends_with("unchanged")), "{said}");

    // A refused key: nothing is applied, and the error says where and what to do.
    let bad = compose.replace(
        "    restart: unless-stopped\n",
        "    restart: unless-stopped\n    privileged: true\n",
    );
    std::fs::write(app_dir.join("bad.yaml"), &bad).expect("bad.yaml");
    let refused = c.cli(&[
        "apply",
        "-f",
        app_dir.join("bad.yaml").to_str().expect("path"),
    ]);
    assert!(!refused.status.success(), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        err.contains(
            "bad.yaml:18:17: services.db.privileged: privileged containers are not supported"
        ),
        "{err}"
    );
}

/// Copies a fixture directory (its compose file and the files it names) under `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("fixture dir").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy a fixture file");
    }
}

/// Every image the fixtures name, as `registry/repository:tag` without the registry.
const STAND_INS: &[&str] = &[
    "louislam/uptime-kuma:1",
    "vaultwarden/server:latest",
    "library/mariadb:10.6",
    "library/nextcloud:latest",
    "gitea:1.24.5",
    "library/postgres:14",
    "jellyfin/jellyfin:latest",
    "library/redis:7",
    "library/postgres:17",
    "paperless-ngx/paperless-ngx:latest",
    "prom/prometheus:latest",
    "grafana/grafana:latest",
    "library/traefik:v3.5",
    "traefik/whoami:latest",
    "requarks/wiki:2",
    "library/postgres:16",
    "prometheus/node-exporter:v1.8.2",
];

#[test]
fn ten_real_compose_files_and_a_kubernetes_app_apply_unmodified_with_stand_in_images() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, registry, arch) = runtime(dir.path());
    let first = parts::push_busybox(dir.path(), &registry.host, "stand-in/any:1", &arch);
    // The same busybox under every name the files use (docker.io, ghcr.io, quay.io and
    // docker.gitea.com are mirrored by the local registry: no test reaches the internet).
    for name in STAND_INS {
        let out = std::process::Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg(format!("docker://{first}"))
            .arg(format!("docker://{}/{name}", registry.host))
            .output()
            .expect("skopeo");
        assert!(out.status.success(), "{name}: {out:?}");
    }
    let socket = daemon.socket.display().to_string();
    let mirror = |r: &str| format!("{r}=http://{}", registry.host);
    let mirrors: Vec<String> = ["docker.io", "ghcr.io", "quay.io", "docker.gitea.com"]
        .iter()
        .map(|r| mirror(r))
        .collect();
    let mut args = vec![
        "--containerd",
        socket.as_str(),
        "--insecure-registry",
        registry.host.as_str(),
    ];
    for m in &mirrors {
        args.extend(["--registry-mirror", m.as_str()]);
    }
    let c = Cluster::up(&args);
    let fixtures = repo_root().join("tests/fixtures");
    let refused = ["home-assistant", "pihole"];
    // Every app of the fixtures (ten), by directory.
    let mut apps: Vec<String> = std::fs::read_dir(fixtures.join("compose"))
        .expect("the compose fixtures")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    apps.sort();
    assert_eq!(apps.len(), 10, "{apps:?}");
    for app in &apps {
        let app = app.as_str();
        let here = dir.path().join(app);
        copy_dir(&fixtures.join("compose").join(app), &here);
        // The directories their bind mounts name beside the file, as their users have.
        for d in ["gitea", "postgres", "vw-data", "export", "consume"] {
            std::fs::create_dir_all(here.join(d)).expect("a bind mount's directory");
        }
        let file = here.join("compose.yaml").display().to_string();
        let ns = format!("kind: Namespace\nname: {app}\n");
        assert!(c.apply_yaml("ns.yaml", &ns).status.success());
        let out = c.cli(&["apply", "-n", app, "-f", &file]);
        if refused.contains(&app) {
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(!out.status.success(), "{app} is refused: {out:?}");
            assert!(err.contains("nothing was translated"), "{app}: {err}");
            assert_eq!(
                c.json(&["get", "services", "-n", app])
                    .as_array()
                    .map(Vec::len),
                Some(0),
                "{app}: nothing applied"
            );
            continue;
        }
        assert!(out.status.success(), "{app}: {out:?}");
        // Every service of it is placed and its stand-in image pulled and started (the
        // busybox stand-ins run their default command, so they come and go).
        let services: Vec<String> = c
            .json(&["get", "services", "-n", app])
            .as_array()
            .expect("a list")
            .iter()
            .map(|v| {
                v["workload"]["spec"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{app}: a service without a name: {v}"))
                    .to_string()
            })
            .collect();
        assert!(!services.is_empty(), "{app}: no services");
        // A service whose bind mount names a path this node lacks never starts, and
        // says why (the warning said it pins the service to nodes that have it).
        let missing_path = |s: &str| {
            (app == "jellyfin" && s == "jellyfin")
                || (app == "traefik-whoami"
                    && s == "reverse-proxy"
                    && !std::path::Path::new("/var/run/docker.sock").exists())
        };
        wait_for(
            &format!("{app}'s containers started"),
            Duration::from_secs(120),
            || {
                let allocs = c.json(&["get", "allocs", "-n", app]);
                let list = allocs.as_array()?;
                let views = c.json(&["get", "services", "-n", app]);
                let seen = |s: &String| {
                    // Grafana waits for a healthy Prometheus, whose check (wget) the
                    // stand-in cannot pass: it waits, and says so.
                    if app == "prometheus-grafana" && s == "grafana" {
                        return views.as_array().into_iter().flatten().any(|v| {
                            v["workload"]["spec"]["name"] == "grafana"
                                && v["blocked"]["why"]["summary"]
                                    .as_str()
                                    .is_some_and(|w| w.contains("waiting for service prometheus"))
                        });
                    }
                    list.iter().any(|a| {
                        let reasons = a["reasons"].to_string();
                        a["workload"] == format!("{app}/service/{s}")
                            && if missing_path(s) {
                                reasons.contains("no such path on node")
                            } else {
                                a["state"] == "running" || reasons.contains("exited with code 0")
                            }
                    })
                };
                services.iter().all(seen).then_some(())
            },
        );
        let deleted = c.cli(&["delete", "-n", app, "-f", &file]);
        assert!(deleted.status.success(), "{app}: {deleted:?}");
    }

    // The Kubernetes app: Namespace last, Ingress first, a StatefulSet with its claim,
    // a CronJob; applied as they are.
    let k8s = fixtures
        .join("kubernetes/home-app.yaml")
        .display()
        .to_string();
    let out = c.cli(&["apply", "-f", &k8s]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    for object in [
        "namespace/home",
        "config/wiki-config",
        "secret/db-credentials",
        "volume/data-db",
        "volume/backups",
        "service/db",
        "service/wiki",
        "job/db-backup",
        "job/db-migrate",
        "daemon/node-exporter",
    ] {
        assert!(said.contains(object), "{object}: {said}");
    }
    let jobs = String::from_utf8_lossy(&c.cli(&["get", "jobs", "-n", "home"]).stdout).to_string();
    assert!(
        jobs.lines()
            .any(|l| l.starts_with("db-backup") && l.contains("30 3 * * * (Europe/Berlin)")),
        "{jobs}"
    );
    wait_for(
        "the StatefulSet's volume bound",
        Duration::from_secs(120),
        || {
            let v = String::from_utf8_lossy(&c.cli(&["get", "volumes", "-n", "home"]).stdout)
                .to_string();
            v.lines()
                .any(|l| l.starts_with("data-db") && l.contains("bound"))
                .then_some(())
        },
    );
    // What `convert` prints re-applies to the same objects.
    let converted = c.cli(&["convert", "-f", &k8s]);
    assert!(converted.status.success(), "{converted:?}");
    let again = c.apply_yaml(
        "k8s-converted.yaml",
        &String::from_utf8_lossy(&converted.stdout),
    );
    assert!(again.status.success(), "{again:?}");
    let said = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(
        said.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.ends_with("unchanged")),
        "{said}"
    );
    // RBAC and custom resources: refused, nothing applied.
    let rbac = fixtures.join("kubernetes/rbac.yaml").display().to_string();
    let refused = c.cli(&["apply", "-f", &rbac]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(err.contains("rbac.yaml:3:7: kind: ServiceAccount"), "{err}");
}
