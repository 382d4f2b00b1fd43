use super::*;
use crate::manifest::{Source, take_kind};

const ISSUE: &str = "\
kind: Experiment
name: lose-a-pi
steady_state:
  - { service: web, ready_at_least: 2 }
  - { http: \"http://web.motley/\", expect_status: 200, every: 1s }
faults:
  - { at: 10s, power_off: { node: pi-2 }, for: 60s }
  - { at: 20s, partition: { nodes: [pi-3], from: [server] }, for: 30s }
  - { at: 30s, packet_loss: { node: pi-4, percent: 5 }, for: 60s }
  - { at: 40s, latency: { node: pi-4, ms: 200 }, for: 30s }
  - { at: 50s, cpu_stress: { node: x86-1, cores: 2 }, for: 30s }
  - { at: 50s, memory_stress: { node: x86-1, bytes: 1Gi }, for: 30s }
  - { at: 70s, kill: { allocation_of: service/db } }
guard: { abort_if: { ready_below: { service: web, count: 1 } } }
";

fn parse(text: &str) -> Other<Experiment> {
    let (mut docs, _) = take_kind::<Experiment>(
        &[Source {
            name: "e.yaml",
            text,
        }],
        "Experiment",
    )
    .expect("parsed");
    docs.remove(0)
}

fn known() -> Known {
    Known {
        nodes: ["pi-2", "pi-3", "pi-4", "x86-1"]
            .into_iter()
            .map(String::from)
            .collect(),
        workloads: ["service/web", "service/db"]
            .into_iter()
            .filter_map(WorkloadRef::parse)
            .collect(),
    }
}

fn said(errors: &[ManifestError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| format!("{}:{} {}: {}", e.line, e.column, e.field, e.message))
        .collect()
}

#[test]
fn the_issues_example_is_valid_and_its_timeline_ends_faults_before_starting_others() {
    let doc = parse(ISSUE);
    assert_eq!(said(&validate(&doc, Some(&known()))), Vec::<String>::new());
    let t = timeline(&doc.value);
    // 6 faults with an end, 1 kill: 13 steps.
    assert_eq!(t.len(), 13);
    assert_eq!(
        (t[0].at, t[0].fault, t[0].start, t[0].deadline),
        (10_000, 0, true, 70_000)
    );
    // At 70 s the power-off ends before the kill starts; the latency ends there too.
    let at70: Vec<(usize, bool)> = t
        .iter()
        .filter(|s| s.at == 70_000)
        .map(|s| (s.fault, s.start))
        .collect();
    assert_eq!(at70, [(0, false), (3, false), (6, true)]);
    assert!(t.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(t.last().map(|s| (s.at, s.fault)), Some((90_000, 2)));
}

#[test]
fn bad_experiments_are_refused_at_their_fields() {
    let doc = parse(
        "kind: Experiment\nname: bad\nfaults:\n\
         \x20 - { at: 1s, power_off: { node: pi-2 } }\n\
         \x20 - { at: 1s, kill: { allocation_of: service/db }, for: 5s }\n\
         \x20 - { at: 1s, latency: { node: nope, ms: 0 }, packet_loss: { node: nope, percent: 5 }, for: 5s }\n\
         \x20 - { at: 1s, packet_loss: { node: pi-4, percent: 101 }, for: 5s }\n\
         \x20 - { at: 1s, kill: { allocation_of: db } }\n\
         steady_state:\n  - { service: api, ready_at_least: 1 }\n  - { http: \"ftp://x\" }\n",
    );
    let e = said(&validate(&doc, Some(&known())));
    let has = |needle: &str| e.iter().any(|x| x.contains(needle));
    assert!(has("faults[0]: how long it lasts"), "{e:#?}");
    assert!(has("faults[1].for: a kill is instant"), "{e:#?}");
    assert!(
        has("faults[2]: one action per fault, not packet_loss and latency"),
        "{e:#?}"
    );
    assert!(has("latency.ms: 1 to 60000"), "{e:#?}");
    assert!(has("no node \"nope\" in the cluster"), "{e:#?}");
    assert!(has("faults[3].packet_loss.percent: 1 to 100"), "{e:#?}");
    assert!(has("faults[4].kill.allocation_of: KIND/NAME"), "{e:#?}");
    assert!(has("steady_state[0].service: no service api"), "{e:#?}");
    assert!(has("steady_state[1].http: an http://"), "{e:#?}");
    // Each at its own line: faults[3] is on line 7.
    assert!(
        e.iter()
            .any(|x| x.starts_with("7:") && x.contains("percent")),
        "{e:#?}"
    );
}

#[test]
fn contradictory_faults_are_refused() {
    let doc = parse(
        "kind: Experiment\nname: c\nfaults:\n\
         \x20 - { at: 10s, power_off: { node: pi-2 }, for: 60s }\n\
         \x20 - { at: 30s, latency: { node: pi-2, ms: 100 }, for: 10s }\n\
         \x20 - { at: 0s, cpu_stress: { node: pi-3, cores: 1 }, for: 10s }\n\
         \x20 - { at: 5s, cpu_stress: { node: pi-3, cores: 2 }, for: 10s }\n\
         \x20 - { at: 10s, cpu_stress: { node: pi-3, cores: 2 }, for: 10s }\n\
         \x20 - { at: 70s, latency: { node: pi-2, ms: 100 }, for: 10s }\n",
    );
    let e = said(&validate(&doc, None));
    assert!(
        e.iter().any(|x| x.contains("faults[1]: contradicts faults[0]: both act on pi-2 between 30 and 40 s while it is powered off")),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|x| x.contains("faults[3]: contradicts faults[2]")),
        "{e:#?}"
    );
    // Back to back is not overlapping: faults[4] starts when faults[2] ends; and
    // latency after the power-off ended is fine.
    assert!(
        !e.iter()
            .any(|x| x.contains("faults[4]: contradicts faults[2]")),
        "{e:#?}"
    );
    assert!(!e.iter().any(|x| x.contains("faults[5]")), "{e:#?}");
    assert_eq!(
        e.iter().filter(|x| x.contains("contradicts")).count(),
        3,
        "{e:#?}"
    );
}

fn ev(at: u64, kind: EventKind, object: &str, alloc: Option<&str>, node: Option<&str>) -> Record {
    Record::Event(Event {
        seq: at,
        at,
        kind,
        object: object.into(),
        alloc: alloc.map(String::from),
        node: node.map(String::from),
        message: String::new(),
    })
}

#[test]
fn the_checker_reads_detection_replacement_probes_and_jobs_from_the_history() {
    let e = parse(ISSUE).value;
    let t0 = 1_000_000;
    let probe = |at: u64, probe: usize, ok: bool| Record::Probe {
        at,
        probe,
        ok,
        detail: String::new(),
    };
    let history = vec![
        probe(t0 - 1000, 0, true),
        probe(t0 - 1000, 1, true),
        Record::FaultStarted {
            at: t0 + 10_000,
            fault: 0,
        },
        probe(t0 + 11_000, 1, false),
        ev(
            t0 + 11_200,
            EventKind::NodeSuspect,
            "node/pi-2",
            None,
            Some("pi-2"),
        ),
        ev(
            t0 + 12_500,
            EventKind::NodeDown,
            "node/pi-2",
            None,
            Some("pi-2"),
        ),
        ev(
            t0 + 12_500,
            EventKind::Lost,
            "job/batch",
            Some("batch-1"),
            Some("pi-2"),
        ),
        // Another service starting is no replacement; web's, after its loss, is.
        ev(
            t0 + 12_550,
            EventKind::Started,
            "service/api",
            Some("api-2"),
            Some("pi-4"),
        ),
        ev(
            t0 + 12_560,
            EventKind::Lost,
            "service/web",
            Some("web-1"),
            Some("pi-2"),
        ),
        ev(
            t0 + 12_600,
            EventKind::Started,
            "service/web",
            Some("web-9"),
            Some("pi-4"),
        ),
        // A job index started twice at once: batch-1 (lost, so ended) and batch-2 is
        // fine; batch-3 and batch-4 share index 2 and overlap.
        ev(
            t0 + 12_700,
            EventKind::Started,
            "job/batch",
            Some("batch-2"),
            Some("pi-3"),
        ),
        ev(
            t0 + 12_800,
            EventKind::Started,
            "job/batch",
            Some("batch-3"),
            Some("pi-3"),
        ),
        ev(
            t0 + 12_900,
            EventKind::Started,
            "job/batch",
            Some("batch-4"),
            Some("pi-4"),
        ),
        probe(t0 + 13_000, 1, true),
        Record::FaultEnded {
            at: t0 + 70_000,
            fault: 0,
        },
        probe(t0 + 71_000, 0, true),
        probe(t0 + 71_000, 1, true),
    ];
    let slots: BTreeMap<String, u32> = [
        ("batch-1", 1),
        ("batch-2", 1),
        ("batch-3", 2),
        ("batch-4", 2),
    ]
    .into_iter()
    .map(|(a, i)| (a.to_string(), i))
    .collect();
    let v = check(&e, &history, &slots);
    assert_eq!(v.faults.len(), 1, "only fault 0 began: {v:?}");
    assert_eq!(v.faults[0].detected_ms, Some(1_200), "suspect 1.2 s after");
    assert_eq!(v.faults[0].replaced_ms, Some(2_600), "web started on pi-4");
    assert_eq!(v.probes, [(0, 0, 2), (1, 1, 4)]);
    assert_eq!(v.jobs_lost, 1);
    assert_eq!(v.jobs_twice, ["job/batch#2"]);
    assert!(v.steady, "held before the first fault and after the last");
    // A probe failing after the faults ended: not steady.
    let mut bad = history.clone();
    bad.push(probe(t0 + 72_000, 0, false));
    assert!(!check(&e, &bad, &slots).steady);
}
