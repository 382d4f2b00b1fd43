//! Host ports chosen for a service's ports (`task.ports` entries with port 0).

use std::collections::{BTreeMap, BTreeSet};

use motley_core::model::Task;

/// Where chosen ports come from (Nomad's default dynamic range; below Linux's
/// ephemeral range, 32768 and up, so outgoing connections never hold one).
pub const DYNAMIC: std::ops::RangeInclusive<u16> = 20_000..=32_000;

/// Fills every port 0 of `task` with a free host port not in `taken`: one nothing on
/// the node listens on (TCP and UDP) when asked. Returns the choices by name; a port no
/// free number was found for stays 0 (the task then fails to bind it, and says so).
pub fn choose(task: &mut Task, taken: &BTreeSet<u16>) -> BTreeMap<String, u16> {
    let span = u32::from(DYNAMIC.end() - DYNAMIC.start()) + 1;
    // Under the simulator the start follows the seed (replay is exact) and the
    // virtual node has every port free.
    let mut next = (motley_rt::seeded_u64().unwrap_or_else(rand::random) % u64::from(span)) as u32;
    let mut chosen = BTreeMap::new();
    let mut used: BTreeSet<u16> = taken.clone();
    for p in task.ports.iter_mut().filter(|p| p.port == 0) {
        for _ in 0..span {
            let n = DYNAMIC.start() + (next % span) as u16;
            next = next.wrapping_add(1);
            if used.contains(&n) || !free(n) {
                continue;
            }
            used.insert(n);
            p.port = n;
            chosen.insert(p.name.clone(), n);
            break;
        }
    }
    chosen
}

fn free(port: u16) -> bool {
    motley_rt::simulated()
        || std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use motley_core::model::{HostPort, Protocol};

    #[test]
    fn chosen_ports_are_free_distinct_in_range_and_avoid_taken_ones() {
        let mut task: Task = serde_json::from_str(r#"{"command":["x"]}"#).expect("task");
        for name in ["a", "b", "c"] {
            task.ports.push(HostPort {
                name: name.into(),
                port: 0,
                protocol: Protocol::Tcp,
                container_port: None,
            });
        }
        task.ports.push(HostPort {
            name: "fixed".into(),
            port: 8080,
            protocol: Protocol::Tcp,
            container_port: None,
        });
        // Hold one port: it must not be chosen.
        let held = std::net::TcpListener::bind(("0.0.0.0", 0)).expect("bind");
        let taken: BTreeSet<u16> = DYNAMIC.step_by(2).collect();
        let got = choose(&mut task, &taken);
        assert_eq!(got.len(), 3);
        let nums: BTreeSet<u16> = got.values().copied().collect();
        assert_eq!(nums.len(), 3);
        for n in &nums {
            assert!(DYNAMIC.contains(n) && !taken.contains(n));
            assert_ne!(*n, held.local_addr().expect("addr").port());
        }
        assert_eq!(task.ports[3].port, 8080);
        assert!(task.ports.iter().all(|p| p.port != 0));
    }
}
