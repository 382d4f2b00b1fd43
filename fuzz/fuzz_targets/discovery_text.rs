//! Every text parser of the discovery crate on arbitrary bytes: none may panic, and
//! what they return must be usable (conditions and labels computed from it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use motley_discovery::{block, cpu, cpuinfo, gpu, throttle};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let info = cpuinfo::parse(&s);
    assert!(info.per_cpu_core.len() <= info.processors.max(1) as usize + 1);
    if let Some(t) = throttle::parse(&s) {
        let _ = t.describe();
    }
    let _ = motley_discovery::mem_total(&s);
    let _ = motley_discovery::meminfo_field(&s, "MemAvailable");
    let _ = motley_discovery::psi_some_avg10(&s);
    let _ = motley_discovery::os_release_name(&s);
    let _ = block::parse_mounts(&s);
    let _ = block::parse_mountinfo(&s);
    assert!(cpu::cpu_list(&s).len() <= 65_536);
    let _ = gpu::nvidia_information(&s);
    let _ = motley_core::hw::label_value(&s);
});
