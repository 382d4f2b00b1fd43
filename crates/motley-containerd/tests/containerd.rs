//! The containerd client against a real containerd and registry: pull (through an
//! index or a single manifest), run, wait, logs, kill, and clean removal.

mod parts;

use std::time::Duration;

use motley_containerd::Containerd;
use motley_containerd::run::RunSpec;
use motley_core::platform::Platform;

/// One test at a time: each starts its own containerd, but runc's state directory and
/// the `motley` namespace's shims are shared by every containerd on the machine; run
/// side by side, one test's container once failed to start and one's stderr was lost.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn here() -> Platform {
    Platform::new("linux", std::env::consts::ARCH, "")
}

fn spec(
    id: &str,
    pulled: &motley_containerd::pull::Pulled,
    argv: &[&str],
    log: &std::path::Path,
) -> RunSpec {
    RunSpec {
        id: id.to_string(),
        image: pulled.name.clone(),
        parent_snapshot: pulled.chain_id.clone(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        binds: vec![],
        memory_limit: None,
        cpu_limit: None,
        host_network: true,
        netns: None,
        resolv_conf: None,
        log_path: log.display().to_string(),
        cgroup: format!("/motley-test/{id}"),
        labels: Default::default(),
        lease: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_run_wait_kill_and_remove_leave_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = parts::Daemon::start(dir.path());
    let registry = parts::Registry::start(dir.path());
    let arch = here().architecture;
    let reference = parts::push_busybox(dir.path(), &registry.host, "test/busybox:1", &arch);
    let (c, version) = Containerd::connect(&daemon.socket, vec![registry.host.clone()])
        .await
        .expect("connect");
    assert!(
        version.starts_with('1') || version.starts_with('2'),
        "{version}"
    );

    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |done: u64, total: u64| seen.lock().expect("lock").push((done, total));
    let pulled = c
        .pull(&reference, "n1", Some(&here()), None, &progress)
        .await
        .expect("pull");
    let seen = seen.lock().expect("lock").clone();
    let total = seen.last().expect("progress reported").1;
    assert!(
        total > 500_000,
        "busybox layer is most of a megabyte: {seen:?}"
    );
    assert_eq!(seen.last().map(|p| p.0), Some(total), "{seen:?}");
    assert_eq!(
        pulled.config.argv(&[], &[]),
        vec!["/bin/sh", "-c", "echo default command"]
    );

    // A job: its output in the log, its exit status through wait.
    let log = dir.path().join("job.log");
    // `args` replaces the image's command, after its entrypoint (/bin/sh).
    let args = [
        "-c".to_string(),
        "echo out; echo err >&2; exit 3".to_string(),
    ];
    let argv = pulled.config.argv(&[], &args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (job, svc) = (parts::unique("job"), parts::unique("svc"));
    // The first container is made inside the pull's lease, which then ends.
    let mut first = spec(&job, &pulled, &argv, &log);
    first.lease = pulled.lease.clone();
    let pid = c.run(&first).await.expect("run");
    assert!(pid > 0);
    let status = tokio::time::timeout(Duration::from_secs(30), c.wait(&job))
        .await
        .expect("exits")
        .expect("wait");
    assert_eq!(status, 3, "{:?}", std::fs::read_to_string(&log));
    // The shim copies stdout and stderr separately: the last bytes may land just
    // after the exit is reported.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).expect("log");
        if (text.contains("out") && text.contains("err")) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(text.contains("out") && text.contains("err"), "{text:?}");

    // A service: killed with SIGTERM (busybox sleep ignores nothing).
    let log2 = dir.path().join("svc.log");
    let pid = c
        .run(&spec(&svc, &pulled, &["/bin/sleep", "1000"], &log2))
        .await
        .expect("run");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let listed = c.list().await.expect("list");
    assert!(
        listed
            .iter()
            .any(|t| t.id == svc && t.pid == pid && t.running),
        "{listed:?}"
    );
    // PID 1 of a PID namespace ignores signals it has no handler for: SIGTERM leaves
    // `sleep` running (why stopping ends with SIGKILL after the grace period).
    c.kill(&svc, 15).await.expect("kill");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), c.wait(&svc))
            .await
            .is_err(),
        "sleep as PID 1 ended on SIGTERM"
    );
    c.kill(&svc, 9).await.expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(30), c.wait(&svc))
        .await
        .expect("exits")
        .expect("wait");
    assert_eq!(status, 128 + 9);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    for id in [&job, &svc] {
        c.remove(id).await.expect("remove");
    }
    // Quick jobs, each writing to stdout then stderr and exiting at once: both
    // streams reach the log every time (containerd 1.6's shim, given one `file://`
    // URI, lost the stderr of about one such job in 15).
    for i in 0..20 {
        let log = dir.path().join(format!("quick-{i}.log"));
        let id = parts::unique("quick");
        c.run(&spec(&id, &pulled, &argv, &log)).await.expect("run");
        let status = tokio::time::timeout(Duration::from_secs(30), c.wait(&id))
            .await
            .expect("exits")
            .expect("wait");
        assert_eq!(status, 3);
        // Written once the task is deleted: the shim has closed both streams.
        c.remove(&id).await.expect("remove");
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(text.lines().count(), 2, "job {i}: {text:?}");
        assert!(
            text.contains("out\n") && text.contains("err\n"),
            "job {i}: {text:?}"
        );
    }
    assert!(c.list().await.expect("list").is_empty());
    assert!(c.containers_list().await.expect("containers").is_empty());
    // Pulling a tag other than `latest` again uses the node's own copy: nothing
    // fetched, no lease, and no registry needed (it is stopped first).
    drop(registry);
    let again = std::sync::Mutex::new(Vec::new());
    let progress = |done: u64, total: u64| again.lock().expect("lock").push((done, total));
    let again_pulled = c
        .pull(&reference, "n1", Some(&here()), None, &progress)
        .await
        .expect("second pull, from the node's copy");
    assert!(again.lock().expect("lock").is_empty(), "nothing fetched");
    assert_eq!(again_pulled.lease, None);
    assert_eq!(again_pulled.chain_id, pulled.chain_id);
    assert_eq!(again_pulled.manifest, pulled.manifest);
    assert_eq!(
        again_pulled.config.argv(&[], &[]),
        pulled.config.argv(&[], &[])
    );
    assert_eq!(
        c.clean_interrupted(std::time::SystemTime::now())
            .await
            .expect("clean"),
        0,
        "no lease or write left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_of_another_architecture_is_refused_before_any_layer_is_fetched() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = parts::Daemon::start(dir.path());
    let registry = parts::Registry::start(dir.path());
    let reference = parts::push_busybox(dir.path(), &registry.host, "test/other:1", "riscv64");
    let (c, _) = Containerd::connect(&daemon.socket, vec![registry.host.clone()])
        .await
        .expect("connect");
    let fetched = std::sync::Mutex::new(Vec::new());
    let progress = |done: u64, total: u64| fetched.lock().expect("lock").push((done, total));
    let err = c
        .pull(&reference, "n1", Some(&here()), None, &progress)
        .await
        .expect_err("refused");
    let here = here();
    assert_eq!(
        err.to_string(),
        format!("image has linux/riscv64; n1 is {here}")
    );
    assert!(
        fetched.lock().expect("lock").is_empty(),
        "no layer was fetched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_is_tried_first_and_the_registry_when_the_mirror_fails() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = parts::Daemon::start(dir.path());
    let origin_dir = dir.path().join("origin");
    let mirror_dir = dir.path().join("mirror");
    for d in [&origin_dir, &mirror_dir] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let origin = parts::Registry::start(&origin_dir);
    let mirror = parts::Registry::start(&mirror_dir);
    let arch = here().architecture;
    // Only the mirror has `cached/app`; only the registry has `fresh/app`.
    parts::push_busybox(&mirror_dir, &mirror.host, "cached/app:1", &arch);
    parts::push_busybox(&origin_dir, &origin.host, "fresh/app:1", &arch);
    let dead = format!("127.0.0.1:{}", parts::free_port());
    let mut regs = motley_containerd::registry::Registries::from(vec![origin.host.clone()]);
    regs.add_mirror(&format!("{}=http://{dead}", origin.host))
        .expect("mirror");
    regs.add_mirror(&format!("{}=http://{}", origin.host, mirror.host))
        .expect("mirror");
    assert!(regs.add_mirror("docker.io").is_err());
    assert!(regs.add_mirror("docker.io=ftp://x").is_err());
    let (c, _) = Containerd::connect(&daemon.socket, regs)
        .await
        .expect("connect");
    let pulled = c
        .pull(
            &format!("{}/cached/app:1", origin.host),
            "n1",
            Some(&here()),
            None,
            &|_, _| {},
        )
        .await
        .expect("pulled through the second mirror (the first is down)");
    assert_eq!(pulled.name, format!("{}/cached/app:1", origin.host));
    c.pull(
        &format!("{}/fresh/app:1", origin.host),
        "n1",
        Some(&here()),
        None,
        &|_, _| {},
    )
    .await
    .expect("pulled from the registry itself (no mirror has it)");
}

/// After a pull's lease ends, the image record alone keeps its content and layer
/// snapshots through a collection (index or manifest → config → top snapshot, each a
/// `containerd.io/gc.ref.*` label). Without that chain, a container started later
/// finds its lower layers gone (seen once as "failed to mount rootfs component").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_keeps_its_layers_through_a_collection_after_its_lease_ends() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = parts::Daemon::start(dir.path());
    let registry = parts::Registry::start(dir.path());
    let arch = here().architecture;
    let kept = parts::push_busybox(dir.path(), &registry.host, "test/kept:1", &arch);
    let (c, _) = Containerd::connect(&daemon.socket, vec![registry.host.clone()])
        .await
        .expect("connect");
    let pulled = c
        .pull(&kept, "n1", Some(&here()), None, &|_, _| {})
        .await
        .expect("pull");
    if let Some(l) = &pulled.lease {
        c.release(l).await;
    }
    let other = c
        .pull(&kept, "n1", Some(&here()), None, &|_, _| {})
        .await
        .expect("pull again");
    if let Some(l) = &other.lease {
        c.release(l).await;
    }
    c.collect_now().await.expect("collect");
    let stored = c.stored_images().await.expect("images");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].bytes > 500_000, "{stored:?}");
    // Containers started (without a lease of their own) while the collector runs
    // over and over: a new container's snapshot is referenced by nothing until its
    // record exists, so a start must hold a lease until then.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.collect_now().await.expect("collect");
                n += 1;
            }
            n
        })
    };
    for i in 0..15 {
        let log = dir.path().join(format!("after-gc-{i}.log"));
        let id = parts::unique("after-gc");
        let started = c
            .run(&spec(&id, &pulled, &["/bin/sh", "-c", "exit 7"], &log))
            .await;
        if let Err(e) = started {
            panic!("start {i} while collecting: {e}");
        }
        let status = tokio::time::timeout(Duration::from_secs(30), c.wait(&id))
            .await
            .expect("exits")
            .expect("wait");
        assert_eq!(status, 7);
        c.remove(&id).await.expect("remove");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let collections = collector.await.expect("collector");
    assert!(collections >= 15, "{collections} collections");
    assert_eq!(c.stored_images().await.expect("images").len(), 1);
}

/// `latest` is always asked of the registry (it moves), and so is an image pulled with
/// credentials (whoever starts it must show them); other tags come from the node's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_and_private_images_are_always_pulled_and_others_come_from_the_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = parts::Daemon::start(dir.path());
    let public_dir = dir.path().join("public");
    let private_dir = dir.path().join("private");
    for d in [&public_dir, &private_dir] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let public = parts::Registry::start(&public_dir);
    let private = parts::Registry::start_private(&private_dir, "motley", "s3cret");
    let arch = here().architecture;
    let pinned = parts::push_busybox(&public_dir, &public.host, "app/pinned:1", &arch);
    let moving = parts::push_busybox(&public_dir, &public.host, "app/moving:latest", &arch);
    let secret = parts::push_busybox_as(
        &private_dir,
        &private.host,
        "app/secret:1",
        &arch,
        Some("motley:s3cret"),
    );
    let (c, _) = Containerd::connect(
        &daemon.socket,
        vec![public.host.clone(), private.host.clone()],
    )
    .await
    .expect("connect");
    let creds = || {
        Some(motley_containerd::registry::Credentials {
            user: "motley".into(),
            password: "s3cret".into(),
        })
    };
    for (r, auth) in [(&pinned, None), (&moving, None), (&secret, creds())] {
        let p = c
            .pull(r, "n1", Some(&here()), auth, &|_, _| {})
            .await
            .unwrap_or_else(|e| panic!("pull {r}: {e}"));
        if let Some(l) = &p.lease {
            c.release(l).await;
        }
    }
    drop((public, private));
    let local = c
        .pull(&pinned, "n1", Some(&here()), None, &|_, _| {})
        .await
        .expect("a pinned tag from the node's copy");
    assert_eq!(local.lease, None);
    for (r, auth) in [(&moving, None), (&secret, None), (&secret, creds())] {
        let with = auth.is_some();
        let err = c
            .pull(r, "n1", Some(&here()), auth, &|_, _| {})
            .await
            .err()
            .unwrap_or_else(|| {
                panic!("{r} (credentials: {with}) did not ask the stopped registry")
            });
        assert!(
            matches!(err, motley_containerd::Error::Registry(_)),
            "{r}: {err:?}"
        );
    }
}
