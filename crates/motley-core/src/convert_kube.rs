//! Kubernetes objects: Deployment → Service, StatefulSet → a fenced Service with its
//! volumes, DaemonSet → Daemon, Job → Job, CronJob → a periodic Job, Service → ports
//! (and node ports) of the workload it selects, Ingress → its `expose` rules,
//! ConfigMap → Config, Secret → Secret, PersistentVolumeClaim → Volume, Namespace →
//! Namespace. Objects may come in any order; what a Service or an Ingress names is
//! found among the objects of the same set. docs/kubernetes.md has the table.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::model::{
    ConfigSpec, DaemonSpec, JobSpec, NamespaceSpec, SecretSpec, ServiceSpec, VolumeSpec,
};

/// One workload being built from a pod template.
struct Workload<'t> {
    /// `Deployment`, `StatefulSet`, ...
    kind: String,
    name: String,
    namespace: Option<String>,
    /// The pod template's labels (what Services select).
    pod_labels: BTreeMap<String, String>,
    /// The motley spec being built.
    spec: serde_json::Map<String, Value>,
    task: serde_json::Map<String, Value>,
    /// Container ports: name → number.
    container_ports: BTreeMap<String, u16>,
    /// Service ports added: (name, service port, container port).
    service_ports: Vec<(String, Option<u16>, u16)>,
    node_ports: Vec<(String, u16)>,
    expose: Vec<Value>,
    node: &'t SpanNode,
}

/// Translates the Kubernetes documents of one file.
pub(crate) fn translate(file: &str, docs: &[SpanNode]) -> Result<Translation, Vec<ManifestError>> {
    let mut n = Notes::new(file);
    let mut objects: Vec<Spec> = Vec::new();
    let mut workloads: Vec<Workload<'_>> = Vec::new();
    let mut services: Vec<&SpanNode> = Vec::new();
    let mut ingresses: Vec<&SpanNode> = Vec::new();
    for d in docs {
        let kind = d.get("kind").and_then(text).unwrap_or_default();
        let api = d.get("apiVersion").and_then(text).unwrap_or_default();
        let at_kind = d.get("kind").unwrap_or(d);
        let Some(meta) = Meta::of(d, &mut n) else {
            continue;
        };
        match kind {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" => {
                if let Some(w) = workload(d, kind, meta, &mut n, &mut objects) {
                    workloads.push(w);
                }
            }
            "Service" => services.push(d),
            "Ingress" => ingresses.push(d),
            "ConfigMap" => config_map(d, meta, &mut n, &mut objects),
            "Secret" => secret(d, meta, &mut n, &mut objects),
            "PersistentVolumeClaim" => claim(d, meta, &mut n, &mut objects),
            "Namespace" => match build::<NamespaceSpec>(json!({"kind": "Namespace", "name": meta.name})) {
                Ok(s) => objects.push(Spec::Namespace(s)),
                Err(m) => n.refuse(d, "metadata.name", m),
            },
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" | "ServiceAccount" => n.refuse(at_kind, "kind",
                format!("{kind}: motley has no RBAC objects; access is by tokens with a role and namespaces (`motley token create --role viewer --namespaces NS`), and tasks get no API credentials"),
            ),
            "NetworkPolicy" => n.refuse(at_kind, "kind",
                "NetworkPolicy: motley has no CNI policies; every service reaches every other (isolate with separate namespaces and nodes)",
            ),
            "Pod" | "ReplicaSet" => n.refuse(at_kind, "kind", format!("{kind}: give a Deployment (a Service), a Job or a DaemonSet")),
            "HorizontalPodAutoscaler" | "PodDisruptionBudget" | "LimitRange" | "ResourceQuota" | "StorageClass" | "PersistentVolume" | "PriorityClass" => n.refuse(at_kind, "kind",
                format!("{kind} has no motley equivalent (quotas: kind Namespace's quota; priorities: the workload's priority)"),
            ),
            _ => n.refuse(at_kind, "kind",
                format!("{api} {kind} is not translated (custom resources and other kinds have no motley equivalent)"),
            ),
        }
    }
    for s in &services {
        service(s, &mut workloads, &mut n);
    }
    for i in ingresses {
        ingress(i, &services, &mut workloads, &mut n);
    }
    for w in workloads {
        finish(w, &mut n, &mut objects);
    }
    if !n.errors.is_empty() {
        return Err(n.errors);
    }
    Ok(Translation {
        objects,
        warnings: n.warnings,
        format: "kubernetes",
        ..Translation::default()
    })
}

struct Meta {
    name: String,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Meta {
    fn of(d: &SpanNode, n: &mut Notes<'_>) -> Option<Meta> {
        let Some(m) = d.get("metadata") else {
            n.refuse(d, "metadata", "missing metadata.name");
            return None;
        };
        let raw = m.get("name").and_then(text).unwrap_or_default();
        let Some(name) = name_of(raw) else {
            n.refuse(
                m,
                "metadata.name",
                format!("{raw:?} cannot be a motley name"),
            );
            return None;
        };
        let labels = string_map(m.get("labels"));
        for (k, v) in entries(m) {
            match k.as_str() {
                "name" | "namespace" | "labels" => {}
                "annotations" | "generateName" | "uid" | "resourceVersion"
                | "creationTimestamp" | "managedFields" | "generation" | "selfLink" => {}
                "finalizers" | "ownerReferences" => n.warn(v, &format!("metadata.{k}"), "ignored"),
                other => n.refuse(v, &format!("metadata.{other}"), "unknown metadata key"),
            }
        }
        Some(Meta {
            name,
            namespace: m.get("namespace").and_then(text).map(str::to_string),
            labels,
        })
    }
}

fn string_map(n: Option<&SpanNode>) -> BTreeMap<String, String> {
    n.map(|n| {
        entries(n)
            .iter()
            .map(|(k, v)| (k.clone(), text(v).unwrap_or_default().to_string()))
            .collect()
    })
    .unwrap_or_default()
}

fn base(kind: &str, meta: &Meta) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), json!(kind));
    m.insert("name".into(), json!(meta.name));
    if let Some(ns) = &meta.namespace {
        m.insert("namespace".into(), json!(ns));
    }
    if !meta.labels.is_empty() {
        m.insert("labels".into(), map_of(&meta.labels));
    }
    m
}

fn config_map(d: &SpanNode, meta: Meta, n: &mut Notes<'_>, out: &mut Vec<Spec>) {
    if let Some(b) = d.get("binaryData") {
        n.refuse(
            b,
            "binaryData",
            "configs hold text: base64-encode the file into data",
        );
    }
    let data = string_map(d.get("data"));
    let mut m = base("Config", &meta);
    m.insert("data".into(), map_of(&data));
    match build::<ConfigSpec>(Value::Object(m)) {
        Ok(s) => out.push(Spec::Config(s)),
        Err(e) => n.refuse(d, "data", e),
    }
}

fn secret(d: &SpanNode, meta: Meta, n: &mut Notes<'_>, out: &mut Vec<Spec>) {
    use base64::Engine;
    let mut data = BTreeMap::new();
    for (k, v) in entries(d.get("data").unwrap_or(d)) {
        if d.get("data").is_none() {
            break;
        }
        let raw = text(v).unwrap_or_default();
        match base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(t) => {
                data.insert(k.clone(), t);
            }
            None => n.refuse(
                v,
                &format!("data.{k}"),
                "not base64 of UTF-8 text (secrets hold text)",
            ),
        }
    }
    data.extend(string_map(d.get("stringData")));
    match d.get("type").and_then(text) {
        None | Some("Opaque" | "kubernetes.io/tls" | "kubernetes.io/basic-auth" | "kubernetes.io/ssh-auth") => {}
        Some(t) => n.refuse(d.get("type").unwrap_or(d), "type", format!("{t}: not translated (registry credentials: a Secret with username and password, named by task.image_secret)")),
    }
    let mut m = base("Secret", &meta);
    m.insert("data".into(), map_of(&data));
    match build::<SecretSpec>(Value::Object(m)) {
        Ok(s) => out.push(Spec::Secret(s)),
        Err(e) => n.refuse(d, "data", e),
    }
}

fn claim(d: &SpanNode, meta: Meta, n: &mut Notes<'_>, out: &mut Vec<Spec>) {
    let spec = d.get("spec").unwrap_or(d);
    if let Some(v) = volume_of(spec, &meta, n) {
        out.push(v);
    }
}

/// A Volume from a claim's spec (a PersistentVolumeClaim's, or a claim template's).
fn volume_of(spec: &SpanNode, meta: &Meta, n: &mut Notes<'_>) -> Option<Spec> {
    let size = spec
        .get("resources")
        .and_then(|r| r.get("requests"))
        .and_then(|r| r.get("storage"))
        .and_then(text);
    let Some(size) = size else {
        n.refuse(
            spec,
            "spec.resources.requests.storage",
            "a claim needs a size",
        );
        return None;
    };
    for (k, v) in entries(spec) {
        match k.as_str() {
            "resources" => {}
            "accessModes" => {
                if items(v).iter().any(|m| text(m) != Some("ReadWriteOnce") && text(m) != Some("ReadWriteOncePod")) {
                    n.warn(v, "spec.accessModes", "a motley volume is on one node's disk: ReadWriteOnce");
                }
            }
            "storageClassName" | "volumeMode" => n.warn(v, &format!("spec.{k}"), "ignored: the volume is a directory on durable media of the node it binds to (class durable)"),
            "selector" | "volumeName" | "dataSource" | "dataSourceRef" => n.refuse(v, &format!("spec.{k}"), "not supported: a motley volume binds to a node on first use"),
            other => n.refuse(v, &format!("spec.{other}"), "unknown claim key"),
        }
    }
    let mut m = base("Volume", meta);
    m.insert("size".into(), json!(size));
    match build::<VolumeSpec>(Value::Object(m)) {
        Ok(s) => Some(Spec::Volume(s)),
        Err(e) => {
            n.refuse(spec, "spec.resources.requests.storage", e);
            None
        }
    }
}

fn workload<'t>(
    d: &'t SpanNode,
    kind: &str,
    meta: Meta,
    n: &mut Notes<'_>,
    out: &mut Vec<Spec>,
) -> Option<Workload<'t>> {
    let spec = d.get("spec").or_else(|| {
        n.refuse(d, "spec", "missing spec");
        None
    })?;
    let motley_kind = match kind {
        "Deployment" | "StatefulSet" => "Service",
        "DaemonSet" => "Daemon",
        _ => "Job",
    };
    let mut s = base(motley_kind, &meta);
    // The pod template: under spec.template, or spec.jobTemplate.spec.template.
    let (job_spec, tpl_at) = match kind {
        "CronJob" => {
            let js = spec.get("jobTemplate").and_then(|j| j.get("spec"));
            (js, "spec.jobTemplate.spec.template")
        }
        "Job" => (Some(spec), "spec.template"),
        _ => (None, "spec.template"),
    };
    let tpl = match kind {
        "CronJob" => job_spec.and_then(|j| j.get("template")),
        _ => spec.get("template"),
    };
    let Some(tpl) = tpl else {
        n.refuse(spec, tpl_at, "missing pod template");
        return None;
    };
    for (k, v) in entries(spec) {
        let f = format!("spec.{k}");
        match (kind, k.as_str()) {
            (_, "template" | "selector" | "jobTemplate") => {}
            ("Deployment" | "StatefulSet", "replicas") => {
                s.insert("replicas".into(), json!(text(v).and_then(|t| t.parse::<u32>().ok()).unwrap_or(1)));
            }
            ("Deployment", "strategy") => {
                if v.get("type").and_then(text) == Some("Recreate") {
                    n.warn(v, &f, "Recreate: motley replaces replicas one at a time (a rolling update)");
                }
                if let Some(surge) = v.get("rollingUpdate").and_then(|r| r.get("maxSurge")).and_then(text).and_then(|t| t.parse::<u32>().ok()) {
                    s.insert("update".into(), json!({"max_parallel": surge.max(1)}));
                }
            }
            ("Deployment" | "StatefulSet" | "DaemonSet", "revisionHistoryLimit" | "minReadySeconds" | "progressDeadlineSeconds" | "updateStrategy" | "podManagementPolicy" | "persistentVolumeClaimRetentionPolicy" | "ordinals") => n.warn(v, &f, "ignored: motley keeps its own rollout history and updates one replica at a time"),
            ("StatefulSet", "serviceName") => {}
            ("StatefulSet", "volumeClaimTemplates") => {}
            ("Job", "completions" | "parallelism") => {
                s.insert(k.clone(), json!(text(v).and_then(|t| t.parse::<u32>().ok()).unwrap_or(1)));
            }
            ("Job", "backoffLimit") => {
                s.insert("retries".into(), json!(text(v).and_then(|t| t.parse::<u32>().ok()).unwrap_or(3)));
            }
            ("Job", "ttlSecondsAfterFinished") => {
                s.insert("ttl_after_finished".into(), json!(format!("{}s", text(v).unwrap_or("0"))));
            }
            ("Job", "activeDeadlineSeconds") => {
                s.insert("time_limit".into(), json!(format!("{}s", text(v).unwrap_or("0"))));
            }
            ("Job", "completionMode" | "suspend" | "podFailurePolicy" | "manualSelector") => n.refuse(v, &f, "not supported"),
            ("CronJob", "schedule") => {
                s.insert("schedule".into(), json!(text(v)));
            }
            ("CronJob", "timeZone") => {
                s.insert("time_zone".into(), json!(text(v)));
            }
            ("CronJob", "concurrencyPolicy") => {
                s.insert("concurrency".into(), json!(text(v).unwrap_or("Allow").to_ascii_lowercase()));
            }
            ("CronJob", "successfulJobsHistoryLimit") => {
                s.insert("history".into(), json!(text(v).and_then(|t| t.parse::<u32>().ok()).unwrap_or(3).max(1)));
            }
            ("CronJob", "failedJobsHistoryLimit") => n.warn(v, &f, "ignored: history counts finished runs, failed or not (successfulJobsHistoryLimit)"),
            ("CronJob", "startingDeadlineSeconds") => n.warn(v, &f, "ignored: a run that could not start within 60s counts as missed (missed: run_once runs the latest once)"),
("CronJob", "suspend") => {
                s.insert("suspend".into(), json!(text(v) == Some("true")));
            }
            _ => n.refuse(v, &f, format!("unknown or untranslated {kind} field")),
        }
    }
    if let Some(js) = job_spec.filter(|_| kind == "CronJob") {
        for (k, v) in entries(js) {
            match k.as_str() {
                "template" => {}
                "completions" | "parallelism" => {
                    s.insert(
                        k.clone(),
                        json!(text(v).and_then(|t| t.parse::<u32>().ok()).unwrap_or(1)),
                    );
                }
                "backoffLimit" => {
                    s.insert(
                        "retries".into(),
                        json!(text(v).and_then(|t| t.parse::<u32>().ok()).unwrap_or(3)),
                    );
                }
                "activeDeadlineSeconds" => {
                    s.insert(
                        "time_limit".into(),
                        json!(format!("{}s", text(v).unwrap_or("0"))),
                    );
                }
                "ttlSecondsAfterFinished" => n.warn(
                    v,
                    &format!("spec.jobTemplate.spec.{k}"),
                    "ignored: a run is kept by the history limit",
                ),
                other => n.refuse(
                    v,
                    &format!("spec.jobTemplate.spec.{other}"),
                    "unknown or untranslated Job field",
                ),
            }
        }
    }
    if kind == "StatefulSet" {
        s.insert("on_node_loss".into(), json!("fence"));
    }
    let mut w = Workload {
        kind: kind.to_string(),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        pod_labels: string_map(tpl.get("metadata").and_then(|m| m.get("labels"))),
        spec: s,
        task: serde_json::Map::new(),
        container_ports: BTreeMap::new(),
        service_ports: Vec::new(),
        node_ports: Vec::new(),
        expose: Vec::new(),
        node: d,
    };
    let pod = tpl.get("spec").or_else(|| {
        n.refuse(tpl, &format!("{tpl_at}.spec"), "missing pod spec");
        None
    })?;
    pod_spec(pod, &format!("{tpl_at}.spec"), &mut w, n);
    // A StatefulSet's claim templates: its own volumes (one replica: motley volumes are
    // per workload).
    if let Some(vct) = spec.get("volumeClaimTemplates") {
        let replicas = w.spec.get("replicas").and_then(Value::as_u64).unwrap_or(1);
        if replicas > 1 {
            n.refuse(vct, "spec.volumeClaimTemplates", "a motley volume belongs to the workload, not to each replica: with claim templates, use replicas: 1 (or one StatefulSet per replica)");
        }
        for c in items(vct) {
            let cname = c
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(text)
                .unwrap_or_default();
            let vname = format!("{cname}-{}", meta.name);
            let Some(vname) = name_of(&vname) else {
                n.refuse(
                    c,
                    "spec.volumeClaimTemplates",
                    format!("{vname:?} cannot be a motley name"),
                );
                continue;
            };
            let vmeta = Meta {
                name: vname.clone(),
                namespace: meta.namespace.clone(),
                labels: BTreeMap::new(),
            };
            if let Some(v) = volume_of(c.get("spec").unwrap_or(c), &vmeta, n) {
                out.push(v);
            }
            // The containers' mounts of `cname` become mounts of the volume.
            rename_volume(&mut w.task, cname, &vname);
        }
    }
    Some(w)
}

fn rename_volume(task: &mut serde_json::Map<String, Value>, from: &str, to: &str) {
    let marker = format!("claim-template:{from}");
    if let Some(Value::Array(mounts)) = task.get_mut("mounts") {
        for m in mounts.iter_mut() {
            if m.get("volume").and_then(Value::as_str) == Some(marker.as_str()) {
                m["volume"] = json!(to);
            }
        }
    }
    if let Some(Value::Array(vols)) = task.get_mut("volumes") {
        for v in vols.iter_mut() {
            if v.as_str() == Some(marker.as_str()) {
                *v = json!(to);
            }
        }
    }
}

#[path = "convert_kube_net.rs"]
mod net;
#[path = "convert_kube_pod.rs"]
mod pod;
use net::{finish, ingress, service};
use pod::pod_spec;
