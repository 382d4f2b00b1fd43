//! Tasks with `image:` run as containers through a real containerd (started by the
//! test, with its own socket, root and state) from a real registry on loopback, with
//! a busybox image built here (`umoci`, `skopeo`, `busybox-static`).

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

#[path = "../../crates/motley-containerd/tests/parts.rs"]
pub(crate) mod parts;

fn ctr(socket: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "motley"])
        .args(args)
        .output()
        .expect("ctr (containerd's client)");
    assert!(out.status.success(), "ctr {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The log file of allocation `id`, wherever the agent keeps it (data dir or tmpfs).
fn find_log(roots: &[std::path::PathBuf], id: &str) -> Option<std::path::PathBuf> {
    let mut todo: Vec<(std::path::PathBuf, u32)> = roots.iter().map(|r| (r.clone(), 0)).collect();
    while let Some((d, depth)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == id) && p.join("output.log").exists() {
                return Some(p.join("output.log"));
            }
            if depth < 5 && e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push((p, depth + 1));
            }
        }
    }
    None
}

/// The first allocation of `workload` in `state` (`get allocs` must answer a list).
fn alloc(c: &Cluster, workload: &str, state: &str) -> Option<serde_json::Value> {
    let v = c.json(&["get", "allocs"]);
    v.as_array()
        .expect("a list")
        .iter()
        .find(|a| a["workload"] == workload && a["state"] == state)
        .cloned()
}

fn get(port: u16) -> Option<String> {
    get_at("127.0.0.1", port)
}

fn get_at(host: &str, port: u16) -> Option<String> {
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// One test at a time: runc's state and the `motley` namespace's shims are shared by
/// every containerd on the machine.
pub(crate) static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A containerd and a registry of their own under `dir`, and this machine's OCI
/// architecture (what the test images are built for).
pub(crate) fn runtime(dir: &std::path::Path) -> (parts::Daemon, parts::Registry, String) {
    let daemon = parts::Daemon::start(dir);
    let registry = parts::Registry::start(dir);
    let arch =
        motley_core::platform::Platform::new("linux", std::env::consts::ARCH, "").architecture;
    (daemon, registry, arch)
}

/// A TCP proxy to `upstream` that passes what comes back at `bytes_per_s` (a slow
/// registry link); returns its port. Its threads end with their connections.
fn slow_proxy(upstream: String, bytes_per_s: usize) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (Ok(mut c_in), Ok(mut s_out)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let chunk = (bytes_per_s / 20).max(1);
                let mut buf = vec![0u8; chunk];
                loop {
                    match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c_out.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// A pull cut short by `kill -9` of motley leaves a lease and an unfinished write in
/// containerd; the restarted agent removes both and pulls again, and when the job has
/// run no lease or write of motley's is left.
#[test]
fn a_pull_cut_by_kill9_leaves_no_lease_once_the_agent_is_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = parts::Daemon::start(dir.path());
    let registry = parts::Registry::start(dir.path());
    let arch =
        motley_core::platform::Platform::new("linux", std::env::consts::ARCH, "").architecture;
    parts::push_busybox_with(
        dir.path(),
        &registry.host,
        "test/big:1",
        &arch,
        None,
        6 << 20,
    );
    // 6 MiB at 1 MiB/s through the proxy: a pull of some 6 s.
    let slow = format!("127.0.0.1:{}", slow_proxy(registry.host.clone(), 1 << 20));
    let image = format!("{slow}/test/big:1");
    let socket = daemon.socket.display().to_string();
    let args = [
        "--containerd",
        socket.as_str(),
        "--insecure-registry",
        slow.as_str(),
    ];
    let mut c = Cluster::up(&args);
    let job = format!(
        "kind: Job\nname: big\ntask:\n  image: {image}\n  args: [\"-c\", \"echo pulled-whole\"]\n"
    );
    assert!(c.apply_yaml("big.yaml", &job).status.success());
    let state = wait_for("the pull under way", Duration::from_secs(60), || {
        let v = c.json(&["get", "allocs"]);
        v.as_array()?.iter().find_map(|a| {
            a["progress"]
                .as_str()
                .filter(|s| s.contains("pulling") && s.contains('%'))
                .map(String::from)
        })
    });
    c.kill9();
    let leases = ctr(&daemon.socket, &["leases", "ls", "-q"]);
    let cut: Vec<String> = leases
        .lines()
        .filter(|l| l.starts_with("motley-pull-"))
        .map(String::from)
        .collect();
    assert_eq!(cut.len(), 1, "the cut pull's lease ({state}): {leases:?}");
    c.start(&args);
    let done = wait_for(
        "the job ran after the restart",
        Duration::from_secs(120),
        || alloc(&c, "job/big", "complete"),
    );
    let id = done["id"].as_str().expect("id").to_string();
    let logs = String::from_utf8_lossy(&c.cli(&["logs", &id]).stdout).to_string();
    assert!(logs.contains("pulled-whole"), "{logs}");
    wait_for(
        "no lease or write of motley's left",
        Duration::from_secs(30),
        || {
            let leases = ctr(&daemon.socket, &["leases", "ls", "-q"]);
            let active = ctr(&daemon.socket, &["content", "active"]);
            let left = leases.lines().any(|l| l.starts_with("motley-"))
                || active.lines().any(|l| l.contains("motley-"));
            if left {
                eprintln!("left: leases {leases:?} active {active:?}");
            }
            (!left).then_some(())
        },
    );
}

#[test]
fn an_image_runs_as_a_container_serves_logs_and_leaves_nothing_when_deleted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, registry, arch) = runtime(dir.path());
    let image = parts::push_busybox(dir.path(), &registry.host, "test/busybox:1", &arch);
    let other = parts::push_busybox(dir.path(), &registry.host, "test/riscv:1", "riscv64");
    let private = parts::Registry::start_private(dir.path(), "motley", "s3cret-pull");
    let private_image = parts::push_busybox_as(
        dir.path(),
        &private.host,
        "team/app:1",
        &arch,
        Some("motley:s3cret-pull"),
    );
    let socket = daemon.socket.display().to_string();
    let args = [
        "--containerd",
        socket.as_str(),
        "--insecure-registry",
        registry.host.as_str(),
        "--insecure-registry",
        private.host.as_str(),
    ];
    let mut c = Cluster::up(&args);

    // A service: busybox httpd on the host network.
    let port = free_port();
    let web = format!(
        "kind: Service\nname: web\ntask:\n  image: {image}\n  command: [/bin/httpd, -f, -p, \"{port}\", -h, /www]\n  stop_grace: 2s\n"
    );
    let out = c.apply_yaml("web.yaml", &web);
    assert!(out.status.success(), "{out:?}");
    let page = wait_for(
        "the container serves its page",
        Duration::from_secs(60),
        || get(port).filter(|b| b.contains("200 OK")),
    );
    assert!(page.contains("hello from a motley container"), "{page}");
    let allocs = c.json(&["get", "allocs"]);
    let list = allocs.as_array().expect("allocations are a list");
    let web_alloc = list
        .iter()
        .find(|a| a["workload"] == "service/web" && a["state"] == "running")
        .unwrap_or_else(|| panic!("web runs: {allocs}"));
    let id = web_alloc["id"].as_str().expect("id").to_string();
    let pid = web_alloc["pid"].as_u64().expect("pid");
    let node = String::from_utf8_lossy(&c.cli(&["describe", "node", "node1"]).stdout).to_string();
    assert!(node.contains("Containers:  containerd 1."), "{node}");
    let described = String::from_utf8_lossy(&c.cli(&["describe", "alloc", &id]).stdout).to_string();
    assert!(
        described.contains(&format!("Image:       {image}")),
        "{described}"
    );
    let tasks = ctr(&daemon.socket, &["tasks", "ls"]);
    assert!(
        tasks.contains(&id) && tasks.contains(&pid.to_string()) && tasks.contains("RUNNING"),
        "containerd runs {id} as pid {pid}: {tasks}"
    );
    // The task's user, not root (tasks run unprivileged unless they ask).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    let uid = uid_line.split_whitespace().nth(1).expect("a real uid");
    assert_ne!(uid, "0", "{uid_line}");

    // kill -9 of motley (server and agent): the container runs on under its shim, and
    // the restarted agent adopts it: the same pid, still serving, still running.
    c.kill9();
    assert!(
        get(port).is_some_and(|b| b.contains("200 OK")),
        "serves while motley is down"
    );
    c.start(&args);
    wait_for("the container adopted", Duration::from_secs(60), || {
        let v = c.json(&["get", "allocs"]);
        v.as_array()
            .expect("a list")
            .iter()
            .any(|a| a["id"] == id.as_str() && a["state"] == "running" && a["pid"] == pid)
            .then_some(())
    });
    let tasks = ctr(&daemon.socket, &["tasks", "ls"]);
    assert!(
        tasks.contains(&pid.to_string()) && tasks.contains("RUNNING"),
        "the same container after the restart: {tasks}"
    );
    assert!(get(port).is_some_and(|b| b.contains("hello from a motley container")));

    // A job: argv from the image's entrypoint and the task's args; output in logs.
    let job = format!(
        "kind: Job\nname: hello\ntask:\n  image: {image}\n  args: [\"-c\", \"echo from-the-container $MOTLEY_ALLOC_ID\"]\n"
    );
    assert!(c.apply_yaml("job.yaml", &job).status.success());
    let done = wait_for("the job completes", Duration::from_secs(60), || {
        alloc(&c, "job/hello", "complete")
    });
    let job_id = done["id"].as_str().expect("id");
    // The shim may copy the last bytes just after the exit is reported.
    let text = wait_for(
        "the job's output in its log",
        Duration::from_secs(10),
        || {
            let logs = c.cli(&["logs", job_id]);
            assert!(logs.status.success(), "{logs:?}");
            let text = String::from_utf8_lossy(&logs.stdout).to_string();
            text.contains(&format!("from-the-container {job_id}"))
                .then_some(text)
        },
    );
    assert!(!text.is_empty());

    // Past its memory limit: killed by the kernel, and the allocation says so.
    let oom = format!(
        "kind: Job\nname: oom\nretries: 0\ntask:\n  image: {image}\n  args: [\"-c\", \"dd if=/dev/zero of=/dev/null bs=200M count=1\"]\n  resources: {{ memory: 16Mi }}\n  limits: {{ memory: 32Mi }}\n"
    );
    let out = c.apply_yaml("oom.yaml", &oom);
    assert!(out.status.success(), "{out:?}");
    let killed = wait_for("the oom job fails", Duration::from_secs(60), || {
        alloc(&c, "job/oom", "failed")
    });
    assert!(
        killed["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("out of memory"))),
        "{killed}"
    );
    // And its event says so.
    let said = c.json(&["events", "--for", "job/oom"]);
    assert!(
        said.as_array()
            .is_some_and(|list| list.iter().any(|e| e["kind"] == "exited"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("out of memory")))),
        "{said}"
    );

    // A chatty container's log is bounded like a native task's: the shim appends
    // (O_APPEND), so the agent's trim truncates it in place and writing goes on at the
    // new end.
    let chatty = format!(
        "kind: Service\nname: chatty\ntask:\n  image: {image}\n  args: [\"-c\", \"dd if=/dev/zero bs=1M count=6 2>/dev/null; sleep 12; echo after-trim; sleep 1000\"]\n  stop_grace: 1s\n"
    );
    assert!(c.apply_yaml("chatty.yaml", &chatty).status.success());
    let chatty_id = wait_for("chatty runs", Duration::from_secs(60), || {
        alloc(&c, "service/chatty", "running").and_then(|a| a["id"].as_str().map(String::from))
    });
    let roots = [
        c.data_dir(),
        std::path::PathBuf::from("/dev/shm"),
        std::path::PathBuf::from("/run"),
    ];
    let log = wait_for("its log file", Duration::from_secs(30), || {
        find_log(&roots, &chatty_id)
    });
    let trimmed = wait_for(
        "the log trimmed and written again",
        Duration::from_secs(60),
        || {
            let text = std::fs::read(&log).ok()?;
            (text.ends_with(b"after-trim\n") && text.len() < 1 << 20).then_some(text.len())
        },
    );
    // Written at the new end, not past a hole: without O_APPEND the shim's next write
    // would land at its old offset (6 MiB) and the file would never get under 1 MiB
    // (the wait above). What may precede the marker is what the shim was writing while
    // the agent trimmed: one of its pipe reads (32 KiB, seen once in about seven runs;
    // the old bound of 64 bytes assumed the trim came after dd's last write), and it
    // is dd's zeros, nothing else.
    let text = std::fs::read(&log).expect("the log");
    assert_eq!(text.len(), trimmed);
    assert!(
        text[..trimmed - b"after-trim\n".len()]
            .iter()
            .all(|b| *b == 0),
        "before the marker only dd's zeros: {trimmed} bytes"
    );
    assert!(log.with_file_name("output.log.1").exists(), "the tail kept");

    // An image of another architecture: never placed (the server read its platform
    // from the registry), the reason names both platforms, and no node pulls it.
    let riscv = format!("kind: Job\nname: riscv\ntask:\n  image: {other}\n");
    assert!(c.apply_yaml("riscv.yaml", &riscv).status.success());
    let described = wait_for(
        "the riscv job is explained",
        Duration::from_secs(30),
        || {
            let out = c.cli(&["describe", "job", "riscv"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("image has linux/riscv64; node1 is linux/")
                .then_some(text)
        },
    );
    assert!(
        described.contains("0/1 nodes: 1 image has linux/riscv64"),
        "{described}"
    );
    // `plan` says the same before anything is applied.
    let plan_file = c.dir.path().join("riscv2.yaml");
    std::fs::write(&plan_file, riscv.replace("name: riscv", "name: riscv2")).expect("write");
    let plan = c.cli(&["plan", "-f", plan_file.to_str().expect("utf-8")]);
    let plan_text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(plan_text.contains("image has linux/riscv64"), "{plan:?}");
    let v = c.json(&["get", "allocs"]);
    assert!(
        !v.as_array()
            .expect("a list")
            .iter()
            .any(|a| a["workload"] == "job/riscv"),
        "a riscv allocation was made: {v}"
    );
    let images = ctr(&daemon.socket, &["images", "ls", "-q"]);
    assert!(
        !images.contains("riscv"),
        "the riscv image was pulled: {images}"
    );
    assert!(images.contains("test/busybox"), "{images}");

    // A private registry: refused without credentials, pulled with them from a Secret.
    let no_creds = format!(
        "kind: Job\nname: nocreds\nretries: 0\ntask:\n  image: {private_image}\n  args: [\"-c\", \"true\"]\n"
    );
    assert!(c.apply_yaml("nocreds.yaml", &no_creds).status.success());
    let refused = wait_for(
        "the job without credentials fails",
        Duration::from_secs(60),
        || alloc(&c, "job/nocreds", "failed"),
    );
    assert!(
        refused.to_string().contains("needs registry credentials"),
        "{refused}"
    );
    let with_creds = format!(
        "kind: Secret\nname: regcred\ndata:\n  username: {{ value: motley }}\n  password: {{ value: s3cret-pull }}\n---\nkind: Job\nname: creds\ntask:\n  image: {private_image}\n  image_secret: regcred\n  args: [\"-c\", \"echo pulled-privately\"]\n"
    );
    let out = c.apply_yaml("creds.yaml", &with_creds);
    assert!(out.status.success(), "{out:?}");
    let done = wait_for(
        "the job with credentials completes",
        Duration::from_secs(60),
        || alloc(&c, "job/creds", "complete"),
    );
    let creds_id = done["id"].as_str().expect("id").to_string();
    wait_for("the private job's output", Duration::from_secs(10), || {
        let logs = c.cli(&["logs", &creds_id]);
        String::from_utf8_lossy(&logs.stdout)
            .contains("pulled-privately")
            .then_some(())
    });
    let job = c.json(&["get", "jobs", "creds"]);
    assert!(
        !job.to_string().contains("s3cret-pull"),
        "the password shows: {job}"
    );

    // An exec check runs inside the container (through containerd, as `ctr task exec`):
    // /dev/shm/ready-0 exists only in the container's own /dev/shm (a tmpfs its user may
    // write), made 2 s after it starts and removed 6 s later; `${MOTLEY_INDEX}` in the
    // check's command is expanded by motley (no shell). Healthy once it is there;
    // unhealthy after it goes, and then restarted (a new container: ready 2 s later).
    assert!(
        !std::path::Path::new("/dev/shm/ready-0").exists(),
        "/dev/shm/ready-0 on this machine would make the check prove nothing"
    );
    let probed = format!(
        "kind: Service\nname: probed\ntask:\n  image: {image}\n  command: [/bin/sh, -c, \"sleep 2; touch /dev/shm/ready-$MOTLEY_INDEX; sleep 6; rm /dev/shm/ready-$MOTLEY_INDEX; exec sleep 1000\"]\n  stop_grace: 1s\ncheck:\n  exec: [/bin/busybox, test, -f, \"/dev/shm/ready-${{MOTLEY_INDEX}}\"]\n  interval: 500ms\n  timeout: 500ms\n  unhealthy_after: 2\n"
    );
    let out = c.apply_yaml("probed.yaml", &probed);
    assert!(out.status.success(), "{out:?}");
    let probed_alloc = |c: &Cluster| alloc(c, "service/probed", "running");
    let first = wait_for("the exec check passes", Duration::from_secs(60), || {
        probed_alloc(&c).filter(|a| a["health"] == "healthy")
    });
    assert_eq!(first["restarts"], 0, "{first}");
    let restarted = wait_for(
        "restarted once the check fails",
        Duration::from_secs(60),
        || probed_alloc(&c).filter(|a| a["restarts"].as_u64().is_some_and(|r| r >= 1)),
    );
    assert_eq!(
        restarted["id"], first["id"],
        "restarted in place: {restarted}"
    );
    wait_for("healthy again", Duration::from_secs(60), || {
        probed_alloc(&c).filter(|a| a["health"] == "healthy")
    });
    // Probes do not pile up: after dozens of them, the container's own process and at
    // most the probe under way.
    let probed_id = first["id"].as_str().expect("id").to_string();
    let ps = ctr(&daemon.socket, &["tasks", "ps", &probed_id]);
    assert!(
        (2..=3).contains(&ps.lines().count()),
        "its process, at most one probe (and a header): {ps}"
    );
    assert!(c.cli(&["delete", "service/probed"]).status.success());

    // A native service with a service port, for the bridged container to reach by name.
    let www = std::env::temp_dir().join(format!("motley-named-{}", free_port()));
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "hello by name\n").expect("page");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let named = format!(
        "kind: Service\nname: named\ntask:\n  command: [/bin/busybox, httpd, -f, -p, \"${{MOTLEY_PORT_HTTP}}\", -h, \"{}\"]\n  stop_grace: 1s\nports:\n  - {{ name: http, service_port: 8089 }}\n",
        www.display()
    );
    let out = c.apply_yaml("named.yaml", &named);
    assert!(out.status.success(), "{out:?}");
    let vip = wait_for("named in rotation", Duration::from_secs(60), || {
        let d = c.cli(&["describe", "service", "named"]);
        let text = String::from_utf8_lossy(&d.stdout).to_string();
        let serving = text
            .lines()
            .any(|l| l.starts_with("  named-") && l.trim_end().ends_with("yes"));
        let vip = text
            .lines()
            .find_map(|l| l.strip_prefix("Address:     named.motley ("))
            .and_then(|r| r.split(')').next())
            .map(str::to_string);
        vip.filter(|_| serving)
    });

    // network: bridge: its own namespace on motley0 with an address of its own, its
    // port published on the node; it reaches `named.motley:8089` through the node's
    // proxy and DNS served inside its namespace.
    let bport = free_published_port();
    let bridged = format!(
        "kind: Service\nname: bridged\ntask:\n  image: {image}\n  network: bridge\n  ports: [{{ name: http, port: {bport} }}]\n  command: [/bin/sh, -c, \"echo ip=$MOTLEY_IP; echo resolv=$(cat /etc/resolv.conf); (for i in 1 2 3 4 5 6 7 8 9 10; do r=$(/bin/busybox wget -O - http://named.motley:8089/) && echo byname=$r && break; sleep 1; done) & exec /bin/httpd -f -p {bport} -h /www\"]\n  stop_grace: 1s\ncheck:\n  http: {{ port: http, path: /index.html }}\n  interval: 300ms\n  timeout: 300ms\n"
    );
    let out = c.apply_yaml("bridged.yaml", &bridged);
    assert!(out.status.success(), "{out:?}");
    let bridged_id = wait_for(
        "the bridged container runs",
        Duration::from_secs(60),
        || alloc(&c, "service/bridged", "running").and_then(|a| a["id"].as_str().map(String::from)),
    );
    let ip = wait_for("its address in its log", Duration::from_secs(30), || {
        let logs = c.cli(&["logs", &bridged_id]);
        let text = String::from_utf8_lossy(&logs.stdout).to_string();
        text.lines()
            .find_map(|l| l.strip_prefix("ip=").map(String::from))
            .filter(|ip| ip.starts_with("10.89."))
    });
    // Its resolver is the node's DNS served inside its namespace: the container fetched
    // http://named.motley:8089/ through it and the node's proxy there. (busybox-static's
    // wget crashed with -q or -T in this rootfs; without them it works.)
    wait_for(
        "named.motley reached from the container",
        Duration::from_secs(30),
        || {
            let logs = c.cli(&["logs", &bridged_id]);
            let text = String::from_utf8_lossy(&logs.stdout).to_string();
            (text.contains("resolv=nameserver 127.0.0.53") && text.contains("byname=hello by name"))
                .then_some(())
        },
    );
    let ns = format!("motley-{bridged_id}");
    let in_ns = |args: &[&str]| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "/bin/busybox"])
            .args(args)
            .output()
            .expect("ip netns exec");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            o,
        )
    };
    let (ok, answer, out) = wait_for(
        "named.motley in its namespace",
        Duration::from_secs(30),
        || {
            let r = in_ns(&["nslookup", "named.motley", "127.0.0.53"]);
            r.0.then_some(r)
        },
    );
    assert!(ok && answer.contains(&format!("Address: {vip}")), "{out:?}");
    let direct = wait_for("served on its own address", Duration::from_secs(30), || {
        get_at(&ip, bport).filter(|b| b.contains("200 OK"))
    });
    assert!(direct.contains("hello from a motley container"), "{direct}");
    let published = wait_for("served on the node's port", Duration::from_secs(30), || {
        get(bport).filter(|b| b.contains("200 OK"))
    });
    assert!(
        published.contains("hello from a motley container"),
        "{published}"
    );
    // Its check reaches it through the port published on the node.
    wait_for(
        "the bridged container healthy",
        Duration::from_secs(30),
        || {
            let v = c.json(&["get", "allocs"]);
            v.as_array()?
                .iter()
                .any(|a| a["id"] == bridged_id.as_str() && a["health"] == "healthy")
                .then_some(())
        },
    );
    assert!(
        std::path::Path::new(&format!("/run/netns/motley-{bridged_id}")).exists(),
        "its namespace"
    );
    assert!(c.cli(&["delete", "service/bridged"]).status.success());
    wait_for("its namespace removed", Duration::from_secs(30), || {
        (!std::path::Path::new(&format!("/run/netns/motley-{bridged_id}")).exists()).then_some(())
    });
    assert!(get_at(&ip, bport).is_none(), "still served after delete");
    // Its port mapping went with it: no NAT rule names it (a leftover one sent later
    // loopback connections to the same port number into the dead container).
    let nat = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .expect("iptables");
    assert!(nat.status.success(), "{nat:?}");
    let left: Vec<String> = String::from_utf8_lossy(&nat.stdout)
        .lines()
        .filter(|l| l.contains(&bridged_id))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "NAT rules left for {bridged_id}: {left:?}");

    // A fenced container does not outlive its agent's lease: after a kill -9 of motley
    // the fence guard (which outlives the agent) ends it when the lease runs out, while
    // the unfenced web container serves on.
    let fenced = format!(
        "kind: Service\nname: fenced\non_node_loss: fence\ntask:\n  image: {image}\n  command: [/bin/sleep, \"1000\"]\n  stop_grace: 1s\n"
    );
    assert!(c.apply_yaml("fenced.yaml", &fenced).status.success());
    let fenced_pid = wait_for("the fenced container runs", Duration::from_secs(60), || {
        alloc(&c, "service/fenced", "running").and_then(|a| a["pid"].as_u64())
    });
    c.kill9();
    let killed_at = std::time::Instant::now();
    wait_for(
        "the fenced container ended by its guard",
        Duration::from_secs(60),
        || (!std::path::Path::new(&format!("/proc/{fenced_pid}")).exists()).then_some(()),
    );
    eprintln!(
        "fenced container ended {:?} after kill -9",
        killed_at.elapsed()
    );
    assert!(
        get(port).is_some_and(|b| b.contains("200 OK")),
        "web serves on"
    );
    c.start(&args);

    // Deleting leaves no container, task or snapshot of motley's in containerd.
    for w in [
        "service/web",
        "service/named",
        "service/chatty",
        "service/fenced",
        "job/hello",
        "job/riscv",
        "job/oom",
        "job/nocreds",
        "job/creds",
        "secret/regcred",
    ] {
        assert!(c.cli(&["delete", w]).status.success());
    }
    wait_for("every allocation gone", Duration::from_secs(60), || {
        let v = c.json(&["get", "allocs"]);
        v.as_array().expect("a list").is_empty().then_some(())
    });
    wait_for(
        "containerd holds nothing of them",
        Duration::from_secs(30),
        || {
            let containers = ctr(&daemon.socket, &["containers", "ls", "-q"]);
            let tasks = ctr(&daemon.socket, &["tasks", "ls", "-q"]);
            let snaps = ctr(&daemon.socket, &["snapshots", "ls"]);
            let empty =
                containers.trim().is_empty() && tasks.trim().is_empty() && !snaps.contains(&id);
            if !empty {
                eprintln!("containerd still holds: containers {containers:?} tasks {tasks:?}");
            }
            empty.then_some(())
        },
    );
    assert!(get(port).is_none(), "httpd still answers");
}
