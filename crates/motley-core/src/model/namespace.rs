//! Namespaces (issue 22): every workload, Volume, Secret and Source lives in one
//! (`default` when unset); a namespace other than `default` is a `kind: Namespace`
//! object carrying its quota. References to objects ([`WorkloadRef`]) carry the
//! namespace; in `default` their text and store keys are what 0.1.0 wrote.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::quota::Quota;

/// The namespace of everything that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The `kind: Namespace` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum NamespaceKind {
    /// `Namespace`
    #[default]
    Namespace,
}

/// `kind: Namespace`: a namespace and what its workloads may ask for at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// `Namespace`.
    pub kind: NamespaceKind,
    /// Unique in the cluster; `default` always exists and needs no object.
    pub name: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Limits on what the namespace's workloads request together (unset: none).
    #[serde(default)]
    pub quota: Quota,
}

/// `kind/name` of an object and its namespace; serialized as text: `service/web` in
/// `default`, `dev/service/web` elsewhere (names hold no `/`, so the forms cannot be
/// confused).
/// Ordered by kind, then name, then namespace (the fields' order: lookups of a name in
/// any namespace rely on it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    /// The kind.
    pub kind: Kind,
    /// The name.
    pub name: String,
    /// The namespace (`default` for cluster-wide kinds).
    pub namespace: String,
}

impl WorkloadRef {
    /// An object in `default`.
    pub fn new(kind: Kind, name: impl Into<String>) -> WorkloadRef {
        WorkloadRef {
            kind,
            name: name.into(),
            namespace: DEFAULT_NAMESPACE.to_string(),
        }
    }

    /// An object in namespace `ns`.
    pub fn in_namespace(ns: &str, kind: Kind, name: impl Into<String>) -> WorkloadRef {
        WorkloadRef {
            kind,
            name: name.into(),
            namespace: ns.to_string(),
        }
    }

    /// Parses `service/web` (in `default`) or `dev/service/web` (any kind alias).
    pub fn parse(s: &str) -> Option<WorkloadRef> {
        let parts: Vec<&str> = s.split('/').collect();
        let (ns, k, n) = match parts.as_slice() {
            [k, n] => (DEFAULT_NAMESPACE, *k, *n),
            [ns, k, n] if !ns.is_empty() => (*ns, *k, *n),
            _ => return None,
        };
        if n.is_empty() {
            return None;
        }
        Some(WorkloadRef::in_namespace(ns, Kind::parse(k)?, n))
    }

    /// Parses `kind/name` as the CLI gives it with `-n NS`: a reference that names its
    /// own namespace keeps it.
    pub fn parse_in(s: &str, ns: &str) -> Option<WorkloadRef> {
        let mut r = WorkloadRef::parse(s)?;
        // Namespaces themselves are cluster-wide.
        if s.matches('/').count() == 1 && r.kind != Kind::Namespace {
            r.namespace = ns.to_string();
        }
        Some(r)
    }

    /// Whether it lives in `default`.
    pub fn in_default(&self) -> bool {
        self.namespace == DEFAULT_NAMESPACE
    }

    /// The same kind of reference to `name` in this one's namespace (a task's Secret or
    /// Volume, an affinity's workload).
    pub fn sibling(&self, kind: Kind, name: &str) -> WorkloadRef {
        WorkloadRef::in_namespace(&self.namespace, kind, name)
    }

    /// Its name with the namespace before it outside `default` (`db`, `dev/db`): what
    /// a Secret's values are sealed to, so a value cannot move between namespaces.
    pub fn scoped_name(&self) -> String {
        if self.in_default() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }

    /// Its name in the service zone, before `.motley`: `web` in `default`, `web.dev`
    /// elsewhere.
    pub fn dns_name(&self) -> String {
        dns_name(&self.namespace, &self.name)
    }
}

/// Puts a placement's affinities written without a namespace (read as `default`) into
/// `ns`: references stay inside their namespace.
pub(crate) fn localize(p: &mut super::Placement, ns: &str) {
    for a in p.affinity.iter_mut().chain(p.anti_affinity.iter_mut()) {
        if a.workload.in_default() {
            a.workload.namespace = ns.to_string();
        }
    }
}

/// The namespace a spec's `namespace:` field names (`default` when unset).
pub fn namespace_or_default(ns: &Option<String>) -> &str {
    ns.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// A service's name in the zone, before `.motley`: `web` in `default`, `web.dev` in
/// `dev`.
pub fn dns_name(namespace: &str, name: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{name}.{namespace}")
    }
}

impl Serialize for WorkloadRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WorkloadRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WorkloadRef::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected KIND/NAME or NAMESPACE/KIND/NAME, got {s:?}"
            ))
        })
    }
}

impl JsonSchema for WorkloadRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WorkloadRef".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "KIND/NAME (in the same namespace), e.g. service/db",
            "type": "string",
            "pattern": "^([a-z0-9-]+/)?[a-z]+/[a-z0-9-]+$"
        })
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.in_default() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}/{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_the_old_text_and_others_add_a_segment() {
        let web = WorkloadRef::new(Kind::Service, "web");
        assert_eq!(web.to_string(), "service/web");
        assert_eq!(WorkloadRef::parse("service/web"), Some(web.clone()));
        assert_eq!(WorkloadRef::parse("svc/web"), Some(web.clone()));
        let dev = WorkloadRef::in_namespace("dev", Kind::Service, "web");
        assert_eq!(dev.to_string(), "dev/service/web");
        assert_eq!(WorkloadRef::parse("dev/service/web"), Some(dev.clone()));
        assert_ne!(web, dev);
        assert_eq!(
            WorkloadRef::parse_in("service/web", "dev"),
            Some(dev.clone())
        );
        assert_eq!(
            WorkloadRef::parse_in("default/service/web", "dev"),
            Some(web)
        );
        assert_eq!(dev.dns_name(), "web.dev");
        assert_eq!(dev.sibling(Kind::Secret, "db").to_string(), "dev/secret/db");
        for bad in ["web", "a/b/c/d", "service/", "/service/web", "nope/web"] {
            assert_eq!(WorkloadRef::parse(bad), None, "{bad}");
        }
        let json = serde_json::to_string(&dev).unwrap_or_default();
        assert_eq!(json, "\"dev/service/web\"");
        let back: WorkloadRef = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, dev);
    }
}
