//! `motley doctor`: observes the machine (the judging is `motley_core::doctor`'s).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use motley_cli::args::{DoctorArgs, Format};
use motley_core::doctor::{self, CgroupVersion, Level, Observed, PortProbe, ServerProbe};

/// The cgroup hierarchy and the controllers enabled in it.
fn cgroups() -> (CgroupVersion, Vec<String>) {
    match motley_agent::cgroup::Cgroups::detect(Path::new("/sys/fs/cgroup")) {
        motley_agent::cgroup::Cgroups::V2(root) => {
            let list = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            (
                CgroupVersion::V2,
                list.split_whitespace().map(str::to_string).collect(),
            )
        }
        _ => {
            // v1 (or none): the controllers the kernel enabled (`/proc/cgroups`), as
            // far as they are mounted.
            let text = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
            let enabled: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() == 4 && f[3] == "1").then(|| f[0].to_string())
                })
                .filter(|c| {
                    Path::new("/sys/fs/cgroup").join(c).exists()
                        || (c == "cpu" && Path::new("/sys/fs/cgroup/cpu,cpuacct").exists())
                })
                .collect();
            let v = if enabled.is_empty() {
                CgroupVersion::None
            } else {
                CgroupVersion::V1
            };
            (v, enabled)
        }
    }
}

/// Whether the clock is synchronized, and how that was read.
fn clock() -> (Option<bool>, String) {
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(v) = out("timedatectl", &["show", "-p", "NTPSynchronized", "--value"]) {
        return (Some(v == "yes"), "timedatectl".into());
    }
    if let Some(v) = out("chronyc", &["-n", "tracking"]) {
        let synced = v
            .lines()
            .find(|l| l.starts_with("Leap status"))
            .map(|l| !l.contains("Not synchronised"));
        return (synced, "chronyc".into());
    }
    (
        None,
        "neither timedatectl (systemd) nor chronyc answered".into(),
    )
}

/// The filesystem type of the mount holding `dir` (`/proc/self/mountinfo`).
fn fs_type(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in text.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount = left.split_whitespace().nth(4)?;
        let fs = right.split_whitespace().next()?;
        let covers = dir.starts_with(mount);
        if covers && best.as_ref().is_none_or(|(len, _)| mount.len() >= *len) {
            best = Some((mount.len(), fs.to_string()));
        }
    }
    best.map(|(_, fs)| fs)
}

/// The nearest existing directory at or above `p`.
fn existing(p: &Path) -> PathBuf {
    let mut p = p.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent.to_path_buf(),
            None => break,
        }
    }
    p
}

fn probe_port(what: &str, addr: std::net::SocketAddr, udp_too: bool) -> PortProbe {
    let tcp = std::net::TcpListener::bind(addr).map(drop);
    let udp = if udp_too {
        std::net::UdpSocket::bind(addr).map(drop)
    } else {
        Ok(())
    };
    PortProbe {
        what: what.into(),
        addr: addr.to_string(),
        error: tcp.and(udp).err().map(|e| e.to_string()),
    }
}

async fn probe_server(http: &reqwest::Client, url: &str) -> ServerProbe {
    let sent = SystemTime::now();
    let t0 = Instant::now();
    let r = http
        .get(format!("{}/healthz", url.trim_end_matches('/')))
        .send()
        .await;
    let rtt = t0.elapsed();
    match r {
        Err(e) => ServerProbe {
            url: url.into(),
            error: Some(motley_net::error_chain(&e)),
            rtt_ms: None,
            skew_ms: None,
        },
        Ok(resp) if !resp.status().is_success() => ServerProbe {
            url: url.into(),
            error: Some(format!("/healthz answered {}", resp.status())),
            rtt_ms: Some(rtt.as_millis() as u64),
            skew_ms: None,
        },
        Ok(resp) => {
            // Its Date (whole seconds) against our clock at the middle of the round trip.
            let skew = resp
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .map(|theirs| {
                    let ours = sent + rtt / 2;
                    let ms = |t: SystemTime| {
                        t.duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64)
                    };
                    // Their Date is truncated to the second: half a second is its middle.
                    ms(theirs) + 500 - ms(ours)
                });
            ServerProbe {
                url: url.into(),
                error: None,
                rtt_ms: Some(rtt.as_millis() as u64),
                skew_ms: skew,
            }
        }
    }
}

/// The servers to reach and a client for them: the cluster's CA when the client config
/// is at hand; else (a machine not joined yet) TLS without verification, to learn only
/// whether something answers (nothing secret is sent).
fn servers_and_client(
    args: &DoctorArgs,
    config: Option<&Path>,
) -> anyhow::Result<(Vec<String>, reqwest::Client)> {
    let path = config
        .map(Path::to_path_buf)
        .or_else(motley_cli::client::default_config_path)
        .filter(|p| p.exists());
    let cfg = path.and_then(|p| motley_net::ClientConfig::load(&p).ok());
    let servers = if args.servers.is_empty() {
        cfg.as_ref().map(|c| c.servers.clone()).unwrap_or_default()
    } else {
        args.servers.clone()
    };
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
    let http = match &cfg {
        Some(c) => builder.use_preconfigured_tls(motley_net::client_tls(&c.ca)?),
        None => builder.danger_accept_invalid_certs(true),
    }
    .build()?;
    Ok((servers, http))
}

/// `motley doctor`.
pub async fn run(args: DoctorArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => crate::up::default_data_dir()?,
    };
    let probe_dir = existing(&data_dir);
    let hw = motley_discovery::discover(
        Path::new("/"),
        &motley_discovery::Options {
            data_dir: Some(probe_dir.display().to_string()),
        },
    );
    let (cgroup_version, cgroup_controllers) = cgroups();
    let (clock_synced, clock_source) = clock();
    let data_free = nix::sys::statvfs::statvfs(&probe_dir)
        .ok()
        // (Widths differ by platform: through u128, as the agent's disk check does.)
        .map(|s| s.blocks_available() as u128 * s.fragment_size() as u128)
        .map(|b| u64::try_from(b).unwrap_or(u64::MAX));
    let containerd = Some(
        match tokio::time::timeout(
            Duration::from_secs(6),
            motley_containerd::Containerd::connect(
                &args.containerd,
                motley_containerd::registry::Registries::default(),
            ),
        )
        .await
        {
            Ok(Ok((_, v))) => Ok(format!("containerd {v} at {}", args.containerd.display())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("{}: no answer in 6 s", args.containerd.display())),
        },
    );
    let mut ports = Vec::new();
    if let Some(a) = args.listen {
        ports.push(probe_port("server API", a, false));
    }
    if let Some(a) = args.dns_listen {
        ports.push(probe_port("DNS", a, true));
    }
    if let Some(a) = args.ingress_listen {
        ports.push(probe_port("ingress", a, false));
    }
    let (urls, http) = servers_and_client(&args, config)?;
    let mut servers = Vec::new();
    for u in &urls {
        servers.push(probe_server(&http, u).await);
    }
    let observed = Observed {
        cgroup_version,
        cgroup_controllers,
        clock_synced,
        clock_source,
        data_dir: data_dir.display().to_string(),
        data_media: hw.data_disk.as_ref().map(|d| d.media),
        data_fs: fs_type(&probe_dir),
        data_free,
        throttle: hw.throttle,
        containerd,
        ports,
        servers,
    };
    let findings = doctor::judge(&observed);
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "observed": observed,
                "findings": findings,
            }))?
        ),
        Format::Yaml => print!(
            "{}",
            serde_saphyr::to_string(&serde_json::json!({
                "observed": observed,
                "findings": findings,
            }))?
        ),
        Format::Table | Format::Wide => {
            for f in &findings {
                let mark = match f.level {
                    Level::Ok => "ok  ",
                    Level::Warn => "WARN",
                    Level::Fail => "FAIL",
                };
                println!("{mark} {:<10} {}", f.check, f.message);
                if let Some(fix) = &f.fix {
                    println!("     {:<10} fix: {fix}", "");
                }
            }
        }
    }
    Ok(if findings.iter().any(|f| f.level == Level::Fail) {
        motley_cli::EXIT_ERROR
    } else {
        0
    })
}
