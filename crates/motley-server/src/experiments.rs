//! Carrying an experiment out (issue 24): the IO around
//! [`motley_core::experiment_run::Runner`]. Four times a second it feeds the runner the
//! time, the cluster's new events, the probes' results, the guard's count and what the
//! agents answered; it sends the runner's orders to the agents as
//! [`ServerMsg::Fault`]/[`ServerMsg::Undo`]; at the end it stores the report under
//! `/motley/experiments/NAME`. A layer above `state` and `events`, below `api`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use motley_core::chaos::AgentFault;
use motley_core::events::{EventKind, Filter, New};
use motley_core::experiment::{Experiment, Fault, service_ref};
use motley_core::experiment_run::{Order, Report, Runner, kill_target};
use motley_core::model::{Kind, WorkloadRef};
use motley_core::proto::ServerMsg;
use motley_store::Txn;
use tokio::task::JoinSet;

use crate::state::{Shared, now_ms};

/// How often the run looks (and the guard checks).
const TICK: Duration = Duration::from_millis(250);
/// How long an HTTP probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an agent has to answer a fault order.
const ANSWER_WITHIN_MS: u64 = 10_000;

/// The store key of an experiment's report.
pub fn key(name: &str) -> String {
    format!("{}{name}", crate::keys::EXPERIMENTS)
}

/// Every stored report.
pub async fn stored(s: &Shared) -> Result<Vec<Report>, motley_store::StoreError> {
    let range = s.store.range(crate::keys::EXPERIMENTS).await?;
    Ok(range
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Report>(&kv.value).ok())
        .collect())
}

/// A service's replicas that run, pass their check and are on a ready node: the
/// status's `ready` (`reconcile::status`) of its allocations on ready nodes.
pub fn ready_of(s: &Shared, service: &str) -> u32 {
    let r = service_ref(service);
    let ready_nodes = s.ready_nodes();
    let cache = s.cache();
    let Some(w) = cache.workloads.get(&r) else {
        return 0;
    };
    let on_ready: Vec<&motley_core::model::Allocation> = cache
        .allocs
        .values()
        .filter(|a| a.workload == r && ready_nodes.contains(&a.node))
        .collect();
    motley_core::reconcile::status(w, &on_ready, 0).ready
}

/// Where an HTTP probe goes: a `*.motley` name is the service's healthy endpoint as
/// the catalog has it (the server has no node proxy or DNS of its own), with the name
/// kept as the `Host`; any other URL as given.
fn reach(s: &Shared, url: &str) -> Result<(String, Option<String>), String> {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return Ok((url.to_string(), None));
    };
    let Some(host) = u.host_str().map(str::to_string) else {
        return Ok((url.to_string(), None));
    };
    let zone = format!(".{}", motley_core::catalog::ZONE);
    if !host.trim_end_matches('.').ends_with(&zone) {
        return Ok((url.to_string(), None));
    }
    let port = u.port_or_known_default().unwrap_or(80);
    let addr = s
        .catalog
        .current()
        .reach(&host, port)
        .ok_or_else(|| format!("{host}:{port} has no healthy endpoint"))?;
    let _ = u.set_ip_host(addr.ip());
    let _ = u.set_port(Some(addr.port()));
    Ok((u.to_string(), Some(host)))
}

/// Starts a run of `exp` in the background; refused with the name of one under way.
pub fn start(s: Arc<Shared>, exp: Experiment, who: &str) -> Result<(), String> {
    let runner = Runner::new(exp, now_ms());
    s.lab.begin(runner.report(&BTreeMap::new()))?;
    let name = runner.experiment().name.clone();
    s.events.push(New::about(
        EventKind::Experiment,
        format!("experiment/{name}"),
        format!("started by {who}"),
    ));
    motley_rt::spawn(run(s, runner));
    Ok(())
}

/// Orders sent and not yet answered: fault index → (node, fault id, when sent).
type Waiting = Vec<(usize, String, String, u64)>;

async fn run(s: Arc<Shared>, mut runner: Runner) {
    let name = runner.experiment().name.clone();
    let mut seen = s
        .events
        .query(&Filter::default(), 1)
        .last()
        .map_or(0, |e| e.seq);
    let http = motley_containerd::registry_client().ok();
    let mut probes: JoinSet<(usize, u64, bool, String)> = JoinSet::new();
    let mut waiting: Waiting = Vec::new();
    let mut slots: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        let now = now_ms();
        let mut orders = Vec::new();
        // What the cluster said since the last look.
        let f = Filter {
            after: seen,
            ..Filter::default()
        };
        let events = s.events.query(&f, crate::events::CAP);
        {
            let cache = s.cache();
            for e in &events {
                if let Some(a) = e.alloc.as_ref().and_then(|id| cache.allocs.get(id))
                    && a.workload.kind == Kind::Job
                {
                    slots.insert(a.id.clone(), a.index);
                }
            }
        }
        for e in events {
            seen = e.seq;
            runner.event(e);
        }
        // What the agents answered.
        let answers = s.lab.take_answers();
        for ((node, id), error) in answers {
            let Some(pos) = waiting.iter().position(|w| w.1 == node && w.2 == id) else {
                continue;
            };
            let (fault, ..) = waiting.remove(pos);
            if let Some(e) = error {
                orders.extend(runner.refused(now, fault, &format!("{node}: {e}")));
            }
        }
        if let Some((fault, node, ..)) = waiting
            .iter()
            .find(|w| now.saturating_sub(w.3) > ANSWER_WITHIN_MS)
            .cloned()
        {
            // A silent node (powered off by this very run, say) may never answer: only
            // a fault whose node stays connected and mute is a failure.
            waiting.retain(|w| w.0 != fault);
            if s.hub.connected().contains(&node) {
                orders.extend(runner.refused(now, fault, &format!("{node} did not answer")));
            }
        }
        // Probes.
        while let Some(Ok((i, at, ok, detail))) = probes.try_join_next() {
            runner.probe(at, i, ok, detail);
        }
        for i in runner.probes_due(now) {
            let p = &runner.experiment().steady_state[i];
            if let (Some(svc), Some(want)) = (&p.service, p.ready_at_least) {
                let n = ready_of(&s, svc);
                runner.probe(now, i, n >= want, format!("{n} ready of at least {want}"));
            } else if let (Some(url), Some(client)) = (p.http.clone(), http.clone()) {
                let want = p.expect_status.unwrap_or(200);
                let target = reach(&s, &url);
                probes.spawn(async move {
                    let (url, host) = match target {
                        Ok(t) => t,
                        Err(why) => return (i, now, false, why),
                    };
                    let mut req = client.get(&url).timeout(PROBE_TIMEOUT);
                    if let Some(h) = host {
                        req = req.header("host", h);
                    }
                    let got = req.send().await;
                    match got {
                        Ok(r) => {
                            let st = r.status().as_u16();
                            (i, now, st == want, format!("{st}"))
                        }
                        Err(e) => (i, now, false, motley_net::error_chain(&e)),
                    }
                });
            }
        }
        // Services with an SLO: their error budget (the leader's uptime records).
        let budgets = {
            let cache = s.cache();
            s.uptime
                .all(now, |r| match cache.workloads.get(r).map(|w| &w.spec) {
                    Some(motley_core::model::Spec::Service(svc)) => {
                        svc.slo.map(|slo| slo.availability.fraction())
                    }
                    _ => None,
                })
        };
        for (r, v) in budgets {
            if let Some(left) = v.budget_remaining {
                runner.budget(&r.to_string(), left);
            }
        }
        // The guard, an abort asked for, a change of leader.
        if let Some(g) = &runner.experiment().guard {
            let n = ready_of(&s, &g.abort_if.ready_below.service);
            orders.extend(runner.guard(now, n));
        }
        if let Some(who) = s.lab.take_abort() {
            orders.extend(runner.abort(now, format!("aborted by {who}")));
        }
        if s.ha.leading().is_none() {
            orders.extend(runner.abort(now, "this server stopped leading".into()));
        }
        orders.extend(runner.tick(now));
        carry_out(&s, &mut runner, orders, &mut waiting);
        let report = runner.report(&slots);
        if report.phase.ended() {
            s.lab.update(report.clone());
            finish(&s, &report).await;
            tracing::info!("experiment {name}: {}", report.phase.as_str());
            return;
        }
        s.lab.update(report);
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = s.lab.wake.notified() => {}
        }
    }
}

/// Sends the runner's orders to the agents; a fault that cannot be ordered ends the run.
fn carry_out(s: &Shared, runner: &mut Runner, orders: Vec<Order>, waiting: &mut Waiting) {
    let mut queue = orders;
    while !queue.is_empty() {
        let now = now_ms();
        let mut more = Vec::new();
        for o in queue {
            let name = runner.experiment().name.clone();
            match o {
                Order::Start { fault, lasts_ms } => {
                    let f = runner.experiment().faults[fault].clone();
                    let id = format!("{name}/{fault}");
                    match orders_for(s, &f) {
                        Ok(targets) => {
                            for (node, af) in targets {
                                let msg = ServerMsg::Fault {
                                    id: id.clone(),
                                    fault: af,
                                    lasts_ms,
                                };
                                if s.hub.send_to(&node, msg) {
                                    waiting.push((fault, node, id.clone(), now));
                                } else {
                                    more.extend(runner.refused(
                                        now,
                                        fault,
                                        &format!("{node} is not connected to the leading server"),
                                    ));
                                }
                            }
                        }
                        Err(e) => more.extend(runner.refused(now, fault, &e)),
                    }
                }
                Order::Undo { fault } => {
                    let f = &runner.experiment().faults[fault];
                    let id = format!("{name}/{fault}");
                    // A node that does not hear it (powered off) undoes it at its deadline.
                    for node in f.nodes() {
                        let _ = s.hub.send_to(node, ServerMsg::Undo { id: id.clone() });
                    }
                }
            }
        }
        queue = more;
    }
}

/// The nodes a fault acts on and what each is told.
fn orders_for(s: &Shared, f: &Fault) -> Result<Vec<(String, AgentFault)>, String> {
    let addresses = s.hub.addresses();
    let addr_of = |n: &str| {
        addresses
            .get(n)
            .copied()
            .ok_or_else(|| format!("the address of {n} is not known (is it connected?)"))
    };
    if let Some(k) = &f.kill {
        let r = WorkloadRef::parse(&k.allocation_of)
            .ok_or_else(|| format!("{}: not KIND/NAME", k.allocation_of))?;
        let cache = s.cache();
        let a = kill_target(cache.allocs.values(), &r)
            .ok_or_else(|| format!("{r} has no running allocation"))?;
        return Ok(vec![(
            a.node.clone(),
            AgentFault::Kill {
                alloc: a.id.clone(),
            },
        )]);
    }
    if let Some(p) = &f.partition {
        let mut peers = Vec::new();
        for n in p.from.iter().filter(|n| n.as_str() != "server") {
            peers.push(addr_of(n)?);
        }
        let server = p.from.iter().any(|n| n == "server");
        return Ok(p
            .nodes
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    AgentFault::Partition {
                        peers: peers.clone(),
                        server,
                    },
                )
            })
            .collect());
    }
    if let Some(l) = &f.packet_loss {
        let peers = addresses
            .iter()
            .filter(|(n, _)| **n != l.node)
            .map(|(_, a)| *a)
            .collect();
        return Ok(vec![(
            l.node.clone(),
            AgentFault::PacketLoss {
                percent: l.percent,
                peers,
            },
        )]);
    }
    let one = |node: &str, af: AgentFault| Ok(vec![(node.to_string(), af)]);
    match (&f.power_off, &f.latency, &f.cpu_stress, &f.memory_stress) {
        (Some(x), ..) => one(&x.node, AgentFault::PowerOff),
        (_, Some(x), ..) => one(&x.node, AgentFault::Latency { ms: x.ms }),
        (_, _, Some(x), _) => one(&x.node, AgentFault::CpuStress { cores: x.cores }),
        (_, _, _, Some(x)) => one(&x.node, AgentFault::MemoryStress { bytes: x.bytes.0 }),
        _ => Err("a fault with no action".into()),
    }
}

/// Stores the report and says how the run ended.
async fn finish(s: &Shared, report: &Report) {
    let text = match serde_json::to_vec(report) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("experiment {}: its report: {e}", report.name);
            return;
        }
    };
    if let Err(e) = s.store.txn(Txn::new().put(key(&report.name), text)).await {
        tracing::error!("experiment {}: storing its report: {e}", report.name);
    }
    let steady = report.verdict.as_ref().is_some_and(|v| v.steady);
    s.events.push(New::about(
        EventKind::Experiment,
        format!("experiment/{}", report.name),
        match &report.why {
            Some(why) => format!("aborted: {why}"),
            None => format!(
                "finished: the steady state {}",
                if steady { "held" } else { "did not hold" }
            ),
        },
    ));
}
