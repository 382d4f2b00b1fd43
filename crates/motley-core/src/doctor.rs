//! `motley doctor`: what is wrong with a machine for motley, and how to fix it, judged
//! from what the binary observed (no IO here).

use serde::{Deserialize, Serialize};

use crate::hw::{Media, Throttle};

/// The cgroup hierarchy the machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Unified (`/sys/fs/cgroup/cgroup.controllers`).
    V2,
    /// Separate hierarchies per controller.
    V1,
    /// Neither.
    None,
}

/// A port motley will listen on, and whether it could be bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortProbe {
    /// What listens there (`server API`, `DNS`).
    pub what: String,
    /// The address.
    pub addr: String,
    /// Why it could not be bound (none: free).
    pub error: Option<String>,
}

/// A server asked for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerProbe {
    /// Its URL.
    pub url: String,
    /// Why it did not answer (none: it did).
    pub error: Option<String>,
    /// The round trip (ms).
    pub rtt_ms: Option<u64>,
    /// Its clock minus ours (ms, from its `Date` header: whole seconds).
    pub skew_ms: Option<i64>,
}

/// What the binary observed of the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The cgroup hierarchy.
    pub cgroup_version: CgroupVersion,
    /// The controllers enabled in it (`memory`, `cpu`, `pids`).
    pub cgroup_controllers: Vec<String>,
    /// Whether the clock is synchronized (none: could not tell).
    pub clock_synced: Option<bool>,
    /// How that was read, or why it could not be.
    pub clock_source: String,
    /// The data directory.
    pub data_dir: String,
    /// The medium it is on.
    pub data_media: Option<Media>,
    /// Its filesystem type.
    pub data_fs: Option<String>,
    /// Free bytes there.
    pub data_free: Option<u64>,
    /// A Raspberry Pi's throttle flags.
    pub throttle: Option<Throttle>,
    /// containerd: its version, or why it could not be reached (none: not checked).
    pub containerd: Option<Result<String, String>>,
    /// Ports motley will listen on.
    pub ports: Vec<PortProbe>,
    /// The cluster's servers.
    pub servers: Vec<ServerProbe>,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something will hurt.
    Warn,
    /// Will not work.
    Fail,
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The check (`cgroups`, `clock`, `data-dir`, `power`, `containerd`, `port`,
    /// `server`).
    pub check: String,
    /// How bad.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// How to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn finding(check: &str, level: Level, message: String, fix: Option<&str>) -> Finding {
    Finding {
        check: check.into(),
        level,
        message,
        fix: fix.map(str::to_string),
    }
}

/// Free space below which the data directory is a warning.
pub const LOW_FREE: u64 = 1 << 30;
/// Clock skew to a server beyond which tokens, certificates and leases misbehave.
pub const MAX_SKEW_MS: i64 = 2_000;

/// `62.4Gi`: one decimal in the largest unit, rounded down.
fn approx(b: u64) -> String {
    for (name, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if b >> shift > 0 {
            let tenths = (u128::from(b) * 10) >> shift;
            return format!("{}.{}{name}", tenths / 10, tenths % 10);
        }
    }
    format!("{b}")
}

/// Every check's verdict, in a fixed order.
pub fn judge(o: &Observed) -> Vec<Finding> {
    use Level::*;
    let mut out = Vec::new();
    let has = |c: &str| o.cgroup_controllers.iter().any(|x| x == c);
    let cmdline = "add `cgroup_enable=memory cgroup_memory=1` to the kernel command line (on a Raspberry Pi: the one line of /boot/firmware/cmdline.txt, or /boot/cmdline.txt) and reboot";
    out.push(match o.cgroup_version {
        CgroupVersion::None => finding(
            "cgroups",
            Fail,
            "no cgroup hierarchy: memory and cpu limits cannot be enforced".into(),
            Some("mount cgroup2 at /sys/fs/cgroup (systemd does at boot)"),
        ),
        _ if !has("memory") => finding(
            "cgroups",
            Fail,
            format!(
                "cgroup {} without the memory controller: memory limits are not enforced, a task can take the machine's memory",
                if o.cgroup_version == CgroupVersion::V2 { "v2" } else { "v1" }
            ),
            Some(cmdline),
        ),
        _ if !has("cpu") => finding(
            "cgroups",
            Warn,
            "no cpu controller: cpu limits are not enforced".into(),
            Some("enable the cpu controller (CONFIG_CFS_BANDWIDTH) or use a distribution kernel"),
        ),
        v => finding(
            "cgroups",
            Ok,
            format!(
                "cgroup {} with {}",
                if v == CgroupVersion::V2 { "v2" } else { "v1" },
                o.cgroup_controllers.join(", ")
            ),
            None,
        ),
    });
    out.push(match o.clock_synced {
        Some(true) => finding("clock", Ok, format!("synchronized ({})", o.clock_source), None),
        Some(false) => finding(
            "clock",
            Warn,
            format!("not synchronized ({})", o.clock_source),
            Some("enable time synchronization: `timedatectl set-ntp true` (systemd-timesyncd) or install chrony; a Pi has no battery clock"),
        ),
        None => finding(
            "clock",
            Warn,
            format!("could not tell whether it is synchronized ({})", o.clock_source),
            Some("make sure an NTP client runs (systemd-timesyncd or chrony)"),
        ),
    });
    let mut data = Vec::new();
    let (mut level, mut fix) = (Ok, None);
    match o.data_media {
        Some(Media::Sd) => {
            level = Warn;
            data.push("on an SD card: motley keeps task logs in memory there, but the store's writes still wear it".to_string());
            fix = Some("put the data directory on a USB SSD or NVMe disk (--data-dir)");
        }
        Some(m) => data.push(format!("on {}", m.as_str())),
        None => data.push("on a disk motley could not identify".into()),
    }
    if let Some(fs) = &o.data_fs {
        data.push(format!("filesystem {fs}"));
        if fs == "tmpfs" || fs == "ramfs" {
            level = Fail;
            data.push("in memory: the cluster's state is lost at reboot".into());
            fix = Some("use a directory on a disk (--data-dir)");
        }
    }
    if let Some(free) = o.data_free {
        data.push(format!("{} free", approx(free)));
        if free < LOW_FREE {
            level = level.max(Warn);
            data.push("less than 1Gi".into());
            fix = fix.or(Some("free space, or move the data directory (--data-dir)"));
        }
    }
    out.push(finding(
        "data-dir",
        level,
        format!("{}: {}", o.data_dir, data.join(", ")),
        fix,
    ));
    if let Some(t) = &o.throttle {
        let psu = "use the official power supply (5.1 V, 3 A for a Pi 4, 5 A for a Pi 5) and a short, thick cable; unpowered USB disks draw from the Pi";
        out.push(if t.undervoltage_now {
            finding(
                "power",
                Fail,
                "under-voltage now: the Pi is throttled and may corrupt its SD card".into(),
                Some(psu),
            )
        } else if t.undervoltage_since_boot {
            finding(
                "power",
                Warn,
                "under-voltage has occurred since boot".into(),
                Some(psu),
            )
        } else if t.throttled_now || t.soft_temp_limit_now {
            finding(
                "power",
                Warn,
                "throttled now (heat)".into(),
                Some("add a heatsink or a fan"),
            )
        } else {
            finding(
                "power",
                Ok,
                "no under-voltage or throttling since boot".into(),
                None,
            )
        });
    }
    match &o.containerd {
        None => {}
        Some(Result::Ok(v)) => out.push(finding("containerd", Ok, format!("reachable, {v}"), None)),
        Some(Err(e)) => out.push(finding(
            "containerd",
            Warn,
            format!("not reachable ({e}): tasks with `image:` will not run here"),
            Some("`apt install containerd` and `systemctl enable --now containerd`, or pass --containerd SOCKET"),
        )),
    }
    for p in &o.ports {
        out.push(match &p.error {
            None => finding("port", Ok, format!("{} {} is free", p.what, p.addr), None),
            Some(e) => finding(
                "port",
                Fail,
                format!("{} {} cannot be bound: {e}", p.what, p.addr),
                Some(if p.what == "DNS" {
                    "another DNS server holds it (systemd-resolved listens on 127.0.0.53:53): give motley another address (--dns-listen 127.0.0.54:53)"
                } else {
                    "stop what listens there (`ss -ltnp`), or pick another address"
                }),
            ),
        });
    }
    for s in &o.servers {
        out.push(match (&s.error, s.skew_ms) {
            (Some(e), _) => finding(
                "server",
                Fail,
                format!("{} does not answer: {e}", s.url),
                Some("check the address, the server (`systemctl status motley-server`) and firewalls (tcp/7443)"),
            ),
            (None, Some(skew)) if skew.abs() > MAX_SKEW_MS => finding(
                "server",
                Warn,
                format!(
                    "{} answers, but its clock is {:.1} s {} this one's",
                    s.url,
                    skew.abs() as f64 / 1000.0,
                    if skew > 0 { "ahead of" } else { "behind" }
                ),
                Some("synchronize both clocks (NTP): tokens, certificates and leases count on them"),
            ),
            (None, _) => finding(
                "server",
                Ok,
                format!(
                    "{} answers{}",
                    s.url,
                    s.rtt_ms.map(|r| format!(" in {r} ms")).unwrap_or_default()
                ),
                None,
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Observed {
        Observed {
            cgroup_version: CgroupVersion::V2,
            cgroup_controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
            clock_synced: Some(true),
            clock_source: "timedatectl".into(),
            data_dir: "/var/lib/motley".into(),
            data_media: Some(Media::Nvme),
            data_fs: Some("ext4".into()),
            data_free: Some(50 << 30),
            throttle: None,
            containerd: Some(Result::Ok("containerd 1.6.20".into())),
            ports: vec![PortProbe {
                what: "server API".into(),
                addr: "0.0.0.0:7443".into(),
                error: None,
            }],
            servers: vec![ServerProbe {
                url: "https://pi1:7443".into(),
                error: None,
                rtt_ms: Some(3),
                skew_ms: Some(0),
            }],
        }
    }

    fn level_of(f: &[Finding], check: &str) -> Level {
        f.iter()
            .filter(|x| x.check == check)
            .map(|x| x.level)
            .max()
            .unwrap_or_else(|| panic!("no {check} finding in {f:?}"))
    }

    #[test]
    fn a_healthy_machine_is_all_ok() {
        let f = judge(&healthy());
        assert!(f.iter().all(|x| x.level == Level::Ok), "{f:?}");
        assert_eq!(f.len(), 6);
    }

    #[test]
    fn each_problem_is_named_with_its_fix() {
        let mut o = healthy();
        o.cgroup_controllers.retain(|c| c != "memory");
        o.clock_synced = Some(false);
        o.data_media = Some(Media::Sd);
        o.data_free = Some(100 << 20);
        o.throttle = Some(Throttle {
            raw: 0x50000,
            source: crate::hw::ThrottleSource::Sysfs,
            undervoltage_now: false,
            freq_capped_now: false,
            throttled_now: false,
            soft_temp_limit_now: false,
            undervoltage_since_boot: true,
            freq_capped_since_boot: false,
            throttled_since_boot: true,
            soft_temp_limit_since_boot: false,
            unknown_bits: 0,
        });
        o.containerd = Some(Err("connection refused".into()));
        o.ports[0].error = Some("Address already in use".into());
        o.servers[0].skew_ms = Some(-5_000);
        o.servers.push(ServerProbe {
            url: "https://pi2:7443".into(),
            error: Some("connection refused".into()),
            rtt_ms: None,
            skew_ms: None,
        });
        let f = judge(&o);
        for (check, level, says) in [
            ("cgroups", Level::Fail, "cgroup_memory=1"),
            ("clock", Level::Warn, "timedatectl set-ntp true"),
            ("data-dir", Level::Warn, "USB SSD"),
            ("power", Level::Warn, "power supply"),
            ("containerd", Level::Warn, "apt install containerd"),
            ("port", Level::Fail, "ss -ltnp"),
            ("server", Level::Fail, "firewalls"),
        ] {
            assert_eq!(level_of(&f, check), level, "{check}: {f:?}");
            assert!(
                f.iter()
                    .filter(|x| x.check == check && x.level == level)
                    .any(|x| x.fix.as_deref().is_some_and(|t| t.contains(says))),
                "{check}: {f:?}"
            );
        }
        assert!(
            f.iter().any(|x| x.message.contains("100.0Mi free")),
            "{f:?}"
        );
        let skew = f
            .iter()
            .find(|x| x.message.contains("pi1"))
            .expect("pi1's finding");
        assert!(skew.message.contains("5.0 s behind"), "{skew:?}");
        // A data directory in memory is a failure.
        let mut o = healthy();
        o.data_fs = Some("tmpfs".into());
        assert_eq!(level_of(&judge(&o), "data-dir"), Level::Fail);
    }
}
