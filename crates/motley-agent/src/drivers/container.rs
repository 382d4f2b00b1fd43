//! Tasks with `image:`: containers through containerd ([`motley_containerd`]). The
//! image is pulled for this node's userland platform (never another:
//! [`motley_core::image::choose`]), the container gets the allocation's environment,
//! volumes (bind mounts at `/volumes/<name>`), secret files (at `/run/secrets`), limits
//! (the same `/motley/<alloc>` cgroups as native tasks) and log file (written by
//! containerd's shim, so output keeps flowing while the agent is down), on the host
//! network. The container's id is the allocation's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use motley_containerd::Containerd;
use motley_containerd::run::{Bind, RunSpec};
use motley_core::model::Allocation;
use motley_core::platform::Platform;
use motley_core::restart::Exit;

use crate::driver::{Handle, TaskSetup};
use crate::drivers::Task;

/// Marks a container's process (`MOTLEY_CONTAINER=1` in its environment): adoption
/// after an agent restart tells containers from native tasks by it.
pub const MARK: &str = "MOTLEY_CONTAINER";

/// containerd's version while it answers; shared with the facts (`None`: unreachable).
pub type Status = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// containerd, as this node's agent uses it.
#[derive(Debug)]
pub struct Containers {
    socket: PathBuf,
    registries: motley_containerd::registry::Registries,
    node: String,
    platform: Option<Platform>,
    conn: tokio::sync::Mutex<Option<Containerd>>,
    status: Status,
    /// Images being pulled or started from: never collected.
    busy: Counted,
    /// `--image-budget` (bytes); `None`: by the data disk's media.
    pub budget: Option<u64>,
    /// Allocations whose container is being made: never removed as orphans.
    starting: Counted,
    /// Containers a [`ContainerTask`] watches (its supervisor removes them when they
    /// end, after reading how): never removed as orphans.
    watched: Counted,
    /// When this agent began: leases and writes older than that are leftovers.
    began: std::time::SystemTime,
}

/// Names held by any number of holders at once.
#[derive(Debug, Default)]
struct Counted(std::sync::Mutex<std::collections::BTreeMap<String, usize>>);

impl Counted {
    fn add(&self, name: &str, by: isize) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(name.to_string()).or_insert(0);
        *n = n.saturating_add_signed(by);
        if *n == 0 {
            m.remove(name);
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }
}

impl Containers {
    /// Containers through the containerd at `socket`, for node `node` of `platform`.
    pub fn new(
        socket: PathBuf,
        registries: impl Into<motley_containerd::registry::Registries>,
        node: String,
        platform: Option<Platform>,
    ) -> Containers {
        Containers {
            socket,
            registries: registries.into(),
            node,
            platform,
            conn: tokio::sync::Mutex::new(None),
            status: Status::default(),
            busy: Default::default(),
            budget: None,
            starting: Default::default(),
            watched: Default::default(),
            began: std::time::SystemTime::now(),
        }
    }

    fn task(self: &std::sync::Arc<Self>, id: String, handle: Handle) -> ContainerTask {
        self.watched.add(&id, 1);
        ContainerTask {
            cs: self.clone(),
            id,
            handle,
        }
    }

    /// Removes motley's containers that no live allocation of this agent runs: those
    /// whose allocation this agent does not hold (`keep`), and those whose task has
    /// ended with nobody left to collect it (ended while the agent was down, or by the
    /// fence guard). A container being made is left alone. Returns what was removed.
    pub async fn remove_orphans(
        &self,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, String> {
        if self.conn.lock().await.is_none() {
            return Ok(Vec::new());
        }
        let c = self.conn().await?;
        let containers = c.containers_list().await.map_err(|e| e.to_string())?;
        let running: std::collections::BTreeSet<String> = c
            .list()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|t| t.running)
            .map(|t| t.id)
            .collect();
        let mut removed = Vec::new();
        for id in containers {
            // In this order: a start holds `starting` until its task is watched, so a
            // container not starting when looked at is watched if its start just ended.
            // A watched container that ended is its supervisor's to remove: it reads
            // the exit and the cgroup's OOM count first (removed here, an OOM kill was
            // reported as a plain SIGKILL once).
            if self.starting.contains(&id)
                || self.watched.contains(&id)
                || (running.contains(&id) && keep.contains(&id))
            {
                continue;
            }
            c.remove(&id).await.map_err(|e| e.to_string())?;
            super::cni::del(&id).await;
            tracing::info!("removed container {id}: no allocation here runs it");
            removed.push(id);
        }
        Ok(removed)
    }

    /// Removes the least recently used images no container uses and no start is
    /// pulling, until the rest fit in the budget (`--image-budget`, else
    /// `default_budget`). Returns what was removed.
    pub async fn collect(&self, default_budget: u64) -> Result<Vec<String>, String> {
        if self.conn.lock().await.is_none() {
            return Ok(Vec::new());
        }
        let c = self.conn().await?;
        let stored = c.stored_images().await.map_err(|e| e.to_string())?;
        let used = c.images_in_use().await.map_err(|e| e.to_string())?;
        let kept: Vec<motley_core::image::Kept> = stored
            .into_iter()
            .map(|s| motley_core::image::Kept {
                busy: used.contains(&s.name) || self.busy.contains(&s.name),
                name: s.name,
                bytes: s.bytes,
                last_used: s.updated_ms,
            })
            .collect();
        let budget = self.budget.unwrap_or(default_budget);
        let mut removed = Vec::new();
        for name in motley_core::image::to_collect(&kept, budget) {
            // Checked again just before: a start may have begun since the listing.
            if self.busy.contains(name) {
                continue;
            }
            c.delete_image(name).await.map_err(|e| e.to_string())?;
            tracing::info!("removed image {name}: the node's images were over {budget} bytes");
            removed.push(name.to_string());
        }
        Ok(removed)
    }

    /// The status cell the facts read.
    pub fn status(&self) -> Status {
        self.status.clone()
    }

    /// Checks containerd answers (connecting when not connected) and updates the
    /// status: a node reports whether it can run image tasks.
    pub async fn refresh(&self) {
        let version = match self.conn().await {
            Ok(c) => match tokio::time::timeout(Duration::from_secs(5), c.version()).await {
                Ok(Ok(v)) => Some(v),
                _ => {
                    // Reconnect next time (containerd restarted, or hangs).
                    *self.conn.lock().await = None;
                    None
                }
            },
            Err(_) => None,
        };
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if *s != version {
            match &version {
                Some(v) => tracing::info!("containerd {v} answers: image tasks can run here"),
                None => tracing::warn!(
                    "containerd at {} does not answer: image tasks cannot run here",
                    self.socket.display()
                ),
            }
        }
        *s = version;
    }

    /// The connection, made on first use (containerd may start after the agent).
    pub async fn conn(&self) -> Result<Containerd, String> {
        let mut g = self.conn.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let (c, version) = tokio::time::timeout(
            Duration::from_secs(10),
            Containerd::connect(&self.socket, self.registries.clone()),
        )
        .await
        .map_err(|_| {
            format!(
                "containerd at {} did not answer in 10 s",
                self.socket.display()
            )
        })?
        .map_err(|e| format!("{e}; this node cannot run image tasks until containerd answers"))?;
        tracing::info!("containerd {version} at {}", self.socket.display());
        if let Ok(n) = c.clean_interrupted(self.began).await
            && n > 0
        {
            tracing::info!("removed {n} leftovers of interrupted pulls");
        }
        *g = Some(c.clone());
        Ok(c)
    }

    /// Pulls the image and starts the container.
    pub async fn start(
        self: &std::sync::Arc<Self>,
        a: &Allocation,
        dir: &Path,
        log_dir: &Path,
        volumes: &[(String, PathBuf)],
        setup: &TaskSetup<'_>,
    ) -> Result<ContainerTask, String> {
        let image = a.task.image.as_deref().ok_or("the task has no image")?;
        let c = self.conn().await?;
        // From before the pull until the container exists, the image is not collected.
        let name = motley_core::image::Reference::parse(image)?.to_string();
        self.busy.add(&name, 1);
        self.starting.add(&a.id, 1);
        let out = self
            .start_held(&c, image, a, dir, log_dir, volumes, setup)
            .await;
        self.starting.add(&a.id, -1);
        self.busy.add(&name, -1);
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_held(
        self: &std::sync::Arc<Self>,
        c: &Containerd,
        image: &str,
        a: &Allocation,
        dir: &Path,
        log_dir: &Path,
        volumes: &[(String, PathBuf)],
        setup: &TaskSetup<'_>,
    ) -> Result<ContainerTask, String> {
        // Progress at most every half second and each whole percent, never to disk.
        let last = std::sync::Mutex::new(None::<(std::time::Instant, u64)>);
        let report = |done: u64, total: u64| {
            let Some(say) = setup.progress else { return };
            let pct = (done.saturating_mul(100)).checked_div(total).unwrap_or(100);
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            let due = l.is_none_or(|(at, p)| {
                pct != p && (at.elapsed() >= Duration::from_millis(500) || pct == 100)
            });
            if due {
                *l = Some((std::time::Instant::now(), pct));
                say(format!("pulling {image}: {pct} % of {}", mib(total)));
            }
        };
        let auth = setup
            .secrets
            .and_then(|d| d.registry.clone())
            .map(|(user, password)| motley_containerd::registry::Credentials { user, password });
        let pulled = c
            .pull(image, &self.node, self.platform.as_ref(), auth, &report)
            .await
            .map_err(|e| format!("pulling {image}: {e}"))?;
        // Until the container exists, the pull's lease protects the image: ended
        // here if the container cannot even be described.
        let prepared = async {
            let owner = setup.user.for_container(&a.task)?;
            for d in [dir, log_dir]
                .into_iter()
                .chain(volumes.iter().map(|(_, p)| p.as_path()))
            {
                std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            }
            // Inside the container, volumes and secrets are at fixed paths.
            let in_container: Vec<(String, PathBuf)> = volumes
                .iter()
                .map(|(n, _)| (n.clone(), PathBuf::from(format!("/volumes/{n}"))))
                .collect();
            let mut vars = crate::driver::motley_vars(a, Path::new("/alloc"), &in_container);
            let mut binds = vec![Bind {
                source: dir.display().to_string(),
                destination: "/alloc".into(),
                read_only: false,
            }];
            for ((_, host), (_, inside)) in volumes.iter().zip(&in_container) {
                binds.push(Bind {
                    source: host.display().to_string(),
                    destination: inside.display().to_string(),
                    read_only: false,
                });
            }
            // Mounts at paths of the task's choosing: a volume's directory, or a path of
            // this node (which must exist: a container never creates one on the host).
            for m in &a.task.mounts {
                let source = match (&m.volume, &m.host_path) {
                    (Some(v), _) => volumes
                        .iter()
                        .find(|(n, _)| n == v)
                        .map(|(_, p)| p.display().to_string())
                        .ok_or_else(|| format!("mount of volume {v}: not given to this task"))?,
                    (None, Some(h)) => {
                        if !Path::new(h).exists() {
                            return Err(format!(
                                "mount of {h}: no such path on node {} (pin the work to nodes that have it)",
                                a.node
                            ));
                        }
                        h.clone()
                    }
                    (None, None) => return Err(format!("mount at {}: nothing to mount", m.path)),
                };
                binds.push(Bind {
                    source,
                    destination: m.path.clone(),
                    read_only: m.read_only,
                });
            }
            let empty = motley_core::proto::SecretDelivery::default();
            let delivery = setup.secrets.unwrap_or(&empty);
            if !delivery.files.is_empty() {
                let sdir = crate::driver::write_secret_files(
                    delivery,
                    setup.secret_dir.as_deref(),
                    owner,
                )?;
                binds.push(Bind {
                    source: sdir.display().to_string(),
                    destination: "/run/secrets".into(),
                    read_only: true,
                });
                vars.insert("MOTLEY_SECRETS".into(), "/run/secrets".into());
            }
            if let Some(cdir) = crate::driver::write_config_files(delivery, dir)? {
                // Each file read-only at the path the task named.
                for path in delivery.config_files.keys() {
                    binds.push(Bind {
                        source: cdir
                            .join(path.trim_start_matches('/'))
                            .display()
                            .to_string(),
                        destination: path.clone(),
                        read_only: true,
                    });
                }
            }
            for d in std::iter::once(dir).chain(volumes.iter().map(|(_, p)| p.as_path())) {
                crate::driver::chown(d, owner)?;
            }
            let expand = |s: &String| crate::driver::expand(s, &vars);
            let command: Vec<String> = a.task.command.iter().map(expand).collect();
            let args: Vec<String> = a.task.args.iter().map(expand).collect();
            let argv = pulled.config.argv(&command, &args);
            if argv.is_empty() {
                return Err(format!(
                    "{image} names no entrypoint or command: set task.command"
                ));
            }
            // The image's environment, then motley's variables, the task's, the configs',
            // the secrets'.
            let mut env: BTreeMap<String, String> = BTreeMap::new();
            let cfg = pulled.config.config.clone().unwrap_or_default();
            for kv in cfg.env.unwrap_or_default() {
                if let Some((k, v)) = kv.split_once('=') {
                    env.insert(k.to_string(), v.to_string());
                }
            }
            env.entry("PATH".into()).or_insert_with(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            });
            env.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            env.insert(MARK.into(), "1".into());
            env.extend(a.task.env.iter().map(|(k, v)| (k.clone(), expand(v))));
            env.extend(
                delivery
                    .config_env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            env.extend(delivery.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let (uid, gid) = owner.unwrap_or((0, 0));
            let limits = a.task.limits.clone().unwrap_or_default();
            let bridge = a.task.network == Some(motley_core::model::NetworkMode::Bridge);
            let netns = if bridge {
                let ip = super::cni::add(&a.id, &a.task.ports)
                    .await
                    .map_err(|e| format!("network: bridge: {e}"))?;
                env.insert("MOTLEY_IP".into(), ip);
                Some(super::cni::netns_path(&a.id).display().to_string())
            } else {
                None
            };
            // Its resolver: the node's DNS served inside its namespace (NAME.motley and
            // everything else), searching its own namespace's zone first, then the
            // node's search domains.
            let resolv_conf = if bridge && motley_mesh::netns::serving() {
                let dns = motley_mesh::netns::DNS_ADDR;
                let ip = dns.split(':').next().unwrap_or(dns);
                let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                let text = motley_core::catalog::resolv_conf(ip, &a.workload.namespace, &host);
                let path = log_dir.join("resolv.conf");
                std::fs::write(&path, text)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                Some(path.display().to_string())
            } else {
                None
            };
            let spec = RunSpec {
                id: a.id.clone(),
                image: pulled.name.clone(),
                parent_snapshot: pulled.chain_id.clone(),
                argv,
                env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
                cwd: a
                    .task
                    .workdir
                    .clone()
                    .or(cfg.working_dir.filter(|w| !w.is_empty()))
                    .unwrap_or_else(|| "/".into()),
                uid,
                gid,
                binds,
                memory_limit: limits.memory.map(|m| m.0),
                cpu_limit: limits.cpu.map(|c| c.0),
                host_network: !bridge,
                netns,
                resolv_conf,
                log_path: crate::driver::log_path(log_dir).display().to_string(),
                cgroup: format!("/motley/{}", a.id),
                labels: [("motley.io/allocation".to_string(), a.id.clone())].into(),
                lease: pulled.lease.clone(),
            };
            Ok::<_, String>((spec, bridge))
        }
        .await;
        let (spec, bridge) = match prepared {
            Ok(p) => p,
            Err(e) => {
                if let Some(l) = &pulled.lease {
                    c.release(l).await;
                }
                return Err(e);
            }
        };
        let pid = match c.run(&spec).await {
            Ok(pid) => pid,
            Err(e) => {
                if bridge {
                    super::cni::del(&a.id).await;
                }
                return Err(format!("starting the container: {e}"));
            }
        };
        Ok(self.task(
            a.id.clone(),
            Handle {
                pid,
                start_time: crate::driver::start_time(pid).unwrap_or(0),
            },
        ))
    }

    /// The container a handle names, when its process is one of motley's containers
    /// (found by [`MARK`] and its allocation id in its environment).
    pub fn adopt(self: &std::sync::Arc<Self>, h: Handle) -> Option<ContainerTask> {
        let id = container_of(h.pid)?;
        // A bridge container of an earlier agent process: serve its namespace again.
        let ns = super::cni::netns_path(&id);
        if ns.exists() {
            // Its own ports are unknown here: a service address on one of them fails to
            // bind in its namespace (the container holds it), which is what is wanted.
            motley_mesh::netns::attach(&ns, Default::default());
        }
        Some(self.task(id, h))
    }
}

/// Bytes in MiB, for progress.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The allocation id of a container process, from its environment.
pub fn container_of(pid: u32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    if crate::driver::env_var(&env, MARK).as_deref() != Some("1") {
        return None;
    }
    crate::driver::env_var(&env, "MOTLEY_ALLOC_ID")
}

/// Whether the kernel's OOM killer killed a process of allocation `id`'s cgroup (v2
/// `memory.events`, v1 `memory.oom_control`: `oom_kill N`).
pub fn oom_killed(id: &str) -> bool {
    let root = Path::new("/sys/fs/cgroup");
    [
        root.join("motley").join(id).join("memory.events"),
        root.join("memory/motley")
            .join(id)
            .join("memory.oom_control"),
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .any(|text| {
        text.lines().any(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    })
}

/// A running container.
pub struct ContainerTask {
    cs: std::sync::Arc<Containers>,
    id: String,
    handle: Handle,
}

impl Drop for ContainerTask {
    fn drop(&mut self) {
        self.cs.watched.add(&self.id, -1);
    }
}

pub(crate) fn exit_of(status: u32) -> Exit {
    // runc reports a death by signal n as 128 + n.
    match status {
        129..=192 => Exit::Signal((status - 128) as i32),
        s => Exit::Code(s as i32),
    }
}

#[async_trait]
impl Task for ContainerTask {
    fn handle(&self) -> Handle {
        self.handle
    }

    async fn wait(&mut self) -> Exit {
        let c = match self.cs.conn().await {
            Ok(c) => c,
            Err(e) => {
                // containerd is down: the container runs on; its process is watched.
                tracing::warn!("container {}: {e}", self.id);
                crate::driver::exited(self.handle).await;
                return Exit::Unknown;
            }
        };
        // The exit is watched with a pidfd on the container's init process (a process
        // of this host), and only then asked of containerd, which keeps the status until
        // the task is deleted: no call stays open per running container.
        crate::driver::exited(self.handle).await;
        let exit = match c.wait(&self.id).await {
            // Its cgroup says whether the kernel's OOM killer sent the SIGKILL (read
            // before the task is deleted, which removes the group).
            Ok(137) if oom_killed(&self.id) => Exit::OutOfMemory,
            Ok(s) => exit_of(s),
            Err(e) => {
                tracing::warn!("container {}: {e}", self.id);
                Exit::Unknown
            }
        };
        if let Err(e) = c.remove(&self.id).await {
            tracing::warn!("removing container {}: {e}", self.id);
        }
        super::cni::del(&self.id).await;
        exit
    }

    async fn stop(&mut self, grace: Duration) -> Exit {
        if let Ok(c) = self.cs.conn().await {
            let _ = c.kill(&self.id, 15).await;
            if tokio::time::timeout(grace, c.wait(&self.id)).await.is_err() {
                let _ = c.kill(&self.id, 9).await;
            }
        }
        self.wait().await
    }
}
