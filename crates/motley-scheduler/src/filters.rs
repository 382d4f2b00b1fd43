//! The filters: static ones per class of constraints (shared by equivalent requests),
//! dynamic ones per sampled node, as allocation-free enums worded only for
//! explanations; and the order volumes prefer media in.

use super::*;

/// The order volumes prefer media in: nvme, ssd, usb-ssd, virtual, hdd, usb-hdd, then
/// the rest.
pub(crate) fn media_rank(m: motley_core::hw::Media) -> u8 {
    use motley_core::hw::Media as M;
    match m {
        M::Nvme => 8,
        M::Ssd => 7,
        M::UsbSsd => 6,
        M::Virtual => 5,
        M::Hdd => 4,
        M::UsbHdd => 3,
        M::Unknown => 2,
        _ => 1,
    }
}

/// The key of a request's static filters: everything they read from the request.
pub(crate) fn static_class(req: &Request<'_>) -> String {
    let p = req.workload.spec.placement();
    let volumes: Vec<(&str, Option<&str>, bool)> = req
        .volumes
        .iter()
        .map(|v| {
            (
                v.name,
                v.binding.as_ref().map(|b| b.node.as_str()),
                v.spec.is_some(),
            )
        })
        .collect();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}",
        p.require,
        p.prefer,
        req.tolerations,
        p.spread.iter().map(|s| &s.key).collect::<Vec<_>>(),
        req.workload.spec.task().resources.gpu,
        volumes,
        req.workload.spec.kind() == motley_core::model::Kind::Daemon,
        req.workload.spec.task().root,
        req.workload.spec.task().image.is_some(),
        req.workload.image_platforms,
    )
}

/// Whether a GPU satisfies a request's vendor, model and memory.
pub(crate) fn gpu_matches(s: &state::GpuSlot, g: &motley_core::model::GpuRequest) -> bool {
    g.vendor
        .as_deref()
        .is_none_or(|v| s.vendor == v.to_ascii_lowercase())
        && g.model
            .as_deref()
            .is_none_or(|m| s.model.contains(&m.to_ascii_lowercase()))
        && g.memory.is_none_or(|m| s.vram.is_some_and(|v| v >= m.0))
}

/// The first resource of node `n` too short for `req`: CPU, memory, ephemeral disk,
/// free matching GPUs, host ports, room for unbound volumes. Used on the live node and
/// on trial copies when looking for preemption victims.
pub(crate) fn resource_fail<'x>(n: &NodeState<'_>, req: &'x Request<'_>) -> Option<DynFail<'x>> {
    let task = req.workload.spec.task();
    let res = &task.resources;
    let cpu = res.cpu_on(n.cpu_score());
    if n.cpu_free() < cpu {
        return Some(DynFail::Cpu(n.cpu_free(), cpu));
    }
    let mem = res.memory_or_default().0;
    if n.mem_free() < mem {
        return Some(DynFail::Memory(n.mem_free(), mem));
    }
    if let Some(d) = res.disk
        && n.disk_free() < d.0
    {
        return Some(DynFail::Disk(n.disk_free(), d.0));
    }
    if let Some(g) = &res.gpu {
        let free = n
            .gpus
            .iter()
            .filter(|s| !s.used && gpu_matches(s, g))
            .count() as u32;
        if free < g.count {
            return Some(DynFail::Gpu(free, g.count));
        }
    }
    if let Some(p) = task
        .ports
        .iter()
        .find(|p| n.ports.contains(&(p.port, p.protocol)))
    {
        return Some(DynFail::Port(p.port, p.protocol));
    }
    if !req.volumes.is_empty()
        && let Some(v) = volume_short(n, &req.volumes)
    {
        return Some(DynFail::Volume(v));
    }
    None
}

/// The first unbound volume with no room for it on `n`, or `None`.
pub(crate) fn volume_short<'x>(
    n: &NodeState<'_>,
    volumes: &'x [VolumeUse<'_>],
) -> Option<&'x VolumeUse<'x>> {
    volumes.iter().find(|v| {
        v.binding.is_none()
            && v.spec.is_some_and(|spec| {
                !n.mounts.iter().any(|m| {
                    spec.class.allows(m.media) && m.size.saturating_sub(m.reserved) >= spec.size.0
                })
            })
    })
}

/// Why a node fails a dynamic filter; formatted only for explanations.
pub(crate) enum DynFail<'x> {
    Cpu(u64, u64),
    Memory(u64, u64),
    Disk(u64, u64),
    Gpu(u32, u32),
    Port(u16, motley_core::model::Protocol),
    Volume(&'x VolumeUse<'x>),
    Skew(usize),
    Affinity(&'x motley_core::model::WorkloadRef),
    AntiAffinity(&'x motley_core::model::WorkloadRef),
    Reserved(String),
}

impl DynFail<'_> {
    pub(crate) fn text(&self, spreads: &[motley_core::model::TopologySpread]) -> String {
        match self {
            DynFail::Cpu(free, want) => format!(
                "insufficient cpu ({} free < {} requested)",
                MilliCpu(*free),
                MilliCpu(*want)
            ),
            DynFail::Memory(free, want) => format!(
                "insufficient memory ({} free < {} requested)",
                Bytes(*free).readable(),
                Bytes(*want).readable()
            ),
            DynFail::Disk(free, want) => format!(
                "insufficient disk ({} free < {} requested)",
                Bytes(*free).readable(),
                Bytes(*want).readable()
            ),
            DynFail::Gpu(free, want) => {
                format!("insufficient gpu ({free} free < {want} requested)")
            }
            DynFail::Port(p, proto) => format!("host port {p}/{} in use", proto.as_str()),
            DynFail::Volume(v) => match v.spec {
                Some(spec) => format!(
                    "volume {} (no room for {} on {} media)",
                    v.name,
                    spec.size,
                    spec.class.as_str()
                ),
                None => format!("volume {} does not exist", v.name),
            },
            DynFail::Skew(k) => {
                let (skew, key) = spreads
                    .get(*k)
                    .map_or((0, ""), |s| (s.max_skew, s.key.as_str()));
                format!("would exceed max skew {skew} over {key}")
            }
            DynFail::Affinity(w) => format!("no {w} here (required affinity)"),
            DynFail::AntiAffinity(w) => format!("{w} runs here (required anti-affinity)"),
            DynFail::Reserved(holder) => format!("reserved for {holder} (head of the queue)"),
        }
    }
}

/// Why a node fails a static filter; formatted only when an explanation is wanted, so
/// building a profile allocates nothing per refused node.
pub(crate) enum StaticFail<'x> {
    NotReady,
    Cordoned,
    Selector(&'x motley_core::selector::Requirement),
    Taint(&'x motley_core::hw::Taint),
    NoGpu,
    NoGpuMatching,
    GpuCount(u32, u32),
    VolumeMissing(&'x str),
    VolumeElsewhere(&'x str, &'x str),
    NoMedia(&'x str, motley_core::model::VolumeClass),
    NoSpreadLabel(&'x str),
    NoRoot,
    NoContainerd,
    ImagePlatform,
}

impl StaticFail<'_> {
    pub(crate) fn text(&self, n: &NodeState<'_>, req: &Request<'_>) -> String {
        match self {
            StaticFail::NotReady => "not ready".into(),
            StaticFail::NoContainerd => "no containerd (image tasks need one)".into(),
            StaticFail::ImagePlatform => motley_core::platform::refusal(
                &n.node.name,
                n.node.facts.hw.as_ref().and_then(|h| h.platform.as_ref()),
                &req.workload.image_platforms,
            ),
            StaticFail::Cordoned => "cordoned".into(),
            StaticFail::Selector(r) => explain::mismatch(r),
            StaticFail::Taint(t) => format!("tainted {} ({})", t.key, t.effect.as_str()),
            StaticFail::NoGpu => "no gpu".into(),
            StaticFail::NoGpuMatching => match &req.workload.spec.task().resources.gpu {
                Some(g) => format!("no gpu matching {}", gpu_text(g)),
                None => "no gpu".into(),
            },
            StaticFail::GpuCount(have, want) => {
                format!("insufficient gpu ({have} matching < {want} requested)")
            }
            StaticFail::VolumeMissing(v) => format!("volume {v} does not exist"),
            StaticFail::VolumeElsewhere(v, node) => format!("volume {v} is bound to node {node}"),
            StaticFail::NoMedia(v, class) => {
                let media: BTreeSet<&str> = n.mounts.iter().map(|m| m.media.as_str()).collect();
                let media: Vec<&str> = media.into_iter().collect();
                format!(
                    "no {} disk for volume {v} (has {})",
                    class.as_str(),
                    if media.is_empty() {
                        "none known".to_string()
                    } else {
                        media.join(", ")
                    }
                )
            }
            StaticFail::NoSpreadLabel(k) => format!("no label {k} (spread)"),
            StaticFail::NoRoot => {
                "does not run tasks as root (its agent has no --allow-root-tasks)".into()
            }
        }
    }
}

/// Why node `n` can never take `req` this pass, as text (for explanations).
pub(crate) fn static_reason(
    n: &NodeState<'_>,
    req: &Request<'_>,
    require: Option<&Selector>,
    pinned: bool,
) -> Option<String> {
    static_fail(n, req, require, pinned).map(|f| f.text(n, req))
}

/// The first static filter node `n` fails for `req` (readiness, cordon, selectors,
/// taints, GPU models, volume media, topology labels), or `None`.
pub(crate) fn static_fail<'x>(
    n: &'x NodeState<'_>,
    req: &'x Request<'_>,
    require: Option<&'x Selector>,
    pinned: bool,
) -> Option<StaticFail<'x>> {
    if !n.ready {
        return Some(StaticFail::NotReady);
    }
    if n.node.cordoned && !pinned {
        return Some(StaticFail::Cordoned);
    }
    let labels = NodeLabels(n.node);
    if let Some(sel) = require
        && let Some(r) = sel.first_mismatch(&labels)
    {
        return Some(StaticFail::Selector(r));
    }
    if let Some(t) = n
        .node
        .taints
        .iter()
        .find(|t| t.effect != TaintEffect::PreferNoSchedule && !tolerated(req.tolerations, t))
    {
        return Some(StaticFail::Taint(t));
    }
    let spec = &req.workload.spec;
    if spec.task().root && !n.node.facts.root_tasks {
        return Some(StaticFail::NoRoot);
    }
    if spec.task().image.is_some() {
        if n.node.facts.containerd.is_none() {
            return Some(StaticFail::NoContainerd);
        }
        let offered = &req.workload.image_platforms;
        if !offered.is_empty() {
            let node = n.node.facts.hw.as_ref().and_then(|h| h.platform.as_ref());
            if node.is_none_or(|p| p.choose(offered).is_none()) {
                return Some(StaticFail::ImagePlatform);
            }
        }
    }
    if let Some(g) = &spec.task().resources.gpu {
        if n.gpus.is_empty() {
            return Some(StaticFail::NoGpu);
        }
        let matching = n.gpus.iter().filter(|s| gpu_matches(s, g)).count() as u32;
        if matching == 0 {
            return Some(StaticFail::NoGpuMatching);
        }
        if matching < g.count {
            return Some(StaticFail::GpuCount(matching, g.count));
        }
    }
    for v in &req.volumes {
        match (&v.binding, v.spec) {
            (_, None) => return Some(StaticFail::VolumeMissing(v.name)),
            (Some(b), _) if b.node != n.node.name => {
                return Some(StaticFail::VolumeElsewhere(v.name, &b.node));
            }
            (Some(_), _) => {}
            (None, Some(s)) => {
                if !n.mounts.iter().any(|m| s.class.allows(m.media)) {
                    return Some(StaticFail::NoMedia(v.name, s.class));
                }
            }
        }
    }
    for sp in &spec.placement().spread {
        if n.node.label(&sp.key).is_none() {
            return Some(StaticFail::NoSpreadLabel(&sp.key));
        }
    }
    None
}

pub(crate) fn gpu_text(g: &motley_core::model::GpuRequest) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &g.vendor {
        parts.push(v.clone());
    }
    if let Some(m) = &g.model {
        parts.push(format!("model *{m}*"));
    }
    if let Some(m) = g.memory {
        parts.push(format!(">= {m}"));
    }
    parts.join(" ")
}
