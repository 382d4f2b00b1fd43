//! Where a workload may run (placement, affinity, spread, priority) and the volumes it
//! binds.

use super::*;

/// Where a workload may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// A selector every chosen node must match, e.g. `arch in (amd64, arm64)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<String>,
    /// Taints this workload accepts (`{key: motley.io/thermal}`, `{key: "*"}`).
    /// Daemons tolerate every condition taint without saying so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<crate::hw::Toleration>,
    /// Soft preferences: nodes matching a selector score `weight` more (negative: less).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefer: Vec<Preference>,
    /// Run on nodes (or topology domains) where these workloads run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affinity: Vec<Affinity>,
    /// Stay off nodes (or topology domains) where these workloads run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anti_affinity: Vec<Affinity>,
    /// Spread instances over the values of a node label (rack, power strip, board), at
    /// most `max_skew` apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<TopologySpread>,
    /// `spread` (default for services and daemons) or `binpack` (default for jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyName>,
}

/// A soft node preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Preference {
    /// A selector, e.g. `motley.io/cpu-score > 1500` or `motley.io/storage in (nvme, ssd)`.
    pub selector: String,
    /// -100 to 100 (default 10).
    #[serde(default = "ten")]
    pub weight: i32,
}

fn ten() -> i32 {
    10
}

/// Affinity or anti-affinity to another workload's instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    /// The other workload: `service/db`, `job/train`.
    pub workload: WorkloadRef,
    /// A node label that makes a domain (`rack`); default: the node itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
    /// A hard rule (refuse nodes that break it) instead of a preference.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// Spread over a topology label with a maximum skew (a hard rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopologySpread {
    /// The node label whose values are the domains (`rack`, `motley.io/board`).
    pub key: String,
    /// Most instances one domain may have beyond the least-loaded one (default 1).
    #[serde(default = "one")]
    pub max_skew: u32,
}

/// A placement strategy by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StrategyName {
    /// Least loaded node first.
    Spread,
    /// Most loaded node that fits first.
    Binpack,
}

/// A priority: a number, or a class name given in a manifest (`critical` 1000, `high`
/// 100, `normal` 0, `low` -100, `batch` -200). Higher is more important.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
pub struct Priority(pub i32);

impl Priority {
    /// The built-in priority classes.
    pub const CLASSES: [(&'static str, i32); 5] = [
        ("critical", 1000),
        ("high", 100),
        ("normal", 0),
        ("low", -100),
        ("batch", -200),
    ];
    pub(super) fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Priority;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a priority: an integer or critical, high, normal, low, batch")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Priority, E> {
                i32::try_from(v)
                    .map(Priority)
                    .map_err(|_| E::custom("priority out of range"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Priority, E> {
                i32::try_from(v)
                    .map(Priority)
                    .map_err(|_| E::custom("priority out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Priority, E> {
                Priority::CLASSES
                    .iter()
                    .find(|(n, _)| *n == v)
                    .map(|(_, p)| Priority(*p))
                    .or_else(|| v.parse().ok().map(Priority))
                    .ok_or_else(|| {
                        E::custom(format!(
                            "unknown priority class {v:?}: expected an integer or critical, high, normal, low, batch"
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Priority {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Priority".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "an integer, or critical (1000), high (100), normal (0), low (-100), batch (-200)",
            "anyOf": [
                { "type": "integer" },
                { "type": "string", "enum": ["critical", "high", "normal", "low", "batch"] }
            ]
        })
    }
}

/// Where a volume may be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum VolumeClass {
    /// Media that survive writes: nvme, ssd, hdd, or a VM's virtual disk. Never SD, eMMC
    /// or USB flash.
    #[default]
    Durable,
    /// nvme or ssd.
    Fast,
    /// Any mounted disk.
    Any,
}

impl VolumeClass {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeClass::Durable => "durable",
            VolumeClass::Fast => "fast",
            VolumeClass::Any => "any",
        }
    }
    /// Whether a disk of this media may hold a volume of this class.
    pub fn allows(self, media: crate::hw::Media) -> bool {
        use crate::hw::Media as M;
        match self {
            VolumeClass::Durable => matches!(
                media,
                M::Nvme | M::Ssd | M::Hdd | M::UsbSsd | M::UsbHdd | M::Virtual
            ),
            VolumeClass::Fast => matches!(media, M::Nvme | M::Ssd),
            VolumeClass::Any => !matches!(media, M::Optical),
        }
    }
}

/// A Volume: storage for a workload, bound on first use to one node and one mount on
/// media its class allows; from then on the workloads using it run on that node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// `Volume`.
    pub kind: Volume,
    /// Unique among volumes.
    pub name: String,
    /// The namespace (`default` when unset); names are unique within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `durable` (default), `fast` or `any`.
    #[serde(default)]
    pub class: VolumeClass,
    /// Space reserved on the disk, e.g. `10Gi`.
    pub size: Bytes,
}

/// Where a volume was bound (set by the scheduler on first use, never changed after).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeBinding {
    /// The node.
    pub node: String,
    /// The mount point on that node.
    pub mount: String,
    /// The disk's media.
    pub media: crate::hw::Media,
    /// The disk's device name.
    pub disk: String,
    /// When it was bound.
    pub bound_at: u64,
}
