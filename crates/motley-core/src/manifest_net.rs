//! Checks of a service's `ports` and `expose`, and of `expose` routes claimed by two
//! services (in one set, or a set against the cluster).

use std::collections::BTreeMap;

use crate::model::{ServiceSpec, Spec, dns_name, valid_host};

use super::{Document, ManifestError};

/// What is wrong with a service's `ports` and `expose`: `(field, message)`.
pub(crate) fn service_problems(s: &ServiceSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, p) in s.ports.iter().enumerate() {
        let ok = !p.name.is_empty()
            && p.name.len() <= 32
            && p.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            out.push((
                format!("ports.{i}.name"),
                "must be 1 to 32 letters, digits, '-' or '_'".to_string(),
            ));
        }
        let upper = |n: &str| n.to_ascii_uppercase().replace('-', "_");
        if s.ports[..i]
            .iter()
            .any(|q| upper(&q.name) == upper(&p.name))
            || s.task
                .ports
                .iter()
                .any(|q| upper(&q.name) == upper(&p.name))
        {
            out.push((
                format!("ports.{i}.name"),
                format!(
                    "port name {:?} is used twice (MOTLEY_PORT_{} would stand for both)",
                    p.name,
                    upper(&p.name)
                ),
            ));
        }
        if p.service_port == Some(0) {
            out.push((
                format!("ports.{i}.service_port"),
                "must be 1 to 65535".to_string(),
            ));
        }
        if let Some(sp) = p.service_port
            && s.ports[..i].iter().any(|q| q.service_port == Some(sp))
        {
            out.push((
                format!("ports.{i}.service_port"),
                format!("service port {sp} is given twice"),
            ));
        }
    }
    for (i, t) in s.expose_tcp.iter().enumerate() {
        if !s.ports.iter().any(|p| p.name == t.port) {
            out.push((
                format!("expose_tcp.{i}.port"),
                format!("port {:?} is not one of the service's ports", t.port),
            ));
        }
        if t.node_port == 0 {
            out.push((
                format!("expose_tcp.{i}.node_port"),
                "must be 1 to 65535".to_string(),
            ));
        }
        if s.expose_tcp[..i].iter().any(|u| u.node_port == t.node_port) {
            out.push((
                format!("expose_tcp.{i}.node_port"),
                format!("node port {} is exposed twice", t.node_port),
            ));
        }
    }
    if s.update.max_parallel == 0 || s.update.max_parallel > 1000 {
        out.push((
            "update.max_parallel".to_string(),
            "must be 1 to 1000".to_string(),
        ));
    }
    if s.update.deadline.as_millis() < 1000 || s.update.deadline < s.update.min_healthy {
        out.push((
            "update.deadline".to_string(),
            "must be at least 1s and at least min_healthy".to_string(),
        ));
    }
    for (i, e) in s.expose.iter().enumerate() {
        if !s.ports.iter().any(|p| p.name == e.port) {
            let declared: Vec<&str> = s.ports.iter().map(|p| p.name.as_str()).collect();
            out.push((
                format!("expose.{i}.port"),
                if declared.is_empty() {
                    format!(
                        "port {:?} is not declared: the service has no ports",
                        e.port
                    )
                } else {
                    format!(
                        "port {:?} is not one of the service's ports ({})",
                        e.port,
                        declared.join(", ")
                    )
                },
            ));
        }
        if !valid_host(&e.host) {
            out.push((
                format!("expose.{i}.host"),
                "must be a host name: labels of letters, digits and '-', separated by dots"
                    .to_string(),
            ));
        }
        if !e.path.starts_with('/') || e.path.contains(char::is_whitespace) {
            out.push((
                format!("expose.{i}.path"),
                "must start with / and hold no spaces".to_string(),
            ));
        }
        if s.expose[..i]
            .iter()
            .any(|f| route_key(&f.host, &f.path) == route_key(&e.host, &e.path))
        {
            out.push((
                format!("expose.{i}"),
                format!("{}{} is exposed twice", e.host, e.path),
            ));
        }
    }
    out
}

/// A route as compared: host without case, path without a trailing `/` (but `/`).
pub fn route_key(host: &str, path: &str) -> (String, String) {
    let p = path.trim_end_matches('/');
    (
        host.to_ascii_lowercase(),
        if p.is_empty() { "/".into() } else { p.into() },
    )
}

/// A TCP route as compared with HTTP ones (no host name has a space).
pub fn tcp_key(node_port: u16) -> (String, String) {
    route_key(&format!("tcp port {node_port}"), "/")
}

/// Routes claimed by two services: within `docs`, or by a document and a service of the
/// cluster (`existing`: service name → its routes) that the set does not replace.
pub fn expose_conflicts(
    docs: &[Document],
    existing: &BTreeMap<String, Vec<(String, String)>>,
) -> Vec<ManifestError> {
    let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
    for (svc, routes) in existing {
        let replaced = docs
            .iter()
            .any(|d| matches!(&d.spec, Spec::Service(s) if dns_name(d.spec.namespace(), &s.name) == *svc));
        if !replaced {
            for (h, p) in routes {
                claimed.insert(route_key(h, p), format!("service {svc}"));
            }
        }
    }
    let mut errors = Vec::new();
    for d in docs {
        let Spec::Service(s) = &d.spec else { continue };
        let me = format!("service {}", dns_name(d.spec.namespace(), &s.name));
        for (i, t) in s.expose_tcp.iter().enumerate() {
            let key = tcp_key(t.node_port);
            match claimed.get(&key) {
                Some(owner) if *owner != me => {
                    errors.push(d.error_at(
                        &format!("expose_tcp.{i}.node_port"),
                        format!("node port {} is already exposed by {owner}", t.node_port),
                    ));
                }
                Some(_) => {}
                None => {
                    claimed.insert(key, me.clone());
                }
            }
        }
        for (i, e) in s.expose.iter().enumerate() {
            let key = route_key(&e.host, &e.path);
            match claimed.get(&key) {
                Some(owner) if *owner != me => {
                    errors.push(d.error_at(
                        &format!("expose.{i}.host"),
                        format!("{}{} is already exposed by {owner}", e.host, e.path),
                    ));
                }
                Some(_) => {}
                None => {
                    claimed.insert(key, me.clone());
                }
            }
        }
    }
    errors
}
