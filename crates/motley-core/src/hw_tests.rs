use super::*;

#[test]
fn throttle_documented_values() {
    let t = Throttle::decode(0, ThrottleSource::Sysfs);
    assert!(!t.undervoltage_now && !t.undervoltage_since_boot && t.unknown_bits == 0);
    let t = Throttle::decode(0x50000, ThrottleSource::Sysfs);
    assert!(t.undervoltage_since_boot && t.throttled_since_boot);
    assert!(!t.undervoltage_now && !t.throttled_now && !t.freq_capped_since_boot);
    let t = Throttle::decode(0x50005, ThrottleSource::Sysfs);
    assert!(t.undervoltage_now && t.throttled_now && !t.freq_capped_now);
    assert!(t.undervoltage_since_boot && t.throttled_since_boot);
    let t = Throttle::decode(0x80000, ThrottleSource::Sysfs);
    assert!(t.soft_temp_limit_since_boot && !t.soft_temp_limit_now);
    assert!(!t.undervoltage_now && !t.throttled_since_boot);
    let t = Throttle::decode(0x10_0001, ThrottleSource::Sysfs);
    assert!(t.undervoltage_now);
    assert_eq!(t.unknown_bits, 0x10_0000);
    assert_eq!(
        Throttle::decode(0x50005, ThrottleSource::Sysfs).describe(),
        "0x50005; now: undervoltage, throttled; since boot: undervoltage, throttled"
    );
}

fn pi(raw: u32) -> Hardware {
    Hardware {
        memory: 1 << 30,
        throttle: Some(Throttle::decode(raw, ThrottleSource::Sysfs)),
        ..Hardware::default()
    }
}

#[test]
fn conditions_from_throttle_flags() {
    let t = Thresholds::default();
    let c = conditions(&pi(0x50005), None, &t, &[], 7);
    let kinds: Vec<_> = c.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [ConditionKind::Undervoltage, ConditionKind::Throttled]
    );
    assert!(c.iter().all(|c| c.since == 7));
    // Still there later: the since-time is kept.
    let again = conditions(&pi(0x50005), None, &t, &c, 99);
    assert!(again.iter().all(|c| c.since == 7));
    assert_eq!(again, c, "stable reasons: nothing to send");
    // Only since boot: nothing now.
    assert!(conditions(&pi(0x50000), None, &t, &c, 100).is_empty());
    assert!(conditions(&pi(0x80000), None, &t, &c, 100).is_empty());
}

#[test]
fn undervoltage_alarm_of_rpi_volt() {
    let mut hw = Hardware::default();
    hw.hwmon.push(Hwmon {
        name: "hwmon1".into(),
        chip: "rpi_volt".into(),
        undervoltage_alarm: Some(true),
        ..Hwmon::default()
    });
    let c = conditions(&hw, None, &Thresholds::default(), &[], 1);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, ConditionKind::Undervoltage);
    assert!(c[0].reason.contains("rpi_volt"), "{}", c[0].reason);
    hw.hwmon[0].undervoltage_alarm = Some(false);
    assert!(conditions(&hw, None, &Thresholds::default(), &[], 1).is_empty());
}

#[test]
fn thermal_disk_and_memory() {
    let t = Thresholds::default();
    let mut hw = Hardware {
        memory: 1000 << 20,
        memory_available: Some(500 << 20),
        ..Hardware::default()
    };
    hw.thermal.push(ThermalZone {
        name: "thermal_zone0".into(),
        kind: "cpu-thermal".into(),
        temp_mc: Some(79_000),
        trips: vec![("active".into(), 50_000), ("passive".into(), 85_000)],
    });
    assert!(conditions(&hw, Some(50), &t, &[], 1).is_empty());
    hw.thermal[0].temp_mc = Some(80_000);
    hw.memory_available = Some(40 << 20);
    let c = conditions(&hw, Some(95), &t, &[], 1);
    let kinds: Vec<_> = c.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ConditionKind::Thermal,
            ConditionKind::DiskPressure,
            ConditionKind::MemoryPressure
        ]
    );
    assert!(
        c[0].reason.contains("passive trip point 85"),
        "{}",
        c[0].reason
    );
    // A negative temperature with no trip points raises nothing.
    hw.thermal[0].temp_mc = Some(-44_000);
    hw.thermal[0].trips.clear();
    hw.memory_available = None;
    hw.memory_psi_some_avg10 = Some(2500);
    let c = conditions(&hw, None, &t, &[], 1);
    assert_eq!(c.len(), 1);
    assert!(c[0].reason.contains("PSI"));
}

#[test]
fn policy_and_tolerations() {
    let mut p = TaintPolicy::default();
    p.set("thermal=evict").expect("valid");
    assert!(
        p.set("hot=evict")
            .unwrap_err()
            .contains("unknown condition")
    );
    assert!(
        p.set("thermal=later")
            .unwrap_err()
            .contains("unknown effect")
    );
    assert!(p.set("thermal").unwrap_err().contains("CONDITION=EFFECT"));
    let c = conditions(&pi(0x50005), None, &Thresholds::default(), &[], 1);
    let taints = p.taints(&c);
    assert_eq!(
        taints,
        [
            Taint {
                key: "motley.io/throttled".into(),
                effect: TaintEffect::PreferNoSchedule
            },
            Taint {
                key: "motley.io/undervoltage".into(),
                effect: TaintEffect::PreferNoSchedule
            },
        ]
    );
    let all = Toleration {
        key: "*".into(),
        effect: None,
    };
    let one = Toleration {
        key: "motley.io/throttled".into(),
        effect: Some(TaintEffect::NoSchedule),
    };
    assert!(all.tolerates(&taints[0]) && all.tolerates(&taints[1]));
    assert!(!one.tolerates(&taints[0]), "effect differs");
    assert!(!one.tolerates(&taints[1]), "key differs");
}

#[test]
fn label_values() {
    assert_eq!(
        label_value("Raspberry Pi 4 Model B Rev 1.4"),
        "raspberry-pi-4-model-b-rev-1.4"
    );
    assert_eq!(
        label_value("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"),
        "intel-r-core-tm-i7-8650u-cpu-1.90ghz"
    );
    assert_eq!(label_value("  --  "), "");
    assert!(label_value(&"x".repeat(100)).len() == 63);
}

#[test]
fn split_keeps_readings_out_of_facts() {
    let mut hw = pi(0);
    hw.memory_available = Some(300 << 20);
    hw.thermal.push(ThermalZone {
        name: "thermal_zone0".into(),
        kind: "cpu-thermal".into(),
        temp_mc: Some(49_925),
        trips: vec![],
    });
    hw.rapl.push(RaplDomain {
        name: "intel-rapl:0".into(),
        domain: "package-0".into(),
        energy_uj: Some(1_000_000),
        max_energy_uj: Some(10_000_000),
    });
    let mut later = hw.clone();
    later.thermal[0].temp_mc = Some(61_000);
    later.rapl[0].energy_uj = Some(500_000); // wrapped
    let (s1, _) = hw.split(None, 0, None);
    let (s2, r2) = later.split(Some((&hw, 1000)), 2000, Some(42));
    assert_eq!(s1, s2, "stable facts do not change with readings");
    assert_eq!(r2.temps_c["thermal_zone0 cpu-thermal"], 61);
    // (10,000,000 - 1,000,000 + 500,000) µJ over 1000 ms = 9,500 mW.
    assert_eq!(r2.power_mw["package-0"], 9_500);
    assert_eq!(r2.memory_available_mib, Some(300));
    assert_eq!(r2.data_disk_used_pct, Some(42));
}

#[test]
fn a_machines_watts_come_from_the_platform_or_its_packages_and_dram() {
    let mut r = Readings::default();
    assert_eq!(r.watts(), None);
    r.power_mw.insert("package-0".into(), 12_000);
    r.power_mw.insert("core".into(), 8_000);
    r.power_mw.insert("uncore".into(), 1_000);
    r.power_mw.insert("dram".into(), 2_500);
    // core and uncore are inside the package: not added again.
    assert_eq!(r.watts(), Some(14.5));
    r.power_mw.insert("package-1".into(), 10_000);
    assert_eq!(r.watts(), Some(24.5));
    r.power_mw.insert("psys".into(), 31_000);
    assert_eq!(r.watts(), Some(31.0), "the platform's own figure wins");
}

#[test]
fn gpu_power_is_a_reading_of_gpu_drivers_only() {
    let mut hw = Hardware::default();
    for (name, chip) in [("hwmon4", "amdgpu"), ("hwmon7", "nct6775")] {
        hw.hwmon.push(Hwmon {
            name: name.into(),
            chip: chip.into(),
            power_uw: Some(31_000_000),
            ..Hwmon::default()
        });
    }
    let (facts, readings) = hw.split(None, 0, None);
    assert_eq!(
        readings.gpu_power_mw.into_iter().collect::<Vec<_>>(),
        [("hwmon4 amdgpu".to_string(), 31_000)]
    );
    assert!(
        facts.hwmon.iter().all(|h| h.power_uw.is_none()),
        "facts hold no reading"
    );
}
