//! Image garbage collection against a real containerd and registry: over the budget,
//! the least recently used image no container uses goes; one in use never does; what
//! a deleted image referenced leaves containerd's content store.

#[path = "../../motley-containerd/tests/parts.rs"]
mod parts;

use std::process::Command;

use motley_agent::drivers::container::Containers;
use motley_containerd::run::RunSpec;
use motley_core::platform::Platform;

fn ctr(socket: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "motley"])
        .args(args)
        .output()
        .expect("ctr");
    assert!(out.status.success(), "ctr {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_the_least_recently_used_idle_image_goes_and_one_in_use_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = parts::Daemon::start(dir.path());
    let registry = parts::Registry::start(dir.path());
    let arch = Platform::new("linux", std::env::consts::ARCH, "").architecture;
    let old = parts::push_busybox(dir.path(), &registry.host, "gc/old:1", &arch);
    let used = parts::push_busybox(dir.path(), &registry.host, "gc/used:1", &arch);
    let here = Platform::new("linux", std::env::consts::ARCH, "");
    let cs = Containers::new(
        daemon.socket.clone(),
        vec![registry.host.clone()],
        "n1".into(),
        Some(here.clone()),
    );
    let c = cs.conn().await.expect("containerd");
    let old_pulled = c
        .pull(&old, "n1", Some(&here), None, &|_, _| {})
        .await
        .expect("pull old");
    // Pulled later: more recently used.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let used_pulled = c
        .pull(&used, "n1", Some(&here), None, &|_, _| {})
        .await
        .expect("pull used");
    if let Some(l) = &old_pulled.lease {
        c.release(l).await;
    }
    let stored = c.stored_images().await.expect("images");
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.iter().all(|s| s.bytes > 500_000), "{stored:?}");

    let id = parts::unique("gc");
    c.run(&RunSpec {
        id: id.clone(),
        image: used_pulled.name.clone(),
        parent_snapshot: used_pulled.chain_id.clone(),
        argv: vec!["/bin/sleep".into(), "1000".into()],
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
        log_path: dir.path().join("gc.log").display().to_string(),
        cgroup: format!("/motley-test/{id}"),
        labels: Default::default(),
        lease: used_pulled.lease.clone(),
    })
    .await
    .expect("run");

    // Within budget: nothing goes.
    assert!(cs.collect(u64::MAX).await.expect("collect").is_empty());
    // Over it: the idle image goes, the one in use stays (even though the rest cannot fit).
    assert_eq!(
        cs.collect(1).await.expect("collect"),
        vec![old_pulled.name.clone()]
    );
    let names: Vec<String> = c
        .stored_images()
        .await
        .expect("images")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec![used_pulled.name.clone()]);
    // Once nothing uses it, it goes too, and with it every blob.
    c.kill(&id, 9).await.expect("kill");
    let _ = c.wait(&id).await;
    c.remove(&id).await.expect("remove");
    assert_eq!(
        cs.collect(1).await.expect("collect"),
        vec![used_pulled.name]
    );
    let content = ctr(&daemon.socket, &["content", "ls", "-q"]);
    assert!(content.trim().is_empty(), "content left: {content}");
    let images = ctr(&daemon.socket, &["images", "ls", "-q"]);
    assert!(images.trim().is_empty(), "{images}");
}
