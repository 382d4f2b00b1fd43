//! Every fixture machine: the expected facts asserted. Trees under
//! `tests/fixtures/hw/` are real captures except `constructed/` (see its build.py
//! and tests/fixtures/SOURCES.md).

use std::path::{Path, PathBuf};

use motley_core::hw::{ConditionKind, Media, Thresholds};
use motley_discovery::{Options, cpuinfo, discover, gpu};

fn hw_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hw")
}

fn read(rel: &str) -> String {
    let p = hw_dir().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn opts() -> Options {
    Options {
        data_dir: Some("/var/lib/motley".into()),
    }
}

/// A cpuinfo-only capture: (file, logical CPUs, physical cores, arch, 64-bit capable,
/// model, board, SoC).
type CpuOnly = (
    &'static str,
    u32,
    u32,
    &'static str,
    bool,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

const CPUINFO_MACHINES: &[CpuOnly] = &[
    (
        "sbc-bench/BCM2712-6.1.47.cpuinfo",
        4,
        4,
        "arm64",
        true,
        "Cortex-A76",
        Some("Raspberry Pi 5 Model B Rev 1.0"),
        Some("BCM2835"),
    ),
    (
        "sbc-bench/BCM2711B0-5.10.63-v8.cpuinfo",
        4,
        4,
        "arm64",
        true,
        "Cortex-A72",
        Some("Raspberry Pi 4 Model B Rev 1.4"),
        Some("BCM2835"),
    ),
    (
        "sbc-bench/BCM2711-5.15.14-200.fc35.aarch64.cpuinfo",
        4,
        4,
        "arm64",
        true,
        "Cortex-A72",
        None,
        None,
    ),
    (
        "sbc-bench/BCM2837_BCM2709-4.1.19-v7.cpuinfo",
        4,
        4,
        "arm",
        true,
        "Cortex-A53",
        None,
        Some("BCM2709"),
    ),
    (
        "sbc-bench/BCM2835-5.10.63+.cpuinfo",
        1,
        1,
        "arm",
        false,
        "ARM1176",
        Some("Raspberry Pi Model B Rev 2"),
        Some("BCM2835"),
    ),
    (
        "sbc-bench/Apple-M1.cpuinfo",
        8,
        8,
        "arm64",
        true,
        "Firestorm (Apple M1) + Icestorm (Apple M1)",
        None,
        None,
    ),
    (
        "pytorch-cpuinfo/raspberrypi.log",
        1,
        1,
        "arm",
        false,
        "ARM1176",
        None,
        Some("BCM2708"),
    ),
    (
        "pytorch-cpuinfo/raspberrypi-zero.log",
        1,
        1,
        "arm",
        false,
        "ARM1176",
        None,
        Some("BCM2708"),
    ),
    (
        "pytorch-cpuinfo/raspberrypi2.log",
        4,
        4,
        "arm",
        false,
        "Cortex-A7",
        None,
        Some("BCM2709"),
    ),
    (
        "pytorch-cpuinfo/raspberrypi3.log",
        4,
        4,
        "arm",
        true,
        "Cortex-A53",
        None,
        Some("BCM2709"),
    ),
    (
        "pytorch-cpuinfo/alldocube-iwork8.log",
        4,
        4,
        "amd64",
        true,
        "Intel(R) Atom(TM) x5-Z8350  CPU @ 1.44GHz",
        None,
        None,
    ),
    (
        "pytorch-cpuinfo/memo-pad-7.log",
        4,
        4,
        // A 64-bit Atom under a 32-bit Android kernel: its cpuinfo has the fdiv_bug
        // lines only 32-bit x86 kernels print (the lm flag is the CPU's, not the
        // kernel's).
        "386",
        true,
        "Intel(R) Atom(TM) CPU  Z3745  @ 1.33GHz",
        None,
        None,
    ),
    (
        "archspec/linux-ubuntu20.04-zen3",
        1,
        1,
        "amd64",
        true,
        "AMD Ryzen 9 5950X 16-Core Processor",
        None,
        None,
    ),
    (
        "archspec/linux-rocky9-zen5",
        1,
        1,
        "amd64",
        true,
        "AMD Ryzen 9 9950X 16-Core Processor",
        None,
        None,
    ),
    (
        "archspec/linux-rhel7-zen",
        1,
        1,
        "amd64",
        true,
        "AMD EPYC 7301 16-Core Processor",
        None,
        None,
    ),
    (
        "archspec/linux-ubuntu24.04-alderlake",
        1,
        1,
        "amd64",
        true,
        "Intel(R) Core(TM) Ultra 9 285",
        None,
        None,
    ),
    (
        "archspec/linux-asahi-m1",
        1,
        1,
        "arm64",
        true,
        "Icestorm (Apple M1)",
        None,
        None,
    ),
    (
        "archspec/linux-asahi-m2",
        1,
        1,
        "arm64",
        true,
        "Blizzard (Apple M2)",
        None,
        None,
    ),
    (
        "archspec/linux-amazon-cortex_a72",
        1,
        1,
        "arm64",
        true,
        "Cortex-A72",
        None,
        None,
    ),
];

#[test]
fn every_cpuinfo_capture() {
    for (file, n, cores, arch, a64, model, board, soc) in CPUINFO_MACHINES {
        // Each capture as the only file of a tree, as the agent reads it.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
        std::fs::write(dir.path().join("proc/cpuinfo"), read(file)).expect("write");
        let hw = discover(dir.path(), &opts());
        assert_eq!(hw.cpu.logical, *n, "{file}: logical CPUs");
        assert_eq!(hw.cpu.cores, *cores, "{file}: physical cores");
        assert_eq!(hw.cpu.sockets, 1, "{file}: sockets");
        assert_eq!(hw.arch, *arch, "{file}: arch");
        assert_eq!(hw.arch64_capable, *a64, "{file}: 64-bit capable");
        assert_eq!(hw.cpu.model.as_deref(), Some(*model), "{file}: model");
        assert_eq!(hw.board.as_deref(), *board, "{file}: board");
        assert_eq!(hw.cpu.soc.as_deref(), *soc, "{file}: SoC");
        assert_eq!(hw.os, "linux", "{file}");
    }
    let m1 = cpuinfo::parse(&read("sbc-bench/Apple-M1.cpuinfo"));
    assert_eq!(
        m1.core_types,
        ["Firestorm (Apple M1)", "Icestorm (Apple M1)"]
    );
    assert_eq!(m1.vendor.as_deref(), Some("apple"));
    let pi3 = cpuinfo::parse(&read("sbc-bench/BCM2837_BCM2709-4.1.19-v7.cpuinfo"));
    assert_eq!(
        pi3.core_types,
        ["Cortex-A53"],
        "a 32-bit kernel on 64-bit Cortex-A53 cores"
    );
}

/// A captured or constructed tree and what must be found in it.
struct Tree {
    dir: &'static str,
    arch: &'static str,
    sockets: u32,
    cores: u32,
    logical: u32,
    board: Option<&'static str>,
    cpu: &'static str,
    core_types: &'static [(&'static str, u32)],
    max_mhz: Option<u32>,
    disks: &'static [(&'static str, Media)],
    data_media: Option<Media>,
    gpus: &'static [(&'static str, &'static str)],
    thermal: &'static [&'static str],
}

const TREES: &[Tree] = &[
    Tree {
        dir: "hwloc/raptorlake",
        arch: "amd64",
        sockets: 1,
        cores: 14,
        logical: 20,
        board: Some("HP HP EliteBook 840 14 inch G10 Notebook PC"),
        cpu: "13th Gen Intel(R) Core(TM) i7-1370P",
        core_types: &[("P-core", 12), ("E-core", 8)],
        max_mhz: Some(5200),
        disks: &[],
        data_media: Some(Media::Unknown), // on device-mapper, not captured
        gpus: &[],
        thermal: &[],
    },
    Tree {
        dir: "node_exporter",
        arch: "amd64",
        sockets: 1,
        cores: 4,
        logical: 8,
        board: None,
        cpu: "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz",
        core_types: &[],
        max_mhz: None,
        disks: &[("sda", Media::Hdd)],
        data_media: None,
        gpus: &[],
        thermal: &["cpu-thermal"],
    },
    Tree {
        dir: "procfs",
        arch: "amd64",
        sockets: 1,
        cores: 4,
        logical: 8,
        board: None,
        cpu: "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz",
        core_types: &[],
        max_mhz: None,
        disks: &[("nvme0n0", Media::Nvme), ("sda", Media::Hdd)],
        data_media: None,
        gpus: &[("amd", "amdgpu"), ("intel", "i915")],
        thermal: &["bcm2835_thermal", "acpitz"],
    },
    Tree {
        dir: "constructed/pi4-undervoltage",
        arch: "arm64",
        sockets: 1,
        cores: 4,
        logical: 4,
        board: Some("Raspberry Pi 4 Model B Rev 1.4"),
        cpu: "Cortex-A72",
        core_types: &[],
        max_mhz: Some(1500),
        disks: &[("mmcblk0", Media::Sd)],
        data_media: Some(Media::Sd),
        gpus: &[("broadcom", "v3d")],
        thermal: &["cpu-thermal"],
    },
    Tree {
        dir: "constructed/pi5",
        arch: "arm64",
        sockets: 1,
        cores: 4,
        logical: 4,
        board: Some("Raspberry Pi 5 Model B Rev 1.0"),
        cpu: "Cortex-A76",
        core_types: &[],
        max_mhz: Some(2400),
        disks: &[("mmcblk0", Media::Sd)],
        data_media: Some(Media::Sd),
        gpus: &[("broadcom", "v3d")],
        thermal: &["cpu-thermal"],
    },
    Tree {
        dir: "constructed/celeron-emmc",
        arch: "amd64",
        sockets: 1,
        cores: 2,
        logical: 2,
        board: Some("ACME Celeron netbook (constructed)"),
        cpu: "Intel(R) Celeron(R) CPU  N3050  @ 1.60GHz",
        core_types: &[],
        max_mhz: Some(2160),
        disks: &[("mmcblk0", Media::Emmc)],
        data_media: Some(Media::Emmc),
        gpus: &[],
        thermal: &["x86_pkg_temp"],
    },
    Tree {
        dir: "constructed/x86-nvme-gpu",
        arch: "amd64",
        sockets: 1,
        cores: 16,
        logical: 32,
        board: Some("ASUSTeK COMPUTER INC. ROG STRIX B550-F GAMING"),
        cpu: "AMD Ryzen 9 5950X 16-Core Processor",
        core_types: &[],
        max_mhz: Some(3400),
        disks: &[("nvme0n1", Media::Nvme), ("sda", Media::Hdd)],
        data_media: Some(Media::Nvme),
        gpus: &[("amd", "amdgpu")],
        thermal: &[],
    },
    Tree {
        dir: "constructed/usb-stick",
        arch: "",
        sockets: 0,
        cores: 0,
        logical: 0,
        board: None,
        cpu: "",
        core_types: &[],
        max_mhz: None,
        disks: &[
            ("loop0", Media::Virtual),
            ("sda", Media::Ssd),
            ("sdb", Media::UsbFlash),
            ("sr0", Media::Optical),
            ("zram0", Media::Virtual),
        ],
        data_media: Some(Media::Ssd),
        gpus: &[],
        thermal: &[],
    },
];

#[test]
fn every_tree_machine() {
    for t in TREES {
        let hw = discover(&hw_dir().join(t.dir), &opts());
        let d = t.dir;
        assert_eq!(hw.arch, t.arch, "{d}: arch");
        assert_eq!(
            (hw.cpu.sockets, hw.cpu.cores, hw.cpu.logical),
            (t.sockets, t.cores, t.logical),
            "{d}: sockets, cores, logical"
        );
        assert_eq!(hw.board.as_deref(), t.board, "{d}: board");
        assert_eq!(hw.cpu.model.as_deref().unwrap_or(""), t.cpu, "{d}: cpu");
        if !t.core_types.is_empty() {
            let types: Vec<(&str, u32)> = hw
                .cpu
                .core_types
                .iter()
                .map(|c| (c.name.as_str(), c.logical))
                .collect();
            assert_eq!(types, t.core_types, "{d}: core types");
        } else {
            assert!(hw.cpu.core_types.len() <= 1, "{d}: not hybrid");
        }
        assert_eq!(hw.cpu.max_mhz, t.max_mhz, "{d}: max MHz");
        let disks: Vec<(&str, Media)> = hw
            .disks
            .iter()
            .map(|x| (x.name.as_str(), x.media))
            .collect();
        assert_eq!(disks, t.disks, "{d}: disks");
        assert_eq!(
            hw.data_disk.as_ref().map(|x| x.media),
            t.data_media,
            "{d}: data disk"
        );
        let gpus: Vec<(&str, &str)> = hw
            .gpus
            .iter()
            .map(|g| (g.vendor.as_str(), g.driver.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(gpus, t.gpus, "{d}: GPUs");
        let zones: Vec<&str> = hw.thermal.iter().map(|z| z.kind.as_str()).collect();
        assert_eq!(zones, t.thermal, "{d}: thermal zones");
    }
}

#[test]
fn details_of_captured_trees() {
    let p = discover(&hw_dir().join("procfs"), &opts());
    let temps: Vec<Option<i32>> = p.thermal.iter().map(|z| z.temp_mc).collect();
    assert_eq!(
        temps,
        [Some(49_925), Some(-44_000)],
        "a negative temperature is kept"
    );
    assert_eq!(p.gpus[0].pci_id.as_deref(), Some("1002:687f"));
    assert_eq!(p.gpus[0].vram, Some(8_573_157_376));
    assert_eq!(
        p.disks[0].model.as_deref(),
        Some("Samsung SSD 970 PRO 512GB")
    );
    let n = discover(&hw_dir().join("node_exporter"), &opts());
    let chips: Vec<&str> = n.hwmon.iter().map(|h| h.chip.as_str()).collect();
    assert!(
        chips.starts_with(&["coretemp", "coretemp", "applesmc", "nct6779"]),
        "{chips:?}"
    );
    let core = &n.hwmon[0].temps[0];
    assert_eq!(
        (core.label.as_deref(), core.temp_mc, core.crit_mc),
        (Some("Physical id 0"), Some(55_000), Some(100_000))
    );
    let power: Vec<(&str, &str, Option<u8>)> = n
        .power
        .iter()
        .map(|p| (p.name.as_str(), p.kind.as_str(), p.capacity_pct))
        .collect();
    assert_eq!(
        power,
        [("AC", "Mains", None), ("BAT0", "Battery", Some(81))]
    );
    let rapl: Vec<&str> = n.rapl.iter().map(|r| r.domain.as_str()).collect();
    assert_eq!(rapl, ["package-0", "core"]);
    assert!(n.rapl[0].energy_uj.is_some());
    let x = discover(&hw_dir().join("constructed/x86-nvme-gpu"), &opts());
    let data = x.data_disk.expect("data disk");
    assert_eq!(
        (data.mount.as_str(), data.device.as_str()),
        ("/", "nvme0n1p2")
    );
    assert_eq!(x.disks[0].mounts, ["/", "/boot/efi"]);
    assert_eq!(x.disks[1].mounts, ["/srv"]);
    let stick = discover(
        &hw_dir().join("constructed/usb-stick"),
        &Options {
            data_dir: Some("/media/stick/motley".into()),
        },
    );
    assert_eq!(stick.data_disk.expect("data").media, Media::UsbFlash);
    let emmc = discover(&hw_dir().join("constructed/celeron-emmc"), &opts());
    assert_eq!(emmc.disks.len(), 1, "eMMC boot areas are not disks");
}

#[test]
fn gpu_snapshots() {
    let cases = [
        ("amd/rx6600", "amd", "1002:73ff", "amdgpu", None),
        (
            "amd/phoenix",
            "amd",
            "1002:15bf",
            "amdgpu",
            Some(4_294_967_296u64),
        ),
        ("nvidia/rtx4080", "nvidia", "10de:2704", "nvidia", None),
        ("intel/tigerlake", "intel", "8086:9a49", "xe", None),
    ];
    for (dir, vendor, pci, driver, vram) in cases {
        let g = gpu::scan_drm(&hw_dir().join("lact").join(dir));
        assert_eq!(g.len(), 1, "{dir}");
        assert_eq!(
            (
                g[0].vendor.as_str(),
                g[0].pci_id.as_deref(),
                g[0].driver.as_deref()
            ),
            (vendor, Some(pci), Some(driver)),
            "{dir}"
        );
        if let Some(v) = vram {
            assert_eq!(g[0].vram, Some(v), "{dir}: VRAM");
        }
    }
}

#[test]
fn pi_conditions_from_a_tree() {
    let t = Thresholds::default();
    let pi4 = discover(&hw_dir().join("constructed/pi4-undervoltage"), &opts());
    let c = motley_core::hw::conditions(&pi4, None, &t, &[], 1);
    let kinds: Vec<ConditionKind> = c.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [ConditionKind::Undervoltage, ConditionKind::Throttled]
    );
    assert_eq!(pi4.hwmon[1].undervoltage_alarm, Some(true));
    let pi5 = discover(&hw_dir().join("constructed/pi5"), &opts());
    assert!(motley_core::hw::conditions(&pi5, None, &t, &[], 1).is_empty());
    assert_eq!(pi5.throttle.map(|t| t.raw), Some(0));
}

#[test]
fn an_empty_root_gives_empty_facts() {
    let f = discover(Path::new("/nonexistent-motley-root"), &opts());
    assert_eq!(f.cpu.logical, 0);
    assert_eq!(f.memory, 0);
    assert!(f.throttle.is_none() && f.disks.is_empty() && f.data_disk.is_none());
}

#[test]
fn this_machine() {
    let hw = discover(Path::new("/"), &Options::default());
    let nproc = std::process::Command::new("nproc")
        .arg("--all")
        .output()
        .expect("nproc");
    let nproc: u32 = String::from_utf8_lossy(&nproc.stdout)
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(hw.cpu.logical, nproc, "agrees with nproc --all");
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    assert_eq!(Some(hw.memory), motley_discovery::mem_total(&meminfo));
    assert!(hw.memory > 0 && !hw.arch.is_empty() && hw.os == "linux");
    // The kernel's machine, as `uname -m` prints it.
    let m = std::process::Command::new("uname")
        .arg("-m")
        .output()
        .expect("uname");
    let m = String::from_utf8_lossy(&m.stdout).trim().to_string();
    assert_eq!(
        Some(hw.arch.as_str()),
        motley_discovery::arch::from_machine(&m),
        "kernel arch from uname -m {m:?}"
    );
    // This test binary is built for this machine's userland: its init is of the same
    // architecture.
    let p = hw.platform.expect("this machine's userland platform");
    assert_eq!(
        p.architecture,
        motley_discovery::arch_name(std::env::consts::ARCH),
        "userland platform {p} ({:?})",
        hw.platform_source
    );
}

/// A tree with `proc/cpuinfo` and `sbin/init` (an ELF header of the given class and
/// machine), as a 32-bit or 64-bit OS on the same board would show it.
fn board_tree(cpuinfo: &str, bits64: bool, machine: u16) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let w = |rel: &str, bytes: &[u8]| {
        let p = d.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    };
    w("proc/cpuinfo", cpuinfo.as_bytes());
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = if bits64 { 2 } else { 1 };
    elf[5] = 1;
    elf[18..20].copy_from_slice(&machine.to_le_bytes());
    w("lib/systemd/systemd", &elf);
    std::fs::create_dir_all(d.path().join("sbin")).expect("mkdir");
    std::os::unix::fs::symlink("/lib/systemd/systemd", d.path().join("sbin/init"))
        .expect("symlink");
    d
}

/// One processor block as a kernel prints it (arch/arm64 `c_show`, arch/arm `c_show`).
fn arm_cpu(model: &str, features: &str, arch: &str, part: &str) -> String {
    format!(
        "processor\t: 0\nmodel name\t: {model}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\n\
         CPU implementer\t: 0x41\nCPU architecture: {arch}\nCPU variant\t: 0x0\n\
         CPU part\t: {part}\nCPU revision\t: 3\n\n"
    )
}

#[test]
fn kernel_and_userland_platforms_of_one_board() {
    const A64: &str = "fp asimd evtstrm crc32 cpuid";
    const A32: &str =
        "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm crc32";
    // (what runs, cpuinfo, init's class and machine, kernel arch, userland platform)
    let cases = [
        (
            "Pi 4, 64-bit OS",
            arm_cpu("", A64, "8", "0xd08"),
            true,
            183,
            "arm64",
            "linux/arm64/v8",
        ),
        (
            "Pi 4, 32-bit OS on its default 64-bit kernel (cpuinfo as a 32-bit reader sees it)",
            arm_cpu("ARMv8 Processor rev 3 (v8l)", A32, "8", "0xd08"),
            false,
            40,
            "arm64",
            "linux/arm/v7",
        ),
        (
            "Pi 4, 32-bit OS with arm_64bit=0 (a 32-bit kernel)",
            arm_cpu("ARMv7 Processor rev 3 (v7l)", A32, "7", "0xd08"),
            false,
            40,
            "arm",
            "linux/arm/v7",
        ),
        (
            "Jetson on L4T: (v8l) for a 64-bit kernel",
            arm_cpu("ARMv8 Processor rev 1 (v8l)", A64, "8", "0xd07"),
            true,
            183,
            "arm64",
            "linux/arm64/v8",
        ),
        (
            "Pi Zero: ARM1176 says CPU architecture 7",
            arm_cpu(
                "ARMv6-compatible processor rev 7 (v6l)",
                "half thumb fastmult vfp edsp java tls",
                "7",
                "0xb76",
            ),
            false,
            40,
            "arm",
            "linux/arm/v6",
        ),
    ];
    for (what, cpuinfo, bits64, machine, arch, platform) in cases {
        let t = board_tree(&cpuinfo, bits64, machine);
        let hw = discover(t.path(), &opts());
        assert_eq!(hw.arch, arch, "{what}: kernel arch ({:?})", hw.arch_source);
        assert_eq!(
            hw.platform.map(|p| p.to_string()).as_deref(),
            Some(platform),
            "{what}: userland ({:?})",
            hw.platform_source
        );
        assert_eq!(
            hw.platform_source.as_deref(),
            Some("ELF of /lib/systemd/systemd"),
            "{what}"
        );
    }
}

#[test]
fn captures_without_programs_have_no_userland_platform() {
    // /proc and /sys only: the kernel arch is known, the userland is not guessed.
    let hw = discover(&hw_dir().join("constructed/pi5"), &opts());
    assert_eq!(hw.arch, "arm64");
    assert!(hw.arch_source.is_some());
    assert_eq!(hw.platform, None);
}

proptest::proptest! {
    #[test]
    fn text_parsers_never_panic(s in "(?s).{0,400}") {
        let _ = cpuinfo::parse(&s);
        let _ = motley_discovery::throttle::parse(&s);
        let _ = motley_discovery::mem_total(&s);
        let _ = motley_discovery::psi_some_avg10(&s);
        let _ = motley_discovery::block::parse_mounts(&s);
        let _ = motley_discovery::block::parse_mountinfo(&s);
        let _ = motley_discovery::cpu::cpu_list(&s);
        let _ = gpu::nvidia_information(&s);
        let _ = motley_discovery::os_release_name(&s);
    }
}
