//! Energy per allocation (issue 24): the IO around `motley_core::energy::Meter`. Every
//! [`ENERGY_INTERVAL`], on a node with a power source — RAPL or a GPU driver's hwmon
//! reading in the latest readings, a Raspberry Pi 5's PMIC (`vcgencmd pmic_read_adc`),
//! the owner's `--watts IDLE,LOADED`, or a board
//! motley knows the figures of — it reads `/proc/stat` and the CPU time of each
//! allocation's process group, and sends [`AgentMsg::Energy`] when a figure changed.
//! Without a power source or allocations it reads nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use motley_core::energy::{Meter, PowerModel, Sample, board_model};
use motley_core::proto::AgentMsg;

use crate::{Agent, lock};

/// How often energy is measured.
pub const ENERGY_INTERVAL: Duration = Duration::from_secs(5);

/// `/proc/stat`'s `cpu` line: every CPU's ticks, and the idle ones (idle + iowait).
pub fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal (guest is in user)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    Some((v.iter().sum(), v[3] + v[4]))
}

/// A `/proc/PID/stat` line's process group and CPU time (utime + stime, ticks).
pub fn group_and_ticks(stat: &str) -> Option<(u32, u64)> {
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let pgrp: u32 = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((pgrp, utime + stime))
}

/// Reads the node's CPU ticks and each process group's (of `groups`) from `/proc`.
fn read_proc(groups: &BTreeMap<u32, String>) -> Option<(u64, u64, BTreeMap<String, u64>)> {
    let (total, idle) = cpu_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let mut per: BTreeMap<String, u64> = groups.values().map(|id| (id.clone(), 0)).collect();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some((g, t)) = group_and_ticks(&stat)
            && let Some(id) = groups.get(&g)
            && let Some(sum) = per.get_mut(id)
        {
            *sum += t;
        }
    }
    Some((total, idle, per))
}

/// A Raspberry Pi 5's power from its PMIC (`vcgencmd pmic_read_adc`), where the
/// command is there.
fn pmic_read() -> Option<u64> {
    let out = std::process::Command::new("vcgencmd")
        .arg("pmic_read_adc")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    motley_core::energy::pmic_mw(&String::from_utf8_lossy(&out.stdout))
}

impl Agent {
    /// Measures forever.
    pub(crate) async fn energy_loop(self) {
        // Simulated tasks use no CPU of this host: nothing to give energy to.
        if !self.inner.cfg.driver.processes() {
            return;
        }
        let mut meter = Meter::new(None);
        let mut model_seen = None;
        loop {
            tokio::time::sleep(ENERGY_INTERVAL).await;
            let (mut measured, gpu_mw, board) = {
                let obs = lock(&self.inner.node.observed);
                let r = &obs.readings;
                let board = obs.facts.hw.as_ref().and_then(|h| h.board.as_deref());
                (
                    r.watts().map(|w| (w * 1000.0) as u64),
                    r.gpu_power_mw.values().sum::<u64>(),
                    board.map(motley_core::hw::label_value).unwrap_or_default(),
                )
            };
            // The owner's power model, else the board's published figures.
            let model: Option<PowerModel> = self
                .inner
                .cfg
                .facts
                .power_model
                .or_else(|| board_model(&board));
            if model != model_seen {
                meter = Meter::new(model);
                model_seen = model;
            }
            let pi5 = board.starts_with("raspberry-pi-5");
            if !meter.has_source(measured.is_some() || pi5) && gpu_mw == 0 {
                continue;
            }
            // Each running allocation's process group (its pid leads it), and those
            // holding GPUs.
            let (groups, gpu_allocs) = {
                let st = self.inner.local.state();
                let mut groups = BTreeMap::new();
                let mut gpu = Vec::new();
                for (id, l) in &st.allocs {
                    if let Some(pid) = l.report.pid {
                        groups.insert(pid, id.clone());
                        if !l.alloc.gpus.is_empty() {
                            gpu.push(id.clone());
                        }
                    }
                }
                (groups, gpu)
            };
            if groups.is_empty() && meter.mj.is_empty() {
                continue;
            }
            // A Pi 5 without RAPL: its PMIC, asked only when there is work to give to.
            if measured.is_none() && pi5 {
                measured = motley_rt::spawn_blocking(pmic_read).await.ok().flatten();
            }
            let Ok(Some((total, idle, allocs))) =
                motley_rt::spawn_blocking(move || read_proc(&groups)).await
            else {
                continue;
            };
            let fed = meter.feed(Sample {
                at_ms: crate::now_ms(),
                total_ticks: total,
                idle_ticks: idle,
                allocs,
                measured_mw: measured,
                gpu_mw,
                gpu_allocs,
            });
            let forgot = {
                let st = self.inner.local.state();
                meter.retain(|id| st.allocs.contains_key(id))
            };
            if fed || forgot {
                self.inner.contact.send(AgentMsg::Energy {
                    mj: meter.mj.clone(),
                    estimated: measured.is_none(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_are_read_as_the_kernel_writes_them() {
        let stat = "cpu  100 5 50 800 20 1 2 0 0 0\ncpu0 50 2 25 400 10 0 1 0 0 0\n";
        assert_eq!(cpu_ticks(stat), Some((978, 820)));
        assert_eq!(cpu_ticks("intr 1 2 3\n"), None);
        // A command with a space and a parenthesis.
        let p = "4242 (my (odd) task) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 12 0 0 20 0 1 0 5000 1000 100";
        assert_eq!(group_and_ticks(p), Some((4242, 49)));
        assert_eq!(group_and_ticks("garbage"), None);
    }
}
