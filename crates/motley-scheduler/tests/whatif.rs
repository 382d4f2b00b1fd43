//! `what-if`: a cluster built and settled with the real controllers, then asked what a
//! node's loss or drain would do. Each answer is checked against the same world
//! actually losing the node (powering it off in the virtual cluster and stepping it),
//! and against what a person works out by hand.

use std::time::Instant;

use motley_core::model::{AllocState, Desired};
use motley_scheduler::Config;
use motley_scheduler::whatif::{Change, State, Verdict, each_node, run};

mod world;
use world::*;

const FENCE_AFTER: u64 = 7_000;

fn settled(w: &mut World) {
    for _ in 0..10 {
        w.step();
        w.agents();
    }
}

fn state(w: &World) -> State {
    State {
        workloads: w.workloads.clone(),
        applied: None,
        nodes: w.nodes.clone(),
        ready: w.ready.clone(),
        allocs: w.allocs.clone(),
        now: w.now,
        fence_after_ms: FENCE_AFTER,
        readings: Default::default(),
    }
}

fn lose(node: &str) -> Change {
    Change {
        lose: vec![node.into()],
        drain: vec![],
    }
}

/// Where each workload's instances run after actually powering `node` off in `w`.
fn powered_off(mut w: World, node: &str) -> Vec<(String, Vec<String>)> {
    w.ready.remove(node);
    w.down.insert(node.into(), w.now);
    let start = w.now;
    while w.now < start + FENCE_AFTER + 60_000 {
        let plan = w.step();
        for (id, _) in &plan.lost {
            if let Some(a) = w.allocs.get_mut(id) {
                a.state = AllocState::Lost;
            }
        }
        // The agents of nodes still up.
        for a in w.allocs.values_mut() {
            if !w.ready.contains(&a.node) || !a.is_live() {
                continue;
            }
            if a.desired == Desired::Stop {
                a.state = AllocState::Stopped;
            } else if a.state == AllocState::Pending {
                a.state = AllocState::Running;
                a.ready_at = Some(w.now);
            }
        }
        w.now += 500;
    }
    let mut by: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for a in w.allocs.values() {
        if a.desired == Desired::Run && a.is_live() {
            by.entry(a.workload.to_string())
                .or_default()
                .push(a.node.clone());
        }
    }
    by.into_iter()
        .map(|(k, mut v)| {
            v.sort();
            (k, v)
        })
        .collect()
}

fn cluster() -> World {
    let mut w = World::new(&[
        node("a", 2000, 2048),
        node("b", 2000, 2048),
        node("c", 2000, 2048),
    ]);
    w.nodes
        .get_mut("a")
        .map(|n| n.labels.insert("vault".into(), "yes".into()));
    w.apply("kind: Service\nname: web\nreplicas: 3\ntask:\n  command: [srv]\n  resources: { cpu: 500m, memory: 256Mi }\n");
    w.apply("kind: Service\nname: db\non_node_loss: fence\ntask:\n  command: [db]\n  resources: { cpu: 500m, memory: 512Mi }\n");
    w.apply("kind: Service\nname: vault\nplacement: { require: vault = yes }\ntask:\n  command: [v]\n  resources: { cpu: 100m, memory: 64Mi }\n");
    w.apply("kind: Daemon\nname: logs\ntask:\n  command: [ship]\n  resources: { cpu: 50m, memory: 32Mi }\n");
    settled(&mut w);
    w
}

#[test]
fn losing_a_node_moves_what_can_move_and_names_what_goes_down() {
    let w = cluster();
    let db_node = w.live("db")[0].node.clone();
    let o = run(&state(&w), &lose("a"), &Config::default()).expect("an answer");
    let get = |name: &str| {
        o.workloads
            .iter()
            .find(|e| e.workload.name == name)
            .unwrap_or_else(|| panic!("{name} in {o:#?}"))
    };
    // vault runs only where vault=yes: a alone.
    let vault = get("vault");
    assert_eq!(vault.verdict, Verdict::Down, "{o:#?}");
    assert_eq!((vault.before, vault.after), (1, 0));
    let why = vault.why.as_deref().expect("why it waits");
    assert!(why.contains("vault is not yes"), "{why}");
    // web: three replicas, one per node; the lost one runs again on b or c.
    let web = get("web");
    assert_eq!(web.verdict, Verdict::Moved);
    assert_eq!((web.before, web.after, web.lost), (3, 3, 1));
    assert!(!web.nodes_after.contains(&"a".to_string()));
    // The daemon's copy on a is not owed any more.
    let logs = get("logs");
    assert_eq!((logs.before, logs.after, logs.desired), (3, 2, 2));
    assert_eq!(logs.verdict, Verdict::Moved);
    // db moves only if it was on a, and then only after the lease and margin.
    let db = get("db");
    if db_node == "a" {
        assert_eq!(db.verdict, Verdict::Moved);
        assert!(o.settled_ms > FENCE_AFTER, "{}", o.settled_ms);
    } else {
        assert_eq!(db.verdict, Verdict::Unaffected);
    }
    // The same as actually powering a off.
    let real = powered_off(w, "a");
    for e in &o.workloads {
        let there = real
            .iter()
            .find(|(k, _)| *k == e.workload.to_string())
            .map_or(&[][..], |(_, v)| v.as_slice());
        assert_eq!(e.nodes_after, there, "{}", e.workload);
    }
}

#[test]
fn too_little_room_degrades_with_the_schedulers_reason() {
    let mut w = World::new(&[node("a", 1000, 1024), node("b", 1000, 1024)]);
    w.apply("kind: Service\nname: web\nreplicas: 2\ntask:\n  command: [srv]\n  resources: { cpu: 800m, memory: 256Mi }\n");
    settled(&mut w);
    let o = run(&state(&w), &lose("b"), &Config::default()).expect("an answer");
    let web = &o.workloads[0];
    assert_eq!(web.verdict, Verdict::Degraded, "{o:#?}");
    assert_eq!((web.before, web.after, web.desired), (2, 1, 2));
    assert!(
        web.why
            .as_deref()
            .is_some_and(|w| w.contains("insufficient cpu")),
        "{web:?}"
    );
    // Draining b instead: the drain stops b's replica (every other one runs) and its
    // replacement finds no room either: one replica, said before anyone drains.
    let d = run(
        &state(&w),
        &Change {
            lose: vec![],
            drain: vec!["b".into()],
        },
        &Config::default(),
    )
    .expect("an answer");
    let web = &d.workloads[0];
    assert_eq!(web.verdict, Verdict::Degraded, "{d:#?}");
    assert_eq!((web.after, web.lost), (1, 1));
    assert!(
        web.why
            .as_deref()
            .is_some_and(|w| w.contains("insufficient cpu")),
        "{web:?}"
    );
}

#[test]
fn every_node_in_turn_names_the_single_points_of_failure() {
    let w = cluster();
    let losses = each_node(&state(&w), &Config::default(), 2);
    assert_eq!(losses.len(), 3);
    let a = losses.iter().find(|l| l.node == "a").expect("a");
    assert_eq!(
        a.down.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        ["service/vault"]
    );
    for l in losses.iter().filter(|l| l.node != "a") {
        assert!(l.down.is_empty(), "{l:?}");
        assert!(l.moved.iter().any(|r| r.name == "web"), "{l:?}");
    }
}

#[test]
fn a_question_about_an_unknown_node_is_refused() {
    let w = cluster();
    let e = run(&state(&w), &lose("zz"), &Config::default()).expect_err("no node zz");
    assert!(e.contains("no node \"zz\""), "{e}");
    let e = run(
        &state(&w),
        &Change {
            lose: vec!["a".into()],
            drain: vec!["a".into()],
        },
        &Config::default(),
    )
    .expect_err("both");
    assert!(e.contains("both lost and drained"), "{e}");
}

/// Not a timing test: it checks every node's answer on a big cluster comes back, and
/// prints how long it took (the benchmark is `bench/whatif.sh`).
#[test]
fn each_node_on_a_hundred_nodes() {
    let nodes: Vec<_> = (0..100)
        .map(|i| node(&format!("n{i:03}"), 4000, 4096))
        .collect();
    let mut w = World::new(&nodes);
    w.apply("kind: Service\nname: web\nreplicas: 150\ntask:\n  command: [srv]\n  resources: { cpu: 500m, memory: 256Mi }\n");
    w.apply("kind: Service\nname: one\ntask:\n  command: [srv]\n");
    w.apply("kind: Daemon\nname: logs\ntask:\n  command: [ship]\n");
    settled(&mut w);
    let t = Instant::now();
    let losses = each_node(&state(&w), &Config::default(), 2);
    eprintln!("each node of 100: {:?}", t.elapsed());
    assert_eq!(losses.len(), 100);
    let one = w.live("one")[0].node.clone();
    for l in &losses {
        assert!(l.down.is_empty(), "{l:?}");
        assert_eq!(
            l.moved.iter().any(|r| r.name == "one"),
            l.node == one,
            "{l:?}"
        );
    }
}

/// A recorded history (four job instances of 10 s on four nodes, all at once) replayed
/// on the same cluster with two nodes lost: two at a time, so the job takes twice as
/// long; with nothing changed it takes as long as it did.
#[test]
fn a_history_replayed_on_fewer_nodes_takes_longer_by_what_the_room_allows() {
    use motley_core::events::{Event, EventKind};
    use motley_scheduler::replay::{arrivals, replay};
    let mut w = World::new(&[
        node("a", 1000, 1024),
        node("b", 1000, 1024),
        node("c", 1000, 1024),
        node("d", 1000, 1024),
    ]);
    w.apply("kind: Service\nname: web\ntask:\n  command: [srv]\n  resources: { cpu: 100m, memory: 64Mi }\n");
    w.apply("kind: Job\nname: train\ncompletions: 4\nparallelism: 4\ntask:\n  command: [t]\n  resources: { cpu: 800m, memory: 256Mi }\n");
    let ev = |seq: u64, at: u64, kind: EventKind, alloc: Option<&str>| Event {
        seq,
        at,
        kind,
        object: "job/train".into(),
        alloc: alloc.map(String::from),
        node: None,
        message: String::new(),
    };
    let mut history = vec![ev(1, 100_000, EventKind::Applied, None)];
    for i in 0..4 {
        let id = format!("t{i}");
        history.push(ev(2 + i, 100_500, EventKind::Started, Some(&id)));
        history.push(ev(10 + i, 110_500, EventKind::Exited, Some(&id)));
    }
    let a = arrivals(&history);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].runtime_ms, a[0].waited_ms, a[0].done_at),
        (10_000, Some(500), Some(110_500))
    );
    let st = state(&w);
    let same = replay(&st, &Change::default(), &a, &Config::default()).expect("a replay");
    let r = &same.workloads[0];
    assert_eq!((r.waited_ms, r.took_ms), (Some(500), Some(10_500)));
    let takes = r.takes_ms.expect("finished");
    assert!((10_000..13_000).contains(&takes), "{same:#?}");
    let two = Change {
        lose: vec!["c".into(), "d".into()],
        drain: vec![],
    };
    let fewer = replay(&st, &two, &a, &Config::default()).expect("a replay");
    let r = &fewer.workloads[0];
    let takes = r.takes_ms.expect("finished");
    assert!((20_000..25_000).contains(&takes), "{fewer:#?}");
    assert!(r.delay_ms().is_some_and(|d| d >= 9_000), "{r:?}");
    // web runs throughout and took its room from the start: it is not in the answer.
    assert!(fewer.workloads.iter().all(|x| x.workload.name == "train"));
    assert!(fewer.missing.is_empty());
    // A workload the cluster no longer has is named, not replayed.
    let mut gone = history.clone();
    gone.push(Event {
        object: "job/old".into(),
        ..ev(30, 100_000, EventKind::Applied, None)
    });
    let r = replay(&st, &two, &arrivals(&gone), &Config::default()).expect("a replay");
    assert_eq!(r.missing.len(), 1);
    assert_eq!(r.workloads.len(), 1);
}
