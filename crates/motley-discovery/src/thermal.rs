//! Thermal zones: `/sys/class/thermal/thermal_zone*/{type,temp,trip_point_N_{type,temp}}`.

use std::path::Path;

use serde::Serialize;

/// One thermal zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThermalZone {
    /// Directory name (`thermal_zone0`).
    pub name: String,
    /// Driver type (`bcm2835_thermal`, `x86_pkg_temp`, `acpitz`).
    pub kind: String,
    /// Current temperature, °C (may be negative).
    pub temp_c: Option<f64>,
    /// Trip points: (type, °C), e.g. ("passive", 80.0), ("critical", 110.0).
    pub trips: Vec<(String, f64)>,
}

/// Millidegrees Celsius as °C.
pub fn millideg(text: &str) -> Option<f64> {
    text.trim().parse::<i64>().ok().map(|m| m as f64 / 1000.0)
}

/// Reads every thermal zone under `root`, sorted by name. Zones that cannot be read
/// are skipped; missing fields are `None`.
pub fn zones(root: &Path) -> Vec<ThermalZone> {
    let dir = root.join("sys/class/thermal");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let mut out: Vec<ThermalZone> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("thermal_zone") {
                return None;
            }
            let z = e.path();
            let mut trips = Vec::new();
            for i in 0..32 {
                let (Some(kind), Some(temp)) = (
                    read(&z.join(format!("trip_point_{i}_type"))),
                    read(&z.join(format!("trip_point_{i}_temp"))).and_then(|t| millideg(&t)),
                ) else {
                    break;
                };
                trips.push((kind.trim().to_string(), temp));
            }
            Some(ThermalZone {
                kind: read(&z.join("type"))
                    .map(|t| t.trim().to_string())
                    .unwrap_or_default(),
                temp_c: read(&z.join("temp")).and_then(|t| millideg(&t)),
                trips,
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn millidegrees() {
        assert_eq!(super::millideg("49925\n"), Some(49.925));
        assert_eq!(super::millideg("-44000"), Some(-44.0));
        assert_eq!(super::millideg("hot"), None);
    }
}
