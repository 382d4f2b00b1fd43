//! Tables for `get`: rows of workloads, nodes, allocations, servers and audit entries,
//! and hardware for `describe node`.

use super::*;

pub(crate) type Rows = (Vec<&'static str>, Vec<Vec<String>>);

pub(crate) fn workload_rows(views: &[WorkloadView], kind: Kind, wide: bool) -> Rows {
    let now = now_ms();
    let mut headers: Vec<&str> = match kind {
        Kind::Job => vec![
            "NAME",
            "COMPLETIONS",
            "RUNNING",
            "FAILED",
            "PRIORITY",
            "STATUS",
            "QUEUE",
            "SCHEDULE",
            "LAST RUN",
            "NEXT RUN",
            "AGE",
        ],
        Kind::Service | Kind::Daemon => vec!["NAME", "READY", "RESTARTS", "STATUS", "AGE"],
        Kind::Volume => vec![
            "NAME", "CLASS", "SIZE", "STATUS", "NODE", "MOUNT", "MEDIA", "AGE",
        ],
        Kind::Secret => vec!["NAME", "KEYS", "AGE"],
        Kind::Config => vec!["NAME", "KEYS", "VERSION", "AGE"],
        Kind::Source => vec!["NAME", "URL", "AGE"],
        Kind::Namespace => vec!["NAME", "CPU", "MEMORY", "GPU", "ALLOCATIONS", "AGE"],
    };
    if wide {
        headers.extend(["GENERATION", "COMMAND", "WAITING"]);
        if kind == Kind::Service {
            headers.extend(["AVAILABILITY 1H/24H/30D", "ERROR BUDGET"]);
        }
    }
    let rows = views
        .iter()
        .map(|v| {
            let w = &v.workload;
            let s = &v.status;
            let mut row = match &w.spec {
                Spec::Job(j) => {
                    let p = v.periodic.as_ref();
                    vec![
                        w.spec.name().to_string(),
                        match p {
                            Some(_) => "-".to_string(),
                            None => format!("{}/{}", s.complete, s.desired),
                        },
                        s.running.to_string(),
                        s.failed.to_string(),
                        j.priority.0.to_string(),
                        s.phase.clone(),
                        v.queue_position
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "-".into()),
                        p.map_or("-".into(), |p| match p.time_zone.as_str() {
                            "UTC" => p.schedule.clone(),
                            tz => format!("{} ({tz})", p.schedule),
                        }),
                        p.and_then(|p| Some(format!("{} ago", age(p.last_due?, now))))
                            .unwrap_or_else(|| "-".into()),
                        p.and_then(|p| Some(format!("in {}", age(now, p.next_run?))))
                            .unwrap_or_else(|| "-".into()),
                        age(w.created_at, now),
                    ]
                }
                Spec::Volume(vol) => {
                    let b = w.binding.as_ref();
                    vec![
                        w.spec.name().to_string(),
                        vol.class.as_str().to_string(),
                        vol.size.to_string(),
                        s.phase.clone(),
                        b.map_or("-".into(), |b| b.node.clone()),
                        b.map_or("-".into(), |b| b.mount.clone()),
                        b.map_or("-".into(), |b| format!("{} ({})", b.media.as_str(), b.disk)),
                        age(w.created_at, now),
                    ]
                }
                Spec::Secret(sec) => vec![
                    w.spec.name().to_string(),
                    sec.data.keys().cloned().collect::<Vec<_>>().join(","),
                    age(w.created_at, now),
                ],
                Spec::Config(c) => vec![
                    w.spec.name().to_string(),
                    c.data.keys().cloned().collect::<Vec<_>>().join(","),
                    motley_core::config::version(c),
                    age(w.created_at, now),
                ],
                Spec::Source(src) => vec![
                    w.spec.name().to_string(),
                    src.git.url.clone(),
                    age(w.created_at, now),
                ],
                Spec::Namespace(n) => {
                    let q = &n.quota;
                    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    vec![
                        w.spec.name().to_string(),
                        or_dash(q.cpu.map(|c| c.to_string())),
                        or_dash(q.memory.map(|m| m.to_string())),
                        or_dash(q.gpu.map(|g| g.to_string())),
                        or_dash(q.allocations.map(|a| a.to_string())),
                        age(w.created_at, now),
                    ]
                }
                _ => vec![
                    w.spec.name().to_string(),
                    format!("{}/{}", s.ready, s.desired),
                    s.restarts.to_string(),
                    s.phase.clone(),
                    age(w.created_at, now),
                ],
            };
            if wide {
                row.push(w.generation.to_string());
                row.push(w.spec.task().command.join(" "));
                row.push(
                    v.blocked
                        .as_ref()
                        .map(|b| format!("{}: {}", b.count, b.why.summary))
                        .unwrap_or_default(),
                );
                if kind == Kind::Service {
                    let (avail, budget) = uptime_cells(v.uptime.as_ref());
                    row.push(avail);
                    row.push(budget);
                }
            }
            row
        })
        .collect();
    (headers, rows)
}

/// `99.95%/100%/100%` and `62% left, burn 1.3` (or `-`).
fn uptime_cells(u: Option<&motley_core::api::UptimeView>) -> (String, String) {
    let pct = |v: Option<f64>| match v {
        Some(v) => {
            let p = format!("{:.3}", v * 100.0);
            format!("{}%", p.trim_end_matches('0').trim_end_matches('.'))
        }
        None => "-".into(),
    };
    let Some(u) = u else {
        return ("-".into(), "-".into());
    };
    let avail = format!("{}/{}/{}", pct(u.h1), pct(u.h24), pct(u.d30));
    let budget = match (u.target, u.budget_remaining, u.burn_rate) {
        (Some(t), Some(left), Some(burn)) => {
            format!(
                "{:.0}% left of {}, burn {burn:.1}",
                left * 100.0,
                pct(Some(t))
            )
        }
        (Some(t), _, _) => format!("- (slo {})", pct(Some(t))),
        _ => "-".into(),
    };
    (avail, budget)
}

pub(crate) fn node_rows(nodes: &[NodeView], wide: bool) -> Rows {
    let now = now_ms();
    let mut headers = vec!["NAME", "STATE", "ARCH", "CPUS", "MEMORY", "ALLOCS", "AGE"];
    if wide {
        headers.extend([
            "CPU USED",
            "MEM USED",
            "OS",
            "HOSTNAME",
            "BOARD",
            "SCORE",
            "STORAGE",
            "GPU",
            "CONDITIONS",
            "REASON",
        ]);
    }
    let rows = nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                n.node.name.clone(),
                format!("{} ({})", n.state, age(n.since, now)),
                n.node.facts.arch.clone(),
                n.node.facts.cpus.to_string(),
                mem(n.node.facts.memory),
                n.allocations.to_string(),
                age(n.node.registered_at, now),
            ];
            if wide {
                row.extend([
                    format!("{}/{}", cpu(n.used_cpu), cpu(n.node.capacity.cpu.0)),
                    format!("{}/{}", mem(n.used_memory), mem(n.node.capacity.memory.0)),
                    n.node.facts.os.clone(),
                    n.node.facts.hostname.clone(),
                    label_or_dash(&n.node, "board"),
                    n.node
                        .facts
                        .cpu_score
                        .map_or_else(|| "-".into(), |s| s.to_string()),
                    label_or_dash(&n.node, "storage"),
                    label_or_dash(&n.node, "gpu"),
                    if n.node.facts.conditions.is_empty() {
                        "-".into()
                    } else {
                        n.node
                            .facts
                            .conditions
                            .iter()
                            .map(|c| c.kind.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                    n.reason.clone(),
                ]);
            }
            row
        })
        .collect();
    (headers, rows)
}

pub(crate) fn label_or_dash(n: &motley_core::model::Node, key: &str) -> String {
    n.labels
        .get(&format!("{}{key}", motley_core::hw::LABEL_PREFIX))
        .cloned()
        .unwrap_or_else(|| "-".into())
}

/// The hardware part of `describe node`.
pub(crate) fn describe_hardware(out: &mut String, n: &NodeView, now: u64) {
    let f = &n.node.facts;
    out.push_str(&format!(
        "CPU score:   {}\n",
        f.cpu_score.map_or_else(
            || "not calibrated yet".to_string(),
            |s| format!(
                "{s} per core, {} in all (reference machine = 1000)",
                s as u64 * f.cpus.max(1) as u64
            )
        )
    ));
    out.push_str(&format!(
        "Task logs:   {} ({})\n",
        f.task_logs.map_or("disk", |l| l.as_str()),
        f.task_logs_reason.as_deref().unwrap_or("default")
    ));
    out.push_str("Conditions:\n");
    let lines = crate::hwview::condition_lines(&f.conditions, now);
    if lines.is_empty() {
        out.push_str("  none\n");
    }
    for l in lines {
        out.push_str(&format!("  {l}\n"));
    }
    out.push_str(&format!(
        "Taints:      {}\n",
        crate::hwview::taint_text(&n.node.taints)
    ));
    if let Some(hw) = &f.hw {
        out.push_str("Hardware:\n");
        let rows: Vec<Vec<String>> = crate::hwview::rows(hw)
            .into_iter()
            .map(|(k, v)| vec![k, v])
            .collect();
        indented(out, &table(&["FACT", "VALUE"], &rows));
    }
    if let Some(r) = &n.readings {
        out.push_str(&format!(
            "Readings ({} ago, kept in memory only):\n",
            n.readings_at.map_or_else(|| "-".into(), |t| age(t, now))
        ));
        let rows: Vec<Vec<String>> = crate::hwview::reading_rows(r)
            .into_iter()
            .map(|(k, v)| vec![k, v])
            .collect();
        indented(out, &table(&["READING", "VALUE"], &rows));
    }
}

pub(crate) fn alloc_rows(allocs: &[Allocation], wide: bool) -> Rows {
    let now = now_ms();
    let mut headers = vec![
        "ID", "WORKLOAD", "INDEX", "NODE", "STATE", "PID", "RESTARTS", "AGE",
    ];
    // Which version of each Config an allocation runs (a Config change rolls them).
    let configs = wide && allocs.iter().any(|a| !a.task.configs.is_empty());
    if wide {
        headers.extend(["DESIRED", "EXIT", "REASON"]);
    }
    if configs {
        headers.push("CONFIGS");
    }
    let rows = allocs
        .iter()
        .map(|a| {
            let mut row = vec![
                a.id.clone(),
                a.workload.to_string(),
                a.index.to_string(),
                a.node.clone(),
                // A slow start says what it is doing: `pending (pulling 41 %)`.
                match &a.progress {
                    Some(p) => format!(
                        "{} ({})",
                        a.state,
                        p.split_once(": ").map_or(p.as_str(), |(_, pct)| pct)
                    ),
                    None => a.state.to_string(),
                },
                a.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                a.restarts.to_string(),
                age(a.created_at, now),
            ];
            if wide {
                row.push(format!("{:?}", a.desired).to_lowercase());
                row.push(
                    a.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                );
                row.push(a.reasons.last().cloned().unwrap_or_default());
            }
            if configs {
                row.push(motley_core::config::versions_of(&a.task).join(","));
            }
            row
        })
        .collect();
    (headers, rows)
}

pub(crate) async fn render_get(
    client: &Client,
    res: &str,
    name: Option<&str>,
    format: Format,
    workload: Option<&str>,
) -> anyhow::Result<String> {
    let wide = format == Format::Wide;
    let structured = matches!(format, Format::Json | Format::Yaml);
    Ok(match resource(res)? {
        Resource::Workloads(Kind::Source) => {
            let views: Vec<motley_core::api::SourceView> = match name {
                // Source names are unique in the cluster: every namespace unless -n.
                Some(n) => vec![
                    client
                        .get(&client.scoped_set(&format!("/v1/sources/{n}")))
                        .await?,
                ],
                None => client.get(&client.scoped_set("/v1/sources")).await?,
            };
            if structured {
                output::structured(&views, format)?
            } else {
                let (h, r) = super::sources::source_rows(&views);
                table(&h, &r)
            }
        }
        Resource::Workloads(kind) => {
            let mut views: Vec<WorkloadView> = match name {
                Some(n) => vec![
                    client
                        .get::<WorkloadDetail>(&client.scoped(&format!("/v1/workloads/{kind}/{n}")))
                        .await?
                        .view,
                ],
                // Namespaces are cluster-wide: listed whatever -n says.
                None if kind == Kind::Namespace => {
                    client.get(&format!("/v1/workloads?kind={kind}")).await?
                }
                None => {
                    client
                        .get(&client.scoped(&format!("/v1/workloads?kind={kind}")))
                        .await?
                }
            };
            views.sort_by(|a, b| {
                (a.workload.spec.namespace(), a.workload.spec.name())
                    .cmp(&(b.workload.spec.namespace(), b.workload.spec.name()))
            });
            if structured {
                output::structured(&views, format)?
            } else {
                let (mut h, mut r) = workload_rows(&views, kind, wide);
                if client.all_namespaces() && kind != Kind::Namespace {
                    h.insert(0, "NAMESPACE");
                    for (row, v) in r.iter_mut().zip(&views) {
                        row.insert(0, v.workload.spec.namespace().to_string());
                    }
                }
                table(&h, &r)
            }
        }
        Resource::Nodes => {
            let nodes: Vec<NodeView> = match name {
                Some(n) => vec![client.get(&format!("/v1/nodes/{n}")).await?],
                None => client.get("/v1/nodes").await?,
            };
            if structured {
                output::structured(&nodes, format)?
            } else {
                let (h, r) = node_rows(&nodes, wide);
                table(&h, &r)
            }
        }
        Resource::Allocs => {
            let allocs: Vec<Allocation> = match (name, workload) {
                (Some(id), _) => vec![
                    client
                        .get(&client.scoped(&format!("/v1/allocs/{id}")))
                        .await?,
                ],
                (None, Some(w)) => {
                    // `service/web` is in -n's namespace; `dev/service/web` names its own.
                    let r = WorkloadRef::parse_in(w, client.namespace())
                        .ok_or_else(|| anyhow::anyhow!("--workload {w:?}: expected KIND/NAME"))?;
                    client
                        .get(&client.scoped(&format!("/v1/allocs?workload={r}")))
                        .await?
                }
                (None, None) => client.get(&client.scoped("/v1/allocs")).await?,
            };
            if structured {
                output::structured(&allocs, format)?
            } else {
                let (h, r) = alloc_rows(&allocs, wide);
                table(&h, &r)
            }
        }
        Resource::Servers => {
            let mut servers: Vec<ServerInfo> = client.get("/v1/servers").await?;
            if let Some(n) = name {
                servers.retain(|s| s.name == n || s.id == n);
                anyhow::ensure!(!servers.is_empty(), "no server {n:?}");
            }
            if structured {
                output::structured(&servers, format)?
            } else {
                table(
                    &["NAME", "URL", "LEADER", "AGE", "ID"],
                    &server_rows(&servers),
                )
            }
        }
        Resource::Audit => {
            let entries: Vec<AuditEntry> = client.get("/v1/audit").await?;
            if structured {
                output::structured(&entries, format)?
            } else {
                table(
                    &["WHEN", "WHO", "FROM", "REQUEST", "STATUS", "WHY"],
                    &audit_rows(&entries),
                )
            }
        }
    })
}

pub(crate) fn audit_rows(entries: &[AuditEntry]) -> Vec<Vec<String>> {
    let now = now_ms();
    entries
        .iter()
        .map(|e| {
            vec![
                format!("{} ago", age(e.at, now)),
                e.who.clone(),
                e.peer.clone(),
                format!("{} {}", e.method, e.path),
                e.status.to_string(),
                e.why.clone(),
            ]
        })
        .collect()
}

pub(crate) fn server_rows(servers: &[ServerInfo]) -> Vec<Vec<String>> {
    let now = now_ms();
    servers
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.url.clone(),
                match s.leading_since {
                    Some(t) if s.leader => format!("yes ({})", age(t, now)),
                    _ if s.leader => "yes".into(),
                    _ => "-".into(),
                },
                age(s.started_at, now),
                s.id.clone(),
            ]
        })
        .collect()
}

/// `describe service`: how it is reached (name, ports, ingress), and its running
/// replicas as endpoints: node, address, ports, health and whether proxies send to it.
pub(crate) fn endpoints(
    out: &mut String,
    svc: &motley_core::model::ServiceSpec,
    allocs: &[Allocation],
    ready: u32,
    desired: u32,
    cat: &motley_core::catalog::Catalog,
) {
    use motley_core::model::{dns_name, namespace_or_default};
    let listed = cat
        .services
        .get(&dns_name(namespace_or_default(&svc.namespace), &svc.name));
    if !svc.ports.is_empty() {
        let ports: Vec<String> = svc
            .ports
            .iter()
            .filter_map(|p| Some(format!("{} → {}", p.service_port?, p.name)))
            .collect();
        let vip = listed.map_or_else(|| "-".to_string(), |c| c.vip.to_string());
        out.push_str(&format!(
            "Address:     {}.motley ({vip}){}{}\n",
            svc.name,
            if ports.is_empty() { "" } else { " port " },
            ports.join(", ")
        ));
    }
    for e in &svc.expose {
        out.push_str(&format!("Ingress:     {}{} → {}\n", e.host, e.path, e.port));
    }
    let with_check = if svc.check.is_some() {
        " (running and passing their check)"
    } else {
        " (running; no check)"
    };
    out.push_str(&format!("Ready:       {ready}/{desired}{with_check}\n"));
    let rows: Vec<Vec<String>> = allocs
        .iter()
        .filter(|a| {
            a.state == motley_core::model::AllocState::Running
                && a.desired == motley_core::model::Desired::Run
        })
        .map(|a| {
            let ports: Vec<String> = a
                .task
                .ports
                .iter()
                .map(|p| {
                    let n = if p.port == 0 {
                        a.ports.get(&p.name).copied().unwrap_or(0)
                    } else {
                        p.port
                    };
                    format!("{}={n}", p.name)
                })
                .collect();
            let ep = listed.and_then(|c| c.endpoints.iter().find(|e| e.alloc == a.id));
            let mut row = vec![
                a.id.clone(),
                a.node.clone(),
                if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join(",")
                },
                a.health.map_or("-", |h| h.as_str()).to_string(),
            ];
            if !svc.ports.is_empty() {
                row.insert(2, ep.map_or_else(|| "-".into(), |e| e.addr.to_string()));
                row.push(if ep.is_some() { "yes" } else { "no" }.to_string());
            }
            row
        })
        .collect();
    if !rows.is_empty() {
        out.push_str("Endpoints:\n");
        let mut headers = vec!["ALLOCATION", "NODE", "PORTS", "HEALTH"];
        if !svc.ports.is_empty() {
            headers.insert(2, "ADDRESS");
            headers.push("IN ROTATION");
        }
        indented(out, &table(&headers, &rows));
    }
}

/// `Energy:` in `describe`: joules given to the workload's allocations (all of them,
/// and each), when their nodes measure or estimate power (`motley_core::energy`).
pub(crate) fn energy(out: &mut String, d: &motley_core::api::WorkloadDetail) {
    if d.energy_mj.is_empty() {
        return;
    }
    let j = |mj: u64| format!("{:.1} J", mj as f64 / 1000.0);
    let total: u64 = d.energy_mj.values().sum();
    out.push_str(&format!(
        "Energy:      {}{}\n",
        j(total),
        if d.energy_estimated {
            " (estimated from the nodes' power models)"
        } else {
            " (measured)"
        }
    ));
    for (id, mj) in &d.energy_mj {
        out.push_str(&format!("  {id}: {}\n", j(*mj)));
    }
}
