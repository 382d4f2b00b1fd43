//! The core's controllers driven with the minimal scheduler, under virtual time.

use std::collections::{BTreeMap, BTreeSet};

use motley_core::hw::TaintEffect;
use motley_core::model::{AllocState, Allocation, Desired, Kind, Node, WorkloadRef};
use motley_core::reconcile::{Input, reconcile, status};
use motley_scheduler::{Config, Scheduler};
use proptest::prelude::*;

mod world;
use world::*;

const SVC: &str = "kind: Service\nname: web\nreplicas: 3\ntask:\n  command: [srv]\n  resources: { cpu: 500m, memory: 256Mi }\n";

#[test]
fn service_spreads_and_keeps_replicas() {
    let mut w = World::new(&[
        node("a", 2000, 1024),
        node("b", 2000, 1024),
        node("c", 2000, 1024),
    ]);
    w.apply(SVC);
    let plan = w.step();
    assert_eq!(plan.create.len(), 3);
    let nodes: BTreeSet<_> = plan.create.iter().map(|a| a.node.clone()).collect();
    assert_eq!(nodes.len(), 3, "spread over three nodes");
    // The replicas a pass creates hold one copy of their task.
    assert!(
        plan.create
            .windows(2)
            .all(|p| std::sync::Arc::ptr_eq(&p[0].task, &p[1].task)),
        "one task shared by the new replicas"
    );
    assert_eq!(plan.create[0].task.command, ["srv"]);
    w.agents();
    assert!(w.step().is_empty(), "converged");
    // A replica fails: replaced after its backoff, not before.
    let id = w.live("web")[0].id.clone();
    if let Some(a) = w.allocs.get_mut(&id) {
        a.state = AllocState::Failed;
        a.updated_at = w.now;
    }
    let plan = w.step();
    assert!(plan.create.is_empty());
    let wake = plan.wake_at.expect("a wake-up for the backoff");
    w.now = wake;
    assert_eq!(w.step().create.len(), 1);
    w.agents();
    assert_eq!(w.live("web").len(), 3);
    // Scale down.
    w.apply(&SVC.replace("replicas: 3", "replicas: 1"));
    assert_eq!(w.step().stop.len(), 2);
    w.agents();
    assert_eq!(w.live("web").len(), 1);
}

#[test]
fn a_service_that_depends_on_another_waits_for_a_ready_replica_of_it() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    w.apply("kind: Service\nname: app\nreplicas: 2\ndepends_on: [db]\ntask:\n  command: [app]\n");
    // No db at all: app waits, and says for what.
    let plan = w.step();
    assert!(plan.create.is_empty(), "{:?}", plan.create);
    let b = plan.blocked.values().next().expect("blocked");
    assert_eq!(b.count, 2);
    assert!(
        b.why.summary.contains("waiting for service db"),
        "{}",
        b.why.summary
    );
    // db placed but not yet ready: app still waits.
    w.apply("kind: Service\nname: db\ntask:\n  command: [db]\n");
    let plan = w.step();
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].workload.name, "db");
    assert!(plan.blocked.keys().any(|r| r.name == "app"));
    // db ready: app's replicas are placed.
    w.agents();
    let plan = w.step();
    let app: Vec<_> = plan
        .create
        .iter()
        .filter(|a| a.workload.name == "app")
        .collect();
    assert_eq!(app.len(), 2);
    w.agents();
    // db lost later: the running app replicas are not stopped.
    let db = w.live("db")[0].id.clone();
    if let Some(a) = w.allocs.get_mut(&db) {
        a.state = AllocState::Failed;
        a.ready_at = None;
    }
    let plan = w.step();
    assert!(plan.stop.is_empty(), "{:?}", plan.stop);
    assert_eq!(w.live("app").len(), 2);
}

#[test]
fn unplaceable_demand_is_explained() {
    let mut w = World::new(&[node("a", 1000, 512), node("b", 1000, 128)]);
    w.ready.remove("a");
    w.apply(SVC);
    let plan = w.step();
    assert_eq!(plan.create.len(), 0);
    let b = plan.blocked.values().next().expect("blocked");
    assert_eq!(b.count, 3);
    assert_eq!(
        b.why.summary,
        "0/2 nodes: 1 insufficient memory, 1 not ready"
    );
}

#[test]
fn taints_keep_work_away_unless_tolerated() {
    let uv = "motley.io/undervoltage";
    let mut w = World::new(&[
        tainted(node("pi4", 4000, 1024), uv, TaintEffect::PreferNoSchedule),
        node("pi5", 500, 1024),
        node("x86", 500, 1024),
    ]);
    // Two replicas: the healthy nodes, though the tainted one is much freer.
    w.apply(&SVC.replace("replicas: 3", "replicas: 2"));
    let nodes: BTreeSet<_> = w.step().create.iter().map(|a| a.node.clone()).collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["pi5".to_string(), "x86".to_string()])
    );
    w.agents();
    // Prefer-no-schedule is a preference: when the others are full, a third replica
    // still runs there.
    w.apply(SVC);
    let plan = w.step();
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].node, "pi4");
    w.agents();

    // No-schedule: never there, and the refusal says why.
    let mut w = World::new(&[
        tainted(node("pi4", 4000, 1024), uv, TaintEffect::NoSchedule),
        tainted(
            node("hot", 4000, 1024),
            "motley.io/thermal",
            TaintEffect::Evict,
        ),
        node("x86", 1000, 1024),
    ]);
    w.apply(&SVC.replace("replicas: 3", "replicas: 4"));
    let plan = w.step();
    assert_eq!(plan.create.len(), 2, "only x86 takes work (2 × 500m)");
    assert!(plan.create.iter().all(|a| a.node == "x86"));
    let b = plan.blocked.values().next().expect("blocked");
    assert_eq!(
        b.why.summary,
        "0/3 nodes: 1 insufficient cpu, 1 tainted motley.io/thermal, 1 tainted motley.io/undervoltage"
    );
    // A toleration lifts it.
    w.apply(&format!(
        "{}placement:\n  tolerations: [{{key: {uv}}}, {{key: motley.io/thermal, effect: evict}}]\n",
        SVC.replace("replicas: 3", "replicas: 4")
    ));
    w.agents();
    let plan = w.step();
    assert_eq!(plan.create.len(), 2, "the rest goes to the tolerated nodes");
    assert!(plan.create.iter().all(|a| a.node != "x86"));
}

#[test]
fn evict_taints_move_running_work_but_not_daemons() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    w.apply(&SVC.replace("replicas: 3", "replicas: 2"));
    w.apply(
        "kind: Job\nname: batch\ncompletions: 2\nparallelism: 2\ntask:\n  command: [b]\n  resources: { cpu: 100m, memory: 64Mi }\n",
    );
    w.apply("kind: Daemon\nname: agent-helper\ntask:\n  command: [h]\n");
    w.step();
    w.agents();
    let on_a = |w: &World| -> Vec<String> {
        w.allocs
            .values()
            .filter(|a| a.node == "a" && a.is_live() && a.desired == Desired::Run)
            .map(|a| a.workload.name.clone())
            .collect()
    };
    assert!(on_a(&w).contains(&"web".to_string()));
    // Node a turns hot with an evict policy: services and jobs leave at once.
    w.nodes.insert(
        "a".into(),
        tainted(
            node("a", 4000, 4096),
            "motley.io/thermal",
            TaintEffect::Evict,
        ),
    );
    let plan = w.step();
    assert!(
        plan.stop
            .iter()
            .all(|(_, why)| why == "evicted: node a is tainted motley.io/thermal")
    );
    assert!(plan.create.iter().all(|a| a.node == "b"));
    w.agents();
    w.step();
    w.agents();
    assert_eq!(
        on_a(&w),
        ["agent-helper"],
        "the daemon tolerates condition taints"
    );
    assert_eq!(w.live("web").len(), 2);
    // The condition clears: nothing more to do, no churn.
    w.nodes.insert("a".into(), node("a", 4000, 4096));
    assert!(w.step().stop.is_empty());
}

#[test]
fn job_respects_parallelism_and_completes() {
    let mut w = World::new(&[node("a", 8000, 8192)]);
    w.apply("kind: Job\nname: j\ncompletions: 10\nparallelism: 3\ntask:\n  command: [x]\n");
    let mut max_live = 0;
    for _ in 0..20 {
        w.step();
        let live = w.live("j").len();
        max_live = max_live.max(live);
        // Every running instance completes.
        for a in w.allocs.values_mut() {
            if a.state == AllocState::Pending {
                a.state = AllocState::Complete;
            }
        }
    }
    assert_eq!(max_live, 3);
    let wl = w.workloads.values().next().expect("job");
    let allocs: Vec<&Allocation> = w.allocs.values().collect();
    let st = status(wl, &allocs, 1);
    assert_eq!((st.complete, st.phase.as_str()), (10, "complete"));
    let mut idx: Vec<u32> = w.allocs.values().map(|a| a.index).collect();
    idx.sort();
    assert_eq!(idx, (0..10).collect::<Vec<_>>());
}

#[test]
fn daemon_follows_nodes_and_selectors() {
    let mut w = World::new(&[node("pi1", 4000, 1024), node("x86", 4000, 1024)]);
    w.apply("kind: Daemon\nname: d\nplacement:\n  require: arch=arm64\ntask:\n  command: [x]\n");
    let plan = w.step();
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].node, "pi1");
    w.agents();
    w.nodes.insert("pi2".into(), node("pi2", 4000, 1024));
    w.ready.insert("pi2".into());
    let plan = w.step();
    assert_eq!(
        plan.create
            .iter()
            .map(|a| a.node.as_str())
            .collect::<Vec<_>>(),
        vec!["pi2"]
    );
}

#[test]
fn work_of_a_down_node_is_lost_and_replaced_elsewhere_at_once() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    w.apply(SVC);
    w.step();
    w.agents();
    let on_a: Vec<String> = w
        .live("web")
        .iter()
        .filter(|x| x.node == "a")
        .map(|x| x.id.clone())
        .collect();
    assert!(!on_a.is_empty());
    w.ready.remove("a");
    w.down.insert("a".into(), w.now);
    let plan = w.step();
    let lost: Vec<String> = plan.lost.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(lost, on_a);
    assert_eq!(plan.create.len(), on_a.len(), "replaced in the same pass");
    assert!(plan.create.iter().all(|a| a.node == "b"));
    w.agents();
    assert_eq!(w.live("web").len(), 3);
    assert!(w.step().is_empty(), "converged");
}

#[test]
fn fenced_work_is_replaced_only_after_the_lease_and_margin() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    w.apply(
        "kind: Service\nname: db\non_node_loss: fence\ntask:\n  command: [db]\n  stop_grace: 1s\n",
    );
    w.step();
    w.agents();
    let first = w.live("db")[0].clone();
    let other = if first.node == "a" { "b" } else { "a" };
    w.ready.remove(&first.node);
    w.down.insert(first.node.clone(), w.now);
    let plan = w.step();
    assert!(
        plan.lost.is_empty() && plan.create.is_empty(),
        "not before lease + margin + grace"
    );
    assert_eq!(plan.wake_at, Some(w.now + 7_000 + 1_000));
    w.now += 7_999;
    assert!(w.step().create.is_empty());
    w.now += 1;
    let plan = w.step();
    assert_eq!(plan.lost.len(), 1);
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].node, other);
}

/// Found by the simulator (`motley-sim`): a fenced replica asked to stop on a node that
/// cannot be reached, scaled away and back, got a second copy at once.
#[test]
fn a_fenced_slot_gets_no_new_copy_while_its_old_one_is_stopping() {
    let fenced =
        "kind: Service\nname: db\nreplicas: 2\non_node_loss: fence\ntask:\n  command: [db]\n";
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    w.apply(fenced);
    w.step();
    w.agents();
    assert_eq!(w.live("db").len(), 2);
    // Scale to 1: slot 1 is asked to stop; its agent has not answered yet.
    w.apply(&fenced.replace("replicas: 2", "replicas: 1"));
    assert_eq!(w.step().stop.len(), 1);
    // Back to 2 before the stop is seen: slot 1 waits for its old copy.
    w.apply(fenced);
    let plan = w.step();
    assert!(
        plan.create.is_empty(),
        "a second copy of slot 1: {:?}",
        plan.create
    );
    // The stop is reported: now slot 1 gets its new copy.
    w.agents();
    let plan = w.step();
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].index, 1);
    // A replaced service (availability first) does not wait.
    let replaced = fenced
        .replace("name: db", "name: web")
        .replace("fence", "replace");
    w.apply(&replaced);
    w.step();
    w.agents();
    w.apply(&replaced.replace("replicas: 2", "replicas: 1"));
    w.step();
    w.apply(&replaced);
    assert_eq!(w.step().create.len(), 1, "replace places at once");
}

/// `motley restart` (and the dashboard's restart): the allocation is asked to stop and
/// the controller places its replacement: at once for a replaced service and a job
/// instance, only once the old copy is seen stopped for a fenced one.
#[test]
fn a_restarted_allocation_is_replaced_and_a_fenced_one_only_after_it_stopped() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    w.apply(SVC);
    w.apply("kind: Service\nname: db\non_node_loss: fence\ntask:\n  command: [db]\n");
    w.apply("kind: Job\nname: batch\ncompletions: 1\ntask:\n  command: [sleep, '100']\n");
    w.step();
    w.agents();
    let restart = |w: &mut World, name: &str| {
        let id = w.live(name)[0].id.clone();
        let a = w.allocs.get(&id).cloned().expect("a live allocation");
        let r = motley_core::writes::restarted(&a, "token t (admin)").expect("restartable");
        w.allocs.insert(id.clone(), r);
        id
    };
    let web = restart(&mut w, "web");
    let db = restart(&mut w, "db");
    let batch = restart(&mut w, "batch");
    let plan = w.step();
    let created: Vec<&str> = plan
        .create
        .iter()
        .map(|a| a.workload.name.as_str())
        .collect();
    assert!(created.contains(&"web"), "{created:?}");
    assert!(created.contains(&"batch"), "{created:?}");
    assert!(
        !created.contains(&"db"),
        "a second copy of a fenced service: {created:?}"
    );
    w.agents();
    for id in [&web, &db, &batch] {
        assert_eq!(
            w.allocs.get(id.as_str()).map(|a| a.state),
            Some(AllocState::Stopped)
        );
    }
    let plan = w.step();
    assert_eq!(
        plan.create
            .iter()
            .map(|a| a.workload.name.as_str())
            .collect::<Vec<_>>(),
        ["db"]
    );
    w.agents();
    assert_eq!(w.live("web").len(), 3);
    assert_eq!(w.live("db").len(), 1);
    assert_eq!(w.live("batch").len(), 1);
}

/// A fenced replica on a draining node moves only once its stop is seen.
#[test]
fn a_fenced_replica_leaves_a_draining_node_before_its_replacement_starts() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    w.apply("kind: Service\nname: db\non_node_loss: fence\ntask:\n  command: [db]\n");
    w.step();
    w.agents();
    let first = w.live("db")[0].node.clone();
    if let Some(n) = w.nodes.get_mut(&first) {
        n.cordoned = true;
        n.draining = true;
    }
    let plan = w.step();
    assert_eq!(plan.stop.len(), 1);
    assert!(plan.create.is_empty(), "not while the old copy runs");
    w.agents();
    let plan = w.step();
    assert_eq!(plan.create.len(), 1);
    assert_ne!(plan.create[0].node, first);
}

#[test]
fn drain_moves_one_replica_at_a_time() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    w.apply(&SVC.replace("replicas: 3", "replicas: 4"));
    w.step();
    w.agents();
    assert_eq!(w.live("web").iter().filter(|x| x.node == "a").count(), 2);
    if let Some(n) = w.nodes.get_mut("a") {
        n.cordoned = true;
        n.draining = true;
    }
    let mut rounds = 0;
    while w.live("web").iter().any(|x| x.node == "a") {
        let plan = w.step();
        assert!(
            plan.stop.len() <= 1,
            "one replica at a time: {:?}",
            plan.stop
        );
        assert!(plan.create.iter().all(|x| x.node == "b"));
        // Before the agents act, at most one replica is not running.
        let running = w
            .allocs
            .values()
            .filter(|x| x.state == AllocState::Running && x.desired == Desired::Run)
            .count();
        assert!(running >= 3, "{running} running");
        w.agents();
        rounds += 1;
        assert!(rounds < 10);
    }
    assert_eq!(rounds, 2);
    assert_eq!(w.live("web").len(), 4);
}

/// Old and new serving replicas of `web` (running, wanted running).
fn serving(w: &World, generation: u64) -> usize {
    w.live("web")
        .iter()
        .filter(|a| a.generation == generation && a.state == AllocState::Running)
        .count()
}

#[test]
fn an_update_replaces_one_replica_at_a_time_once_each_new_one_is_healthy_long_enough() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    let v1 = format!("{SVC}update: {{ min_healthy: 5s }}\n");
    w.apply(&v1);
    w.step();
    w.agents();
    w.apply(&v1.replace("[srv]", "[srv, --v2]"));
    for round in 0..3u64 {
        let plan = w.step();
        assert_eq!(
            plan.stop.len(),
            1,
            "round {round}: one at a time: {:?}",
            plan.stop
        );
        assert_eq!(plan.create.len(), 1, "round {round}");
        // The other replicas serve while one is replaced.
        assert_eq!(serving(&w, 1) + serving(&w, 2), 2, "round {round}");
        w.agents();
        // Running, healthy, but not yet for min_healthy: nothing more is replaced.
        let plan = w.step();
        assert!(plan.stop.is_empty(), "round {round}: waits for min_healthy");
        if round < 2 {
            let wake = plan.wake_at.expect("a wake-up when min_healthy has passed");
            assert_eq!(wake, w.now + 5_000);
            w.now = wake;
        }
    }
    assert!(w.step().is_empty(), "converged");
    assert_eq!(serving(&w, 2), 3);
}

#[test]
fn an_update_whose_new_replicas_never_get_healthy_or_placed_stops_with_the_old_ones_serving() {
    // Never healthy: it has a check that never passes.
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    let v1 = format!(
        "{SVC}ports: [{{ name: http }}]\ncheck: {{ tcp: {{ port: http }} }}\nupdate: {{ deadline: 1m }}\n"
    );
    w.apply(&v1);
    w.step();
    w.agents();
    for a in w.allocs.values_mut() {
        a.health = Some(motley_core::health::Health::Healthy);
        a.ready_at = Some(0);
    }
    w.apply(&v1.replace("[srv]", "[srv, --broken]"));
    assert_eq!(w.step().stop.len(), 1);
    w.agents();
    for _ in 0..5 {
        let plan = w.step();
        assert!(plan.stop.is_empty(), "the new replica is not healthy");
        w.now += 30_000;
        w.agents();
    }
    assert_eq!(
        serving(&w, 1),
        2,
        "the old replicas keep serving past the deadline"
    );
    assert_eq!(serving(&w, 2), 1, "the new one runs, out of rotation");
    // Never placed: a new version larger than any node.
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    w.apply(SVC);
    w.step();
    w.agents();
    w.apply(&SVC.replace("cpu: 500m", "cpu: 3900m"));
    let plan = w.step();
    assert_eq!(plan.stop.len(), 1);
    w.agents();
    for _ in 0..3 {
        let plan = w.step();
        assert!(plan.stop.is_empty(), "nothing more stops: {:?}", plan.stop);
        w.agents();
    }
    assert!(serving(&w, 1) >= 2);
}

#[test]
fn canaries_replace_so_many_replicas_and_the_rest_waits_for_promotion() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    let v1 = format!("{SVC}update: {{ canary: 1, max_parallel: 3 }}\n");
    w.apply(&v1);
    w.step();
    w.agents();
    w.apply(&v1.replace("[srv]", "[srv, --v2]"));
    assert_eq!(w.step().stop.len(), 1, "one canary");
    w.agents();
    for _ in 0..3 {
        assert!(w.step().stop.is_empty(), "the rest waits for promotion");
        w.agents();
    }
    let r = WorkloadRef::parse("service/web").expect("ref");
    let status = motley_core::rollout::status(&w.workloads[&r], w.allocs.values(), w.now)
        .expect("a service's status");
    assert_eq!(
        status.state,
        motley_core::rollout::State::WaitingForPromotion
    );
    let promoted = motley_core::rollout::promote(&w.workloads[&r])
        .expect("promotable")
        .expect("changed");
    w.workloads.insert(r.clone(), promoted);
    assert_eq!(
        w.step().stop.len(),
        2,
        "promoted: the other two at once (max_parallel 3)"
    );
    w.agents();
    let status =
        motley_core::rollout::status(&w.workloads[&r], w.allocs.values(), w.now).expect("status");
    assert_eq!(
        status.state,
        motley_core::rollout::State::Complete,
        "{status:?}"
    );
    assert_eq!(serving(&w, 2), 3);
}

#[test]
fn a_failed_update_with_auto_revert_goes_back_to_the_last_good_spec() {
    let mut w = World::new(&[node("a", 4000, 4096), node("b", 4000, 4096)]);
    let v1 = format!(
        "{SVC}ports: [{{ name: http }}]\ncheck: {{ tcp: {{ port: http }} }}\nupdate: {{ deadline: 1m, auto_revert: true }}\n"
    );
    // Replicas report healthy as they start, except those running `--broken`.
    let heal = |w: &mut World| {
        for a in w.allocs.values_mut() {
            if a.state == AllocState::Running && !a.task.command.contains(&"--broken".into()) {
                a.health = Some(motley_core::health::Health::Healthy);
                a.ready_at.get_or_insert(w.now);
            }
        }
    };
    w.apply(&v1);
    w.step();
    w.agents();
    heal(&mut w);
    w.apply(&v1.replace("[srv]", "[srv, --broken]"));
    assert_eq!(w.step().stop.len(), 1);
    w.agents();
    heal(&mut w);
    let r = WorkloadRef::parse("service/web").expect("ref");
    let mut rounds = 0;
    while w.workloads[&r].generation == 2 {
        let plan = w.step();
        assert!(plan.stop.is_empty() || !plan.revert.is_empty());
        w.agents();
        heal(&mut w);
        w.now += 10_000;
        rounds += 1;
        assert!(rounds < 20, "no revert");
    }
    let now = &w.workloads[&r];
    assert_eq!(now.generation, 3);
    assert_eq!(now.spec.task().command, vec!["srv".to_string()]);
    assert_eq!(now.rollout.as_ref().and_then(|x| x.reverted_from), Some(2));
    assert!(now.history.iter().any(|h| h.generation == 2 && h.failed));
    // Generation 3 rolls out like any update: only the broken replica is replaced
    // (the old ones run generation 3's spec already).
    for _ in 0..10 {
        w.step();
        w.agents();
        heal(&mut w);
        w.now += 1_000;
    }
    assert_eq!(serving(&w, 1) + serving(&w, 3), 3, "{:?}", w.live("web"));
    assert_eq!(serving(&w, 1), 2, "the good old replicas were left alone");
    assert!(
        w.live("web")
            .iter()
            .all(|a| !a.task.command.contains(&"--broken".into()))
    );
}

#[test]
fn deleted_workload_is_stopped_then_forgotten() {
    let mut w = World::new(&[node("a", 4000, 4096)]);
    w.apply(SVC);
    w.step();
    w.agents();
    w.workloads.clear();
    assert_eq!(w.step().stop.len(), 3);
    w.agents();
    assert_eq!(w.step().delete.len(), 3);
    assert!(w.allocs.is_empty());
}

proptest! {
    /// Whatever the nodes and replicas, no node is ever over capacity and every
    /// replica that fits is placed.
    #[test]
    fn never_over_capacity(caps in proptest::collection::vec((500u64..4000, 128u64..2048), 1..6), replicas in 0u32..20) {
        let nodes: Vec<Node> = caps.iter().enumerate().map(|(i, (c, m))| node(&format!("n{i}"), *c, *m)).collect();
        let mut w = World::new(&nodes);
        w.apply(&SVC.replace("replicas: 3", &format!("replicas: {replicas}")));
        let plan = w.step();
        for n in w.nodes.values() {
            let (cpu, mem) = w.allocs.values().filter(|a| a.node == n.name).fold((0, 0), |(c, m), a| {
                (c + a.task.resources.cpu_or_default().0, m + a.task.resources.memory_or_default().0)
            });
            prop_assert!(cpu <= n.capacity.cpu.0 && mem <= n.capacity.memory.0);
        }
        let fits: u64 = caps.iter().map(|(c, m)| (c / 500).min(m / 256)).sum();
        prop_assert_eq!(plan.create.len() as u64, fits.min(replicas as u64));
    }
}

fn job_yaml(name: &str, completions: u32, parallelism: u32, cpu: u32) -> String {
    format!(
        "kind: Job\nname: {name}\ncompletions: {completions}\nparallelism: {parallelism}\nretries: 0\n\
         ttl_after_finished: 10s\ntask:\n  command: [x]\n  resources: {{ cpu: {cpu}m, memory: 64Mi }}\n"
    )
}

fn end_live(w: &mut World, name: &str, state: AllocState) -> usize {
    let now = w.now;
    let mut n = 0;
    for a in w.allocs.values_mut() {
        if a.workload.name == name && a.is_live() {
            a.state = state;
            a.updated_at = now;
            n += 1;
        }
    }
    n
}

/// Every `step` plans over the workloads not settled and checks the plan against a full
/// pass: through jobs that finish (and are skipped after), a job that waits for the room
/// another's end frees, a failure, a TTL that runs out and a deleted workload.
#[test]
fn a_pass_over_what_is_not_settled_plans_what_a_full_pass_plans() {
    let mut w = World::new(&[node("a", 1000, 1024)]);
    w.apply(&job_yaml("first", 2, 2, 500));
    w.apply(&job_yaml("waits", 1, 1, 1000));
    let plan = w.step();
    assert_eq!(plan.create.len(), 2, "first's two instances fill the node");
    assert_eq!(
        plan.queue,
        vec![WorkloadRef::new(motley_core::model::Kind::Job, "waits")]
    );
    w.agents();
    assert!(w.step().create.is_empty());
    // first completes: waits gets its room, and first is settled.
    assert_eq!(end_live(&mut w, "first", AllocState::Complete), 2);
    let plan = w.step();
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].workload.name, "waits");
    assert!(
        plan.settled
            .iter()
            .any(|(r, wake)| r.name == "first" && *wake == Some(w.now + 10_000)),
        "first settled until its TTL: {:?}",
        plan.settled
    );
    assert_eq!(w.active.unsettled(), 1, "only waits is visited now");
    w.agents();
    assert_eq!(end_live(&mut w, "waits", AllocState::Failed), 1);
    let failed_at = w.now;
    w.step();
    assert_eq!(w.active.unsettled(), 0, "both finished");
    // A new job is visited alone, and runs.
    w.apply(&job_yaml("third", 1, 1, 100));
    assert_eq!(w.step().create.len(), 1);
    // The TTLs run out: first and waits are visited again, and collected.
    w.now = failed_at + 10_000;
    let plan = w.step();
    let collected: BTreeSet<&str> = plan.collect.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(collected, BTreeSet::from(["first", "waits"]));
    for r in &plan.collect {
        w.workloads.remove(r);
    }
    // Their allocations are orphans now: deleted.
    assert_eq!(w.step().delete.len(), 3);
    // Gone with their allocations: settled too, and only third is visited.
    w.step();
    assert_eq!(w.active.unsettled(), 1);
    assert_eq!(w.settled, 4, "first, waits, and each again once gone");
}

#[derive(Debug, Clone)]
enum Op {
    Apply { job: u8, completions: u32, cpu: u32 },
    ApplyService { replicas: u32 },
    Agents,
    End { job: u8, fail: bool },
    Delete { job: u8 },
    Down(u8),
    Up(u8),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..5, 1u32..4, 100u32..1200).prop_map(|(job, completions, cpu)| Op::Apply {
            job,
            completions,
            cpu
        }),
        (0u32..4).prop_map(|replicas| Op::ApplyService { replicas }),
        Just(Op::Agents),
        Just(Op::Agents),
        (0u8..5, any::<bool>()).prop_map(|(job, fail)| Op::End { job, fail }),
        (0u8..5).prop_map(|job| Op::Delete { job }),
        (0u8..3).prop_map(Op::Down),
        (0u8..3).prop_map(Op::Up),
        (1u64..20_000).prop_map(Op::Wait),
    ]
}

proptest! {
    /// Whatever happens to jobs, a service and nodes, every pass over the workloads not
    /// settled plans what a full pass plans (`step` checks it and panics otherwise).
    #[test]
    fn passes_over_what_is_not_settled_agree_with_full_passes(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = World::new(&[node("n0", 1000, 1024), node("n1", 2000, 1024), node("n2", 500, 512)]);
        for op in ops {
            match op {
                Op::Apply { job, completions, cpu } => w.apply(&job_yaml(&format!("j{job}"), completions, 2, cpu)),
                Op::ApplyService { replicas } => w.apply(&SVC.replace("replicas: 3", &format!("replicas: {replicas}"))),
                Op::Agents => w.agents(),
                Op::End { job, fail } => {
                    let state = if fail { AllocState::Failed } else { AllocState::Complete };
                    end_live(&mut w, &format!("j{job}"), state);
                }
                Op::Delete { job } => {
                    w.workloads.remove(&WorkloadRef::new(motley_core::model::Kind::Job, format!("j{job}")));
                }
                Op::Down(n) => {
                    let name = format!("n{n}");
                    w.ready.remove(&name);
                    w.down.insert(name, w.now);
                }
                Op::Up(n) => {
                    let name = format!("n{n}");
                    w.down.remove(&name);
                    w.ready.insert(name);
                }
                Op::Wait(ms) => w.now += ms,
            }
            w.step();
        }
    }
}

proptest! {
    /// Refusing a request equal to one refused since the last placement, without looking
    /// again, changes no decision and no explanation: a queue of jobs of a few shapes
    /// (some with time limits, priorities, a selector, a host port) behind services, with
    /// and without it.
    #[test]
    fn remembered_refusals_change_no_decision(
        caps in proptest::collection::vec((500u64..3000, 256u64..2048), 1..4),
        jobs in proptest::collection::vec((0usize..4, 1u32..4, 0i32..3, any::<bool>()), 1..40),
        replicas in 0u32..6,
    ) {
        let nodes: Vec<Node> = caps.iter().enumerate().map(|(i, (c, m))| node(&format!("n{i}"), *c, *m)).collect();
        let mut w = World::new(&nodes);
        w.apply(&SVC.replace("replicas: 3", &format!("replicas: {replicas}")));
        let shapes = [
            "{ cpu: 400m, memory: 64Mi }",
            "{ cpu: 900m, memory: 300Mi }",
            "{ cpu: 100m, memory: 64Mi }\n  ports: [{ name: web, port: 8080 }]",
            "{ cpu: 2, memory: 64Mi }",
        ];
        for (i, (shape, completions, priority, limited)) in jobs.iter().enumerate() {
            let limit = if *limited { "time_limit: 30s\n" } else { "" };
            let require = if i % 5 == 4 { "placement:\n  require: name in (n0)\n" } else { "" };
            w.apply(&format!(
                "kind: Job\nname: q{i}\ncompletions: {completions}\nparallelism: {completions}\npriority: {priority}\n{limit}{require}\
                 task:\n  command: [x]\n  resources: {}\n",
                shapes[*shape]
            ));
            w.now += 1;
        }
        let plan = |remember: bool| {
            reconcile(
                &Input {
                    workloads: &w.workloads,
                    nodes: &w.nodes,
                    ready: &w.ready,
                    down: &w.down,
                    fence_after_ms: 7_000,
                    allocs: &w.allocs,
                    readings: &BTreeMap::new(),
                    now: w.now,
                    active: None,
                },
                &mut Scheduler::new(Config { remember_refusals: remember, ..Config::default() }),
                &mut Counter(0),
            )
        };
        let (with, without) = (plan(true), plan(false));
        if let Err(d) = motley_core::active::same_plan(&with, &without) {
            prop_assert!(false, "with remembered refusals the plan had a different {}", d);
        }
    }
}

/// A workload with many allocations has them found in one walk over the range of ids
/// they span, past another workload's ids in between (`w-1`, `w-1-41`, `w-10` …): every
/// step is checked against a full pass, and the job still runs each index once.
#[test]
fn many_allocations_interleaved_by_id_are_all_found() {
    let mut w = World::new(&[node("big", 64_000, 65_536)]);
    w.apply(&job_yaml("w", 40, 40, 100));
    w.apply(&job_yaml("w-1", 40, 40, 100));
    assert_eq!(w.step().create.len(), 80);
    w.agents();
    assert!(w.step().is_empty());
    // Every other instance of each fails: one failure ends a job (retries: 0).
    let ids: Vec<&String> = w.allocs.keys().collect();
    assert!(
        ids[0] == "w-1" && ids[1].starts_with("w-1-") && ids[ids.len() - 1] == "w-9",
        "w-1's ids lie inside the range of w's: {ids:?}"
    );
    for name in ["w", "w-1"] {
        let ids: Vec<String> = w.live(name).iter().map(|a| a.id.clone()).collect();
        assert_eq!(ids.len(), 40);
        if let Some(a) = w.allocs.get_mut(&ids[7]) {
            a.state = AllocState::Failed;
        }
    }
    let plan = w.step();
    assert_eq!(plan.stop.len(), 78, "each job's 39 others stopped");
    w.agents();
    w.step();
    assert_eq!(w.active.unsettled(), 0, "both finished, settled");
}

/// Runs of a periodic job, by name, in order.
fn runs_of(w: &World, job: &str) -> Vec<String> {
    w.workloads
        .values()
        .filter(|x| x.run_of.as_ref().is_some_and(|o| o.job == job))
        .map(|x| x.spec.name().to_string())
        .collect()
}

/// Every allocation that runs completes at once.
fn complete_running(w: &mut World) {
    let now = w.now;
    for a in w.allocs.values_mut() {
        if a.state == AllocState::Running {
            a.state = AllocState::Complete;
            a.updated_at = now;
        }
    }
}

#[test]
fn a_periodic_job_starts_one_run_per_due_time_and_keeps_its_history() {
    let mut w = World::new(&[node("a", 8000, 8192)]);
    w.apply("kind: Job\nname: tick\nschedule: \"* * * * *\"\nhistory: 2\ntask:\n  command: [x]\n");
    let mut started = Vec::new();
    // Ten minutes, a pass a second (each checked against a full pass).
    for _ in 0..600 {
        w.now += 1000;
        let plan = w.step();
        started.extend(
            plan.runs
                .iter()
                .filter_map(|r| r.run_of.as_ref().map(|o| o.due)),
        );
        w.agents();
        complete_running(&mut w);
    }
    assert_eq!(started, (1..=10).map(|m| m * 60_000).collect::<Vec<u64>>());
    // Each run ran its task once, and the job itself never did.
    let tasks: Vec<&str> = w
        .allocs
        .values()
        .map(|a| a.workload.name.as_str())
        .collect();
    assert!(!tasks.contains(&"tick"), "{tasks:?}");
    // At the last start, two finished runs were kept beside the new one (which has
    // finished since, as every run here does within a second).
    assert_eq!(runs_of(&w, "tick"), ["tick-480", "tick-540", "tick-600"]);
    let parent = &w.workloads[&WorkloadRef::new(Kind::Job, "tick")];
    let allocs: Vec<&Allocation> = w.allocs.values().collect();
    assert_eq!(status(parent, &allocs, 1).phase, "scheduled");
    let view = motley_core::reconcile::periodic_view(parent, &w.workloads, &w.allocs, w.now)
        .expect("periodic");
    assert_eq!(view.next_run, Some(660_000));
    assert_eq!(view.last_run.as_deref(), Some("tick-600"));
    assert_eq!((view.runs, view.active), (3, 0));
    assert_eq!(view.last_late_by, None, "every run started on time");
}

#[test]
fn a_run_missed_while_the_control_plane_was_down_starts_once_late_and_says_so() {
    let mut w = World::new(&[node("a", 8000, 8192)]);
    w.apply("kind: Job\nname: hourly\nschedule: \"0 * * * *\"\ntask:\n  command: [x]\n");
    // Down from before the first hour until 2 h 5 min: the latest missed run (2 h)
    // starts once, 5 minutes late, and the view says by how much.
    w.now = 2 * 3_600_000 + 300_000;
    let plan = w.step();
    let dues: Vec<u64> = plan
        .runs
        .iter()
        .filter_map(|r| r.run_of.as_ref().map(|o| o.due))
        .collect();
    assert_eq!(dues, [2 * 3_600_000]);
    w.agents();
    let parent = &w.workloads[&WorkloadRef::new(Kind::Job, "hourly")];
    let view = motley_core::reconcile::periodic_view(parent, &w.workloads, &w.allocs, w.now)
        .expect("periodic");
    assert_eq!(view.last_late_by, Some(300_000));
}

#[test]
fn a_periodic_job_that_forbids_overlap_waits_for_its_run() {
    let mut w = World::new(&[node("a", 8000, 8192)]);
    w.apply(
        "kind: Job\nname: slow\nschedule: \"* * * * *\"\nconcurrency: forbid\ntask:\n  command: [x]\n",
    );
    // The first run never finishes for three minutes.
    for _ in 0..200 {
        w.now += 1000;
        w.step();
        w.agents();
    }
    assert_eq!(runs_of(&w, "slow"), ["slow-60"]);
    let parent = &w.workloads[&WorkloadRef::new(Kind::Job, "slow")];
    let view = motley_core::reconcile::periodic_view(parent, &w.workloads, &w.allocs, w.now)
        .expect("periodic");
    assert!(
        view.note.as_deref().is_some_and(|n| n.contains("forbid")),
        "{view:?}"
    );
    // Once it finishes, the next due time starts the next run.
    complete_running(&mut w);
    for _ in 0..60 {
        w.now += 1000;
        w.step();
        w.agents();
    }
    assert_eq!(runs_of(&w, "slow"), ["slow-240", "slow-60"]);
}

/// A run's state can go back (a power cut of the store takes a completion back, and
/// the agent reports it again): the periodic job is decided again when its run
/// changes, as a full pass would decide it (each step checks the two agree).
#[test]
fn a_periodic_job_is_decided_again_when_its_run_changes() {
    let mut w = World::new(&[node("a", 8000, 8192)]);
    w.apply(
        "kind: Job\nname: slow\nschedule: \"* * * * *\"\nconcurrency: forbid\ntask:\n  command: [x]\n",
    );
    let step_to = |w: &mut World, until: u64| {
        while w.now < until {
            w.now += 500;
            w.step();
            w.agents();
        }
    };
    step_to(&mut w, 62_000);
    complete_running(&mut w);
    let first_end = w.now;
    // Just before the next due time its completion is taken back: it runs again.
    step_to(&mut w, 119_500);
    for a in w
        .allocs
        .values_mut()
        .filter(|a| a.workload.name == "slow-60")
    {
        a.state = AllocState::Running;
    }
    // At 120 s it is running: forbid skips the due run.
    step_to(&mut w, 121_000);
    assert_eq!(runs_of(&w, "slow"), ["slow-60"]);
    // The agent's report arrives again: it had ended at 62 s, before the due time.
    for a in w
        .allocs
        .values_mut()
        .filter(|a| a.workload.name == "slow-60")
    {
        a.state = AllocState::Complete;
        a.updated_at = first_end;
    }
    step_to(&mut w, 123_000);
    assert_eq!(runs_of(&w, "slow"), ["slow-120", "slow-60"]);
}
