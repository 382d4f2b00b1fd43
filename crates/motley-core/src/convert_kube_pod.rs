//! Kubernetes pod templates: the container, its volumes, resources and probes, placement.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

pub(super) fn pod_spec(pod: &SpanNode, at: &str, w: &mut Workload<'_>, n: &mut Notes<'_>) {
    let containers = items(pod.get("containers").unwrap_or(pod));
    match containers {
        [c] => container(c, pod, &format!("{at}.containers[0]"), w, n),
        [] => n.refuse(pod, &format!("{at}.containers"), "no container"),
        _ => n.refuse(pod.get("containers").unwrap_or(pod), &format!("{at}.containers"), "one container per pod: a motley task is one process or container (run sidecars as their own services)"),
    }
    let mut require: Vec<String> = Vec::new();
    for (k, v) in entries(pod) {
        let f = format!("{at}.{k}");
        match k.as_str() {
            "containers" | "volumes" | "restartPolicy" => {}
            "initContainers" => n.refuse(v, &f, "init containers are not supported: run the step as a Job, and the service after it (depends_on waits for services)"),
            "nodeSelector" => {
                for (key, val) in entries(v) {
                    require.push(format!("{} = {}", node_key(key), text(val).unwrap_or_default()));
                }
            }
            "affinity" => affinity(v, &f, &mut require, n),
            "tolerations" => {
                let t: Vec<Value> = items(v)
                    .iter()
                    .map(|t| {
                        obj(vec![
                            ("key", json!(t.get("key").and_then(text).unwrap_or("*"))),
                            ("value", t.get("value").and_then(text).map_or(Value::Null, |x| json!(x))),
                            ("effect", t.get("effect").and_then(text).map_or(Value::Null, |e| json!(effect(e)))),
                        ])
                    })
                    .collect();
                placement(&mut w.spec).insert("tolerations".into(), json!(t));
            }
            "hostNetwork" => {
                if text(v) == Some("true") {
                    w.task.insert("network".into(), json!("host"));
                }
            }
            "terminationGracePeriodSeconds" => {
                w.task.insert("stop_grace".into(), json!(format!("{}s", text(v).unwrap_or("30"))));
            }
            "securityContext" => security(v, &f, w, n),
            "serviceAccountName" | "serviceAccount" | "automountServiceAccountToken" | "enableServiceLinks" | "dnsPolicy" | "schedulerName" | "priorityClassName" | "hostname" | "subdomain" | "imagePullSecrets" | "topologySpreadConstraints" | "shareProcessNamespace" | "hostAliases" | "dnsConfig" | "runtimeClassName" | "preemptionPolicy" | "overhead" | "readinessGates" => {
                n.warn(v, &f, format!("ignored: {k} has no motley equivalent"))
            }
            "hostPID" | "hostIPC" => n.refuse(v, &f, "not supported"),
            other => n.refuse(v, &f, format!("unknown pod field {other:?}")),
        }
    }
    if !require.is_empty() {
        placement(&mut w.spec).insert("require".into(), json!(require.join(", ")));
    }
    if w.kind == "Job" || w.kind == "CronJob" {
        if pod.get("restartPolicy").and_then(text) == Some("Always") {
            n.refuse(
                pod,
                &format!("{at}.restartPolicy"),
                "a Job's pods restart OnFailure or Never",
            );
        }
    } else if let Some(p) = pod.get("restartPolicy").and_then(text)
        && p != "Always"
    {
        n.warn(
            pod.get("restartPolicy").unwrap_or(pod),
            &format!("{at}.restartPolicy"),
            "a service's replicas always restart",
        );
    }
}

pub(super) fn placement(
    spec: &mut serde_json::Map<String, Value>,
) -> &mut serde_json::Map<String, Value> {
    let p = spec.entry("placement").or_insert_with(|| json!({}));
    if !p.is_object() {
        *p = json!({});
    }
    match p {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

pub(super) fn effect(e: &str) -> String {
    match e {
        "NoSchedule" => "no-schedule",
        "PreferNoSchedule" => "prefer-no-schedule",
        "NoExecute" => "evict",
        other => other,
    }
    .to_string()
}

/// A node label key as motley's facts name it.
pub(super) fn node_key(k: &str) -> String {
    match k {
        "kubernetes.io/hostname" => "hostname".into(),
        "kubernetes.io/arch" | "beta.kubernetes.io/arch" => "arch".into(),
        "kubernetes.io/os" | "beta.kubernetes.io/os" => "os".into(),
        other => other.to_string(),
    }
}

pub(super) fn affinity(v: &SpanNode, at: &str, require: &mut Vec<String>, n: &mut Notes<'_>) {
    for (k, a) in entries(v) {
        let f = format!("{at}.{k}");
        if k != "nodeAffinity" {
            n.warn(a, &f, "ignored: pod (anti-)affinity is not translated (motley: placement.affinity and anti_affinity by workload)");
            continue;
        }
        for (kk, x) in entries(a) {
            if kk != "requiredDuringSchedulingIgnoredDuringExecution" {
                n.warn(
                    x,
                    &format!("{f}.{kk}"),
                    "ignored: only required node affinity is translated",
                );
                continue;
            }
            let terms = items(x.get("nodeSelectorTerms").unwrap_or(x));
            if terms.len() > 1 {
                n.refuse(
                    x,
                    &format!("{f}.{kk}"),
                    "several terms (an OR) are not supported: one term",
                );
                continue;
            }
            for t in terms {
                for e in items(t.get("matchExpressions").unwrap_or(t)) {
                    let key = node_key(e.get("key").and_then(text).unwrap_or_default());
                    let vals: Vec<&str> = items(e.get("values").unwrap_or(e))
                        .iter()
                        .filter_map(text)
                        .collect();
                    let req = match e.get("operator").and_then(text) {
                        Some("In") => format!("{key} in ({})", vals.join(", ")),
                        Some("NotIn") => format!("{key} notin ({})", vals.join(", ")),
                        Some("Exists") => key,
                        Some("DoesNotExist") => format!("!{key}"),
                        Some("Gt") => format!("{key} > {}", vals.first().unwrap_or(&"0")),
                        Some("Lt") => format!("{key} < {}", vals.first().unwrap_or(&"0")),
                        _ => {
                            n.refuse(e, &format!("{f}.{kk}"), "unknown operator");
                            continue;
                        }
                    };
                    require.push(req);
                }
            }
        }
    }
}

pub(super) fn container(
    c: &SpanNode,
    pod: &SpanNode,
    at: &str,
    w: &mut Workload<'_>,
    n: &mut Notes<'_>,
) {
    let mut env = BTreeMap::new();
    let mut secrets: Vec<Value> = Vec::new();
    let mut configs: Vec<Value> = Vec::new();
    let mut volumes: Vec<String> = Vec::new();
    let mut mounts: Vec<Value> = Vec::new();
    w.task.insert("network".into(), json!("bridge"));
    for (k, v) in entries(c) {
        let f = format!("{at}.{k}");
        match k.as_str() {
            "name" => {}
            "image" => {
                w.task.insert("image".into(), json!(text(v).map(crate::convert::compose::full_image)));
            }
            "command" => {
                w.task.insert("command".into(), json!(items(v).iter().filter_map(text).collect::<Vec<_>>()));
            }
            "args" => {
                w.task.insert("args".into(), json!(items(v).iter().filter_map(text).collect::<Vec<_>>()));
            }
            "workingDir" => {
                w.task.insert("workdir".into(), json!(text(v)));
            }
            "ports" => {
                for p in items(v) {
                    let Some(port) = p.get("containerPort").and_then(text).and_then(|t| t.parse::<u16>().ok()) else {
                        n.refuse(p, &f, "a port needs containerPort");
                        continue;
                    };
                    let name = p.get("name").and_then(text).map(str::to_string).unwrap_or(format!("p{port}"));
                    if p.get("protocol").and_then(text).is_some_and(|x| x != "TCP") {
                        n.refuse(p, &format!("{f}.protocol"), "only TCP ports are translated");
                    }
                    if p.get("hostPort").is_some() {
                        n.warn(p, &format!("{f}.hostPort"), "ignored: a Service of type NodePort publishes it on every node");
                    }
                    w.container_ports.insert(name, port);
                }
            }
            "env" => {
                for e in items(v) {
                    let Some(name) = e.get("name").and_then(text) else { continue };
                    if let Some(val) = e.get("value").and_then(text) {
                        env.insert(name.to_string(), val.to_string());
                    } else if let Some(from) = e.get("valueFrom") {
                        if let Some(r) = from.get("configMapKeyRef") {
                            configs.push(json!({"config": r.get("name").and_then(text).and_then(name_of), "key": r.get("key").and_then(text), "env": name}));
                        } else if let Some(r) = from.get("secretKeyRef") {
                            secrets.push(json!({"secret": r.get("name").and_then(text).and_then(name_of), "key": r.get("key").and_then(text), "env": name}));
                        } else {
                            n.refuse(from, &format!("{f}.{name}.valueFrom"), "only configMapKeyRef and secretKeyRef are translated (motley gives MOTLEY_NODE, MOTLEY_ALLOC_ID and others itself)");
                        }
                    } else {
                        env.insert(name.to_string(), String::new());
                    }
                }
            }
            "envFrom" => n.refuse(v, &f, "envFrom is not translated: name each key in env with configMapKeyRef or secretKeyRef"),
            "resources" => resources(v, &f, &mut w.task, n),
            "volumeMounts" => {
                for m in items(v) {
                    let vname = m.get("name").and_then(text).unwrap_or_default();
                    let path = m.get("mountPath").and_then(text).unwrap_or_default();
                    let ro = m.get("readOnly").and_then(text) == Some("true");
                    if m.get("subPath").is_some() {
                        n.refuse(m, &format!("{f}.subPath"), "subPath is not supported");
                        continue;
                    }
                    let decl = items(pod.get("volumes").unwrap_or(pod))
                        .iter()
                        .find(|d| d.get("name").and_then(text) == Some(vname));
                    let Some(decl) = decl else {
                        // A StatefulSet's claim template of that name, resolved later.
                        let marker = format!("claim-template:{vname}");
                        volumes.push(marker.clone());
                        mounts.push(obj(vec![("volume", json!(marker)), ("path", json!(path)), ("read_only", if ro { json!(true) } else { Value::Null })]));
                        continue;
                    };
                    pod_volume(decl, path, ro, &f, &mut volumes, &mut mounts, &mut configs, &mut secrets, n);
                }
            }
            "livenessProbe" | "readinessProbe" | "startupProbe" => {
                // The readiness probe decides traffic; without one, the liveness probe.
                if k == "startupProbe" {
                    n.warn(v, &f, "ignored: a replica takes traffic after its first passed check");
                } else if k == "readinessProbe" || c.get("readinessProbe").is_none() {
                    probe(v, &f, w, n);
                }
            }
            "securityContext" => security(v, &f, w, n),
            "imagePullPolicy" | "terminationMessagePath" | "terminationMessagePolicy" | "stdin" | "tty" | "lifecycle" | "stdinOnce" | "resizePolicy" => n.warn(v, &f, format!("ignored: {k} has no motley equivalent")),
            other => n.refuse(v, &f, format!("unknown container field {other:?}")),
        }
    }
    if !env.is_empty() {
        w.task.insert("env".into(), map_of(&env));
    }
    for (key, val) in [("secrets", secrets), ("configs", configs)] {
        if !val.is_empty() {
            w.task.insert(key.into(), json!(val));
        }
    }
    if !volumes.is_empty() {
        w.task.insert("volumes".into(), json!(volumes));
    }
    if !mounts.is_empty() {
        w.task.insert("mounts".into(), json!(mounts));
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn pod_volume(
    decl: &SpanNode,
    path: &str,
    ro: bool,
    at: &str,
    volumes: &mut Vec<String>,
    mounts: &mut Vec<Value>,
    configs: &mut Vec<Value>,
    secrets: &mut Vec<Value>,
    n: &mut Notes<'_>,
) {
    let ro_v = if ro { json!(true) } else { Value::Null };
    if let Some(p) = decl.get("persistentVolumeClaim") {
        let claim = p
            .get("claimName")
            .and_then(text)
            .and_then(name_of)
            .unwrap_or_default();
        if !volumes.contains(&claim) {
            volumes.push(claim.clone());
        }
        mounts.push(obj(vec![
            ("volume", json!(claim)),
            ("path", json!(path)),
            ("read_only", ro_v),
        ]));
    } else if let Some(cm) = decl.get("configMap") {
        let name = cm.get("name").and_then(text).and_then(name_of);
        let keys = key_items(cm);
        if keys.is_empty() {
            n.refuse(cm, &format!("{at}.configMap"), "list the keys under items (each key a file): a Config's keys are not known when converting");
        }
        for (key, file) in keys {
            configs.push(json!({"config": name, "key": key, "file": format!("{}/{file}", path.trim_end_matches('/'))}));
        }
    } else if let Some(sec) = decl.get("secret") {
        let name = sec.get("secretName").and_then(text).and_then(name_of);
        let keys = key_items(sec);
        if keys.is_empty() {
            n.refuse(
                sec,
                &format!("{at}.secret"),
                "list the keys under items: a Secret's keys are not known when converting",
            );
        }
        if path != "/run/secrets" {
            n.warn(
                sec,
                &format!("{at}.secret"),
                format!("secret files are in /run/secrets (an in-memory filesystem), not {path}"),
            );
        }
        for (key, file) in keys {
            let file = file.rsplit('/').next().unwrap_or(&file).to_string();
            secrets.push(json!({"secret": name, "key": key, "file": file}));
        }
    } else if let Some(h) = decl.get("hostPath") {
        let p = h.get("path").and_then(text).unwrap_or_default();
        n.warn(
            h,
            &format!("{at}.hostPath"),
            format!(
                "{p} must exist on the node a replica runs on: pin the work with a nodeSelector"
            ),
        );
        mounts.push(obj(vec![
            ("host_path", json!(p)),
            ("path", json!(path)),
            ("read_only", ro_v),
        ]));
    } else if decl.get("emptyDir").is_some() {
        n.warn(decl, at, format!("emptyDir at {path}: not mounted; the directory is in the container's own layer and goes with the replica"));
    } else {
        n.refuse(decl, at, "only persistentVolumeClaim, configMap, secret, hostPath and emptyDir volumes are translated");
    }
}

pub(super) fn resources(
    v: &SpanNode,
    at: &str,
    task: &mut serde_json::Map<String, Value>,
    n: &mut Notes<'_>,
) {
    for (k, r) in entries(v) {
        let key = match k.as_str() {
            "requests" => "resources",
            "limits" => "limits",
            other => {
                n.refuse(r, &format!("{at}.{other}"), "expected requests or limits");
                continue;
            }
        };
        let mut m = serde_json::Map::new();
        for (q, x) in entries(r) {
            let t = text(x).unwrap_or_default();
            match q.as_str() {
                "cpu" => {
                    m.insert("cpu".into(), json!(t));
                }
                "memory" => {
                    m.insert("memory".into(), json!(t));
                }
                "ephemeral-storage" => {
                    m.insert("disk".into(), json!(t));
                }
                "nvidia.com/gpu" | "amd.com/gpu" | "gpu.intel.com/i915" => {
                    let vendor = q.split('.').next().unwrap_or("nvidia");
                    // GPUs are requested, not limited: a limit alone (Kubernetes' usual
                    // form) is the request.
                    let requested = task
                        .get("resources")
                        .is_some_and(|r| r.get("gpu").is_some());
                    if key == "resources" || !requested {
                        let count = t.parse::<u32>().unwrap_or(1);
                        let res = task.entry("resources").or_insert_with(|| json!({}));
                        res["gpu"] = json!({"count": count, "vendor": if vendor == "gpu" { "intel" } else { vendor }});
                    }
                }
                other => n.refuse(x, &format!("{at}.{k}.{other}"), "unknown resource"),
            }
        }
        if m.is_empty() {
            continue;
        }
        let entry = task.entry(key).or_insert_with(|| json!({}));
        if let Value::Object(e) = entry {
            e.extend(m);
        }
    }
}

pub(super) fn probe(v: &SpanNode, at: &str, w: &mut Workload<'_>, n: &mut Notes<'_>) {
    let mut check = serde_json::Map::new();
    if let Some(h) = v.get("httpGet") {
        let port = port_name(h.get("port"), w);
        let Some(port) = port else {
            n.refuse(
                h,
                &format!("{at}.httpGet.port"),
                "a port number or the name of a container port",
            );
            return;
        };
        check.insert(
            "http".into(),
            json!({"port": port, "path": h.get("path").and_then(text).unwrap_or("/")}),
        );
    } else if let Some(t) = v.get("tcpSocket") {
        let Some(port) = port_name(t.get("port"), w) else {
            n.refuse(
                t,
                &format!("{at}.tcpSocket.port"),
                "a port number or the name of a container port",
            );
            return;
        };
        check.insert("tcp".into(), json!({"port": port}));
    } else if let Some(e) = v.get("exec") {
        check.insert(
            "exec".into(),
            json!(
                items(e.get("command").unwrap_or(e))
                    .iter()
                    .filter_map(text)
                    .collect::<Vec<_>>()
            ),
        );
    } else {
        n.refuse(
            v,
            at,
            "a probe needs httpGet, tcpSocket or exec (grpc is not translated)",
        );
        return;
    }
    for (k, x) in entries(v) {
        let secs = || format!("{}s", text(x).unwrap_or("1"));
        match k.as_str() {
            "httpGet" | "tcpSocket" | "exec" => {}
            "periodSeconds" => {
                check.insert("interval".into(), json!(secs()));
            }
            "timeoutSeconds" => {
                check.insert("timeout".into(), json!(secs()));
            }
            "failureThreshold" => {
                check.insert(
                    "unhealthy_after".into(),
                    json!(
                        text(x)
                            .and_then(|t| t.parse::<u32>().ok())
                            .unwrap_or(3)
                            .max(1)
                    ),
                );
            }
            "successThreshold" => {
                check.insert(
                    "healthy_after".into(),
                    json!(
                        text(x)
                            .and_then(|t| t.parse::<u32>().ok())
                            .unwrap_or(1)
                            .max(1)
                    ),
                );
            }
            "initialDelaySeconds" | "terminationGracePeriodSeconds" => n.warn(
                x,
                &format!("{at}.{k}"),
                "ignored: a replica takes traffic after its first passed check",
            ),
            other => n.refuse(x, &format!("{at}.{other}"), "unknown probe field"),
        }
    }
    if w.kind == "Deployment" || w.kind == "StatefulSet" {
        w.spec.insert("check".into(), Value::Object(check));
    } else {
        n.warn(
            v,
            at,
            format!("ignored: a {} has no health check in motley", w.kind),
        );
    }
}

/// The motley port name for a probe's or a Service's target port: a container port's
/// name, or a port number (added as a port of its own when new).
pub(super) fn port_name(p: Option<&SpanNode>, w: &mut Workload<'_>) -> Option<String> {
    let t = text(p?)?;
    let number: u16 = match t.parse() {
        Ok(x) => x,
        Err(_) => *w.container_ports.get(t)?,
    };
    if let Some((name, _, _)) = w.service_ports.iter().find(|(_, _, c)| *c == number) {
        return Some(name.clone());
    }
    let name = w
        .container_ports
        .iter()
        .find(|(_, c)| **c == number)
        .map(|(nm, _)| name_of(nm).unwrap_or(format!("p{number}")))
        .unwrap_or(format!("p{number}"));
    w.service_ports.push((name.clone(), None, number));
    Some(name)
}

/// A configMap or secret volume's `items`: (key, path) each.
fn key_items(v: &SpanNode) -> Vec<(String, String)> {
    let field = |i: &SpanNode, k: &str| i.get(k).and_then(text).unwrap_or_default().to_string();
    items(v.get("items").unwrap_or(v))
        .iter()
        .map(|i| (field(i, "key"), field(i, "path")))
        .collect()
}

/// A pod's or container's `securityContext`: `runAsUser` (with `runAsGroup`) as the
/// task's user (0: `root: true`); privileged and added capabilities refused; the rest
/// warned about.
fn security(v: &SpanNode, at: &str, w: &mut Workload<'_>, n: &mut Notes<'_>) {
    for (k, x) in entries(v) {
        let f = format!("{at}.{k}");
        match k.as_str() {
            "runAsUser" => match text(x) {
                Some("0") => {
                    w.task.insert("root".into(), json!(true));
                }
                Some(uid) => {
                    let gid = v.get("runAsGroup").and_then(text).unwrap_or(uid);
                    w.task.insert("user".into(), json!(format!("{uid}:{gid}")));
                }
                None => n.refuse(x, &f, "expected a number"),
            },
            "runAsGroup" => {}
            "privileged" if text(x) == Some("true") => {
                n.refuse(x, &f, "privileged containers are not supported")
            }
            "capabilities" if x.get("add").is_some() => n.refuse(
                x,
                &f,
                "added capabilities are not supported: a task runs with the runtime's default set",
            ),
            _ => n.warn(x, &f, "ignored: the runtime's defaults apply"),
        }
    }
}
