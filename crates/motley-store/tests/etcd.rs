//! The etcd backend against real etcd (Debian's `etcd-server`) on 127.0.0.1: the
//! conformance suite, failover between members, and no quorum answered cleanly.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use motley_store::conformance::{self, Opener};
use motley_store::etcd::{Etcd, EtcdTls};
use motley_store::{Store, StoreError, Txn};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An etcd cluster of `n` members on loopback, each in its own data dir.
struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<(String, u16, u16)>,
    procs: Vec<Option<Child>>,
}

impl EtcdCluster {
    fn start(n: usize) -> EtcdCluster {
        assert!(
            Command::new("etcd").arg("--version").output().is_ok(),
            "etcd is not installed: apt-get install etcd-server (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<(String, u16, u16)> = (0..n)
            .map(|i| (format!("m{i}"), free_port(), free_port()))
            .collect();
        let mut c = EtcdCluster {
            dir,
            procs: (0..n).map(|_| None).collect(),
            members,
        };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_healthy();
        c
    }

    fn start_member(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect();
        let (name, client, peer) = &self.members[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log");
        let child = Command::new("etcd")
            .args([
                "--name",
                name,
                "--data-dir",
                &self.dir.path().join(name).display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.procs[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|(_, c, _)| format!("127.0.0.1:{c}"))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        while Instant::now() < deadline {
            let ok = rt.block_on(async {
                let e = Etcd::connect(&self.url(), EtcdTls::default()).await;
                match e {
                    Ok(e) => e.txn(Txn::new().put("/health", "ok")).await.is_ok(),
                    Err(_) => false,
                }
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "etcd did not become healthy: see {}",
            self.dir.path().display()
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

#[test]
fn etcd_passes_the_conformance_suite() {
    let cluster = EtcdCluster::start(1);
    let url = cluster.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let open: Opener = Box::new(move || {
            let url = url.clone();
            Box::pin(async move {
                Arc::new(
                    Etcd::connect(&url, EtcdTls::default())
                        .await
                        .expect("connect to etcd"),
                ) as Arc<dyn Store>
            })
        });
        if let Err(e) = conformance::run_all(open).await {
            panic!("conformance: {e}");
        }
    });
    drop(cluster);
}

#[test]
fn a_dead_member_is_skipped_and_no_quorum_is_answered_cleanly() {
    let mut cluster = EtcdCluster::start(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt
        .block_on(Etcd::connect(&cluster.url(), EtcdTls::default()))
        .expect("connect");
    rt.block_on(store.txn(Txn::new().put("/k", "1")))
        .expect("put");
    // The member the client is talking to (the first) dies: calls move on.
    cluster.kill(0);
    let t = Instant::now();
    let r = rt
        .block_on(store.txn(Txn::new().put("/k", "2")))
        .expect("a put after the first member died");
    assert!(r.succeeded);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let v = rt.block_on(store.get("/k")).expect("get").map(|k| k.value);
    assert_eq!(v.as_deref(), Some(b"2".as_slice()));
    // A second one dies: no quorum. An error that says so, promptly, not a hang.
    cluster.kill(1);
    let t = Instant::now();
    let r = rt.block_on(store.txn(Txn::new().put("/k", "3")));
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "without quorum: {r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // Both come back: the store recovers by itself.
    cluster.start_member(0);
    cluster.start_member(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rt.block_on(store.txn(Txn::new().put("/k", "4"))) {
            Ok(r) if r.succeeded => break,
            other => assert!(Instant::now() < deadline, "no recovery: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let v = rt.block_on(store.get("/k")).expect("get").map(|k| k.value);
    assert_eq!(v.as_deref(), Some(b"4".as_slice()));
}
