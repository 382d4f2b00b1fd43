//! Experiments in the simulator (issue 24): in half the seeds the operator runs one
//! `kind: Experiment` through the API during the fault phase, so the real run loop on
//! the leader and the real agents' fault handling (power-off as a power cut, a
//! partition from the server as silence, loss as dropped heartbeats, latency on the
//! connection) meet every other fault the seed draws. Its choices come from a
//! generator of their own, so the rest of each seed's world is the same with or without.

use std::time::Duration;

use crate::rng::Rng;
use crate::world::World;

/// An experiment for this world: its YAML, how long its faults last at most, and the
/// agents it touches (excused from heartbeating meanwhile).
pub fn experiment(world: &World, rng: &Rng, n: u32) -> (String, Duration, Vec<usize>) {
    let mut agents: Vec<usize> = (0..world.agents.len()).collect();
    let count = 1 + rng.below(agents.len().min(3) as u64) as usize;
    let mut faults = String::new();
    let mut chosen = Vec::new();
    let mut longest = 0u64;
    for _ in 0..count {
        let i = agents.remove(rng.below(agents.len() as u64) as usize);
        chosen.push(i);
        let node = &world.agents[i].name;
        let at = rng.below(4);
        let lasts = 3 + rng.below(12);
        longest = longest.max(at + lasts);
        let action = match rng.below(4) {
            0 => format!("power_off: {{ node: {node} }}"),
            1 => format!("partition: {{ nodes: [{node}], from: [server] }}"),
            2 => format!(
                "packet_loss: {{ node: {node}, percent: {} }}",
                5 + rng.below(60)
            ),
            _ => format!("latency: {{ node: {node}, ms: {} }}", 50 + rng.below(450)),
        };
        faults.push_str(&format!("  - {{ at: {at}s, {action}, for: {lasts}s }}\n"));
    }
    (
        format!("kind: Experiment\nname: sim-{n}\nfaults:\n{faults}"),
        Duration::from_secs(longest),
        chosen,
    )
}
