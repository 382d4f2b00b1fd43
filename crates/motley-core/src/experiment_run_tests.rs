use super::*;
use crate::events::Event;

fn exp(text: &str) -> Experiment {
    match crate::experiment::from_text("e.yaml", text, None) {
        Ok(doc) => doc.value,
        Err(e) => panic!("{e:?}"),
    }
}

const LAB: &str = "\
kind: Experiment
name: lab
steady_state:
  - { service: web, ready_at_least: 2 }
faults:
  - { at: 1s, power_off: { node: n2 }, for: 10s }
  - { at: 2s, kill: { allocation_of: service/db } }
  - { at: 5s, latency: { node: n3, ms: 100 }, for: 2s }
guard: { abort_if: { ready_below: { service: web, count: 1 } } }
";

#[test]
fn nothing_is_done_before_the_steady_state_holds_and_faults_run_on_their_clock() {
    let mut r = Runner::new(exp(LAB), 1_000);
    assert_eq!(r.probes_due(1_000), vec![0]);
    r.probe(1_000, 0, false, "1 of 2 ready".into());
    assert!(r.tick(1_000).is_empty());
    assert!(r.tick(30_000).is_empty());
    assert_eq!(r.phase(), Phase::Checking);
    assert_eq!(r.probes_due(1_500), Vec::<usize>::new(), "every 1 s");
    r.probe(40_000, 0, true, "2 of 2 ready".into());
    // The clock starts when it first held: t0 = 40 000.
    assert!(r.tick(40_000).is_empty());
    assert_eq!(r.phase(), Phase::Running);
    assert_eq!(
        r.tick(41_000),
        vec![Order::Start {
            fault: 0,
            lasts_ms: 10_000
        }]
    );
    // Late ticks catch up in order; the kill holds nothing.
    assert_eq!(
        r.tick(45_500),
        vec![
            Order::Start {
                fault: 1,
                lasts_ms: 0
            },
            Order::Start {
                fault: 2,
                lasts_ms: 2_000
            }
        ]
    );
    assert_eq!(r.tick(47_000), vec![Order::Undo { fault: 2 }]);
    assert_eq!(r.tick(51_000), vec![Order::Undo { fault: 0 }]);
    assert_eq!(r.phase(), Phase::Settling);
    r.probe(52_000, 0, true, "2 of 2 ready".into());
    assert!(r.tick(52_000).is_empty());
    assert_eq!(r.phase(), Phase::Settling, "at least 5 s");
    r.probe(56_000, 0, true, "2 of 2 ready".into());
    assert!(r.tick(56_000).is_empty());
    assert_eq!(r.phase(), Phase::Finished);
    let rep = r.report(&BTreeMap::new());
    assert_eq!(rep.started, Some(40_000));
    assert_eq!(rep.ended, Some(56_000));
    let v = rep.verdict.as_ref().expect("a verdict once ended");
    assert!(v.steady);
    assert_eq!(v.probes, vec![(0, 1, 4)]);
    assert!(
        r.probes_due(60_000).is_empty(),
        "an ended run probes nothing"
    );
}

#[test]
fn a_steady_state_that_never_holds_ends_the_run_with_nothing_done() {
    let mut r = Runner::new(exp(LAB), 0);
    for t in (0..=CHECK_MAX_MS).step_by(1_000) {
        r.probe(t, 0, false, "0 of 2 ready".into());
        assert!(r.tick(t).is_empty());
    }
    assert_eq!(r.phase(), Phase::Aborted);
    let rep = r.report(&BTreeMap::new());
    assert!(
        rep.why
            .as_deref()
            .is_some_and(|w| w.contains("nothing was done")),
        "{:?}",
        rep.why
    );
    assert!(
        !rep.history
            .iter()
            .any(|h| matches!(h, Record::FaultStarted { .. }))
    );
}

#[test]
fn the_guard_and_a_refusal_undo_exactly_the_faults_held() {
    let mut r = Runner::new(exp(LAB), 0);
    r.probe(0, 0, true, "2 of 2".into());
    r.tick(0);
    r.tick(5_000);
    assert!(r.guard(5_100, 1).is_empty(), "1 is not below 1");
    assert_eq!(
        r.guard(5_200, 0),
        vec![Order::Undo { fault: 0 }, Order::Undo { fault: 2 }]
    );
    assert_eq!(r.phase(), Phase::Aborted);
    assert!(r.tick(20_000).is_empty(), "nothing after the end");
    assert!(r.abort(20_000, "again".into()).is_empty());
    let rep = r.report(&BTreeMap::new());
    assert_eq!(
        rep.why.as_deref(),
        Some("guard: service/web had 0 ready, below 1")
    );

    let mut r = Runner::new(exp(LAB), 0);
    r.probe(0, 0, true, "2 of 2".into());
    r.tick(0);
    r.tick(1_000);
    assert_eq!(
        r.refused(1_100, 0, "n2 is not connected"),
        vec![Order::Undo { fault: 0 }]
    );
    let rep = r.report(&BTreeMap::new());
    assert_eq!(
        rep.why.as_deref(),
        Some("faults[0] (power_off n2 for 10s) failed: n2 is not connected")
    );
}

#[test]
fn the_report_reads_the_history_into_figures_a_timeline_and_markdown() {
    let text = "\
kind: Experiment
name: md
steady_state:
  - { http: \"http://web/\", expect_status: 200, every: 500ms }
faults:
  - { at: 0s, power_off: { node: n2 }, for: 3s }
";
    let mut r = Runner::new(exp(text), 10_000);
    r.probe(10_000, 0, true, "200".into());
    assert_eq!(
        r.tick(10_000),
        vec![Order::Start {
            fault: 0,
            lasts_ms: 3_000
        }]
    );
    let event = |seq, at, kind, object: &str, node: &str, message: &str| Event {
        seq,
        at,
        kind,
        object: object.into(),
        alloc: Some("a1".into()),
        node: Some(node.into()),
        message: message.into(),
    };
    r.probe(10_500, 0, false, "connection refused".into());
    r.probe(11_000, 0, false, "connection refused".into());
    r.event(event(
        1,
        11_200,
        EventKind::NodeDown,
        "node/n2",
        "n2",
        "silent",
    ));
    r.event(event(
        2,
        11_300,
        EventKind::Lost,
        "service/web",
        "n2",
        "node down",
    ));
    r.event(event(
        3,
        11_900,
        EventKind::Started,
        "service/web",
        "n3",
        "pid 7",
    ));
    r.probe(12_000, 0, true, "200".into());
    assert_eq!(r.tick(13_000), vec![Order::Undo { fault: 0 }]);
    r.probe(18_000, 0, true, "200".into());
    r.tick(18_000);
    let rep = r.report(&BTreeMap::new());
    assert_eq!(rep.requests(), (5, 2));
    assert!(rep.budgets.is_empty(), "no SLO, no budget");
    let v = rep.verdict.as_ref().expect("verdict");
    assert_eq!(v.faults[0].detected_ms, Some(1_200));
    assert_eq!(v.faults[0].replaced_ms, Some(1_900));
    let lines: Vec<String> = rep
        .timeline()
        .into_iter()
        .map(|(t, l)| format!("{t} {l}"))
        .collect();
    assert_eq!(
        lines,
        vec![
            "0 probe 0 holds: 200",
            "0 fault 0 began: power_off n2 for 3s",
            "500 probe 0 FAILS: connection refused",
            "1200 node-down node/n2 on n2: silent",
            "1300 lost service/web on n2: node down",
            "1900 started service/web on n3: pid 7",
            "2000 probe 0 holds: 200",
            "3000 fault 0 undone: power_off n2 for 3s",
        ]
    );
    let md = rep.markdown();
    for want in [
        "# Experiment md: finished",
        "**Verdict: the steady state held before the faults and came back after them.**",
        "| 0 | power_off n2 for 3s | 0s | 1200 ms | 1900 ms |",
        "- probe 0: GET http://web/ answers 200: failed 2 of 5",
        "- requests failed: 2 of 5",
        "-    +0.5s  probe 0 FAILS: connection refused",
    ] {
        assert!(md.contains(want), "{want:?} not in\n{md}");
    }
    // The report as JSON reads back the same.
    let json = serde_json::to_string(&rep).expect("serializes");
    let back: Report = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, rep);
}

#[test]
fn a_kill_takes_the_running_allocation_with_the_lowest_id() {
    let allocs = [
        crate::model::test_alloc("c", "service/db", AllocState::Running),
        crate::model::test_alloc("a", "service/db", AllocState::Failed),
        crate::model::test_alloc("b", "service/db", AllocState::Running),
    ];
    let db = service_ref("db");
    assert_eq!(kill_target(&allocs, &db).map(|a| a.id.as_str()), Some("b"));
    assert!(kill_target(&allocs, &service_ref("web")).is_none());
}

#[test]
fn the_report_says_what_error_budget_the_run_burned() {
    let mut r = Runner::new(exp(LAB), 0);
    r.budget("service/web", 0.9);
    r.probe(0, 0, true, "2 of 2".into());
    r.tick(0);
    r.budget("service/web", 0.85);
    r.budget("service/web", 0.8);
    r.abort(1_000, "enough".into());
    r.budget("service/web", 0.1);
    let rep = r.report(&BTreeMap::new());
    assert_eq!(
        rep.budgets,
        vec![Budget {
            service: "service/web".into(),
            before: 0.9,
            after: 0.8
        }]
    );
    let md = rep.markdown();
    assert!(
        md.contains(
            "- service/web: error budget burned 10.00 % of its 30 days (90.00 % left → 80.00 %)"
        ),
        "{md}"
    );
}
