//! Real parts for container tests: a containerd of the test's own (socket, root and
//! state in a temporary directory), a registry on loopback (Debian's
//! `docker-registry`), and images built here from `busybox-static` with `umoci` and
//! pushed with `skopeo`. Nothing reaches the internet. A missing tool fails the test
//! with its name (`.ci/run` installs them).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child killed when dropped.
pub struct Kept(pub Child);

impl Drop for Kept {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed? .ci/run installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// containerd on a socket in `dir`.
pub struct Daemon {
    pub socket: PathBuf,
    pub root: PathBuf,
    _child: Kept,
}

impl Daemon {
    pub fn start(dir: &Path) -> Daemon {
        let socket = dir.join("containerd.sock");
        let root = dir.join("root");
        let state = dir.join("state");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = {socket:?}\n[ttrpc]\n  address = \"{}.ttrpc\"\n",
                socket.display()
            ),
        )
        .expect("write containerd.toml");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("containerd: {e} (is it installed? .ci/run installs it)"));
        let d = Daemon {
            socket: socket.clone(),
            root,
            _child: Kept(child),
        };
        wait_until("containerd listens", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        d
    }
}

impl Drop for Daemon {
    /// The shims outlive containerd: end them and their containers (a test that
    /// panicked left them; runc's state directory is shared by every containerd).
    fn drop(&mut self) {
        let needle = format!("-address {}", self.socket.display());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("containerd-shim") && cmd.contains(&needle) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// An id no earlier run used (runc's state is shared between containerd instances).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// A registry on loopback.
pub struct Registry {
    pub host: String,
    _child: Kept,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, None)
    }

    /// A registry that wants `user`/`password` (htpasswd, bcrypt) for every request.
    pub fn start_private(dir: &Path, user: &str, password: &str) -> Registry {
        let htpasswd = dir.join("htpasswd");
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .unwrap_or_else(|e| panic!("htpasswd: {e} (apache2-utils; .ci/run installs it)"));
        assert!(out.status.success(), "htpasswd: {out:?}");
        std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
        Registry::start_with(dir, Some(&htpasswd))
    }

    fn start_with(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        let port = free_port();
        let name = if htpasswd.is_some() {
            "private"
        } else {
            "registry"
        };
        let config = dir.join(format!("{name}.yml"));
        let auth = htpasswd.map_or(String::new(), |h| {
            format!(
                "auth:\n  htpasswd:\n    realm: motley-test\n    path: {}\n",
                h.display()
            )
        });
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.join(name).display()
            ),
        )
        .expect("write registry.yml");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("docker-registry: {e} (is it installed? .ci/run installs it)")
            });
        let host = format!("127.0.0.1:{port}");
        let r = Registry {
            host: host.clone(),
            _child: Kept(child),
        };
        wait_until("the registry listens", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&host).is_ok()
        });
        r
    }
}

/// Builds a busybox image for `arch` (`amd64`, or another to make an image this node
/// cannot run) in an OCI layout under `dir` and pushes it as `host/name`.
pub fn push_busybox(dir: &Path, host: &str, name: &str, arch: &str) -> String {
    push_busybox_as(dir, host, name, arch, None)
}

/// [`push_busybox`] to a registry that wants `user:password`.
pub fn push_busybox_as(
    dir: &Path,
    host: &str,
    name: &str,
    arch: &str,
    creds: Option<&str>,
) -> String {
    push_busybox_with(dir, host, name, arch, creds, 0)
}

/// [`push_busybox_as`] with `payload` random (incompressible) bytes in `/payload`.
pub fn push_busybox_with(
    dir: &Path,
    host: &str,
    name: &str,
    arch: &str,
    creds: Option<&str>,
    payload: u64,
) -> String {
    let layout = dir.join(format!("oci-{}", name.replace(['/', ':'], "-")));
    let bundle = dir.join(format!("bundle-{}", name.replace(['/', ':'], "-")));
    let image = format!("{}:img", layout.display());
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "tmp", "www", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("copy /bin/busybox (busybox-static)");
    for applet in [
        "sh", "echo", "cat", "sleep", "httpd", "id", "head", "ls", "dd",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(
        rootfs.join("www/index.html"),
        "hello from a motley container\n",
    )
    .expect("index.html");
    if payload > 0 {
        use std::io::Read;
        let mut random = std::fs::File::open("/dev/urandom")
            .expect("/dev/urandom")
            .take(payload);
        let mut out = std::fs::File::create(rootfs.join("payload")).expect("payload");
        let copied = std::io::copy(&mut random, &mut out).expect("write payload");
        assert_eq!(copied, payload);
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--architecture",
        arch,
        "--os",
        "linux",
        "--config.entrypoint",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        "echo default command",
        "--config.env",
        "PATH=/bin",
    ]));
    let dest = format!("{host}/{name}");
    let mut skopeo = Command::new("skopeo");
    skopeo.args(["copy", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        skopeo.arg(format!("--dest-creds={c}"));
    }
    run(skopeo.args([&format!("oci:{image}"), &format!("docker://{dest}")]));
    dest
}
