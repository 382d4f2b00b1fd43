//! Compose service keys: `deploy`, Traefik labels, and the text forms (interpolation, ports, constraints, rules).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

impl Compose<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deploy(
        &mut self,
        v: &SpanNode,
        field: &str,
        spec: &mut serde_json::Map<String, Value>,
        global: &mut bool,
        limits: &mut serde_json::Map<String, Value>,
        requests: &mut serde_json::Map<String, Value>,
        require: &mut Vec<String>,
        labels: &mut BTreeMap<String, String>,
    ) {
        for (k, x) in entries(v) {
            let f = format!("{field}.{k}");
            match k.as_str() {
                "replicas" => match text(x).and_then(|t| t.parse::<u32>().ok()) {
                    Some(n) => {
                        spec.insert("replicas".into(), json!(n));
                    }
                    None => self.n.refuse(x, &f, "expected a number"),
                },
                "mode" => match text(x) {
                    Some("global") => *global = true,
                    Some("replicated") => {}
                    _ => self.n.refuse(
                        x,
                        &f,
                        "expected replicated or global (jobs: use a motley Job)",
                    ),
                },
                "resources" => {
                    for (rk, rv) in entries(x) {
                        let into = match rk.as_str() {
                            "limits" => &mut *limits,
                            "reservations" => &mut *requests,
                            _ => {
                                self.n.refuse(
                                    rv,
                                    &format!("{f}.{rk}"),
                                    "expected limits or reservations",
                                );
                                continue;
                            }
                        };
                        for (q, qv) in entries(rv) {
                            let qf = format!("{f}.{rk}.{q}");
                            match q.as_str() {
                                "cpus" => match text(qv).and_then(cpus_text) {
                                    Some(c) => {
                                        into.insert("cpu".into(), json!(c));
                                    }
                                    None => self.n.refuse(qv, &qf, "expected a number of CPUs"),
                                },
                                "memory" => match text(qv).and_then(compose_bytes) {
                                    Some(b) if b > 0 => {
                                        into.insert("memory".into(), json!(bytes_text(b)));
                                    }
                                    _ => self.n.refuse(qv, &qf, "expected a size like 512m"),
                                },
                                "devices" if rk == "reservations" => {
                                    let mut count = 0u32;
                                    for d in items(qv) {
                                        let caps: Vec<&str> =
                                            items(d.get("capabilities").unwrap_or(d))
                                                .iter()
                                                .filter_map(text)
                                                .collect();
                                        if !caps.contains(&"gpu") {
                                            self.n.refuse(
                                                d,
                                                &qf,
                                                "only GPUs (capabilities: [gpu]) are reserved",
                                            );
                                            continue;
                                        }
                                        count += match d.get("count").and_then(text) {
                                            Some("all") | None => 1,
                                            Some(n) => n.parse().unwrap_or(1),
                                        };
                                    }
                                    if count > 0 {
                                        let vendor = items(qv)
                                            .iter()
                                            .find_map(|d| d.get("driver").and_then(text))
                                            .unwrap_or("nvidia");
                                        into.insert(
                                            "gpu".into(),
                                            json!({"count": count, "vendor": vendor}),
                                        );
                                    }
                                }
                                "pids" => self.n.warn(qv, &qf, "ignored: no pid limit"),
                                other => {
                                    self.n
                                        .refuse(qv, &qf, format!("unknown resource {other:?}"))
                                }
                            }
                        }
                    }
                }
                "placement" => {
                    for (pk, pv) in entries(x) {
                        let pf = format!("{f}.{pk}");
                        match pk.as_str() {
                            "constraints" => {
                                for (i, c) in items(pv).iter().enumerate() {
                                    match text(c).map(constraint) {
                                        Some(Ok(sel)) => require.push(sel),
                                        Some(Err(m)) => self.n.refuse(c, &format!("{pf}[{i}]"), m),
                                        None => self.n.refuse(c, &format!("{pf}[{i}]"), "expected a constraint like node.labels.disk == ssd"),
                                    }
                                }
                            }
                            "preferences" | "max_replicas_per_node" => self.n.warn(pv, &pf, "ignored: replicas are spread over nodes by default (placement.spread and prefer in the converted manifest say more)"),
                            other => self.n.refuse(pv, &pf, format!("unknown placement key {other:?}")),
                        }
                    }
                }
                "restart_policy" => {
                    for (rk, rv) in entries(x) {
                        match rk.as_str() {
                            "condition" => {
                                let p = match text(rv) {
                                    Some("any") => "always",
                                    Some("on-failure") => "on-failure",
                                    Some("none") => "never",
                                    _ => {
                                        self.n.refuse(
                                            rv,
                                            &format!("{f}.condition"),
                                            "expected none, on-failure or any",
                                        );
                                        continue;
                                    }
                                };
                                spec.insert("restart".into(), json!({"policy": p}));
                            }
                            "delay" => {
                                if let Some(ms) = text(rv).and_then(duration_ms) {
                                    let policy = spec
                                        .get("restart")
                                        .and_then(|r| r.get("policy"))
                                        .cloned()
                                        .unwrap_or(json!("always"));
                                    spec.insert("restart".into(), json!({"policy": policy, "backoff": {"initial": ms_text(ms.max(1)), "max": ms_text(ms.max(60_000))}}));
                                }
                            }
                            "max_attempts" | "window" => self.n.warn(
                                rv,
                                &format!("{f}.{rk}"),
                                "ignored: motley restarts with a growing backoff, without a limit",
                            ),
                            other => self.n.refuse(
                                rv,
                                &format!("{f}.{other}"),
                                "unknown restart_policy key",
                            ),
                        }
                    }
                }
                "update_config" => {
                    let mut update = serde_json::Map::new();
                    for (uk, uv) in entries(x) {
                        match uk.as_str() {
                            "parallelism" => {
                                if let Some(n) = text(uv).and_then(|t| t.parse::<u32>().ok()) {
                                    update.insert("max_parallel".into(), json!(n.max(1)));
                                }
                            }
                            "failure_action" => {
                                if text(uv) == Some("rollback") {
                                    update.insert("auto_revert".into(), json!(true));
                                }
                            }
                            "monitor" => {
                                if let Some(ms) = text(uv).and_then(duration_ms) {
                                    update.insert("min_healthy".into(), json!(ms_text(ms)));
                                }
                            }
                            "delay" | "order" | "max_failure_ratio" => self.n.warn(uv, &format!("{f}.{uk}"), "ignored: a new replica starts before an old one stops, one batch at a time once healthy"),
                            other => self.n.refuse(uv, &format!("{f}.{other}"), "unknown update_config key"),
                        }
                    }
                    if !update.is_empty() {
                        spec.insert("update".into(), Value::Object(update));
                    }
                }
                "labels" => {
                    let l = self.labels(x, &f);
                    labels.extend(l);
                }
                "endpoint_mode" | "rollback_config" => {
                    self.n
                        .warn(x, &f, format!("ignored: {k} has no motley equivalent"))
                }
                other => self
                    .n
                    .refuse(x, &f, format!("unknown deploy key {other:?}")),
            }
        }
    }

    /// Traefik v2/v3 router labels: `traefik.http.routers.R.rule=Host(`a`) &&
    /// PathPrefix(`/p`)` → an `expose` rule per host, its port from
    /// `traefik.http.services.S.loadbalancer.server.port` (or the only port).
    pub(super) fn traefik(
        &mut self,
        labels: &BTreeMap<String, String>,
        svc: &SpanNode,
        field: &str,
        ports: &mut Ports,
    ) -> Vec<Value> {
        let at = svc
            .get("labels")
            .or_else(|| svc.get("deploy").and_then(|d| d.get("labels")))
            .unwrap_or(svc);
        let mut routers: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
        let mut lb_port: BTreeMap<&str, u16> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (k, v) in labels {
            let Some(rest) = k.strip_prefix("traefik.") else {
                continue;
            };
            seen.insert(k.clone());
            let parts: Vec<&str> = rest.split('.').collect();
            match parts.as_slice() {
                ["enable"] | ["docker", "network"] => {}
                ["http", "routers", r, key @ ..] => {
                    routers.entry(r).or_default().insert(match key {
                        ["rule"] => "rule",
                        ["tls"] => "tls",
                        ["tls", "certresolver"] => "certresolver",
                        ["service"] => "service",
                        ["entrypoints"] => "entrypoints",
                        _ => {
                            self.n.warn(at, &format!("{field}.{k}"), "ignored: Traefik middlewares and router options have no motley equivalent");
                            continue;
                        }
                    }, v.as_str());
                }
                ["http", "services", s, "loadbalancer", "server", "port"] => match v.parse() {
                    Ok(p) => {
                        lb_port.insert(s, p);
                    }
                    Err(_) => self.n.refuse(at, &format!("{field}.{k}"), "expected a port number"),
                },
                _ => self.n.warn(at, &format!("{field}.{k}"), "ignored: only Traefik HTTP routers (rule, tls, service) and their service's port are translated"),
            }
        }
        let mut out = Vec::new();
        for (r, keys) in routers {
            let Some(rule) = keys.get("rule") else {
                self.n.warn(
                    at,
                    &format!("{field}.traefik.http.routers.{r}"),
                    "a router without a rule: ignored",
                );
                continue;
            };
            let (hosts, path) = match parse_rule(rule) {
                Ok(x) => x,
                Err(m) => {
                    self.n
                        .refuse(at, &format!("{field}.traefik.http.routers.{r}.rule"), m);
                    continue;
                }
            };
            let port = keys
                .get("service")
                .and_then(|s| lb_port.get(s))
                .or_else(|| {
                    if lb_port.len() == 1 {
                        lb_port.values().next()
                    } else {
                        None
                    }
                })
                .copied();
            let port_name = match port {
                Some(p) => ports.name_for(p),
                None if ports.service.len() == 1 => ports.service[0].0.clone(),
                None if ports.service.is_empty() => {
                    // Traefik takes the image's one exposed port, which only the image
                    // knows: most web images expose 80.
                    self.n.warn(
                        at,
                        &format!("{field}.traefik.http.routers.{r}"),
                        "no port given: 80 assumed (Traefik would use the image's exposed port; set traefik.http.services.NAME.loadbalancer.server.port if it is another)",
                    );
                    ports.name_for(80)
                }
                None => {
                    self.n.refuse(
                        at,
                        &format!("{field}.traefik.http.routers.{r}"),
                        "which port? give traefik.http.services.NAME.loadbalancer.server.port",
                    );
                    continue;
                }
            };
            let tls = keys.get("tls") == Some(&"true") || keys.contains_key("certresolver");
            if keys.contains_key("certresolver") {
                self.n.warn(at, &format!("{field}.traefik.http.routers.{r}.tls.certresolver"), "the certificate is signed by the cluster CA, not by ACME (or give a Secret with tls.crt and tls.key in expose.tls.secret)");
            }
            for h in hosts {
                out.push(obj(vec![
                    ("port", json!(port_name)),
                    ("host", json!(h)),
                    ("path", path.as_ref().map_or(Value::Null, |p| json!(p))),
                    ("tls", if tls { json!({}) } else { Value::Null }),
                ]));
            }
        }
        out
    }
}

/// `KEY=VALUE` lines (an env file or `.env`): comments, `export` and quotes as Compose
/// reads them.
pub(crate) fn dotenv_vars(t: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for line in t.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, val)) = line.split_once('=') {
            let val = val.trim();
            let val = val
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| val.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(val);
            env.entry(k.trim().to_string())
                .or_insert_with(|| val.to_string());
        }
    }
    env
}

/// Compose's interpolation in every scalar: `$VAR`, `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:?message}` (an error when unset), `$$` for `$`. An unset
/// variable without a default is empty, with a warning (as Compose does).
pub(super) fn interpolate(
    n: &mut SpanNode,
    lookup: &dyn Fn(&str) -> Option<String>,
    notes: &mut Notes<'_>,
    field: &str,
) {
    match &mut n.value {
        SpanValue::Scalar(s) if s.contains('$') => {
            let (line, column) = (n.line, n.column);
            match substitute(s, lookup) {
                Ok((out, unset)) => {
                    *s = out;
                    let at = SpanNode {
                        line,
                        column,
                        value: SpanValue::Null,
                    };
                    for v in unset {
                        notes.warn(&at, field, format!("{v} is not set: an empty string (set it in .env or the environment)"));
                    }
                }
                Err(m) => {
                    let at = SpanNode {
                        line,
                        column,
                        value: SpanValue::Null,
                    };
                    notes.refuse(&at, field, m);
                }
            }
        }
        SpanValue::Map(e) => {
            for (k, v) in e.iter_mut() {
                let f = if field.is_empty() {
                    k.clone()
                } else {
                    format!("{field}.{k}")
                };
                interpolate(v, lookup, notes, &f);
            }
        }
        SpanValue::Seq(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                interpolate(v, lookup, notes, &format!("{field}[{i}]"));
            }
        }
        _ => {}
    }
}

/// One scalar interpolated: the text and the variables that were unset.
pub(crate) fn substitute(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut unset = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_len = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_len);
            let val = lookup(name);
            let empty = val.as_deref().is_none_or(str::is_empty);
            match op {
                "" => match val {
                    Some(v) => out.push_str(&v),
                    None => unset.push(name.to_string()),
                },
                o if o.starts_with(":-") => out.push_str(&if empty {
                    o[2..].to_string()
                } else {
                    val.unwrap_or_default()
                }),
                o if o.starts_with('-') => out.push_str(&val.unwrap_or_else(|| o[1..].to_string())),
                o if o.starts_with(":?") || o.starts_with('?') => match val {
                    Some(v) if !(o.starts_with(":?") && v.is_empty()) => out.push_str(&v),
                    _ => {
                        return Err(format!(
                            "{name} is required: {}",
                            o.trim_start_matches([':', '?'])
                        ));
                    }
                },
                o if o.starts_with(":+") => out.push_str(if empty { "" } else { &o[2..] }),
                o if o.starts_with('+') => out.push_str(if val.is_some() { &o[1..] } else { "" }),
                o => return Err(format!("${{{name}{o}}}: unknown interpolation")),
            }
        } else {
            let name_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if name_len == 0 {
                out.push('$');
                continue;
            }
            let name = &rest[..name_len];
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => unset.push(name.to_string()),
            }
            rest = &rest[name_len..];
        }
    }
    out.push_str(rest);
    Ok((out, unset))
}

/// The full reference Docker would pull: `nginx` → `docker.io/library/nginx`.
pub(crate) fn full_image(i: &str) -> String {
    let first = i.split('/').next().unwrap_or_default();
    let has_registry =
        i.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        i.to_string()
    } else if i.contains('/') {
        format!("docker.io/{i}")
    } else {
        format!("docker.io/library/{i}")
    }
}

/// Requests no larger than limits (motley refuses a limit below its request; its
/// default requests are 100m and 64Mi).
pub(super) fn fit_requests(
    limits: &serde_json::Map<String, Value>,
    requests: &mut serde_json::Map<String, Value>,
) {
    if let Some(l) = limits
        .get("memory")
        .and_then(Value::as_str)
        .and_then(|s| crate::quantity::Bytes::parse(s).ok())
        && !requests.contains_key("memory")
        && l.0 < 64 << 20
    {
        requests.insert("memory".into(), json!(bytes_text(l.0)));
    }
    if let Some(l) = limits
        .get("cpu")
        .and_then(Value::as_str)
        .and_then(|s| crate::quantity::MilliCpu::parse(s).ok())
        && !requests.contains_key("cpu")
        && l.0 < 100
    {
        requests.insert("cpu".into(), json!(format!("{}m", l.0)));
    }
}

/// `[[IP:]PUBLISHED:]TARGET[/PROTOCOL]`.
pub(super) fn parse_port(s: &str) -> Option<(Option<u16>, u16, String)> {
    let (addr, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let parts: Vec<&str> = addr.rsplitn(3, ':').collect();
    let target: u16 = parts.first()?.parse().ok()?;
    let published = match parts.get(1) {
        Some(p) if !p.is_empty() => Some(p.parse().ok()?),
        _ => None,
    };
    Some((published, target, proto.to_string()))
}

/// A Swarm placement constraint as a motley selector requirement.
pub(super) fn constraint(c: &str) -> Result<String, String> {
    let (key, op, value) = if let Some((k, v)) = c.split_once("==") {
        (k.trim(), "=", v.trim())
    } else if let Some((k, v)) = c.split_once("!=") {
        (k.trim(), "!=", v.trim())
    } else {
        return Err(format!("{c:?}: expected KEY == VALUE or KEY != VALUE"));
    };
    let key = match key {
        "node.hostname" => "hostname".to_string(),
        "node.platform.arch" => {
            return Ok(format!("arch {op} {}", arch_of(value)));
        }
        "node.platform.os" => "os".to_string(),
        k if k.starts_with("node.labels.") => k["node.labels.".len()..].to_string(),
        "node.role" | "node.id" => {
            return Err(format!(
                "{key}: motley has no node roles or ids for work (servers run no tasks); label the nodes and use node.labels"
            ));
        }
        k if k.starts_with("engine.labels.") => k["engine.labels.".len()..].to_string(),
        _ => return Err(format!("{key}: unknown constraint key")),
    };
    Ok(format!("{key} {op} {value}"))
}

/// A Traefik rule's hosts and path prefix: `Host(`a`) || Host(`b`)`, `Host(`a`,`b`)`
/// (v1), with an optional `&& PathPrefix(`/p`)`.
pub(super) fn parse_rule(rule: &str) -> Result<(Vec<String>, Option<String>), String> {
    let mut hosts = Vec::new();
    let mut path = None;
    for part in rule.split("&&") {
        for alt in part.split("||") {
            let t = alt
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim();
            let (func, args) = t
                .split_once('(')
                .ok_or_else(|| format!("{rule:?}: cannot read {t:?}"))?;
            let args: Vec<String> = args
                .trim_end_matches(')')
                .split(',')
                .map(|a| a.trim().trim_matches('`').trim_matches('"').to_string())
                .filter(|a| !a.is_empty())
                .collect();
            match func.trim() {
                "Host" => hosts.extend(args),
                "PathPrefix" | "Path" if args.len() == 1 => path = Some(args[0].clone()),
                f => {
                    return Err(format!(
                        "{rule:?}: only Host and PathPrefix are translated, not {f}"
                    ));
                }
            }
        }
    }
    if hosts.is_empty() {
        return Err(format!("{rule:?}: no Host"));
    }
    Ok((hosts, path))
}
