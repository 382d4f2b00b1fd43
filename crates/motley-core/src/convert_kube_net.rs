//! Kubernetes Services and Ingresses: ports, node ports and routes of the workloads they select; each workload finished.

use serde_json::{Value, json};

use super::*;

/// The workload a Service's selector picks, in its namespace.
pub(super) fn selected<'w, 't>(
    s: &SpanNode,
    workloads: &'w mut [Workload<'t>],
) -> Option<&'w mut Workload<'t>> {
    let sel = string_map(s.get("spec").and_then(|x| x.get("selector")));
    let ns = s
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(text);
    if sel.is_empty() {
        return None;
    }
    workloads.iter_mut().find(|w| {
        w.namespace.as_deref() == ns && sel.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v))
    })
}

pub(super) fn service(s: &SpanNode, workloads: &mut [Workload<'_>], n: &mut Notes<'_>) {
    let name = s
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(text)
        .unwrap_or_default()
        .to_string();
    let spec = s.get("spec").unwrap_or(s);
    match spec.get("type").and_then(text) {
        None | Some("ClusterIP" | "NodePort") => {}
        Some("LoadBalancer") => n.warn(spec, "spec.type", "LoadBalancer: published on every node's ingress at its node ports (give nodePort to choose them)"),
        Some(t) => {
            n.refuse(spec, "spec.type", format!("{t}: not translated"));
            return;
        }
    }
    if spec.get("clusterIP").and_then(text) == Some("None") {
        n.warn(spec, "spec.clusterIP", "headless: motley's DNS answers NAME.motley with the node proxy's address, and SRV records with every endpoint");
    }
    let Some(w) = selected(s, workloads) else {
        n.refuse(spec, "spec.selector", format!("service {name}: its selector matches no Deployment, StatefulSet or DaemonSet of this set (motley's service ports belong to the workload)"));
        return;
    };
    if w.kind == "DaemonSet" || w.kind == "Job" || w.kind == "CronJob" {
        n.refuse(spec, "spec.selector", format!("service {name} selects a {}: only Deployments and StatefulSets become motley services", w.kind));
        return;
    }
    if name_of(&name).as_deref() != Some(w.name.as_str()) {
        n.warn(
            s,
            "metadata.name",
            format!(
                "reached as {}.motley (the workload's name), not {name}",
                w.name
            ),
        );
    }
    for (i, p) in items(spec.get("ports").unwrap_or(spec)).iter().enumerate() {
        let Some(port) = p
            .get("port")
            .and_then(text)
            .and_then(|t| t.parse::<u16>().ok())
        else {
            n.refuse(
                p,
                &format!("spec.ports[{i}].port"),
                "expected a port number",
            );
            continue;
        };
        let target = p.get("targetPort").or_else(|| p.get("port"));
        let target_no: Option<u16> = target
            .and_then(text)
            .and_then(|t| t.parse().ok().or_else(|| w.container_ports.get(t).copied()));
        let Some(target_no) = target_no else {
            n.refuse(
                p,
                &format!("spec.ports[{i}].targetPort"),
                "names no container port",
            );
            continue;
        };
        let pname = p
            .get("name")
            .and_then(text)
            .and_then(name_of)
            .unwrap_or(format!("p{port}"));
        match w.service_ports.iter_mut().find(|(_, _, c)| *c == target_no) {
            Some(existing) => existing.1 = Some(port),
            None => w.service_ports.push((pname.clone(), Some(port), target_no)),
        }
        let pname = w
            .service_ports
            .iter()
            .find(|(_, _, c)| *c == target_no)
            .map(|x| x.0.clone())
            .unwrap_or(pname);
        if let Some(np) = p
            .get("nodePort")
            .and_then(text)
            .and_then(|t| t.parse::<u16>().ok())
        {
            w.node_ports.push((pname, np));
        } else if spec.get("type").and_then(text) == Some("NodePort") {
            n.refuse(
                p,
                &format!("spec.ports[{i}].nodePort"),
                "give the node port: motley does not choose one",
            );
        }
    }
}

pub(super) fn ingress(
    i: &SpanNode,
    services: &[&SpanNode],
    workloads: &mut [Workload<'_>],
    n: &mut Notes<'_>,
) {
    let spec = i.get("spec").unwrap_or(i);
    let ns = i
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(text);
    let tls_hosts: Vec<(String, Option<String>)> = items(spec.get("tls").unwrap_or(spec))
        .iter()
        .flat_map(|t| {
            let secret = t.get("secretName").and_then(text).and_then(name_of);
            items(t.get("hosts").unwrap_or(t))
                .iter()
                .filter_map(text)
                .map(move |h| (h.to_string(), secret.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    for (k, v) in entries(spec) {
        if !matches!(k.as_str(), "rules" | "tls" | "ingressClassName") {
            n.refuse(
                v,
                &format!("spec.{k}"),
                "not translated (defaultBackend: give a rule with a host)",
            );
        }
    }
    for (ri, rule) in items(spec.get("rules").unwrap_or(spec)).iter().enumerate() {
        let Some(host) = rule.get("host").and_then(text) else {
            n.refuse(
                rule,
                &format!("spec.rules[{ri}].host"),
                "a rule needs a host (motley's ingress routes by host name)",
            );
            continue;
        };
        let paths = rule.get("http").and_then(|h| h.get("paths"));
        for (pi, p) in items(paths.unwrap_or(rule)).iter().enumerate() {
            let at = format!("spec.rules[{ri}].http.paths[{pi}]");
            let backend = p.get("backend").and_then(|b| b.get("service"));
            let svc_name = backend
                .and_then(|b| b.get("name"))
                .and_then(text)
                .unwrap_or_default();
            let port = backend.and_then(|b| b.get("port"));
            let Some(svc) = services.iter().find(|s| {
                s.get("metadata").and_then(|m| m.get("name")).and_then(text) == Some(svc_name)
                    && s.get("metadata")
                        .and_then(|m| m.get("namespace"))
                        .and_then(text)
                        == ns
            }) else {
                n.refuse(
                    p,
                    &format!("{at}.backend.service.name"),
                    format!("service {svc_name} is not in this set"),
                );
                continue;
            };
            // The Service port the backend names, by number or name → its target.
            let sports = items(svc.get("spec").and_then(|s| s.get("ports")).unwrap_or(svc));
            let sp = sports.iter().find(|x| {
                port.and_then(|p| p.get("number"))
                    .and_then(text)
                    .is_some_and(|num| x.get("port").and_then(text) == Some(num))
                    || port
                        .and_then(|p| p.get("name"))
                        .and_then(text)
                        .is_some_and(|nm| x.get("name").and_then(text) == Some(nm))
            });
            let Some(sp) = sp else {
                n.refuse(
                    p,
                    &format!("{at}.backend.service.port"),
                    format!("names no port of service {svc_name}"),
                );
                continue;
            };
            let Some(w) = selected(svc, workloads) else {
                continue;
            };
            let target = sp
                .get("targetPort")
                .or_else(|| sp.get("port"))
                .and_then(text);
            let target_no: Option<u16> =
                target.and_then(|t| t.parse().ok().or_else(|| w.container_ports.get(t).copied()));
            let Some(pname) = w
                .service_ports
                .iter()
                .find(|(_, _, c)| Some(*c) == target_no)
                .map(|x| x.0.clone())
            else {
                continue;
            };
            let path = p.get("path").and_then(text).unwrap_or("/");
            if p.get("pathType").and_then(text) == Some("Exact") {
                n.warn(p, &format!("{at}.pathType"), "Exact: routed as a prefix");
            }
            let tls = tls_hosts
                .iter()
                .find(|(h, _)| h == host)
                .map(|(_, s)| match s {
                    Some(s) => json!({"secret": s}),
                    None => json!({}),
                });
            w.expose.push(obj(vec![
                ("port", json!(pname)),
                ("host", json!(host)),
                ("path", json!(path)),
                ("tls", tls.unwrap_or(Value::Null)),
            ]));
        }
    }
}

pub(super) fn finish(mut w: Workload<'_>, n: &mut Notes<'_>, out: &mut Vec<Spec>) {
    let service = w.kind == "Deployment" || w.kind == "StatefulSet";
    if service && !w.service_ports.is_empty() {
        let p: Vec<Value> = w
            .service_ports
            .iter()
            .map(|(name, sp, c)| {
                obj(vec![
                    ("name", json!(name)),
                    ("service_port", sp.map_or(Value::Null, |x| json!(x))),
                    ("container_port", json!(c)),
                ])
            })
            .collect();
        w.spec.insert("ports".into(), json!(p));
    }
    if service && !w.node_ports.is_empty() {
        let r: Vec<Value> = w
            .node_ports
            .iter()
            .map(|(p, np)| json!({"port": p, "node_port": np}))
            .collect();
        w.spec.insert("expose_tcp".into(), json!(r));
    }
    if service && !w.expose.is_empty() {
        w.spec.insert("expose".into(), json!(w.expose));
    }
    w.spec.insert("task".into(), Value::Object(w.task));
    let built = match w.kind.as_str() {
        "Deployment" | "StatefulSet" => {
            build::<ServiceSpec>(Value::Object(w.spec)).map(Spec::Service)
        }
        "DaemonSet" => build::<DaemonSpec>(Value::Object(w.spec)).map(Spec::Daemon),
        _ => build::<JobSpec>(Value::Object(w.spec)).map(Spec::Job),
    };
    match built {
        Ok(s) => out.push(s),
        Err(m) => n.refuse(w.node, "spec", m),
    }
}
