//! What each client command does.

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures_util::StreamExt;
use motley_core::api::{
    AuditEntry, ManifestSet, NodeView, ObjectResults, ServerInfo, VersionInfo, WorkloadDetail,
    WorkloadView,
};
use motley_core::manifest::{self, ManifestError, Source};
use motley_core::model::{Allocation, Kind, Spec, WorkloadRef};
use reqwest::Method;

use crate::args::{Command, Format};
use crate::client::{ApiError, Client};
use crate::files;
use crate::output::{self, age, cpu, mem, now_ms, print, table};

mod capacity;
mod convert;
pub use convert::{convert, validate};
mod events;
mod experiment;
mod periodic;
mod rollout;
mod secrets;
mod sources;
mod tokens;
mod upgrade;
pub use tokens::token;
mod views;
mod whatif;
use views::*;

/// Runs a client command (everything but `up`). Returns the exit code.
pub async fn run(
    config: Option<&Path>,
    scope: crate::client::Namespacing,
    command: Command,
) -> anyhow::Result<i32> {
    let client = || Client::load(config).map(|c| c.in_scope(scope.clone()));
    match command {
        Command::Up(_)
        | Command::Server(_)
        | Command::Agent(_)
        | Command::Doctor(_)
        | Command::Snapshot {
            command: crate::args::SnapshotCommand::Restore { .. },
        } => {
            anyhow::bail!(
                "`up`, `server`, `agent`, `doctor` and `snapshot restore` are handled by the binary"
            )
        }
        Command::Token { command } => token(&client()?, command).await,
        Command::Label { node, labels } => label(&client()?, &node, &labels).await,
        Command::Cordon { node } => node_action(&client()?, &node, "cordon").await,
        Command::Uncordon { node } => node_action(&client()?, &node, "uncordon").await,
        Command::Drain { node, timeout } => drain(&client()?, &node, &timeout).await,
        Command::Validate { files } => validate(&files.files),
        Command::Convert { files } => convert(&files.files),
        Command::Capacity {
            files,
            cluster,
            tolerate,
            schedule,
            power,
            output,
        } => {
            let client = if cluster { Some(client()?) } else { None };
            let c = client.as_ref();
            capacity::capacity(c, &files, tolerate, &schedule, power, output).await
        }
        Command::Apply {
            files,
            dry_run,
            detach,
            wait,
        } => {
            use std::io::IsTerminal;
            let follow = !dry_run && !detach && (wait || std::io::stdout().is_terminal());
            apply(&client()?, &files.files, dry_run, follow).await
        }
        Command::Rollout { command } => {
            use crate::args::RolloutCommand as R;
            let c = client()?;
            match command {
                R::Status {
                    name,
                    once,
                    timeout,
                } => {
                    let t = motley_core::quantity::Duration::parse(&timeout)
                        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
                    rollout::status(
                        &c,
                        &name,
                        once,
                        std::time::Duration::from_millis(t.as_millis()),
                    )
                    .await
                }
                R::History { name } => rollout::history(&c, &name).await,
                R::Undo {
                    name,
                    to_generation,
                } => rollout::undo(&c, &name, to_generation).await,
            }
        }
        Command::Promote { name } => rollout::promote(&client()?, &name).await,
        Command::Source { command } => sources::run(&client()?, command).await,
        Command::Experiment { command } => experiment::dispatch(&client()?, command).await,
        Command::Job { command } => periodic::dispatch(&client()?, command).await,
        Command::Plan { files, output } => plan(&client()?, &files.files, output).await,
        Command::WhatIf {
            lose,
            drain,
            each_node,
            add_node,
            files,
            snapshot,
            trace,
            speed,
            output,
        } => {
            let change = motley_scheduler::whatif::Change { lose, drain };
            let q = whatif::Question {
                change,
                each_node,
                add_node,
                files,
                snapshot,
                trace,
                speed,
            };
            whatif::what_if(client, q, output).await
        }
        Command::Get {
            resource,
            name,
            output,
            workload: _,
            reveal: true,
        } => secrets::reveal(&client()?, &resource, name.as_deref(), output).await,
        Command::Secrets {
            command: crate::args::SecretsCommand::RotateKey,
        } => secrets::rotate_key(&client()?).await,
        Command::Get {
            resource,
            name,
            output,
            workload,
            reveal: false,
        } => {
            get(
                &client()?,
                &resource,
                name.as_deref(),
                output,
                workload.as_deref(),
            )
            .await
        }
        Command::Describe { target } => describe(&client()?, &target).await,
        Command::Delete { target, files } => delete(&client()?, &target, &files).await,
        Command::Logs {
            alloc,
            follow,
            tail,
        } => logs(&client()?, &alloc, follow, tail).await,
        Command::Restart { alloc } => restart(&client()?, &alloc).await,
        Command::Events {
            watch,
            object,
            since,
            output,
        } => {
            let (o, s) = (object.as_deref(), since.as_deref());
            events::events(&client()?, watch, o, s, output).await
        }
        Command::Version => version(config).await,
        Command::Snapshot {
            command: crate::args::SnapshotCommand::Save { file },
        } => snapshot_save(&client()?, &file).await,
        Command::Install { what } => crate::install::install(what),
        Command::Upgrade { plan: _ } => upgrade::plan(&client()?).await,
        Command::Uninstall(args) => crate::install::uninstall(&args),
        Command::Man { out } => {
            let n = crate::install::write_man_pages(&out)?;
            println!("wrote {n} man pages in {}", out.display());
            Ok(0)
        }
        Command::Completion { shell } => {
            let mut cmd = <crate::args::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "motley", &mut std::io::stdout());
            Ok(0)
        }
        Command::Facts {
            root,
            data_dir,
            output: format,
        } => {
            print(&facts_report(&root, data_dir, format)?);
            Ok(0)
        }
        Command::Schema => {
            let schema = schemars::schema_for!(AnyDocument);
            print(&output::structured(&schema, Format::Json)?);
            Ok(0)
        }
    }
}

/// Every kind of document a manifest file may hold: the stored kinds, and the lab's
/// files (`motley capacity`, `motley experiment`), for editors' validation.
#[derive(schemars::JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)]
enum AnyDocument {
    Stored(Box<Spec>),
    Inventory(motley_core::inventory::Inventory),
    Experiment(motley_core::experiment::Experiment),
}

/// What `motley facts` prints.
#[derive(serde::Serialize)]
struct FactsReport {
    hardware: motley_core::hw::Hardware,
    conditions: Vec<motley_core::hw::Condition>,
    labels: std::collections::BTreeMap<String, String>,
}

/// `motley facts`: discovery of a root, with the conditions and labels that follow.
pub fn facts_report(
    root: &Path,
    data_dir: Option<String>,
    format: Format,
) -> anyhow::Result<String> {
    let host = root == Path::new("/");
    let data_dir = data_dir.unwrap_or_else(|| {
        if host {
            std::env::current_dir()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "/".into())
        } else {
            "/var/lib/motley".into()
        }
    });
    anyhow::ensure!(
        host || root.join("proc").is_dir() || root.join("sys").is_dir(),
        "--root {}: no proc/ or sys/ directory there",
        root.display()
    );
    let hw = motley_discovery::discover(
        root,
        &motley_discovery::Options {
            data_dir: Some(data_dir),
        },
    );
    let conditions = motley_core::hw::conditions(
        &hw,
        None,
        &motley_core::hw::Thresholds::default(),
        &[],
        now_ms(),
    );
    let fragile = hw
        .data_disk
        .as_ref()
        .is_some_and(|d| d.media.is_fragile_flash());
    let labels = motley_core::hw::labels(&hw, None, if fragile { "memory" } else { "disk" });
    if matches!(format, Format::Json | Format::Yaml) {
        return output::structured(
            &FactsReport {
                hardware: hw,
                conditions,
                labels,
            },
            format,
        );
    }
    let mut rows: Vec<Vec<String>> = crate::hwview::rows(&hw)
        .into_iter()
        .map(|(k, v)| vec![k, v])
        .collect();
    for c in crate::hwview::condition_lines(&conditions, now_ms()) {
        rows.push(vec!["condition".into(), c]);
    }
    for (k, v) in &labels {
        rows.push(vec!["label".into(), format!("{k}={v}")]);
    }
    Ok(table(&["FACT", "VALUE"], &rows))
}

fn print_manifest_errors(errors: &[ManifestError]) {
    for e in errors {
        eprintln!("error: {e}");
    }
}

fn sources(files: &[motley_core::api::ManifestFile]) -> Vec<Source<'_>> {
    files
        .iter()
        .map(|f| Source {
            name: &f.name,
            text: &f.content,
        })
        .collect()
}

/// Reports an API error (with manifest details) on stderr; returns the exit code.
fn report(e: anyhow::Error) -> anyhow::Result<i32> {
    match e.downcast::<ApiError>() {
        Ok(api) => {
            print_manifest_errors(&api.body.details);
            eprintln!("error: {}", api.body.error);
            Ok(1)
        }
        Err(e) => Err(e),
    }
}

/// Reads the manifests, validates them locally and reads the Secret values they name
/// (`fromFile`, `fromEnv`). On errors prints them ("nothing was {verb}") and gives `None`.
fn read_set(paths: &[PathBuf], verb: &str) -> anyhow::Result<Option<ManifestSet>> {
    let files = files::read_all(paths)?;
    match manifest::parse_set(&sources(&files)).and_then(|d| files::secret_inputs(&d)) {
        Ok(inputs) => Ok(Some(ManifestSet {
            files,
            dry_run: false,
            inputs,
        })),
        Err(errors) => {
            print_manifest_errors(&errors);
            eprintln!("{} error(s); nothing was {verb}", errors.len());
            Ok(None)
        }
    }
}

/// `apply -f`: validates locally first, then sends the whole set.
pub async fn apply(
    client: &Client,
    paths: &[PathBuf],
    dry_run: bool,
    follow: bool,
) -> anyhow::Result<i32> {
    let Some(mut set) = read_set(paths, "applied")? else {
        return Ok(1);
    };
    set.dry_run = dry_run;
    let res: anyhow::Result<ObjectResults> =
        client.post(&client.scoped_set("/v1/apply"), &set).await;
    match res {
        Ok(r) => {
            let suffix = if dry_run { " (dry run)" } else { "" };
            for o in &r.results {
                println!("{} {}{suffix}", o.target(), o.action);
            }
            let mut code = 0;
            if follow {
                for o in &r.results {
                    if o.kind == "service" && o.action != "unchanged" {
                        let c = rollout::wait(client, &o.name, std::time::Duration::from_secs(600))
                            .await?;
                        code = code.max(c);
                    }
                }
            }
            Ok(code)
        }
        Err(e) => report(e),
    }
}

/// `motley snapshot save FILE`: verified before it is written, written atomically.
pub async fn snapshot_save(client: &Client, file: &std::path::Path) -> anyhow::Result<i32> {
    let bytes = match client.get_bytes("/v1/snapshot").await {
        Ok(b) => b,
        Err(e) => return report(e),
    };
    let snap = motley_store::snapshot::Snapshot::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("the server sent a bad snapshot: {e}"))?;
    // Atomically, mode 0600: a snapshot holds the cluster CA's private key.
    motley_net::write_private(file, &bytes, 0o600)?;
    println!(
        "snapshot at revision {} with {} objects written to {}",
        snap.revision,
        snap.entries.len(),
        file.display()
    );
    Ok(0)
}

/// `motley plan -f FILE`.
pub async fn plan(client: &Client, paths: &[PathBuf], output: Format) -> anyhow::Result<i32> {
    use motley_core::api::PlanResponse;
    let Some(mut set) = read_set(paths, "planned")? else {
        return Ok(1);
    };
    set.dry_run = true;
    let res: anyhow::Result<PlanResponse> = client.post(&client.scoped_set("/v1/plan"), &set).await;
    let p = match res {
        Ok(p) => p,
        Err(e) => return report(e),
    };
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&p)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(&p)?),
        Format::Table | Format::Wide => print!("{}", plan_text(&p, output == Format::Wide)),
    }
    Ok(0)
}

/// The plan as text: objects, placements per workload, stops, bindings, what waits.
pub fn plan_text(p: &motley_core::api::PlanResponse, wide: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for o in &p.objects {
        let _ = writeln!(out, "{}/{} would be {}", o.kind, o.name, o.action);
    }
    let mut by_w: std::collections::BTreeMap<String, Vec<&motley_core::api::PlannedPlacement>> =
        std::collections::BTreeMap::new();
    for pl in &p.placements {
        by_w.entry(pl.workload.to_string()).or_default().push(pl);
    }
    for (w, list) in &by_w {
        let _ = writeln!(out, "{w}: {} new instance(s)", list.len());
        for pl in list {
            let mut extra = Vec::new();
            if !pl.gpus.is_empty() {
                extra.push(format!("gpus {}", pl.gpus.join(",")));
            }
            for v in &pl.volumes {
                extra.push(format!("volume {} on {}", v.name, v.mount));
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join(", "))
            };
            let _ = writeln!(out, "  #{} -> {}{extra}", pl.index, pl.node);
        }
    }
    for (name, b) in &p.bind {
        let _ = writeln!(
            out,
            "volume/{name} would be bound to {} at {} ({}, {})",
            b.node,
            b.mount,
            b.media.as_str(),
            b.disk
        );
    }
    for st in &p.stops {
        let _ = writeln!(
            out,
            "stop {} ({} on {}): {}",
            st.alloc, st.workload, st.node, st.reason
        );
    }
    for (w, b) in &p.blocked {
        let _ = writeln!(
            out,
            "{w}: {} instance(s) would wait: {}",
            b.count, b.why.summary
        );
        let shown = if wide {
            b.why.nodes.len()
        } else {
            b.why.nodes.len().min(10)
        };
        for (node, why) in b.why.nodes.iter().take(shown) {
            let _ = writeln!(out, "  {node}: {why}");
        }
        if shown < b.why.nodes.len() {
            let _ = writeln!(out, "  ... {} more (-o wide)", b.why.nodes.len() - shown);
        }
    }
    if !p.queue.is_empty() {
        let q: Vec<String> = p.queue.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(out, "queue: {}", q.join(", "));
    }
    if p.placements.is_empty() && p.stops.is_empty() && p.blocked.is_empty() {
        out.push_str("no changes to placements\n");
    }
    out
}

enum Resource {
    Workloads(Kind),
    Nodes,
    Allocs,
    Servers,
    Audit,
}

fn resource(s: &str) -> anyhow::Result<Resource> {
    if let Some(k) = Kind::parse(s) {
        return Ok(Resource::Workloads(k));
    }
    match s {
        "node" | "nodes" | "no" => Ok(Resource::Nodes),
        "alloc" | "allocs" | "allocation" | "allocations" => Ok(Resource::Allocs),
        "server" | "servers" => Ok(Resource::Servers),
        "audit" => Ok(Resource::Audit),
        _ => anyhow::bail!(
            "unknown resource {s:?}: use nodes, services, jobs, daemons, volumes, secrets, configs, sources, namespaces, allocs, servers or audit"
        ),
    }
}

/// `get`.
pub async fn get(
    client: &Client,
    res: &str,
    name: Option<&str>,
    format: Format,
    workload: Option<&str>,
) -> anyhow::Result<i32> {
    match render_get(client, res, name, format, workload).await {
        Ok(s) => {
            print(&s);
            Ok(0)
        }
        Err(e) => report(e),
    }
}

fn split_target(target: &[String]) -> anyhow::Result<(String, String)> {
    match target {
        [one] => one
            .split_once('/')
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .ok_or_else(|| anyhow::anyhow!("expected KIND/NAME or KIND NAME, got {one:?}")),
        [k, n] => Ok((k.clone(), n.clone())),
        _ => anyhow::bail!("expected KIND/NAME or KIND NAME"),
    }
}

fn indented(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

fn describe_allocation(a: &Allocation) -> String {
    let now = now_ms();
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut out = format!(
        "Allocation:  {}\nWorkload:    {} (generation {}, index {})\nNode:        {}\n\
         State:       {} (desired {:?}, changed {} ago)\nPid:         {}\nExit code:   {}\n\
         Restarts:    {}\nCommand:     {}\nResources:   cpu {}, memory {}\nReasons:\n",
        a.id,
        a.workload,
        a.generation,
        a.index,
        a.node,
        a.state,
        a.desired,
        age(a.updated_at, now),
        dash(a.pid.map(|p| p.to_string())),
        dash(a.exit_code.map(|c| c.to_string())),
        a.restarts,
        a.task.command.join(" "),
        a.task.resources.cpu_or_default(),
        a.task.resources.memory_or_default(),
    );
    for r in &a.reasons {
        out.push_str(&format!("  - {r}\n"));
    }
    if let Some(p) = &a.progress {
        out.push_str(&format!("Now:         {p}\n"));
    }
    if let Some(c) = &a.check {
        let probe = match c.probe(&a.task) {
            Some(motley_core::model::Probe::Http(port, path)) => format!("GET :{port}{path}"),
            Some(motley_core::model::Probe::Tcp(port)) => format!("tcp :{port}"),
            Some(motley_core::model::Probe::Exec(cmd)) => cmd.join(" "),
            None => "-".to_string(),
        };
        let health = a.health.map_or("-", |h| h.as_str());
        out.push_str(&format!(
            "Health:      {health} ({probe} every {}, timeout {}, healthy after {}, unhealthy after {})\n",
            c.interval, c.timeout, c.healthy_after, c.unhealthy_after
        ));
    }
    if let Some(i) = &a.task.image {
        out = out.replacen("\nCommand:", &format!("\nImage:       {i}\nCommand:"), 1);
    }
    out
}

async fn render_describe(client: &Client, kind: &str, name: &str) -> anyhow::Result<String> {
    let now = now_ms();
    Ok(match resource(kind)? {
        Resource::Workloads(Kind::Source) => {
            let v: motley_core::api::SourceView = client
                .get(&client.scoped_set(&format!("/v1/sources/{name}")))
                .await?;
            sources::describe_source(&v)
        }
        Resource::Workloads(k) => {
            let d: WorkloadDetail = client
                .get(&client.scoped(&format!("/v1/workloads/{k}/{name}")))
                .await?;
            let w = &d.view.workload;
            let s = &d.view.status;
            if let Spec::Volume(v) = &w.spec {
                let bound = match &w.binding {
                    Some(b) => format!(
                        "{} at {} ({}, {}), {} ago",
                        b.node,
                        b.mount,
                        b.media.as_str(),
                        b.disk,
                        age(b.bound_at, now)
                    ),
                    None => "not yet (on first use)".into(),
                };
                return Ok(format!(
                    "Name:        {}\nKind:        volume\nCreated:     {} ago\nClass:       {}\nSize:        {}\nBound:       {bound}\n",
                    v.name,
                    age(w.created_at, now),
                    v.class.as_str(),
                    v.size,
                ));
            }
            let mut out = format!(
                "Name:        {}\nKind:        {}\nGeneration:  {}\nCreated:     {} ago\n\
                 Status:      {} (desired {}, running {}, pending {}, complete {}, failed {})\nCommand:     {}\n",
                w.spec.name(),
                w.spec.kind(),
                w.generation,
                age(w.created_at, now),
                s.phase,
                s.desired,
                s.running,
                s.pending,
                s.complete,
                s.failed,
                w.spec.task().command.join(" "),
            );
            if let Some(req) = &w.spec.placement().require {
                out.push_str(&format!("Require:     {req}\n"));
            }
            if w.spec.priority() != 0 && w.spec.kind() != Kind::Daemon {
                out.push_str(&format!("Priority:    {}\n", w.spec.priority()));
            }
            if let Some(p) = d.view.queue_position {
                out.push_str(&format!("Queue:       position {p}\n"));
            }
            out.push_str(&periodic::describe(&d.view, now));
            if !w.spec.task().volumes.is_empty() {
                out.push_str(&format!(
                    "Volumes:     {}\n",
                    w.spec.task().volumes.join(", ")
                ));
            }
            if let Some(b) = &d.view.blocked {
                out.push_str(&format!(
                    "Waiting:     {} instance(s) cannot be placed: {}\n",
                    b.count, b.why.summary
                ));
                for (node, why) in &b.why.nodes {
                    out.push_str(&format!("  {node}: {why}\n"));
                }
            }
            if let Spec::Service(svc) = &w.spec {
                let cat: motley_core::catalog::Catalog = if svc.ports.is_empty() {
                    Default::default()
                } else {
                    client.get("/v1/catalog").await?
                };
                endpoints(&mut out, svc, &d.allocations, s.ready, s.desired, &cat);
            }
            energy(&mut out, &d);
            out.push_str("Allocations:\n");
            let (h, r) = alloc_rows(&d.allocations, true);
            indented(&mut out, &table(&h, &r));
            out
        }
        Resource::Nodes => {
            let n: NodeView = client.get(&format!("/v1/nodes/{name}")).await?;
            let mut out = format!(
                "Name:        {}\nState:       {} for {} ({})\nArch/OS:     {}/{}\nHostname:    {}\nCPUs:        {}\n\
                 Memory:      {}\nCapacity:    cpu {}, memory {}\nAllocated:   cpu {}, memory {} ({} allocations)\n\
                 Cordoned:    {}\nContainers:  {}\nLabels:\n",
                n.node.name,
                n.state,
                age(n.since, now),
                n.reason,
                n.node.facts.arch,
                n.node.facts.os,
                n.node.facts.hostname,
                n.node.facts.cpus,
                mem(n.node.facts.memory),
                cpu(n.node.capacity.cpu.0),
                mem(n.node.capacity.memory.0),
                cpu(n.used_cpu),
                mem(n.used_memory),
                n.allocations,
                n.node.cordoned,
                match &n.node.facts.containerd {
                    Some(v) => format!("containerd {v}"),
                    None => "no (containerd does not answer: no image tasks here)".into(),
                },
            );
            for (k, v) in &n.node.labels {
                let by = if n.node.operator_labels.contains_key(k) {
                    "  (operator)"
                } else {
                    ""
                };
                out.push_str(&format!("  {k}={v}{by}\n"));
            }
            describe_hardware(&mut out, &n, now);
            let allocs: Vec<Allocation> = client.get(&format!("/v1/allocs?node={name}")).await?;
            out.push_str("Allocations:\n");
            let (h, r) = alloc_rows(&allocs, false);
            indented(&mut out, &table(&h, &r));
            out
        }
        Resource::Allocs => describe_allocation(
            &client
                .get(&client.scoped(&format!("/v1/allocs/{name}")))
                .await?,
        ),
        Resource::Servers => render_get(client, "servers", Some(name), Format::Table, None).await?,
        Resource::Audit => {
            anyhow::bail!("the audit log has no entries to describe: motley get audit")
        }
    })
}

/// `describe`.
pub async fn describe(client: &Client, target: &[String]) -> anyhow::Result<i32> {
    let (kind, name) = split_target(target)?;
    match render_describe(client, &kind, &name).await {
        Ok(mut s) => {
            // Its recent events (a workload's include its allocations').
            let object = match resource(&kind) {
                Ok(Resource::Workloads(k)) => Some(format!("{k}/{name}")),
                Ok(Resource::Nodes) => Some(format!("node/{name}")),
                Ok(Resource::Allocs) => Some(format!("alloc/{name}")),
                _ => None,
            };
            if let Some(o) = object {
                s.push_str(&events::recent(client, &o).await);
            }
            print(&s);
            Ok(0)
        }
        Err(e) => report(e),
    }
}

/// `delete`.
pub async fn delete(client: &Client, target: &[String], paths: &[PathBuf]) -> anyhow::Result<i32> {
    let res: anyhow::Result<ObjectResults> = if !paths.is_empty() {
        anyhow::ensure!(target.is_empty(), "give either KIND/NAME or -f, not both");
        let files = files::read_all(paths)?;
        client
            .post(
                &client.scoped_set("/v1/delete"),
                &ManifestSet {
                    files,
                    dry_run: false,
                    inputs: Vec::new(),
                },
            )
            .await
    } else {
        let (k, n) = split_target(target)?;
        let kind = Kind::parse(&k)
            .ok_or_else(|| anyhow::anyhow!("cannot delete {k:?}: use service, job or daemon"))?;
        client
            .delete(&client.scoped(&format!("/v1/workloads/{kind}/{n}")))
            .await
    };
    match res {
        Ok(r) => {
            let mut missing = false;
            for o in r.results {
                println!("{} {}", o.target(), o.action);
                missing |= o.action == "not found";
            }
            Ok(if missing { 1 } else { 0 })
        }
        Err(e) => report(e),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    if !out.is_empty() && text.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `logs`.
pub async fn logs(
    client: &Client,
    alloc: &str,
    follow: bool,
    tail: Option<usize>,
) -> anyhow::Result<i32> {
    let mut path = client.scoped(&format!("/v1/allocs/{alloc}/logs?follow={follow}"));
    if let (Some(n), true) = (tail, follow) {
        // Ask for a generous byte range; the lines are cut here.
        path.push_str(&format!("&tail={}", (n as u64 + 1) * 512));
    }
    let resp = client.request(Method::GET, &path, None).await?;
    if !resp.status().is_success() {
        let err = crate::client::decode::<serde_json::Value>(resp).await.err();
        return report(err.unwrap_or_else(|| anyhow::anyhow!("unexpected answer")));
    }
    if !follow {
        let text = resp.text().await.context("reading the log")?;
        print(&match tail {
            Some(n) => last_lines(&text, n),
            None => text,
        });
        return Ok(0);
    }
    let mut stream = resp.bytes_stream();
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("reading the log")?;
        let text = String::from_utf8_lossy(&chunk).into_owned();
        match (first, tail) {
            (true, Some(n)) => print(&last_lines(&text, n)),
            _ => print(&text),
        }
        first = false;
    }
    Ok(0)
}

/// `cordon` / `uncordon`.
pub async fn node_action(client: &Client, node: &str, action: &str) -> anyhow::Result<i32> {
    let res: anyhow::Result<NodeView> = client
        .post(
            &format!("/v1/nodes/{node}/{action}"),
            &serde_json::json!({}),
        )
        .await;
    match res {
        Ok(_) => {
            println!("node/{node} {action}ed");
            Ok(0)
        }
        Err(e) => report(e),
    }
}

/// `restart ALLOC`: asks the allocation to stop; its replacement is the controller's.
pub async fn restart(client: &Client, alloc: &str) -> anyhow::Result<i32> {
    let path = client.scoped(&format!("/v1/allocs/{alloc}/restart"));
    let res: anyhow::Result<motley_core::model::Allocation> =
        client.post(&path, &serde_json::json!({})).await;
    match res {
        Ok(a) => {
            println!("alloc/{} of {} restarting", a.id, a.workload);
            Ok(0)
        }
        Err(e) => report(e),
    }
}

/// `label NODE KEY=VALUE KEY-`: the operator's labels of a node.
pub async fn label(client: &Client, node: &str, labels: &[String]) -> anyhow::Result<i32> {
    let mut set = std::collections::BTreeMap::new();
    let mut remove = Vec::new();
    for l in labels {
        if let Some((k, v)) = l.split_once('=') {
            set.insert(k.to_string(), v.to_string());
        } else if let Some(k) = l.strip_suffix('-') {
            remove.push(k.to_string());
        } else {
            eprintln!("error: {l:?}: use KEY=VALUE to set a label or KEY- to remove one");
            return Ok(2);
        }
    }
    let res: anyhow::Result<NodeView> = client
        .post(
            &format!("/v1/nodes/{node}/labels"),
            &serde_json::json!({"set": set, "remove": remove}),
        )
        .await;
    match res {
        Ok(_) => {
            println!("node/{node} labeled");
            Ok(0)
        }
        Err(e) => report(e),
    }
}

/// `drain`: cordon, then watch the node empty (services move one replica at a time).
pub async fn drain(client: &Client, node: &str, timeout: &str) -> anyhow::Result<i32> {
    let limit = motley_core::quantity::Duration::parse(timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let res: anyhow::Result<NodeView> = client
        .post(&format!("/v1/nodes/{node}/drain"), &serde_json::json!({}))
        .await;
    if let Err(e) = res {
        return report(e);
    }
    println!("node/{node} cordoned; draining");
    let started = std::time::Instant::now();
    let mut last: Option<Vec<String>> = None;
    loop {
        let allocs: Vec<Allocation> = match client.get(&format!("/v1/allocs?node={node}")).await {
            Ok(a) => a,
            Err(e) => return report(e),
        };
        let mut left: Vec<String> = allocs
            .iter()
            .filter(|a| a.is_live() && a.workload.kind != Kind::Daemon)
            .map(|a| format!("{} ({}, {})", a.id, a.workload, a.state))
            .collect();
        left.sort();
        if last.as_ref() != Some(&left) {
            if left.is_empty() {
                println!(
                    "node/{node} drained in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(0);
            }
            println!("{} allocation(s) left: {}", left.len(), left.join(", "));
            last = Some(left);
        }
        if started.elapsed().as_millis() as u64 > limit.as_millis() {
            eprintln!("error: node/{node} not drained within {timeout}");
            return Ok(1);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `version`.
pub async fn version(config: Option<&Path>) -> anyhow::Result<i32> {
    println!("client: motley {}", env!("CARGO_PKG_VERSION"));
    match Client::load(config) {
        Ok(c) => match c.get::<VersionInfo>("/v1/version").await {
            Ok(v) => println!(
                "server: motley {} (protocol {}, datastore {})",
                v.version, v.protocol, v.datastore
            ),
            Err(e) => {
                eprintln!("server: unreachable: {e:#}");
                return Ok(1);
            }
        },
        Err(e) => println!("server: not configured ({e})"),
    }
    Ok(0)
}
