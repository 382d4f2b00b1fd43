//! `kind: Inventory`: machines owned or considered, for `motley capacity` — never
//! stored in a cluster. Each model gives its count, CPUs and single-thread score,
//! memory, disk, GPUs, power draw idle and loaded, and price.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestError, Other};
use crate::model::{Capacity, Node, NodeFacts};
use crate::quantity::{Bytes, MilliCpu};

/// The `kind: Inventory` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum InventoryKind {
    /// `Inventory`
    #[default]
    Inventory,
}

/// Machines and what electricity costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// `Inventory`.
    pub kind: InventoryKind,
    /// Its name.
    pub name: String,
    /// What a kWh costs (in `currency`).
    #[serde(default)]
    pub price_per_kwh: Option<f64>,
    /// Shown with prices (`€`, `USD`).
    #[serde(default)]
    pub currency: Option<String>,
    /// The machine models.
    pub models: Vec<Model>,
}

/// One machine model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Its name (`pi5-8g`); nodes are `MODEL-1`, `MODEL-2`, ….
    pub model: String,
    /// How many are owned (0: a candidate to buy).
    #[serde(default)]
    pub count: u32,
    /// `arm64`, `amd64`, `arm`, `riscv64`.
    pub arch: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Single-thread CPU score (reference machine = 1000, as `motley facts` measures).
    #[serde(default)]
    pub cpu_score: Option<u32>,
    /// Memory (`8Gi`).
    pub memory: Bytes,
    /// Data disk (`256Gi`).
    #[serde(default)]
    pub disk: Option<Bytes>,
    /// GPUs in each machine.
    #[serde(default)]
    pub gpus: Option<GpuModel>,
    /// Labels its nodes carry (`vault: "yes"`, `motley.io/storage: nvme`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Power draw.
    #[serde(default)]
    pub watts: Option<Watts>,
    /// What one costs.
    #[serde(default)]
    pub price: Option<f64>,
}

/// The GPUs of a machine model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuModel {
    /// How many.
    pub count: u32,
    /// `amd`, `nvidia`, `intel`.
    pub vendor: String,
    /// Model (`rx 6600`), where workloads ask for one.
    #[serde(default)]
    pub model: Option<String>,
}

/// Power draw of a machine, idle and with every CPU busy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Watts {
    /// Idle.
    pub idle: f64,
    /// Every CPU busy.
    pub loaded: f64,
}

impl Watts {
    /// Draw at `utilisation` (0..=1), linear between idle and loaded.
    pub fn at(&self, utilisation: f64) -> f64 {
        self.idle + (self.loaded - self.idle) * utilisation.clamp(0.0, 1.0)
    }
}

/// Most machines of one model (a home cluster has tens).
pub const MAX_COUNT: u32 = 10_000;

/// Checks what typing alone cannot, each error at its field.
pub fn validate(doc: &Other<Inventory>) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    let inv = &doc.value;
    let mut seen = BTreeMap::new();
    if inv.models.is_empty() {
        errors.push(doc.error_at("models", "an inventory needs at least one model"));
    }
    for (i, m) in inv.models.iter().enumerate() {
        let at = |f: &str| format!("models[{i}].{f}");
        if let Some(j) = seen.insert(m.model.as_str(), i) {
            errors.push(doc.error_at(
                &at("model"),
                format!("model {:?} is also models[{j}]", m.model),
            ));
        }
        if let Err(e) = crate::model::validate_name(&m.model) {
            errors.push(doc.error_at(&at("model"), format!("{e} (it names nodes)")));
        }
        if m.cpus == 0 {
            errors.push(doc.error_at(&at("cpus"), "a machine has at least one CPU"));
        }
        if m.memory.0 == 0 {
            errors.push(doc.error_at(&at("memory"), "a machine has some memory"));
        }
        if m.gpus
            .as_ref()
            .is_some_and(|g| g.count == 0 || g.count > 64)
        {
            errors.push(doc.error_at(&at("gpus.count"), "1 to 64 GPUs"));
        }
        if m.count > MAX_COUNT {
            errors.push(doc.error_at(&at("count"), format!("at most {MAX_COUNT}")));
        }
        if let Some(w) = m.watts
            && (w.idle < 0.0 || w.loaded < w.idle || !w.loaded.is_finite())
        {
            errors.push(doc.error_at(
                &at("watts"),
                "watts: 0 ≤ idle ≤ loaded (a machine draws more when busy)",
            ));
        }
        if m.price.is_some_and(|p| p < 0.0 || !p.is_finite()) {
            errors.push(doc.error_at(&at("price"), "a price is 0 or more"));
        }
    }
    if inv.price_per_kwh.is_some_and(|p| p < 0.0 || !p.is_finite()) {
        errors.push(doc.error_at("price_per_kwh", "a price is 0 or more"));
    }
    errors
}

impl Model {
    /// Node `index` (from 1) of this model, as the scheduler sees a registered one.
    pub fn node(&self, index: u32) -> Node {
        let name = format!("{}-{index}", self.model);
        let gpus = self.gpus.as_ref().map_or_else(Vec::new, |g| {
            (0..g.count)
                .map(|i| crate::hw::Gpu {
                    name: format!("card{i}"),
                    vendor: g.vendor.clone(),
                    model: g.model.clone(),
                    ..Default::default()
                })
                .collect()
        });
        let facts = NodeFacts {
            arch: self.arch.clone(),
            os: "linux".into(),
            cpus: self.cpus,
            memory: self.memory.0,
            hostname: name.clone(),
            cpu_score: self.cpu_score,
            hw: (!gpus.is_empty()).then(|| {
                Box::new(crate::hw::Hardware {
                    arch: self.arch.clone(),
                    os: "linux".into(),
                    memory: self.memory.0,
                    gpus,
                    ..Default::default()
                })
            }),
            ..Default::default()
        };
        let mut labels = self.labels.clone();
        labels.insert("model".into(), self.model.clone());
        labels.insert("arch".into(), self.arch.clone());
        if let Some(s) = self.cpu_score {
            labels.insert(
                format!("{}cpu-score", crate::hw::LABEL_PREFIX),
                s.to_string(),
            );
        }
        Node {
            name,
            facts,
            labels,
            operator_labels: Default::default(),
            capacity: Capacity {
                cpu: MilliCpu(u64::from(self.cpus) * 1000),
                memory: self.memory,
                disk: self.disk.unwrap_or(Bytes(0)),
            },
            cordoned: false,
            draining: false,
            taints: Vec::new(),
            registered_at: 0,
        }
    }
}
