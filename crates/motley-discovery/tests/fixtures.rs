//! Every fixture machine: the facts asserted.

use std::path::{Path, PathBuf};

use motley_discovery::{cpuinfo, discover};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hw/sbc-bench")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (fixture, processors, arch, 64-bit capable, model, board)
type Machine = (
    &'static str,
    u32,
    &'static str,
    bool,
    &'static str,
    Option<&'static str>,
);

const MACHINES: &[Machine] = &[
    (
        "BCM2712-6.1.47.cpuinfo",
        4,
        "arm64",
        true,
        "Cortex-A76",
        Some("Raspberry Pi 5 Model B Rev 1.0"),
    ),
    (
        "BCM2711B0-5.10.63-v8.cpuinfo",
        4,
        "arm64",
        true,
        "Cortex-A72",
        Some("Raspberry Pi 4 Model B Rev 1.4"),
    ),
    (
        "BCM2711-5.15.14-200.fc35.aarch64.cpuinfo",
        4,
        "arm64",
        true,
        "Cortex-A72",
        None,
    ),
    (
        "BCM2837_BCM2709-4.1.19-v7.cpuinfo",
        4,
        "arm",
        true,
        "Cortex-A53",
        None,
    ),
    (
        "BCM2835-5.10.63+.cpuinfo",
        1,
        "arm",
        false,
        "ARM1176",
        Some("Raspberry Pi Model B Rev 2"),
    ),
    (
        "Apple-M1.cpuinfo",
        8,
        "arm64",
        true,
        "Firestorm (Apple M1) + Icestorm (Apple M1)",
        None,
    ),
];

#[test]
fn every_fixture_machine() {
    for (file, n, arch, a64, model, board) in MACHINES {
        let c = cpuinfo::parse(&fixture(file));
        assert_eq!(c.processors, *n, "{file}: processors");
        assert_eq!(c.arch, *arch, "{file}: arch");
        assert_eq!(c.arch64_capable, *a64, "{file}: 64-bit capable");
        assert_eq!(c.model.as_deref(), Some(*model), "{file}: model");
        assert_eq!(c.board.as_deref(), *board, "{file}: board");
    }
    let m1 = cpuinfo::parse(&fixture("Apple-M1.cpuinfo"));
    assert_eq!(
        m1.core_types,
        ["Firestorm (Apple M1)", "Icestorm (Apple M1)"]
    );
    let pi3 = cpuinfo::parse(&fixture("BCM2837_BCM2709-4.1.19-v7.cpuinfo"));
    assert_eq!(
        pi3.core_types,
        ["Cortex-A53"],
        "a 32-bit kernel on 64-bit Cortex-A53 cores"
    );
}

/// A captured tree: a Pi 4 with the firmware reporting undervoltage now.
fn pi_tree() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("motley-discovery-{}", std::process::id()));
    let w = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    w("proc/cpuinfo", &fixture("BCM2711B0-5.10.63-v8.cpuinfo"));
    w(
        "proc/meminfo",
        "MemTotal:        3884360 kB\nMemFree:          100 kB\n",
    );
    w("proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0");
    for i in 0..4 {
        w(
            &format!("sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq"),
            "1500000\n",
        );
        w(
            &format!("sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_min_freq"),
            "600000\n",
        );
    }
    w(
        "sys/devices/platform/soc/soc:firmware/get_throttled",
        "50005\n",
    );
    w("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
    w("sys/class/thermal/thermal_zone0/temp", "61000\n");
    w(
        "sys/class/thermal/thermal_zone0/trip_point_0_type",
        "critical\n",
    );
    w(
        "sys/class/thermal/thermal_zone0/trip_point_0_temp",
        "110000\n",
    );
    dir
}

#[test]
fn a_captured_pi_tree() {
    let root = pi_tree();
    let f = discover(&root);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(f.arch, "arm64");
    assert_eq!(f.board.as_deref(), Some("Raspberry Pi 4 Model B Rev 1.4"));
    assert_eq!(f.cpu_model.as_deref(), Some("Cortex-A72"));
    assert_eq!(f.logical_cpus, 4);
    assert_eq!((f.max_mhz, f.min_mhz), (Some(1500), Some(600)));
    assert_eq!(f.memory, Some(3_884_360 * 1024));
    assert_eq!(f.thermal.len(), 1);
    assert_eq!(f.thermal[0].kind, "cpu-thermal");
    assert_eq!(f.thermal[0].temp_c, Some(61.0));
    assert_eq!(f.thermal[0].trips, [("critical".to_string(), 110.0)]);
    let t = f.throttle.expect("throttle flags");
    assert!(t.undervoltage_now && t.throttled_now);
}

#[test]
fn thermal_zones_of_a_captured_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hw/procfs");
    let f = discover(&root);
    let kinds: Vec<(&str, Option<f64>)> = f
        .thermal
        .iter()
        .map(|z| (z.kind.as_str(), z.temp_c))
        .collect();
    assert_eq!(
        kinds,
        [("bcm2835_thermal", Some(49.925)), ("acpitz", Some(-44.0))]
    );
}

#[test]
fn an_empty_root_gives_empty_facts() {
    let f = discover(Path::new("/nonexistent-motley-root"));
    assert_eq!(f.logical_cpus, 0);
    assert_eq!(f.memory, None);
    assert!(f.throttle.is_none());
}

proptest::proptest! {
    #[test]
    fn cpuinfo_never_panics(s in "(?s).{0,400}") {
        let _ = cpuinfo::parse(&s);
        let _ = motley_discovery::throttle::parse(&s);
        let _ = motley_discovery::mem_total(&s);
    }
}
