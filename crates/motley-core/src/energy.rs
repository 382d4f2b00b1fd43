//! Energy per workload (issue 24): how much of a node's power each allocation is
//! given, from the node's power (measured by RAPL, or estimated from a power model and
//! the CPU's use) and each allocation's share of the CPU time. Pure: the agent's
//! `energy` module feeds it samples read from `/proc`.
//!
//! The rule: over an interval, an allocation is given the node's power × the
//! interval × its CPU time ÷ the CPU time the node had (every CPU, busy or idle). A
//! task keeping one of four cores busy is given a quarter of the machine's draw; what
//! no allocation used (the idle machine, the system) is given to none. GPU power
//! (hwmon, where the driver says it) is split evenly among the allocations holding
//! GPUs on that node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A machine's power at rest and at full CPU load, milliwatts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerModel {
    /// At 0 % CPU.
    pub idle_mw: u64,
    /// At 100 % CPU.
    pub loaded_mw: u64,
}

impl PowerModel {
    /// The draw at CPU use `util` (0–1), linear between idle and loaded.
    pub fn at(&self, util: f64) -> u64 {
        let u = util.clamp(0.0, 1.0);
        self.idle_mw + ((self.loaded_mw.saturating_sub(self.idle_mw)) as f64 * u).round() as u64
    }

    /// `--watts IDLE,LOADED` (`2.7,6.4`).
    pub fn parse(s: &str) -> Result<PowerModel, String> {
        let (a, b) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?}: expected IDLE,LOADED in watts (2.7,6.4)"))?;
        let w = |x: &str| -> Result<u64, String> {
            let v: f64 = x
                .trim()
                .parse()
                .map_err(|_| format!("{x:?} is not a number of watts"))?;
            if !(0.0..=100_000.0).contains(&v) {
                return Err(format!("{x} W is out of range"));
            }
            Ok((v * 1000.0).round() as u64)
        };
        let m = PowerModel {
            idle_mw: w(a)?,
            loaded_mw: w(b)?,
        };
        if m.idle_mw > m.loaded_mw {
            return Err(format!("{s:?}: idle above loaded"));
        }
        Ok(m)
    }
}

/// Published figures for boards motley recognises (`motley.io/board`), when the
/// owner gives none: the Raspberry Pi 4 Model B at 2.7 W idle and 6.4 W with all four
/// cores loaded, the 3 Model B+ at 1.9 W and 5.1 W (bare boards, no USB devices;
/// docs/lab.md names the sources). Estimates, and the report says so.
pub fn board_model(board: &str) -> Option<PowerModel> {
    let b = board.to_ascii_lowercase();
    if b.starts_with("raspberry-pi-4-model-b") {
        Some(PowerModel {
            idle_mw: 2_700,
            loaded_mw: 6_400,
        })
    } else if b.starts_with("raspberry-pi-3-model-b-plus") {
        Some(PowerModel {
            idle_mw: 1_900,
            loaded_mw: 5_100,
        })
    } else {
        None
    }
}

/// A Raspberry Pi 5's power from its PMIC's rails, as `vcgencmd pmic_read_adc` prints
/// them (`VDD_CORE_A current(7)=2.25234000A`, `VDD_CORE_V volt(15)=0.72226700V`, or
/// `VDD_CORE_A=2.2523A` from older firmware): the sum of voltage × current over the
/// rails that have both, mW. It leaves out what the PMIC's own conversion loses, so it
/// is below what the supply delivers. `None` when no rail has both.
pub fn pmic_mw(text: &str) -> Option<u64> {
    let mut amps: BTreeMap<&str, f64> = BTreeMap::new();
    let mut volts: BTreeMap<&str, f64> = BTreeMap::new();
    for line in text.lines() {
        let Some((left, value)) = line.trim().split_once('=') else {
            continue;
        };
        let name = left.split_whitespace().next().unwrap_or_default();
        let number = |unit: char| -> Option<f64> {
            value.trim().strip_suffix(unit)?.trim().parse::<f64>().ok()
        };
        if let Some(rail) = name.strip_suffix("_A")
            && let Some(a) = number('A')
        {
            amps.insert(rail, a);
        } else if let Some(rail) = name.strip_suffix("_V")
            && let Some(v) = number('V')
        {
            volts.insert(rail, v);
        }
    }
    let mut watts = 0.0;
    let mut any = false;
    for (rail, a) in &amps {
        if let Some(v) = volts.get(rail) {
            watts += a * v;
            any = true;
        }
    }
    any.then(|| (watts * 1000.0).round() as u64)
}

/// One look at the node (cumulative counters, as `/proc` gives them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// When (ms, any monotonic clock).
    pub at_ms: u64,
    /// Every CPU's time so far (`/proc/stat` `cpu` line, all fields), ticks.
    pub total_ticks: u64,
    /// Of which idle (idle + iowait), ticks.
    pub idle_ticks: u64,
    /// Each allocation's processes' CPU time so far (utime + stime), ticks.
    pub allocs: BTreeMap<String, u64>,
    /// The node's power as measured now (RAPL), mW; `None`: estimate from the model.
    pub measured_mw: Option<u64>,
    /// GPU power as measured now (hwmon), mW.
    pub gpu_mw: u64,
    /// Allocations holding GPUs.
    pub gpu_allocs: Vec<String>,
}

/// Energy given to each allocation so far.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    model: Option<PowerModel>,
    last: Option<Sample>,
    /// Millijoules by allocation.
    pub mj: BTreeMap<String, u64>,
}

impl Meter {
    /// A meter estimating with `model` when nothing measures.
    pub fn new(model: Option<PowerModel>) -> Meter {
        Meter {
            model,
            ..Meter::default()
        }
    }

    /// Whether it can give anything: a model, or a measurement seen.
    pub fn has_source(&self, measured: bool) -> bool {
        self.model.is_some() || measured
    }

    /// Takes a sample; gives energy for the interval since the last. Whether any
    /// allocation's total changed.
    pub fn feed(&mut self, s: Sample) -> bool {
        let Some(last) = self.last.replace(s.clone()) else {
            return false;
        };
        let dt = s.at_ms.saturating_sub(last.at_ms);
        let total = s.total_ticks.saturating_sub(last.total_ticks);
        if dt == 0 || total == 0 {
            return false;
        }
        let idle = s.idle_ticks.saturating_sub(last.idle_ticks).min(total);
        let util = (total - idle) as f64 / total as f64;
        let Some(power) = s.measured_mw.or_else(|| self.model.map(|m| m.at(util))) else {
            return false;
        };
        let mut changed = false;
        for (id, ticks) in &s.allocs {
            let before = last.allocs.get(id).copied().unwrap_or(*ticks);
            let used = ticks.saturating_sub(before).min(total);
            // mW × ms = µJ; ÷ 1000 = mJ.
            let mj =
                (power as f64 * dt as f64 * used as f64 / total as f64 / 1000.0).round() as u64;
            if mj > 0 {
                *self.mj.entry(id.clone()).or_default() += mj;
                changed = true;
            }
        }
        if s.gpu_mw > 0 && !s.gpu_allocs.is_empty() {
            let each = s.gpu_mw * dt / 1000 / s.gpu_allocs.len() as u64;
            for id in &s.gpu_allocs {
                if each > 0 {
                    *self.mj.entry(id.clone()).or_default() += each;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Forgets allocations no longer on the node; whether any was.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> bool {
        let before = self.mj.len();
        self.mj.retain(|id, _| keep(id));
        self.mj.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, total: u64, idle: u64, allocs: &[(&str, u64)]) -> Sample {
        Sample {
            at_ms: at,
            total_ticks: total,
            idle_ticks: idle,
            allocs: allocs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Sample::default()
        }
    }

    #[test]
    fn a_task_on_one_of_four_cores_is_given_a_quarter_of_the_estimated_draw() {
        // 4 cores × 100 ticks/s for 10 s = 4000 ticks; one task used 1000, the node
        // 1500 in all (37.5 % busy). Model 2.7–6.4 W: 2.7 + 3.7 × 0.375 = 4.0875 W.
        let mut m = Meter::new(Some(PowerModel {
            idle_mw: 2_700,
            loaded_mw: 6_400,
        }));
        assert!(!m.feed(sample(0, 10_000, 6_000, &[("a", 50), ("b", 7)])));
        assert!(m.feed(sample(10_000, 14_000, 8_500, &[("a", 1_050), ("b", 7)])));
        // 4087.5 mW → 4088 (rounded) × 10 000 ms × 1000/4000 = 10 220 mJ.
        assert_eq!(m.mj.get("a"), Some(&10_220));
        assert_eq!(m.mj.get("b"), None, "no CPU, no energy");
        // A new allocation starts counting from its first sample.
        assert!(m.feed(sample(20_000, 18_000, 12_000, &[("a", 2_050), ("c", 900)])));
        assert_eq!(m.mj.get("c"), None);
        m.retain(|id| id != "a");
        assert!(m.mj.is_empty());
    }

    #[test]
    fn measured_power_wins_and_gpu_power_goes_to_gpu_holders() {
        let mut m = Meter::new(None);
        assert!(m.has_source(true) && !m.has_source(false));
        let mut s0 = sample(0, 0, 0, &[("a", 0), ("g", 0)]);
        s0.measured_mw = Some(20_000);
        m.feed(s0);
        let mut s1 = sample(1_000, 400, 200, &[("a", 200), ("g", 0)]);
        s1.measured_mw = Some(20_000);
        s1.gpu_mw = 90_000;
        s1.gpu_allocs = vec!["g".into()];
        assert!(m.feed(s1));
        // Half the CPU time of 20 W for 1 s: 10 J; the GPU's 90 W for 1 s: 90 J.
        assert_eq!(m.mj.get("a"), Some(&10_000));
        assert_eq!(m.mj.get("g"), Some(&90_000));
        // Nothing measured and no model: nothing given.
        let mut m = Meter::new(None);
        m.feed(sample(0, 0, 0, &[("a", 0)]));
        assert!(!m.feed(sample(1_000, 400, 0, &[("a", 400)])));
    }

    #[test]
    fn a_pi_5s_pmic_rails_in_either_firmwares_words() {
        let newer = "     3V7_WL_SW_A current(0)=0.10000000A\n     VDD_CORE_A current(7)=2.00000000A\n     EXT5V_V volt(24)=5.12000000V\n     3V7_WL_SW_V volt(8)=3.70000000V\n     VDD_CORE_V volt(15)=0.75000000V\n";
        // 0.1 × 3.7 + 2 × 0.75 = 1.87 W; EXT5V has no current: not counted.
        assert_eq!(pmic_mw(newer), Some(1_870));
        let older = "VDD_CORE_V=0.8750V\nVDD_CORE_A=1.2340A\nVDD_CPU_V=0.9000V\n";
        assert_eq!(pmic_mw(older), Some(1_080));
        assert_eq!(
            pmic_mw("error=1 error_msg=\"Command not registered\"\n"),
            None
        );
        assert_eq!(pmic_mw(""), None);
    }

    #[test]
    fn watts_flags_and_board_figures() {
        assert_eq!(
            PowerModel::parse("2.7, 6.4"),
            Ok(PowerModel {
                idle_mw: 2_700,
                loaded_mw: 6_400
            })
        );
        for bad in ["3", "a,b", "7,3", "-1,2"] {
            assert!(PowerModel::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            board_model("raspberry-pi-4-model-b-rev-1.4").map(|m| m.at(0.5)),
            Some(4_550)
        );
        assert!(board_model("raspberry-pi-5-model-b-rev-1.0").is_none());
    }
}
