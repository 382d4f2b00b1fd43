//! Configs in the model: named files and values that are not secret, and how a task
//! references one ([`crate::config`] decides versions and what a change rolls).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Config;

/// One value of a Config as a task receives it: exactly one of `env` and `file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRef {
    /// The Config's name (same namespace).
    pub config: String,
    /// The key within it.
    pub key: String,
    /// Give the value as this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Give the value as this read-only file: in a container at this absolute path; for
    /// a process, under `$MOTLEY_CONFIGS` (`/etc/app.ini` → `$MOTLEY_CONFIGS/etc/app.ini`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Set by the server: the version of the Config this task runs (a digest of its
    /// data). A Config that changes gets a new one in every task that uses it, which
    /// rolls them; whatever a manifest says here is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One value of a Config. In a manifest: a string, or a map with exactly one of `value`
/// and `fromFile` (read by the client at apply time, relative to the manifest's
/// directory). As stored: `value` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValue {
    /// The text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A file the client reads at apply time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_file: Option<String>,
}

/// The map form of [`ConfigValue`], strict.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigValueMap {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    from_file: Option<String>,
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or a map with one of value, fromFile")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue {
                    value: Some(v.to_string()),
                    from_file: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<ConfigValue, A::Error> {
                let m =
                    ConfigValueMap::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(ConfigValue {
                    value: m.value,
                    from_file: m.from_file,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A Config: named files and values that are not secret (an `app.ini`, a
/// `prometheus.yml`), given to the tasks that reference them as read-only files or
/// environment variables. Stored and shown as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// `Config`.
    pub kind: Config,
    /// Unique among configs.
    pub name: String,
    /// The namespace (`default` when unset); names are unique within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The values by key (`[A-Za-z0-9._-]`, at most 253 characters).
    pub data: BTreeMap<String, ConfigValue>,
}
