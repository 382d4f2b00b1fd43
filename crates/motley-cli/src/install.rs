//! `motley install server|agent`, `motley uninstall` and `motley man`: motley as a
//! systemd service, with its user, directories, man pages and completions.
//!
//! Every path is under a root (`/`, or `--root DIR` to package or test); with `/` and
//! without `--no-start` the unit is enabled and started through `systemctl`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use crate::args::{Cli, InstallCommand, InstallTarget, UninstallArgs};

/// Where the binary goes.
pub const BIN: &str = "usr/local/bin/motley";
const UNITS: &str = "etc/systemd/system";
const SYSUSERS: &str = "usr/lib/sysusers.d/motley.conf";
const AGENT_ENV: &str = "etc/motley/agent.env";
const MAN: &str = "usr/local/share/man/man1";
const COMPLETIONS: [(clap_complete::Shell, &str); 3] = [
    (
        clap_complete::Shell::Bash,
        "usr/local/share/bash-completion/completions/motley",
    ),
    (
        clap_complete::Shell::Zsh,
        "usr/local/share/zsh/site-functions/_motley",
    ),
    (
        clap_complete::Shell::Fish,
        "usr/local/share/fish/vendor_completions.d/motley.fish",
    ),
];
const SERVER_DATA: &str = "var/lib/motley";
const AGENT_DATA: &str = "var/lib/motley-agent";

/// One argument of `ExecStart=` as systemd reads it: quoted when it has spaces or
/// quotes, `%` and `$` doubled (systemd would expand them).
fn exec_arg(a: &str) -> String {
    let a = a.replace('%', "%%").replace('$', "$$");
    if a.is_empty()
        || a.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
    {
        format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        a
    }
}

fn exec_line(args: &[String]) -> String {
    let mut line = format!("/{BIN}");
    for a in args {
        line.push(' ');
        line.push_str(&exec_arg(a));
    }
    line
}

/// The server's unit: its own user, a read-only system, state in `StateDirectory`.
pub fn server_unit(
    listen: std::net::SocketAddr,
    datastore: Option<&str>,
    extra: &[String],
) -> String {
    let mut args = vec![
        "server".to_string(),
        "--data-dir".into(),
        format!("/{SERVER_DATA}"),
        "--listen".into(),
        listen.to_string(),
    ];
    if let Some(d) = datastore {
        args.extend(["--datastore".into(), d.to_string()]);
    }
    args.extend(extra.iter().cloned());
    format!(
        "# Written by `motley install server`; `motley uninstall` removes it.\n\
         [Unit]\n\
         Description=motley control-plane server\n\
         Documentation=man:motley-server(1)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={}\n\
         User=motley\n\
         Group=motley\n\
         StateDirectory=motley\n\
         StateDirectoryMode=0700\n\
         LogsDirectory=motley\n\
         Restart=always\n\
         RestartSec=2\n\
         TimeoutStopSec=30\n\
         LimitNOFILE=65536\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         ProtectHostname=yes\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
         RestrictNamespaces=yes\n\
         RestrictRealtime=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n\
         MemoryDenyWriteExecute=yes\n\
         SystemCallArchitectures=native\n\
         CapabilityBoundingSet=\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exec_line(&args)
    )
}

/// The agent's unit: root (it starts tasks as their users, in cgroups and network
/// namespaces, through containerd), so only what tasks cannot need is taken away; its
/// tasks outlive a restart of the agent (`KillMode=process`: the next one adopts
/// them).
pub fn agent_unit(servers: &[String], name: Option<&str>, extra: &[String]) -> String {
    let mut args = vec![
        "agent".to_string(),
        "--server".into(),
        servers.join(","),
        "--data-dir".into(),
        format!("/{AGENT_DATA}"),
    ];
    if let Some(n) = name {
        args.extend(["--name".into(), n.to_string()]);
    }
    args.extend(extra.iter().cloned());
    format!(
        "# Written by `motley install agent`; `motley uninstall` removes it.\n\
         [Unit]\n\
         Description=motley node agent\n\
         Documentation=man:motley-agent(1)\n\
         Wants=network-online.target\n\
         After=network-online.target containerd.service\n\
         \n\
         [Service]\n\
         ExecStart={}\n\
         EnvironmentFile=-/{AGENT_ENV}\n\
         StateDirectory=motley-agent\n\
         StateDirectoryMode=0700\n\
         Restart=always\n\
         RestartSec=2\n\
         KillMode=process\n\
         Delegate=yes\n\
         TasksMax=infinity\n\
         LimitNOFILE=1048576\n\
         ProtectHome=read-only\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectClock=yes\n\
         LockPersonality=yes\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exec_line(&args)
    )
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Through a temporary file and a rename: a running binary or unit is replaced
    // whole, never half-written.
    let tmp = path.with_extension("motley-new");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(path)
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| {
            format!("running {cmd} (is this a systemd machine? --no-start skips it)")
        })?;
    anyhow::ensure!(
        status.success(),
        "{cmd} {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

/// The binary, man pages and completions (shared by server and agent).
fn common_files(root: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let target = root.join(BIN);
    let same = std::fs::canonicalize(&exe).ok() == std::fs::canonicalize(&target).ok();
    if !same {
        let bytes = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
        write(root, BIN, &bytes, 0o755)?;
    }
    let man = root.join(MAN);
    let n = write_man_pages(&man)?;
    println!("wrote {n} man pages in {}", man.display());
    for (shell, rel) in COMPLETIONS {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "motley", &mut out);
        write(root, rel, &out, 0o644)?;
    }
    Ok(())
}

/// Writes `motley.1` and one page per command (`motley-apply.1`) into `dir`.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages in {}", dir.display()))?;
    let pages = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("motley") && n.ends_with(".1")
        })
        .count();
    Ok(pages)
}

fn start(target: &InstallTarget, unit: &str) -> anyhow::Result<()> {
    if target.root != Path::new("/") || target.no_start {
        println!("not started: systemctl enable --now {unit} (once the files are in place)");
        return Ok(());
    }
    run("systemctl", &["daemon-reload"])?;
    run("systemctl", &["enable", "--now", unit])?;
    println!("{unit} enabled and started");
    Ok(())
}

/// `motley install server|agent`.
pub fn install(what: InstallCommand) -> anyhow::Result<i32> {
    match what {
        InstallCommand::Server {
            target,
            listen,
            datastore,
            extra,
        } => {
            let root = &target.root;
            common_files(root)?;
            write(
                root,
                SYSUSERS,
                b"# motley's server runs as this user (systemd-sysusers).\nu motley - \"motley server\" /var/lib/motley\n",
                0o644,
            )?;
            write(
                root,
                &format!("{UNITS}/motley-server.service"),
                server_unit(listen, datastore.as_deref(), &extra).as_bytes(),
                0o644,
            )?;
            std::fs::create_dir_all(root.join(SERVER_DATA))
                .with_context(|| format!("creating {}", root.join(SERVER_DATA).display()))?;
            if root == Path::new("/") && !target.no_start {
                run("systemd-sysusers", &[&format!("/{SYSUSERS}")])?;
            }
            start(&target, "motley-server.service")?;
            println!(
                "the admin's client config is /{SERVER_DATA}/client.yaml once the server has started"
            );
        }
        InstallCommand::Agent {
            target,
            servers,
            token,
            name,
            extra,
        } => {
            let root = &target.root;
            anyhow::ensure!(!token.contains(['\n', '\r']), "--token: one line expected");
            common_files(root)?;
            // The token is a secret: a root-only file, not the world-readable unit.
            write(
                root,
                AGENT_ENV,
                format!("MOTLEY_JOIN_TOKEN={token}\n").as_bytes(),
                0o600,
            )?;
            write(
                root,
                &format!("{UNITS}/motley-agent.service"),
                agent_unit(&servers, name.as_deref(), &extra).as_bytes(),
                0o644,
            )?;
            std::fs::create_dir_all(root.join(AGENT_DATA))
                .with_context(|| format!("creating {}", root.join(AGENT_DATA).display()))?;
            start(&target, "motley-agent.service")?;
        }
    }
    Ok(0)
}

/// `motley uninstall`: stops and removes the units, the binary, man pages and
/// completions; the data only with `--purge`.
pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<i32> {
    let root = &args.root;
    for unit in ["motley-server.service", "motley-agent.service"] {
        let path = root.join(UNITS).join(unit);
        if !path.exists() {
            continue;
        }
        if root == Path::new("/") {
            run("systemctl", &["disable", "--now", unit])?;
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        println!("removed {}", path.display());
    }
    let mut files: Vec<PathBuf> = [BIN, SYSUSERS, AGENT_ENV]
        .iter()
        .map(|r| root.join(r))
        .collect();
    files.extend(COMPLETIONS.iter().map(|(_, r)| root.join(r)));
    if let Ok(rd) = std::fs::read_dir(root.join(MAN)) {
        files.extend(rd.flatten().map(|e| e.path()).filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("motley"))
        }));
    }
    for f in files {
        match std::fs::remove_file(&f) {
            Ok(()) => println!("removed {}", f.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    if root == Path::new("/") {
        run("systemctl", &["daemon-reload"])?;
    }
    if args.purge {
        for d in [SERVER_DATA, AGENT_DATA, "var/log/motley"] {
            let p = root.join(d);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
                println!("removed {}", p.display());
            }
        }
    } else {
        println!("the data stays in /{SERVER_DATA} and /{AGENT_DATA} (--purge removes it)");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arguments_are_quoted_as_systemd_reads_them() {
        assert_eq!(exec_arg("plain"), "plain");
        assert_eq!(exec_arg("a b"), "\"a b\"");
        assert_eq!(exec_arg("50%"), "50%%");
        assert_eq!(exec_arg("$HOME"), "$$HOME");
        assert_eq!(exec_arg("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(exec_arg(""), "\"\"");
    }

    #[test]
    fn the_units_run_what_was_asked() {
        let s = server_unit(
            "0.0.0.0:7443".parse().unwrap(),
            Some("etcd://a:2379"),
            &["--tls-san".into(), "pi 1".into()],
        );
        assert!(
            s.contains("ExecStart=/usr/local/bin/motley server --data-dir /var/lib/motley --listen 0.0.0.0:7443 --datastore etcd://a:2379 --tls-san \"pi 1\"\n"),
            "{s}"
        );
        assert!(s.contains("User=motley\n") && s.contains("NoNewPrivileges=yes\n"));
        let a = agent_unit(
            &["https://a:7443".into(), "https://b:7443".into()],
            Some("pi1"),
            &[],
        );
        assert!(
            a.contains("ExecStart=/usr/local/bin/motley agent --server https://a:7443,https://b:7443 --data-dir /var/lib/motley-agent --name pi1\n"),
            "{a}"
        );
        assert!(a.contains("KillMode=process\n") && !a.contains("NoNewPrivileges"));
    }
}
