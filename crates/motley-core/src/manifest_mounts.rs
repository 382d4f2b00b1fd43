//! What containers need beyond a process: mounts at paths of their choosing, ports they
//! listen on inside a bridge network, and a service's start order (`depends_on`).

use super::*;
use crate::model::NetworkMode;

/// Problems with `task.mounts`, `container_port`s and `depends_on`.
pub(super) fn validate(doc: &Document, errors: &mut Vec<ManifestError>) {
    let spec = &doc.spec;
    let task = spec.task();
    let bridge = task.image.is_some() && task.network == Some(NetworkMode::Bridge);
    let needs_bridge = "is for containers on a bridge network: set task.image and network: bridge";
    // Host ports' and (a service's) service ports' container ports, by field.
    let service_ports = match spec {
        Spec::Service(s) => s.ports.as_slice(),
        _ => &[],
    };
    let container_ports = (task.ports.iter().map(|p| p.container_port).enumerate())
        .map(|(i, c)| (format!("task.ports.{i}.container_port"), c))
        .chain(
            (service_ports.iter().map(|p| p.container_port).enumerate())
                .map(|(i, c)| (format!("ports.{i}.container_port"), c)),
        );
    for (field, c) in container_ports {
        match c {
            Some(_) if !bridge => errors.push(doc.error_at(&field, needs_bridge)),
            Some(0) => errors.push(doc.error_at(&field, "must be 1 to 65535")),
            _ => {}
        }
    }
    if let Spec::Service(s) = spec {
        for (i, d) in s.depends_on.iter().enumerate() {
            let field = format!("depends_on.{i}");
            if let Err(m) = model::validate_name(d) {
                errors.push(doc.error_at(&field, m));
            } else if *d == s.name {
                errors.push(doc.error_at(&field, "a service cannot wait for itself"));
            } else if s.depends_on[..i].contains(d) {
                errors.push(doc.error_at(&field, format!("{d} is named twice")));
            }
        }
    }
    if let Some(u) = &task.user {
        if task.image.is_none() {
            errors.push(doc.error_at(
                "task.user",
                "is for containers (set task.image); a process runs as the agent's task user",
            ));
        } else if task.numeric_user().is_none() {
            errors.push(doc.error_at(
                "task.user",
                format!(
                    "{u:?}: a numeric user, UID or UID:GID (names are the image's, unknown here)"
                ),
            ));
        } else if task.numeric_user().is_some_and(|(uid, _)| uid == 0) {
            errors.push(doc.error_at("task.user", "root is `root: true` (nodes that allow it)"));
        }
    }
    let mut paths = std::collections::BTreeSet::new();
    for (i, m) in task.mounts.iter().enumerate() {
        let at = |f: &str| format!("task.mounts.{i}.{f}");
        if task.image.is_none() {
            errors.push(doc.error_at(
                &format!("task.mounts.{i}"),
                "mounts are for containers (set task.image); a process finds its volumes at $MOTLEY_VOLUME_<NAME>",
            ));
            continue;
        }
        match (&m.volume, &m.host_path) {
            (Some(v), None) => {
                if !task.volumes.contains(v) {
                    errors.push(doc.error_at(
                        &at("volume"),
                        format!(
                            "{v} is not one of task.volumes ({})",
                            task.volumes.join(", ")
                        ),
                    ));
                }
            }
            (None, Some(h)) => {
                if !normal_absolute(h) {
                    errors.push(doc.error_at(
                        &at("host_path"),
                        format!("{h:?} must be an absolute path with no empty, . or .. parts"),
                    ));
                }
            }
            _ => errors.push(doc.error_at(
                &format!("task.mounts.{i}"),
                "give exactly one of volume and host_path",
            )),
        }
        if !normal_absolute(&m.path) || m.path == "/" {
            errors.push(doc.error_at(
                &at("path"),
                format!(
                    "{:?} must be an absolute path (not /) with no empty, . or .. parts",
                    m.path
                ),
            ));
        } else if ["/alloc", "/proc", "/sys", "/dev", "/run/secrets"]
            .iter()
            .any(|r| m.path == *r || m.path.starts_with(&format!("{r}/")))
        {
            errors.push(doc.error_at(
                &at("path"),
                format!("{} is mounted by motley or the kernel", m.path),
            ));
        } else if !paths.insert(m.path.clone()) {
            errors.push(doc.error_at(&at("path"), format!("{} is mounted twice", m.path)));
        }
    }
}

fn normal_absolute(p: &str) -> bool {
    p.strip_prefix('/').is_some_and(|rest| {
        rest.is_empty()
            || rest
                .split('/')
                .all(|x| !x.is_empty() && x != "." && x != ".." && !x.contains('\0'))
    })
}
