//! Containers: the OCI runtime spec motley writes, and the container and task calls.

use std::collections::HashMap;

use motley_grpc::containerd::services as svc;
use serde_json::json;

use crate::{Containerd, Error};

/// The runtime every container uses.
pub const RUNTIME: &str = "io.containerd.runc.v2";

/// A directory bound into the container.
#[derive(Debug, Clone)]
pub struct Bind {
    /// On the node.
    pub source: String,
    /// In the container.
    pub destination: String,
    /// Read-only.
    pub read_only: bool,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The container's id: the allocation's.
    pub id: String,
    /// The image record's name.
    pub image: String,
    /// The snapshot the rootfs is prepared on (the image's top chain id).
    pub parent_snapshot: String,
    /// argv.
    pub argv: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory (`/` when empty).
    pub cwd: String,
    /// User and group ids.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Bind mounts.
    pub binds: Vec<Bind>,
    /// Memory limit in bytes.
    pub memory_limit: Option<u64>,
    /// CPU limit in millicores.
    pub cpu_limit: Option<u64>,
    /// The node's network namespace (no network namespace of its own).
    pub host_network: bool,
    /// A network namespace made for it (`/run/netns/…`), when not on the host's.
    pub netns: Option<String>,
    /// With `netns`: the file to mount as `/etc/resolv.conf` (default: the node's).
    pub resolv_conf: Option<String>,
    /// Where stdout and stderr go (a file, appended).
    pub log_path: String,
    /// The cgroup (`/motley/<id>`): the same groups native tasks use.
    pub cgroup: String,
    /// Labels on the container record.
    pub labels: HashMap<String, String>,
    /// The pull's lease ([`crate::pull::Pulled::lease`]): the rootfs snapshot and the
    /// container record are made inside it, and it ends once they exist (or fail).
    pub lease: Option<String>,
}

/// The default capabilities (Docker's and containerd's default set).
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The OCI runtime spec of a container (runtime-spec 1.0).
pub fn spec(s: &RunSpec) -> serde_json::Value {
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if !s.host_network {
        match &s.netns {
            Some(path) => namespaces.push(json!({"type": "network", "path": path})),
            None => namespaces.push(json!({"type": "network"})),
        }
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ];
    if s.host_network || s.netns.is_some() {
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            let source = match (&s.resolv_conf, f) {
                (Some(own), "/etc/resolv.conf") if s.netns.is_some() => own.as_str(),
                _ => f,
            };
            if std::path::Path::new(source).exists() {
                mounts.push(json!({"destination": f, "type": "bind", "source": source, "options": ["rbind", "ro"]}));
            }
        }
    }
    for b in &s.binds {
        let mut options = vec!["rbind", "rprivate"];
        if b.read_only {
            options.push("ro");
        }
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source, "options": options}));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(m) = s.memory_limit {
        resources["memory"] = json!({"limit": m, "swap": m});
    }
    if let Some(c) = s.cpu_limit {
        resources["cpu"] = json!({"quota": c * 100, "period": 100_000});
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": s.uid, "gid": s.gid},
            "args": s.argv,
            "env": s.env,
            "cwd": if s.cwd.is_empty() { "/" } else { s.cwd.as_str() },
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "hostname": s.id,
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": s.cgroup,
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// A process to run in a container ([`Containerd::exec_process`]).
#[derive(Debug, Clone)]
pub struct ExecProcess {
    /// Its command line, for messages.
    pub command: String,
    /// Its OCI process spec (JSON).
    spec: Vec<u8>,
}

/// A container's task as containerd lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The container (allocation) id.
    pub id: String,
    /// Its init process.
    pub pid: u32,
    /// Whether it runs.
    pub running: bool,
}

impl Containerd {
    /// Creates the container and its task and starts it; returns the init pid. A
    /// container or snapshot left by an earlier attempt with the same id is replaced.
    ///
    /// Always inside a lease (the pull's, else one of its own), ended once the
    /// container's record references its snapshot: until then nothing else does, and
    /// a collection in between removed it (a regression test starts containers while
    /// collecting).
    pub async fn run(&self, s: &RunSpec) -> Result<u32, Error> {
        let lease = match &s.lease {
            Some(l) => l.clone(),
            None => self.lease("run", 600).await?,
        };
        let out = match self.leased(&lease) {
            Ok(leased) => leased.run_inner(s).await,
            Err(e) => Err(e),
        };
        self.release(&lease).await;
        out
    }

    async fn run_inner(&self, s: &RunSpec) -> Result<u32, Error> {
        self.remove(&s.id).await?;
        let mounts = self
            .snapshots()
            .prepare(svc::snapshots::v1::PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: s.id.clone(),
                parent: s.parent_snapshot.clone(),
                labels: HashMap::new(),
            })
            .await
            .map_err(Error::call("snapshots prepare"))?
            .into_inner()
            .mounts;
        let spec = serde_json::to_vec(&spec(s)).map_err(|e| Error::Image(e.to_string()))?;
        let container = svc::containers::v1::Container {
            id: s.id.clone(),
            labels: s.labels.clone(),
            image: s.image.clone(),
            runtime: Some(svc::containers::v1::container::Runtime {
                name: RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".to_string(),
                value: spec,
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: s.id.clone(),
            created_at: None,
            updated_at: None,
            extensions: HashMap::new(),
            sandbox: String::new(),
        };
        self.containers()
            .create(svc::containers::v1::CreateContainerRequest {
                container: Some(container),
            })
            .await
            .map_err(Error::call("containers create"))?;
        // stdout and stderr both append to the log, each through a path of its own
        // (the same file), given as plain paths. With a `file://` URI containerd 1.6's
        // shim opens one descriptor for both and closes it when stdout ends, losing
        // stderr written just before the exit (about one run in 15); a plain path that
        // is not a FIFO is opened by the shim with O_APPEND once per stream, and
        // written after the agent is gone just the same.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log_path)
            .map_err(|e| Error::Image(format!("log {}: {e}", s.log_path)))?;
        let log = s.log_path.clone();
        let log_err = match s.log_path.rsplit_once('/') {
            Some((dir, file)) => format!("{dir}/./{file}"),
            None => format!("./{}", s.log_path),
        };
        let created = self
            .tasks()
            .create(svc::tasks::v1::CreateTaskRequest {
                container_id: s.id.clone(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: log,
                stderr: log_err,
                terminal: false,
                checkpoint: None,
                options: None,
                runtime_path: String::new(),
            })
            .await
            .map_err(Error::call("tasks create"));
        let pid = match created {
            Ok(r) => r.into_inner().pid,
            Err(e) => {
                let _ = self.remove(&s.id).await;
                return Err(e);
            }
        };
        if let Err(e) = self
            .tasks()
            .start(svc::tasks::v1::StartRequest {
                container_id: s.id.clone(),
                exec_id: String::new(),
            })
            .await
            .map_err(Error::call("tasks start"))
        {
            let _ = self.remove(&s.id).await;
            return Err(e);
        }
        Ok(pid)
    }

    /// Waits for the container's task to exit; its exit status (`128 + n` for signal
    /// `n`, runc's convention). containerd keeps the status until the task is deleted,
    /// so a wait that starts after the exit still sees it.
    pub async fn wait(&self, id: &str) -> Result<u32, Error> {
        let r = self
            .tasks()
            .wait(svc::tasks::v1::WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })
            .await
            .map_err(Error::call("tasks wait"))?;
        Ok(r.into_inner().exit_status)
    }

    /// The process that runs `argv` in container `id` as its own process runs (its
    /// user, environment, directory, namespaces and cgroup: the container's spec with
    /// other arguments; `${MOTLEY_*}` in them replaced as in its command), for
    /// [`Containerd::exec`]: read once, run as often as wanted.
    pub async fn exec_process(&self, id: &str, argv: &[String]) -> Result<ExecProcess, Error> {
        let container = self
            .containers()
            .get(svc::containers::v1::GetContainerRequest { id: id.to_string() })
            .await
            .map_err(Error::call("containers get"))?
            .into_inner()
            .container
            .and_then(|c| c.spec)
            .ok_or_else(|| Error::Image(format!("container {id} has no spec")))?;
        let spec: serde_json::Value = serde_json::from_slice(&container.value)
            .map_err(|e| Error::Image(format!("container {id}'s spec: {e}")))?;
        let mut process = spec
            .get("process")
            .cloned()
            .ok_or_else(|| Error::Image(format!("container {id}'s spec has no process")))?;
        // `${MOTLEY_*}` as in the container's command: its own values (its paths).
        let vars: Vec<(String, &str)> = process["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| kv.as_str()?.split_once('='))
            .filter(|(k, _)| k.starts_with("MOTLEY_"))
            .map(|(k, v)| (format!("${{{k}}}"), v))
            .collect();
        let argv: Vec<String> = argv
            .iter()
            .map(|a| vars.iter().fold(a.clone(), |a, (k, v)| a.replace(k, v)))
            .collect();
        process["args"] = json!(argv);
        process["terminal"] = json!(false);
        let spec = serde_json::to_vec(&process).map_err(|e| Error::Image(e.to_string()))?;
        Ok(ExecProcess {
            command: argv.join(" "),
            spec,
        })
    }

    /// Runs `process` in the running container `id` as `exec_id`, with no stdio; its
    /// exit status (`128 + n` for signal `n`). Past `timeout` it is killed and `Err`
    /// says so. The process is deleted from containerd either way (`exec_id` can be
    /// used again).
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &ExecProcess,
        timeout: std::time::Duration,
    ) -> Result<u32, Error> {
        let (container_id, exec) = (id.to_string(), exec_id.to_string());
        self.tasks()
            .exec(svc::tasks::v1::ExecProcessRequest {
                container_id: container_id.clone(),
                // No stdio: the shim gives the process /dev/null.
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process"
                        .to_string(),
                    value: process.spec.clone(),
                }),
                exec_id: exec.clone(),
            })
            .await
            .map_err(Error::call("tasks exec"))?;
        let wait = || {
            let mut tasks = self.tasks();
            let req = svc::tasks::v1::WaitRequest {
                container_id: container_id.clone(),
                exec_id: exec.clone(),
            };
            async move { tasks.wait(req).await }
        };
        let out = match self
            .tasks()
            .start(svc::tasks::v1::StartRequest {
                container_id: container_id.clone(),
                exec_id: exec.clone(),
            })
            .await
        {
            Err(e) => Err(Error::call("tasks start (exec)")(e)),
            Ok(_) => match tokio::time::timeout(timeout, wait()).await {
                Ok(r) => r
                    .map(|r| r.into_inner().exit_status)
                    .map_err(Error::call("tasks wait (exec)")),
                Err(_) => {
                    let _ = self
                        .tasks()
                        .kill(svc::tasks::v1::KillRequest {
                            container_id: container_id.clone(),
                            exec_id: exec.clone(),
                            signal: 9,
                            all: false,
                        })
                        .await;
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait()).await;
                    Err(Error::Image(format!(
                        "{} gave no answer within {} ms",
                        process.command,
                        timeout.as_millis()
                    )))
                }
            },
        };
        let _ = self
            .tasks()
            .delete_process(svc::tasks::v1::DeleteProcessRequest {
                container_id,
                exec_id: exec,
            })
            .await;
        out
    }

    /// Sends a signal to every process of the container.
    pub async fn kill(&self, id: &str, signal: u32) -> Result<(), Error> {
        match self
            .tasks()
            .kill(svc::tasks::v1::KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: true,
            })
            .await
            .map_err(Error::call("tasks kill"))
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the task (which must have exited), the container and its snapshot;
    /// what is already gone is skipped.
    pub async fn remove(&self, id: &str) -> Result<(), Error> {
        let gone = |e: &Error| e.is_not_found();
        if let Err(e) = self
            .tasks()
            .delete(svc::tasks::v1::DeleteTaskRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(Error::call("tasks delete"))
            && !gone(&e)
        {
            // A task that still runs is killed first.
            self.kill(id, 9).await?;
            let _ = self.wait(id).await;
            match self
                .tasks()
                .delete(svc::tasks::v1::DeleteTaskRequest {
                    container_id: id.to_string(),
                })
                .await
                .map_err(Error::call("tasks delete"))
            {
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        match self
            .containers()
            .delete(svc::containers::v1::DeleteContainerRequest { id: id.to_string() })
            .await
            .map_err(Error::call("containers delete"))
        {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e),
        }
        self.remove_snapshot(id).await;
        Ok(())
    }

    /// Every task in motley's namespace.
    pub async fn list(&self) -> Result<Vec<Listed>, Error> {
        let tasks = self
            .tasks()
            .list(svc::tasks::v1::ListTasksRequest {
                filter: String::new(),
            })
            .await
            .map_err(Error::call("tasks list"))?
            .into_inner()
            .tasks;
        Ok(tasks
            .into_iter()
            .map(|t| Listed {
                running: t.status == motley_grpc::containerd::v1::types::Status::Running as i32,
                id: t.id,
                pid: t.pid,
            })
            .collect())
    }

    /// Every container record in motley's namespace (with or without a task).
    pub async fn containers_list(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .records()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Every container record's id and image, one message per record (`ListStream`).
    /// `List` answers with every record whole in one message, each with its OCI spec
    /// (some 4 kB): with 20 containers a 100 kB+ buffer per listing, which the
    /// allocator kept after each refresh (most of the agent's memory per container).
    pub async fn records(&self) -> Result<Vec<(String, String)>, Error> {
        let mut stream = self
            .containers()
            .list_stream(svc::containers::v1::ListContainersRequest { filters: vec![] })
            .await
            .map_err(Error::call("containers list"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream
            .message()
            .await
            .map_err(Error::call("containers list"))?
        {
            if let Some(c) = m.container {
                out.push((c.id, c.image));
            }
        }
        Ok(out)
    }
}
