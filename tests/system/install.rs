//! `motley install` into a temporary root: units systemd accepts, the token kept out
//! of them, man pages and completions, and `motley uninstall` taking it all back.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn motley(args: &[&str]) -> String {
    let out = Command::new(motley_bin())
        .args(args)
        .output()
        .expect("run motley");
    assert!(
        out.status.success(),
        "motley {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn install_writes_units_systemd_accepts_and_uninstall_removes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let r = root.to_str().expect("utf-8");
    let token = "K10-secret-join-token";
    motley(&[
        "install",
        "server",
        "--root",
        r,
        "--no-start",
        "--",
        "--tls-san",
        "pi 1",
    ]);
    let said = motley(&[
        "install",
        "agent",
        "--root",
        r,
        "--no-start",
        "--join",
        "https://10.0.0.1:7443,https://10.0.0.2:7443",
        "--token",
        token,
        "--name",
        "pi1",
    ]);
    assert!(said.contains("not started"), "{said}");

    let units = root.join("etc/systemd/system");
    let server = std::fs::read_to_string(units.join("motley-server.service")).expect("server unit");
    let agent = std::fs::read_to_string(units.join("motley-agent.service")).expect("agent unit");
    assert!(
        server.contains("--tls-san \"pi 1\"") && server.contains("User=motley"),
        "{server}"
    );
    assert!(
        agent.contains("--name pi1") && agent.contains("KillMode=process"),
        "{agent}"
    );
    // The join token is in a root-only file, never in the (world-readable) unit.
    let env = root.join("etc/motley/agent.env");
    assert_eq!(mode(&env), 0o600);
    assert_eq!(
        std::fs::read_to_string(&env).expect("env"),
        format!("MOTLEY_JOIN_TOKEN={token}\n")
    );
    assert!(!agent.contains(token) && !server.contains(token));
    // The installed binary is this one, and runs.
    let bin = root.join("usr/local/bin/motley");
    assert_eq!(mode(&bin), 0o755);
    let v = Command::new(&bin)
        .arg("version")
        .output()
        .expect("installed binary");
    assert!(v.status.success());

    // systemd reads both units without a complaint (the root needs systemd's own
    // units for the targets they name).
    let sys = root.join("lib/systemd");
    std::fs::create_dir_all(&sys).expect("mkdir");
    let cp = Command::new("cp")
        .args(["-r", "/lib/systemd/system"])
        .arg(&sys)
        .status()
        .expect("cp");
    assert!(cp.success());
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={r}"))
        .args([
            "/etc/systemd/system/motley-server.service",
            "/etc/systemd/system/motley-agent.service",
        ])
        .output()
        .expect("run systemd-analyze (Debian systemd)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
    let users = Command::new("systemd-sysusers")
        .arg(format!("--root={r}"))
        .arg("--dry-run")
        .output()
        .expect("run systemd-sysusers");
    let said = String::from_utf8_lossy(&users.stdout).into_owned()
        + &String::from_utf8_lossy(&users.stderr);
    assert!(
        users.status.success() && said.contains("Creating user 'motley'"),
        "{said}"
    );

    // Man pages for every command, and completions for three shells.
    let man = root.join("usr/local/share/man/man1");
    for page in [
        "motley.1",
        "motley-apply.1",
        "motley-install-agent.1",
        "motley-source-sync.1",
    ] {
        let text =
            std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    let bash =
        std::fs::read_to_string(root.join("usr/local/share/bash-completion/completions/motley"))
            .expect("bash completion");
    assert!(bash.contains("_motley"));
    assert!(
        root.join("usr/local/share/zsh/site-functions/_motley")
            .is_file()
    );
    assert!(
        root.join("usr/local/share/fish/vendor_completions.d/motley.fish")
            .is_file()
    );

    // Uninstall: everything but the data; --purge takes the data too.
    std::fs::write(root.join("var/lib/motley/store.redb"), "state").expect("data");
    motley(&["uninstall", "--root", r]);
    for gone in [
        "etc/systemd/system/motley-server.service",
        "etc/systemd/system/motley-agent.service",
        "etc/motley/agent.env",
        "usr/local/bin/motley",
        "usr/local/share/man/man1/motley.1",
        "usr/local/share/bash-completion/completions/motley",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is still there");
    }
    assert!(
        root.join("var/lib/motley/store.redb").exists(),
        "the data was kept"
    );
    motley(&["uninstall", "--root", r, "--purge"]);
    assert!(!root.join("var/lib/motley").exists());
}

#[test]
fn upgrade_plan_lists_what_each_server_and_node_runs() {
    let c = Cluster::up(&[]);
    let this = env!("CARGO_PKG_VERSION");
    let plan = wait_for(
        "the node registered",
        std::time::Duration::from_secs(30),
        || {
            let out = c.ok(&["upgrade", "--plan"]);
            out.contains("agent").then_some(out)
        },
    );
    let server_row = plan
        .lines()
        .find(|l| l.starts_with("server"))
        .unwrap_or_else(|| panic!("no server row:\n{plan}"));
    assert!(
        server_row.contains(this) && server_row.contains("leader"),
        "{plan}"
    );
    let agent_row = plan
        .lines()
        .find(|l| l.starts_with("agent"))
        .unwrap_or_else(|| panic!("no agent row:\n{plan}"));
    assert!(
        agent_row.contains(this) && agent_row.contains("ok"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("nothing to upgrade: everything runs {this}")),
        "{plan}"
    );
    // Without --plan it refuses (nothing is replaced by this command).
    let out = c.cli(&["upgrade"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
