//! Secrets in the model: a `Secret`'s values, and how a task references one.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Secret;

/// One value of a Secret as a task receives it: exactly one of `env` and `file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The Secret's name.
    pub secret: String,
    /// The key within it.
    pub key: String,
    /// Give the value as this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Give the value as this file in `$MOTLEY_SECRETS` (tmpfs, mode 0400, never on disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// One value of a Secret. In a manifest: a string, or a map with exactly one of `value`,
/// `fromFile` (read by the client at apply time, relative to the manifest's directory)
/// and `fromEnv` (the client's environment at apply time). As stored: `sealed` only
/// (AES-256-GCM under the server's key). As shown: `redacted` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    /// The value itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A file the client reads at apply time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_file: Option<String>,
    /// An environment variable the client reads at apply time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_env: Option<String>,
    /// Set by the server: the value encrypted (`v1:<key id>:<base64 nonce+ciphertext>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Set in output: the value is hidden (`get secret NAME --reveal` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<bool>,
}

impl SecretValue {
    /// The output form: only `redacted: true`.
    pub fn redacted() -> SecretValue {
        SecretValue {
            redacted: Some(true),
            ..SecretValue::default()
        }
    }

    /// What the client reads at apply time for this value: `("file", path, "fromFile")`
    /// or `("env", variable, "fromEnv")` (source kind, name, manifest field); `None` for
    /// a value given inline (a valid manifest names at most one).
    pub fn input(&self) -> Option<(&'static str, &str, &'static str)> {
        match (&self.from_file, &self.from_env) {
            (Some(f), _) => Some(("file", f, "fromFile")),
            (_, Some(e)) => Some(("env", e, "fromEnv")),
            _ => None,
        }
    }
}

/// The map form of [`SecretValue`], strict.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretValueMap {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    from_file: Option<String>,
    #[serde(default)]
    from_env: Option<String>,
    #[serde(default)]
    sealed: Option<String>,
    #[serde(default)]
    redacted: Option<bool>,
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or a map with one of value, fromFile, fromEnv")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretValue, E> {
                Ok(SecretValue {
                    value: Some(v.to_string()),
                    ..SecretValue::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<SecretValue, A::Error> {
                let m =
                    SecretValueMap::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(SecretValue {
                    value: m.value,
                    from_file: m.from_file,
                    from_env: m.from_env,
                    sealed: m.sealed,
                    redacted: m.redacted,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A Secret: named values given to tasks that reference them, encrypted at rest and
/// never shown in plaintext except to an admin who asks (`get secret NAME --reveal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// `Secret`.
    pub kind: Secret,
    /// Unique among secrets.
    pub name: String,
    /// The namespace (`default` when unset); names are unique within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The values by key (`[A-Za-z0-9._-]`, at most 253 characters).
    pub data: BTreeMap<String, SecretValue>,
}
