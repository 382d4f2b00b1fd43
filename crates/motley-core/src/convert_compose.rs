//! Compose files: each service becomes a Service (a Daemon with `deploy.mode: global`)
//! running its image on a bridge network; named volumes become Volumes, `configs` and
//! `secrets` become Configs and Secrets, published ports become TCP routes of the
//! ingress, Traefik router labels become `expose` rules. Every key is mapped, warned
//! about or refused (docs/compose.md has the table).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::*;
use crate::model::{ConfigSpec, DaemonSpec, SecretSpec, ServiceSpec, VolumeSpec};

/// Translates one Compose file, parsed (`root`, lines counted from the file's start).
pub(crate) fn translate(
    file: &str,
    mut root: SpanNode,
    reader: &dyn Reader,
) -> Result<Translation, Vec<ManifestError>> {
    let mut notes = Notes::new(file);
    // `${VAR}` in values, from `.env` beside the file, then the client's environment.
    let dotenv = reader
        .read(".env")
        .map(|t| dotenv_vars(&t))
        .unwrap_or_default();
    let lookup = |k: &str| dotenv.get(k).cloned().or_else(|| reader.env(k));
    interpolate(&mut root, &lookup, &mut notes, "");
    let mut c = Compose {
        n: notes,
        reader,
        objects: Vec::new(),
        volumes: BTreeMap::new(),
        configs: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    for (k, v) in entries(&root) {
        match k.as_str() {
            "services" | "volumes" | "configs" | "secrets" => {}
            // Obsolete in the Compose spec, ignored by Compose itself.
            "version" => {}
            "name" => {}
            "networks" => c.n.warn(
                v,
                "networks",
                "ignored: every service reaches every other by its name (NAME, or NAME.motley) from any node, so networks are not needed",
            ),
            x if x.starts_with("x-") => {}
            "include" => c.n.refuse(
                v,
                "include",
                "not supported: convert each included file and apply them together (`motley apply -f a.yml -f b.yml`)",
            ),
            other => c.n.refuse(v, other, format!("unknown top-level key {other:?}")),
        }
    }
    if let Some(v) = root.get("volumes") {
        c.top_volumes(v);
    }
    if let Some(v) = root.get("configs") {
        c.top_files(v, "configs");
    }
    if let Some(v) = root.get("secrets") {
        c.top_files(v, "secrets");
    }
    match root.get("services") {
        Some(s) if !entries(s).is_empty() => {
            for (name, svc) in entries(s) {
                c.service(name, svc);
            }
        }
        Some(s) => c.n.refuse(s, "services", "no services"),
        None => {}
    }
    if !c.n.errors.is_empty() {
        return Err(c.n.errors);
    }
    Ok(Translation {
        objects: c.objects,
        warnings: c.n.warnings,
        format: "compose",
        ..Translation::default()
    })
}

struct Compose<'a> {
    n: Notes<'a>,
    reader: &'a dyn Reader,
    objects: Vec<Spec>,
    /// Declared named volumes: Compose name → motley name (`None`: external).
    volumes: BTreeMap<String, Option<String>>,
    /// Declared configs: Compose name → motley Config name.
    configs: BTreeMap<String, String>,
    /// Declared secrets: Compose name → motley Secret name.
    secrets: BTreeMap<String, String>,
}

/// The ports a service gets from `ports` and `expose`, by container port.
#[derive(Default)]
struct Ports {
    /// Service ports (TCP): name, container port.
    service: Vec<(String, u16)>,
    /// TCP routes of the ingress: port name, node port.
    routes: Vec<(String, u16)>,
    /// Static host ports (UDP): name, node port, container port.
    host: Vec<(String, u16, u16)>,
}

impl Ports {
    fn name_for(&mut self, target: u16) -> String {
        let name = format!("p{target}");
        if !self.service.iter().any(|(n, _)| *n == name) {
            self.service.push((name.clone(), target));
        }
        name
    }
}

impl Compose<'_> {
    fn top_volumes(&mut self, v: &SpanNode) {
        for (name, spec) in entries(v) {
            let field = format!("volumes.{name}");
            let Some(motley) = name_of(name) else {
                self.n.refuse(
                    spec,
                    &field,
                    format!("{name:?} cannot be a motley name (lowercase letters, digits and -)"),
                );
                continue;
            };
            let mut external = false;
            let mut labels = BTreeMap::new();
            for (k, x) in entries(spec) {
                match k.as_str() {
                    "external" => external = text(x) == Some("true"),
                    "labels" => labels = self.labels(x, &format!("{field}.labels")),
                    "driver" | "driver_opts" => self.n.warn(
                        x,
                        &format!("{field}.{k}"),
                        "ignored: a motley volume is a directory on the disk of the node it is bound to (class durable)",
                    ),
                    "name" => self.n.warn(x, &format!("{field}.name"), format!("ignored: the volume is named {motley}")),
                    other => self.n.refuse(x, &format!("{field}.{other}"), "unknown volume key"),
                }
            }
            if external {
                self.volumes.insert(name.clone(), None);
                continue;
            }
            self.n.warn(
                spec,
                &field,
                format!("volume {motley}: Compose gives no size; 1Gi is reserved on the node it binds to (set size to change it)"),
            );
            let vol = build::<VolumeSpec>(obj(vec![
                ("kind", json!("Volume")),
                ("name", json!(motley)),
                (
                    "labels",
                    if labels.is_empty() {
                        Value::Null
                    } else {
                        map_of(&labels)
                    },
                ),
                ("size", json!("1Gi")),
            ]));
            match vol {
                Ok(s) => self.objects.push(Spec::Volume(s)),
                Err(m) => self.n.refuse(spec, &field, m),
            }
            self.volumes.insert(name.clone(), Some(motley));
        }
    }

    /// Top-level `configs` or `secrets`: each a Config (key `content`) or a Secret (key
    /// `value`) whose value is read at apply time.
    fn top_files(&mut self, v: &SpanNode, what: &str) {
        let secret = what == "secrets";
        for (name, spec) in entries(v) {
            let field = format!("{what}.{name}");
            let Some(motley) = name_of(name) else {
                self.n
                    .refuse(spec, &field, format!("{name:?} cannot be a motley name"));
                continue;
            };
            let mut value = None;
            let mut external = false;
            for (k, x) in entries(spec) {
                match (k.as_str(), text(x)) {
                    ("file", Some(f)) => value = Some(json!({"fromFile": f})),
                    ("environment", Some(e)) if secret => value = Some(json!({"fromEnv": e})),
                    ("environment", Some(e)) => match self.reader.env(e) {
                        Some(t) => value = Some(json!(t)),
                        None => self.n.refuse(
                            x,
                            &format!("{field}.environment"),
                            format!("environment variable {e} is not set"),
                        ),
                    },
                    ("content", Some(t)) if !secret => value = Some(json!(t)),
                    ("external", Some(t)) => external = t == "true",
                    ("name", _) => self.n.warn(
                        x,
                        &format!("{field}.name"),
                        format!("ignored: it is named {motley}"),
                    ),
                    ("labels", _) => {}
                    ("template_driver" | "driver" | "driver_opts", _) => self.n.refuse(
                        x,
                        &format!("{field}.{k}"),
                        "drivers are not supported: give file or environment",
                    ),
                    (other, _) => self.n.refuse(
                        x,
                        &format!("{field}.{other}"),
                        format!("unknown {what} key"),
                    ),
                }
            }
            if secret {
                self.secrets.insert(name.clone(), motley.clone());
            } else {
                self.configs.insert(name.clone(), motley.clone());
            }
            if external {
                // It must exist in the cluster: the apply checks every reference.
                continue;
            }
            let Some(value) = value else {
                self.n
                    .refuse(spec, &field, "give file, environment or content");
                continue;
            };
            let key = if secret { "value" } else { "content" };
            let kind = if secret { "Secret" } else { "Config" };
            let o = obj(vec![
                ("kind", json!(kind)),
                ("name", json!(motley)),
                ("data", json!({ key: value })),
            ]);
            let built = if secret {
                build::<SecretSpec>(o).map(Spec::Secret)
            } else {
                build::<ConfigSpec>(o).map(Spec::Config)
            };
            match built {
                Ok(s) => self.objects.push(s),
                Err(m) => self.n.refuse(spec, &field, m),
            }
        }
    }

    fn labels(&mut self, v: &SpanNode, field: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &v.value {
            SpanValue::Map(e) => {
                for (k, x) in e {
                    out.insert(k.clone(), text(x).unwrap_or_default().to_string());
                }
            }
            SpanValue::Seq(items) => {
                for i in items {
                    let t = text(i).unwrap_or_default();
                    let (k, val) = t.split_once('=').unwrap_or((t, ""));
                    out.insert(k.to_string(), val.to_string());
                }
            }
            _ => self
                .n
                .refuse(v, field, "expected a map or a list of KEY=VALUE"),
        }
        out
    }

    fn service(&mut self, compose_name: &str, svc: &SpanNode) {
        let at = |k: &str| format!("services.{compose_name}.{k}");
        let Some(name) = name_of(compose_name) else {
            self.n.refuse(
                svc,
                &format!("services.{compose_name}"),
                format!(
                    "{compose_name:?} cannot be a motley name (lowercase letters, digits and -)"
                ),
            );
            return;
        };
        let mut task = serde_json::Map::new();
        let mut spec = serde_json::Map::new();
        let mut env = BTreeMap::new();
        let mut labels = BTreeMap::new();
        let mut ports = Ports::default();
        let mut volumes: Vec<String> = Vec::new();
        let mut mounts: Vec<Value> = Vec::new();
        let mut secrets: Vec<Value> = Vec::new();
        let mut configs: Vec<Value> = Vec::new();
        let mut global = false;
        let mut network = Some("bridge");
        let mut limits = serde_json::Map::new();
        let mut requests = serde_json::Map::new();
        let mut require: Vec<String> = Vec::new();
        let mut check: Option<Value> = None;
        let mut depends: Vec<String> = Vec::new();
        let has_image = svc.get("image").is_some();
        for (k, v) in entries(svc) {
            let field = at(k);
            match k.as_str() {
                "image" => match text(v) {
                    Some(i) => {
                        task.insert("image".into(), json!(full_image(i)));
                    }
                    None => self.n.refuse(v, &field, "expected an image reference"),
                },
                "build" if has_image => self.n.warn(v, &field, "ignored: the image is pulled from its registry, not built (build it and push it first)"),
                "build" => self.n.refuse(v, &field, "motley does not build images: build and push it to a registry the nodes reach, and give `image`"),
                "command" => match words(v) {
                    Ok(w) => {
                        task.insert("args".into(), json!(w));
                    }
                    Err(m) => self.n.refuse(v, &field, m),
                },
                "entrypoint" => match words(v) {
                    Ok(w) => {
                        task.insert("command".into(), json!(w));
                    }
                    Err(m) => self.n.refuse(v, &field, m),
                },
                "environment" => self.environment(v, &field, &mut env),
                "env_file" => self.env_files(v, &field, &mut env),
                "ports" => self.ports(v, &field, &mut ports),
                "expose" => {
                    for (i, p) in items(v).iter().enumerate() {
                        match text(p).and_then(|t| t.split('/').next()?.parse::<u16>().ok()) {
                            Some(port) => {
                                ports.name_for(port);
                            }
                            None => self.n.refuse(p, &format!("{field}[{i}]"), "expected a port number"),
                        }
                    }
                }
                "volumes" => self.volume_mounts(v, &field, &mut volumes, &mut mounts),
                "configs" => self.file_refs(v, &field, false, &mut configs),
                "secrets" => self.file_refs(v, &field, true, &mut secrets),
                "healthcheck" => check = self.healthcheck(v, &field),
                "restart" => {
                    let policy = match text(v).unwrap_or_default() {
                        "always" | "unless-stopped" => Some("always"),
                        "no" | "false" => Some("never"),
                        p if p.starts_with("on-failure") => {
                            if p.contains(':') {
                                self.n.warn(v, &field, "the retry count is ignored: motley restarts with a backoff, without a limit");
                            }
                            Some("on-failure")
                        }
                        _ => None,
                    };
                    match policy {
                        Some(p) => {
                            spec.insert("restart".into(), json!({"policy": p}));
                        }
                        None => self.n.refuse(v, &field, "expected no, always, on-failure or unless-stopped"),
                    }
                }
                "deploy" => self.deploy(v, &field, &mut spec, &mut global, &mut limits, &mut requests, &mut require, &mut labels),
                "depends_on" => match &v.value {
                    // Started (a list, or service_started): a running replica, which is
                    // what motley's start order waits for when the other has no check.
                    SpanValue::Seq(items) => {
                        depends.extend(items.iter().filter_map(|i| text(i).and_then(name_of)));
                    }
                    SpanValue::Map(e) => {
                        for (dep, cond) in e {
                            match cond.get("condition").and_then(text) {
                                Some("service_healthy" | "service_started") | None => depends.extend(name_of(dep)),
                                Some("service_completed_successfully") => self.n.warn(cond, &format!("{field}.{dep}"), "not waited for: motley starts the service at once (use a Job and start the service after it)"),
                                Some(o) => self.n.refuse(cond, &format!("{field}.{dep}.condition"), format!("unknown condition {o:?}")),
                            }
                            for (ck, cv) in entries(cond) {
                                if !matches!(ck.as_str(), "condition" | "restart" | "required") {
                                    self.n.refuse(cv, &format!("{field}.{dep}.{ck}"), "unknown depends_on key");
                                }
                            }
                        }
                    }
                    _ => self.n.refuse(v, &field, "expected a list or a map"),
                },
                "user" => match text(v).unwrap_or_default() {
                    "root" | "0" | "0:0" | "root:root" => {
                        task.insert("root".into(), json!(true));
                    }
                    u if u.split(':').all(|x| x.parse::<u32>().is_ok()) && u.split(':').count() <= 2 => {
                        task.insert("user".into(), json!(u));
                    }
                    u => self.n.warn(v, &field, format!("{u:?} is a name the image defines: it runs as the agent's task user instead (give the numeric UID:GID, or root)")),
                },
                "working_dir" => {
                    task.insert("workdir".into(), json!(text(v)));
                }
                "labels" => {
                    let l = self.labels(v, &field);
                    labels.extend(l);
                }
                "stop_grace_period" => match text(v).and_then(duration_ms) {
                    Some(ms) => {
                        task.insert("stop_grace".into(), json!(ms_text(ms)));
                    }
                    None => self.n.refuse(v, &field, "expected a duration like 10s or 1m30s"),
                },
                "network_mode" => match text(v).unwrap_or_default() {
                    "host" => network = None,
                    "bridge" => {}
                    "none" => self.n.refuse(v, &field, "a container without a network is not supported"),
                    m => self.n.refuse(v, &field, format!("{m:?}: sharing another container's network is not supported; services reach each other by name")),
                },
                "mem_limit" => self.size_into(v, &field, &mut limits, "memory"),
                "mem_reservation" => self.size_into(v, &field, &mut requests, "memory"),
                "cpus" => match text(v).and_then(cpus_text) {
                    Some(c) => {
                        limits.insert("cpu".into(), json!(c));
                    }
                    None => self.n.refuse(v, &field, "expected a number of CPUs"),
                },
                "scale" => match text(v).and_then(|t| t.parse::<u32>().ok()) {
                    Some(n) => {
                        spec.insert("replicas".into(), json!(n));
                    }
                    None => self.n.refuse(v, &field, "expected a number"),
                },
                "privileged" => self.refuse_true(v, &field, "privileged containers are not supported: give the task what it needs (a device through a node path mount, root: true)"),
                "cap_add" => self.n.refuse(v, &field, "added capabilities are not supported: a task runs with the runtime's default set (root: true for root)"),
                "devices" => self.n.refuse(v, &field, "devices are not passed through: GPUs are requested with deploy.resources.reservations.devices (→ resources.gpu); for other devices, mount the node path with a host_path mount in the converted manifest"),
                "sysctls" | "security_opt" | "userns_mode" | "runtime" | "volumes_from" | "pid" | "ipc" | "uts" | "cgroup" => self.n.refuse(v, &field, format!("{k} is not supported: motley runs containers with the runtime's defaults")),
                "container_name" | "hostname" | "domainname" => self.n.warn(v, &field, format!("ignored: replicas are reached by the service's name, {name} (or {name}.motley)")),
                "networks" | "links" | "external_links" => self.n.warn(v, &field, "ignored: every service reaches every other by its name"),
                "cap_drop" | "logging" | "stop_signal" | "tty" | "stdin_open" | "extra_hosts" | "dns" | "dns_search" | "dns_opt" | "ulimits" | "init" | "shm_size" | "platform" | "pull_policy" | "read_only" | "tmpfs" | "mac_address" | "oom_score_adj" | "oom_kill_disable" | "group_add" | "cgroup_parent" | "annotations" | "attach" | "develop" | "storage_opt" | "profiles" | "mem_swappiness" | "memswap_limit" | "pids_limit" | "cpu_shares" | "cpu_quota" | "cpu_period" | "cpuset" | "blkio_config" | "isolation" | "label_file" | "post_start" | "pre_stop" => {
                    self.n.warn(v, &field, format!("ignored: {k} has no motley equivalent"))
                }
                "gpus" => {
                    requests.insert("gpu".into(), json!({"count": 1, "vendor": "nvidia"}));
                }
                x if x.starts_with("x-") => {}
                other => self.n.refuse(v, &field, format!("unknown service key {other:?}")),
            }
        }
        if !has_image {
            self.n.refuse(
                svc,
                &format!("services.{compose_name}"),
                "a service needs an image (motley does not build them)",
            );
            return;
        }
        // Traefik's router labels become routes of motley's ingress.
        let expose = self.traefik(&labels, svc, &at("labels"), &mut ports);
        labels.retain(|k, _| !k.starts_with("traefik."));
        if !env.is_empty() {
            task.insert("env".into(), map_of(&env));
        }
        if let Some(n) = network {
            task.insert("network".into(), json!(n));
        }
        if !volumes.is_empty() {
            task.insert("volumes".into(), json!(volumes));
        }
        if !mounts.is_empty() {
            task.insert("mounts".into(), json!(mounts));
        }
        if !secrets.is_empty() {
            task.insert("secrets".into(), json!(secrets));
        }
        if !configs.is_empty() {
            task.insert("configs".into(), json!(configs));
        }
        fit_requests(&limits, &mut requests);
        if !requests.is_empty() {
            task.insert("resources".into(), Value::Object(requests));
        }
        if !limits.is_empty() {
            task.insert("limits".into(), Value::Object(limits));
        }
        if !ports.host.is_empty() {
            let hp: Vec<Value> = ports
                .host
                .iter()
                .map(|(n, p, c)| json!({"name": n, "port": p, "protocol": "udp", "container_port": c}))
                .collect();
            task.insert("ports".into(), json!(hp));
        }
        if network.is_none() && !ports.service.is_empty() {
            self.n.warn(svc, &at("network_mode"), "on the host network the container listens on the node's own ports: service ports are chosen per replica, so it is reached only if it listens on $MOTLEY_PORT_<NAME>");
        }
        spec.insert(
            "kind".into(),
            json!(if global { "Daemon" } else { "Service" }),
        );
        spec.insert("name".into(), json!(name));
        if !labels.is_empty() {
            spec.insert("labels".into(), map_of(&labels));
        }
        if !require.is_empty() {
            spec.insert("placement".into(), json!({"require": require.join(", ")}));
        }
        spec.insert("task".into(), Value::Object(task));
        let built = if global {
            for (key, what) in [
                ("volumes", "volumes"),
                ("ports", "ports"),
                ("healthcheck", "a health check"),
                ("depends_on", "a start order"),
            ] {
                if let Some(v) = svc.get(key)
                    && !(key == "ports" && ports.service.is_empty())
                {
                    self.n.refuse(v, &at(key), format!("deploy.mode global becomes a Daemon, which has no {what}: drop it or run replicas"));
                }
            }
            spec.remove("replicas");
            build::<DaemonSpec>(Value::Object(spec)).map(Spec::Daemon)
        } else {
            if !ports.service.is_empty() {
                let sp: Vec<Value> = ports
                    .service
                    .iter()
                    .map(|(n, p)| json!({"name": n, "service_port": p, "container_port": p}))
                    .collect();
                spec.insert("ports".into(), json!(sp));
            }
            if !ports.routes.is_empty() {
                let r: Vec<Value> = ports
                    .routes
                    .iter()
                    .map(|(n, p)| json!({"port": n, "node_port": p}))
                    .collect();
                spec.insert("expose_tcp".into(), json!(r));
            }
            if !expose.is_empty() {
                spec.insert("expose".into(), json!(expose));
            }
            if let Some(c) = check {
                spec.insert("check".into(), c);
            }
            if !depends.is_empty() {
                spec.insert("depends_on".into(), json!(depends));
            }
            build::<ServiceSpec>(Value::Object(spec)).map(Spec::Service)
        };
        match built {
            Ok(s) => self.objects.push(s),
            Err(m) => self.n.refuse(svc, &format!("services.{compose_name}"), m),
        }
    }
}

#[path = "convert_compose_deploy.rs"]
mod deploy;
#[path = "convert_compose_keys.rs"]
mod keys;
#[cfg(test)]
pub(crate) use deploy::substitute;
pub(crate) use deploy::{dotenv_vars, full_image};
use deploy::{fit_requests, interpolate, parse_port};
