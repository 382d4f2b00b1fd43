//! Compose service keys: environment, ports, volumes, configs and secrets, health checks.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

impl Compose<'_> {
    pub(super) fn refuse_true(&mut self, v: &SpanNode, field: &str, why: &str) {
        if text(v) == Some("true") {
            self.n.refuse(v, field, why);
        }
    }

    pub(super) fn size_into(
        &mut self,
        v: &SpanNode,
        field: &str,
        into: &mut serde_json::Map<String, Value>,
        key: &str,
    ) {
        match text(v).and_then(compose_bytes) {
            Some(b) if b > 0 => {
                into.insert(key.into(), json!(bytes_text(b)));
            }
            _ => self.n.refuse(v, field, "expected a size like 512m or 1g"),
        }
    }

    pub(super) fn environment(
        &mut self,
        v: &SpanNode,
        field: &str,
        env: &mut BTreeMap<String, String>,
    ) {
        let mut put = |this: &mut Self, n: &SpanNode, k: &str, val: Option<&str>| {
            let value = match val {
                Some(x) => Some(x.to_string()),
                // `- KEY` or `KEY:` alone: the client's environment at convert time.
                None => match this.reader.env(k) {
                    Some(x) => Some(x),
                    None => {
                        this.n.warn(
                            n,
                            &format!("{field}.{k}"),
                            format!("{k} is not set here: left out (Compose leaves it unset too)"),
                        );
                        None
                    }
                },
            };
            if let Some(value) = value {
                if k.starts_with("MOTLEY_") {
                    this.n.refuse(
                        n,
                        &format!("{field}.{k}"),
                        "MOTLEY_* variables are set by motley",
                    );
                } else {
                    env.insert(k.to_string(), value);
                }
            }
        };
        match &v.value {
            SpanValue::Map(e) => {
                for (k, x) in e {
                    put(self, x, k, text(x));
                }
            }
            SpanValue::Seq(items) => {
                for i in items {
                    let t = text(i).unwrap_or_default();
                    match t.split_once('=') {
                        Some((k, val)) => put(self, i, k, Some(val)),
                        None => put(self, i, t, None),
                    }
                }
            }
            _ => self
                .n
                .refuse(v, field, "expected a map or a list of KEY=VALUE"),
        }
    }

    pub(super) fn env_files(
        &mut self,
        v: &SpanNode,
        field: &str,
        env: &mut BTreeMap<String, String>,
    ) {
        let files: Vec<(&SpanNode, String, bool)> = match &v.value {
            SpanValue::Scalar(s) => vec![(v, s.clone(), true)],
            SpanValue::Seq(items) => items
                .iter()
                .map(|i| match text(i) {
                    Some(s) => (i, s.to_string(), true),
                    None => (
                        i,
                        i.get("path").and_then(text).unwrap_or_default().to_string(),
                        i.get("required").and_then(text) != Some("false"),
                    ),
                })
                .collect(),
            _ => {
                self.n
                    .refuse(v, field, "expected a file or a list of files");
                return;
            }
        };
        for (n, path, required) in files {
            match self.reader.read(&path) {
                Ok(t) => {
                    for (k, val) in dotenv_vars(&t) {
                        env.entry(k).or_insert(val);
                    }
                }
                Err(m) if required => self.n.refuse(n, field, format!("{path}: {m}")),
                Err(_) => {}
            }
        }
    }

    pub(super) fn ports(&mut self, v: &SpanNode, field: &str, ports: &mut Ports) {
        for (i, p) in items(v).iter().enumerate() {
            let f = format!("{field}[{i}]");
            // (published, target, protocol)
            let parsed: Option<(Option<u16>, u16, String)> = match &p.value {
                SpanValue::Scalar(s) => parse_port(s),
                SpanValue::Map(_) => {
                    let target = p.get("target").and_then(text).and_then(|t| t.parse().ok());
                    let published = p
                        .get("published")
                        .and_then(text)
                        .and_then(|t| t.parse().ok());
                    let proto = p
                        .get("protocol")
                        .and_then(text)
                        .unwrap_or("tcp")
                        .to_string();
                    for (k, x) in entries(p) {
                        match k.as_str() {
                            "target" | "published" | "protocol" | "mode" | "name"
                            | "app_protocol" => {}
                            "host_ip" => self.n.warn(
                                x,
                                &format!("{f}.host_ip"),
                                "ignored: a route listens on every node's ingress address",
                            ),
                            other => self
                                .n
                                .refuse(x, &format!("{f}.{other}"), "unknown port key"),
                        }
                    }
                    target.map(|t| (published, t, proto))
                }
                _ => None,
            };
            let Some((published, target, proto)) = parsed else {
                self.n.refuse(
                    p,
                    &f,
                    "expected [[IP:]PUBLISHED:]TARGET[/PROTOCOL] (a range is not supported)",
                );
                continue;
            };
            if let SpanValue::Scalar(s) = &p.value
                && s.matches(':').count() == 2
            {
                self.n.warn(
                    p,
                    &f,
                    "the host address is ignored: a route listens on every node's ingress address",
                );
            }
            match proto.as_str() {
                "udp" => {
                    let node = published.unwrap_or(target);
                    ports.host.push((format!("u{target}"), node, target));
                    self.n.warn(p, &f, format!("UDP: published on port {node} of the node each replica runs on (a static host port: one replica per node), not through the ingress"));
                }
                "tcp" => {
                    let name = ports.name_for(target);
                    match published {
                        Some(80 | 443) => self.n.warn(p, &f, "published on 80 or 443: those are the ingress's own ports; give the service a Host rule (Traefik labels, or expose in the converted manifest) to publish it there"),
                        Some(node) => ports.routes.push((name, node)),
                        None => {}
                    }
                }
                other => self
                    .n
                    .refuse(p, &f, format!("protocol {other:?}: tcp or udp")),
            }
        }
    }

    pub(super) fn volume_mounts(
        &mut self,
        v: &SpanNode,
        field: &str,
        volumes: &mut Vec<String>,
        mounts: &mut Vec<Value>,
    ) {
        for (i, m) in items(v).iter().enumerate() {
            let f = format!("{field}[{i}]");
            // (source, target, read only, type)
            let parsed: Option<(Option<String>, String, bool, String)> = match &m.value {
                SpanValue::Scalar(s) => {
                    let parts: Vec<&str> = s.split(':').collect();
                    match parts.as_slice() {
                        [t] => Some((None, t.to_string(), false, "volume".into())),
                        [src, t] | [src, t, _] => {
                            let ro = parts
                                .get(2)
                                .is_some_and(|o| o.split(',').any(|x| x == "ro"));
                            let kind = if src.starts_with('/')
                                || src.starts_with('.')
                                || src.starts_with('~')
                            {
                                "bind"
                            } else {
                                "volume"
                            };
                            Some((Some(src.to_string()), t.to_string(), ro, kind.into()))
                        }
                        _ => None,
                    }
                }
                SpanValue::Map(_) => {
                    for (k, x) in entries(m) {
                        if !matches!(
                            k.as_str(),
                            "type"
                                | "source"
                                | "target"
                                | "read_only"
                                | "bind"
                                | "volume"
                                | "consistency"
                        ) {
                            self.n.refuse(x, &format!("{f}.{k}"), "unknown volume key");
                        }
                    }
                    m.get("target").and_then(text).map(|t| {
                        (
                            m.get("source").and_then(text).map(str::to_string),
                            t.to_string(),
                            m.get("read_only").and_then(text) == Some("true"),
                            m.get("type").and_then(text).unwrap_or("volume").to_string(),
                        )
                    })
                }
                _ => None,
            };
            let parsed = parsed.map(|(s, t, ro, k)| {
                // `/data/` and `/data` are the same mount point.
                let t = match t.trim_end_matches('/') {
                    "" => "/".to_string(),
                    x => x.to_string(),
                };
                (s, t, ro, k)
            });
            let Some((source, target, ro, kind)) = parsed else {
                self.n.refuse(
                    m,
                    &f,
                    "expected SOURCE:TARGET[:ro] or a map with type, source and target",
                );
                continue;
            };
            match (kind.as_str(), source) {
                ("volume", None) => self.n.warn(m, &f, format!("an anonymous volume at {target}: its data is in the container's own layer and goes with the replica")),
                ("volume", Some(src)) => match self.volumes.get(&src).cloned() {
                    // External: a Volume of that name must exist in the cluster.
                    Some(declared) => {
                        let motley = declared.or_else(|| name_of(&src)).unwrap_or(src.clone());
                        if !volumes.contains(&motley) {
                            volumes.push(motley.clone());
                        }
                        mounts.push(obj(vec![("volume", json!(motley)), ("path", json!(target)), ("read_only", if ro { json!(true) } else { Value::Null })]));
                    }
                    None => self.n.refuse(m, &f, format!("volume {src:?} is not declared under the top-level volumes")),
                },
                ("bind", Some(src)) => {
                    let host = match self.reader.absolute(&src) {
                        Some(p) => p,
                        None => {
                            self.n.refuse(m, &f, format!("{src}: cannot make it an absolute path"));
                            continue;
                        }
                    };
                    self.n.warn(m, &f, format!("a bind mount of {host}: the path must exist on the node a replica runs on, which pins the service to the nodes that have it (add placement.require, or use a named volume or a Config)"));
                    mounts.push(obj(vec![("host_path", json!(host)), ("path", json!(target)), ("read_only", if ro { json!(true) } else { Value::Null })]));
                }
                ("tmpfs", _) => self.n.warn(m, &f, format!("a tmpfs at {target}: not mounted; the directory is in the container's own layer")),
                (other, _) => self.n.refuse(m, &f, format!("volume type {other:?} is not supported (volume, bind)")),
            }
        }
    }

    pub(super) fn file_refs(
        &mut self,
        v: &SpanNode,
        field: &str,
        secret: bool,
        out: &mut Vec<Value>,
    ) {
        for (i, r) in items(v).iter().enumerate() {
            let f = format!("{field}[{i}]");
            let (source, target) = match &r.value {
                SpanValue::Scalar(s) => (s.clone(), None),
                SpanValue::Map(_) => {
                    for (k, x) in entries(r) {
                        match k.as_str() {
                            "source" | "target" => {}
                            "uid" | "gid" | "mode" => self.n.warn(
                                x,
                                &format!("{f}.{k}"),
                                if secret {
                                    "ignored: secret files are the task user's, mode 0400"
                                } else {
                                    "ignored: config files are read-only for all (0444)"
                                },
                            ),
                            other => self.n.refuse(x, &format!("{f}.{other}"), "unknown key"),
                        }
                    }
                    (
                        r.get("source")
                            .and_then(text)
                            .unwrap_or_default()
                            .to_string(),
                        r.get("target").and_then(text).map(str::to_string),
                    )
                }
                _ => {
                    self.n
                        .refuse(r, &f, "expected a name or a map with source and target");
                    continue;
                }
            };
            let declared = if secret {
                self.secrets.get(&source)
            } else {
                self.configs.get(&source)
            }
            .cloned();
            let Some(name) = declared else {
                self.n.refuse(
                    r,
                    &f,
                    format!(
                        "{source:?} is not declared under the top-level {}",
                        if secret { "secrets" } else { "configs" }
                    ),
                );
                continue;
            };
            if secret {
                // Compose mounts secrets at /run/secrets/<name>, as motley's containers do.
                let file = match target.as_deref() {
                    None => source.clone(),
                    Some(t) => match t.strip_prefix("/run/secrets/").unwrap_or(t) {
                        x if !x.contains('/') => x.to_string(),
                        _ => {
                            let base = t.rsplit('/').next().unwrap_or(&source).to_string();
                            self.n.warn(r, &format!("{f}.target"), format!("secret files are in /run/secrets: this one is /run/secrets/{base}"));
                            base
                        }
                    },
                };
                out.push(json!({"secret": name, "key": "value", "file": file}));
            } else {
                let path = match target {
                    Some(t) if t.starts_with('/') => t,
                    Some(t) => format!("/{t}"),
                    None => format!("/{source}"),
                };
                out.push(json!({"config": name, "key": "content", "file": path}));
            }
        }
    }

    pub(super) fn healthcheck(&mut self, v: &SpanNode, field: &str) -> Option<Value> {
        if v.get("disable").and_then(text) == Some("true") {
            return None;
        }
        let test = v.get("test")?;
        let exec: Vec<String> = match &test.value {
            SpanValue::Scalar(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            SpanValue::Seq(items) => {
                let w: Vec<String> = items
                    .iter()
                    .filter_map(|i| text(i).map(str::to_string))
                    .collect();
                match w.first().map(String::as_str) {
                    Some("NONE") => return None,
                    Some("CMD") => w[1..].to_vec(),
                    Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), w[1..].join(" ")],
                    _ => {
                        self.n.refuse(
                            test,
                            &format!("{field}.test"),
                            "expected [CMD, ...], [CMD-SHELL, ...], [NONE] or a string",
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.n.refuse(
                    test,
                    &format!("{field}.test"),
                    "expected a list or a string",
                );
                return None;
            }
        };
        let mut check = serde_json::Map::new();
        check.insert("exec".into(), json!(exec));
        // Compose's defaults, not motley's: 30s and 30s, 3 retries.
        check.insert("interval".into(), json!("30s"));
        check.insert("timeout".into(), json!("30s"));
        check.insert("unhealthy_after".into(), json!(3));
        for (k, x) in entries(v) {
            let f = format!("{field}.{k}");
            match k.as_str() {
                "test" | "disable" => {}
                "interval" | "timeout" => match text(x).and_then(duration_ms) {
                    Some(ms) => {
                        check.insert(k.clone(), json!(ms_text(ms.max(1))));
                    }
                    None => self.n.refuse(x, &f, "expected a duration"),
                },
                "retries" => match text(x).and_then(|t| t.parse::<u32>().ok()) {
                    Some(n) => {
                        check.insert("unhealthy_after".into(), json!(n.max(1)));
                    }
                    None => self.n.refuse(x, &f, "expected a number"),
                },
                "start_period" | "start_interval" => self.n.warn(x, &f, "ignored: a replica takes traffic after its first passed check; failures before it count (raise retries for a slow start)"),
                other => self.n.refuse(x, &f, format!("unknown healthcheck key {other:?}")),
            }
        }
        Some(Value::Object(check))
    }
}
