//! Thermal zones: `/sys/class/thermal/thermal_zone*/{type,temp,trip_point_N_{type,temp}}`.

use std::path::Path;

pub use motley_core::hw::ThermalZone;

use crate::read_trim;

/// Millidegrees Celsius (`49925`, `-44000`).
pub fn millideg(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok()
}

/// Reads every thermal zone under `root`, sorted by name. Zones that cannot be read
/// are skipped; missing fields are `None`.
pub fn zones(root: &Path) -> Vec<ThermalZone> {
    let mut out: Vec<ThermalZone> = crate::entries(&root.join("sys/class/thermal"))
        .into_iter()
        .filter(|(name, _)| name.starts_with("thermal_zone"))
        .map(|(name, z)| {
            let mut trips = Vec::new();
            for i in 0..32 {
                let (Some(kind), Some(temp)) = (
                    read_trim(&z.join(format!("trip_point_{i}_type"))),
                    read_trim(&z.join(format!("trip_point_{i}_temp"))).and_then(|t| millideg(&t)),
                ) else {
                    break;
                };
                trips.push((kind, temp));
            }
            ThermalZone {
                kind: read_trim(&z.join("type")).unwrap_or_default(),
                temp_mc: read_trim(&z.join("temp")).and_then(|t| millideg(&t)),
                trips,
                name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn millidegrees() {
        assert_eq!(super::millideg("49925\n"), Some(49_925));
        assert_eq!(super::millideg("-44000"), Some(-44_000));
        assert_eq!(super::millideg("hot"), None);
    }
}
