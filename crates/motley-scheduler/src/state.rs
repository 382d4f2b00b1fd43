//! What the scheduler knows about each node during a pass: capacity, what is in use,
//! its GPUs, ports and mounts, and the live allocations on it (for preemption and
//! backfill). Built once per pass in O(nodes + allocations), then updated in place.

use motley_core::hw::{Media, Readings};
use motley_core::model::{Allocation, Desired, Kind, Node, Protocol, Task, Workload, WorkloadRef};
use rustc_hash::FxHashMap;

/// One GPU of a node.
#[derive(Debug, Clone)]
pub struct GpuSlot {
    /// Device name (`card0`).
    pub name: String,
    /// Vendor, lowercase.
    pub vendor: String,
    /// Model, lowercase.
    pub model: String,
    /// Video memory in bytes, when known.
    pub vram: Option<u64>,
    /// Assigned to a live allocation.
    pub used: bool,
}

/// A mounted disk a volume may be bound to.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Mount point.
    pub path: String,
    /// The disk's media.
    pub media: Media,
    /// The disk's name.
    pub disk: String,
    /// The disk's size.
    pub size: u64,
    /// Bytes reserved by volumes bound here.
    pub reserved: u64,
    /// The mount holding the agent's data dir (preferred among equal media).
    pub data: bool,
}

/// A live allocation as accounted on its node.
#[derive(Debug, Clone)]
pub struct LiveAlloc {
    /// Its id.
    pub id: String,
    /// Its workload (interned).
    pub workload: u32,
    /// Its workload's priority.
    pub priority: i32,
    /// A job allocation still wanted: preemptible by higher priority services.
    pub preemptible: bool,
    /// Millicores on this node.
    pub cpu: u64,
    /// Bytes of memory.
    pub memory: u64,
    /// Bytes of ephemeral disk.
    pub disk: u64,
    /// GPU indices into the node's list.
    pub gpus: Vec<usize>,
    /// Host ports.
    pub ports: Vec<(u16, Protocol)>,
    /// Expected end (start + the job's time limit), when known.
    pub ends_at: Option<u64>,
}

/// A node during a pass.
#[derive(Debug, Clone)]
pub struct NodeState<'a> {
    /// The record.
    pub node: &'a Node,
    /// Connected and healthy.
    pub ready: bool,
    /// Millicores used.
    pub cpu_used: u64,
    /// Bytes of memory used.
    pub mem_used: u64,
    /// Bytes of ephemeral disk used.
    pub disk_used: u64,
    /// GPUs.
    pub gpus: Vec<GpuSlot>,
    /// Host ports in use.
    pub ports: Vec<(u16, Protocol)>,
    /// Mounts for volumes.
    pub mounts: Vec<Mount>,
    /// Live allocations.
    pub allocs: Vec<LiveAlloc>,
    /// Health penalty, 0 (healthy) to 100 (hot, throttled, undervolted).
    pub health: i32,
    /// Capacity, copied from the node record so the hot loop reads one struct.
    pub cpu_cap: u64,
    /// Memory capacity in bytes.
    pub mem_cap: u64,
    /// Ephemeral disk capacity in bytes.
    pub disk_cap: u64,
    /// The node's CPU score.
    score: Option<u32>,
    /// 1000 × 2³² / CPU capacity: per-mille load by a multiplication.
    cpu_scale: u64,
    /// The same for memory, on MiB.
    mem_scale: u64,
}

impl<'a> NodeState<'a> {
    /// A node with nothing placed yet.
    pub fn new(node: &'a Node, ready: bool, readings: Option<&Readings>) -> NodeState<'a> {
        let hw = node.facts.hw.as_deref();
        let gpus = hw
            .map(|h| {
                h.gpus
                    .iter()
                    .map(|g| GpuSlot {
                        name: g.name.clone(),
                        vendor: g.vendor.to_ascii_lowercase(),
                        model: g.model.clone().unwrap_or_default().to_ascii_lowercase(),
                        vram: g.vram,
                        used: false,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut mounts: Vec<Mount> = Vec::new();
        if let Some(h) = hw {
            let data_mount = h.data_disk.as_ref().map(|d| d.mount.as_str());
            for d in &h.disks {
                for m in &d.mounts {
                    // Boot, swap and runtime mounts (`/run/netns`...) never hold volumes.
                    let system = ["/boot", "/run", "/dev", "/proc", "/sys", "[SWAP]"]
                        .iter()
                        .any(|p| m == p || m.strip_prefix(p).is_some_and(|r| r.starts_with('/')));
                    if system || mounts.iter().any(|x| &x.path == m) {
                        continue;
                    }
                    mounts.push(Mount {
                        path: m.clone(),
                        media: d.media,
                        disk: d.name.clone(),
                        size: d.size,
                        reserved: 0,
                        data: data_mount == Some(m.as_str()),
                    });
                }
            }
        }
        NodeState {
            node,
            ready,
            cpu_used: 0,
            mem_used: 0,
            disk_used: 0,
            gpus,
            ports: Vec::new(),
            mounts,
            allocs: Vec::new(),
            health: health_penalty(node, readings),
            cpu_cap: node.capacity.cpu.0,
            mem_cap: node.capacity.memory.0,
            disk_cap: node.capacity.disk.0,
            score: node.facts.cpu_score,
            cpu_scale: (1000u64 << 32) / node.capacity.cpu.0.max(1),
            mem_scale: (1000u64 << 32) / (node.capacity.memory.0 >> 20).max(1),
        }
    }

    /// `cpu` millicores as per mille of capacity (capped at 1000).
    pub fn cpu_permille(&self, cpu: u64) -> u64 {
        ((cpu.min(self.cpu_cap) as u128 * self.cpu_scale as u128) >> 32) as u64
    }

    /// `bytes` of memory as per mille of capacity (capped at 1000).
    pub fn mem_permille(&self, bytes: u64) -> u64 {
        let mib = bytes.min(self.mem_cap) >> 20;
        ((mib as u128 * self.mem_scale as u128) >> 32).min(1000) as u64
    }

    /// Millicores free.
    pub fn cpu_free(&self) -> u64 {
        self.cpu_cap.saturating_sub(self.cpu_used)
    }
    /// Bytes of memory free.
    pub fn mem_free(&self) -> u64 {
        self.mem_cap.saturating_sub(self.mem_used)
    }
    /// Bytes of ephemeral disk free.
    pub fn disk_free(&self) -> u64 {
        self.disk_cap.saturating_sub(self.disk_used)
    }
    /// The node's CPU score.
    pub fn cpu_score(&self) -> Option<u32> {
        self.score
    }

    /// Accounts a live allocation.
    pub fn add(&mut self, la: LiveAlloc) {
        self.cpu_used += la.cpu;
        self.mem_used += la.memory;
        self.disk_used += la.disk;
        for &g in &la.gpus {
            if let Some(s) = self.gpus.get_mut(g) {
                s.used = true;
            }
        }
        self.ports.extend(la.ports.iter().copied());
        self.allocs.push(la);
    }

    /// Removes a live allocation (preempted); returns it.
    pub fn remove(&mut self, id: &str) -> Option<LiveAlloc> {
        let i = self.allocs.iter().position(|a| a.id == id)?;
        let la = self.allocs.swap_remove(i);
        self.cpu_used = self.cpu_used.saturating_sub(la.cpu);
        self.mem_used = self.mem_used.saturating_sub(la.memory);
        self.disk_used = self.disk_used.saturating_sub(la.disk);
        for &g in &la.gpus {
            if let Some(s) = self.gpus.get_mut(g) {
                s.used = false;
            }
        }
        for p in &la.ports {
            if let Some(j) = self.ports.iter().position(|x| x == p) {
                self.ports.swap_remove(j);
            }
        }
        Some(la)
    }
}

/// 0 for a healthy node, up to 100: 40 per condition (thermal, throttled, undervoltage,
/// disk or memory pressure) and, from the latest readings, 5 per degree within 10 °C of
/// a thermal zone's lowest trip point.
pub fn health_penalty(node: &Node, readings: Option<&Readings>) -> i32 {
    let mut p = 40 * node.facts.conditions.len() as i32;
    if let (Some(hw), Some(r)) = (node.facts.hw.as_deref(), readings) {
        for z in &hw.thermal {
            let trip = z.trips.iter().map(|(_, t)| *t).filter(|t| *t > 0).min();
            if let (Some(trip), Some(&temp)) = (trip, r.temps_c.get(&z.name)) {
                let headroom_c = trip / 1000 - temp;
                if headroom_c < 10 {
                    p += (10 - headroom_c.max(0)) * 5;
                }
            }
        }
    }
    p.min(100)
}

/// Interned workloads: a dense id per reference, and where each has instances.
#[derive(Debug, Default)]
pub struct Workloads {
    ids: FxHashMap<WorkloadRef, u32>,
    /// Per workload: its reference (the inverse of `ids`).
    refs: Vec<WorkloadRef>,
    /// Per workload: node index → live instances still wanted there.
    pub on_node: Vec<FxHashMap<u32, u32>>,
}

impl Workloads {
    /// The id of `r`, interning it.
    pub fn id(&mut self, r: &WorkloadRef) -> u32 {
        if let Some(&i) = self.ids.get(r) {
            return i;
        }
        let i = self.on_node.len() as u32;
        self.ids.insert(r.clone(), i);
        self.refs.push(r.clone());
        self.on_node.push(FxHashMap::default());
        i
    }
    /// The reference of workload `w`.
    pub fn reference(&self, w: u32) -> Option<&WorkloadRef> {
        self.refs.get(w as usize)
    }
    /// The id of `r` if known.
    pub fn get(&self, r: &WorkloadRef) -> Option<u32> {
        self.ids.get(r).copied()
    }
    /// Instances of workload `w` on node `n`.
    pub fn count(&self, w: u32, n: u32) -> u32 {
        self.on_node
            .get(w as usize)
            .and_then(|m| m.get(&n))
            .copied()
            .unwrap_or(0)
    }
    /// Records one more instance.
    pub fn add(&mut self, w: u32, n: u32) {
        if let Some(m) = self.on_node.get_mut(w as usize) {
            *m.entry(n).or_default() += 1;
        }
    }
    /// Records one fewer instance.
    pub fn remove(&mut self, w: u32, n: u32) {
        if let Some(m) = self.on_node.get_mut(w as usize)
            && let Some(c) = m.get_mut(&n)
        {
            *c = c.saturating_sub(1);
            if *c == 0 {
                m.remove(&n);
            }
        }
    }
}

/// The accounting of one live allocation on `node`, with its workload's priority.
pub fn live_alloc(
    a: &Allocation,
    wid: u32,
    node: &NodeState<'_>,
    workload: Option<&Workload>,
) -> LiveAlloc {
    let current = workload.filter(|w| w.uid == a.workload_uid);
    LiveAlloc {
        priority: current.map_or(0, |w| w.spec.priority()),
        preemptible: a.workload.kind == Kind::Job && a.desired == Desired::Run,
        gpus: a
            .gpus
            .iter()
            .filter_map(|g| node.gpus.iter().position(|s| &s.name == g))
            .collect(),
        ends_at: a.time_limit.map(|t| a.created_at + t.as_millis()),
        ..LiveAlloc::of_task(a.id.clone(), wid, &a.task, node)
    }
}

impl LiveAlloc {
    /// What `task` takes on `node`: CPU (work units converted with the node's score),
    /// memory, ephemeral disk and host ports. No GPUs, priority 0, not preemptible, no
    /// expected end: callers set those.
    pub fn of_task(id: String, workload: u32, task: &Task, node: &NodeState<'_>) -> LiveAlloc {
        let res = &task.resources;
        LiveAlloc {
            id,
            workload,
            priority: 0,
            preemptible: false,
            cpu: res.cpu_on(node.cpu_score()),
            memory: res.memory_or_default().0,
            disk: res.disk.map_or(0, |d| d.0),
            gpus: Vec::new(),
            ports: task.ports.iter().map(|p| (p.port, p.protocol)).collect(),
            ends_at: None,
        }
    }
}
