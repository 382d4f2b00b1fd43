//! `motley capacity` on three inventories whose answers were worked out by hand: a
//! Pi-only cluster, a mixed one with a GPU box, and a Frankencluster of 7 mismatched
//! machines. Inventories and workloads are read as the CLI reads them (one set of
//! manifests, `kind: Inventory` taken out first).

use std::collections::BTreeMap;

use motley_core::inventory::{self, Inventory};
use motley_core::manifest::{Source, parse_set, take_kind};
use motley_core::model::{Workload, WorkloadRef};
use motley_scheduler::Config;
use motley_scheduler::capacity::{Report, plan};

fn read(yaml: &str) -> (Inventory, BTreeMap<WorkloadRef, Workload>) {
    let src = [Source {
        name: "set.yaml",
        text: yaml,
    }];
    let (mut invs, rest) = take_kind::<Inventory>(&src, "Inventory").expect("an inventory");
    assert_eq!(invs.len(), 1);
    assert!(inventory::validate(&invs[0]).is_empty());
    let docs = parse_set(&[Source {
        name: "set.yaml",
        text: &rest[0],
    }])
    .expect("workloads");
    let workloads = motley_core::manifest::created(docs, 0);
    (invs.remove(0).value, workloads)
}

fn ask(yaml: &str, tolerate: u32) -> Report {
    let (inv, w) = read(yaml);
    plan(&inv, &w, tolerate, &Config::default()).expect("an answer")
}

const PIS: &str = "\
kind: Inventory
name: pis
price_per_kwh: 0.30
models:
  - { model: pi5, count: 4, arch: arm64, cpus: 4, cpu_score: 800, memory: 8Gi, watts: { idle: 3, loaded: 10 }, price: 80 }
  - { model: safe-pi, count: 0, arch: arm64, cpus: 4, cpu_score: 800, memory: 8Gi, labels: { vault: \"yes\" }, watts: { idle: 3, loaded: 10 }, price: 95 }
---
kind: Service
name: web
replicas: 4
task: { command: [srv], resources: { cpu: 1, memory: 1Gi } }
---
kind: Service
name: db
task: { command: [db], resources: { cpu: 2, memory: 2Gi } }
";

#[test]
fn pi_only_fits_with_a_failure_and_draws_what_its_load_says() {
    let r = ask(PIS, 1);
    assert!(r.fits, "{r:#?}");
    assert_eq!(r.failures_checked, 4);
    assert_eq!(
        r.nodes,
        [("pi5".to_string(), 4), ("safe-pi".to_string(), 0)]
    );
    // 4 × 1 CPU + 2 CPU of 16; 4 × 1Gi + 2Gi of 32Gi.
    assert_eq!((r.headroom.cpu, r.headroom.cpu_used), (16_000, 6_000));
    assert_eq!(
        (r.headroom.memory, r.headroom.memory_used),
        (32 << 30, 6 << 30)
    );
    // One web per node (spread), db with one of them: one node at 3/4, three at 1/4:
    // 3 + 7 × 0.75 + 3 × (3 + 7 × 0.25) = 22.5 W; × 730.5 h = 16.436 kWh; × 0.30.
    assert!((r.power.watts - 22.5).abs() < 1e-9, "{:?}", r.power);
    assert!((r.power.kwh_month - 16.43625).abs() < 1e-9);
    assert!((r.power.cost_month.expect("priced") - 4.930875).abs() < 1e-9);
    assert_eq!(r.addition, None);
}

#[test]
fn a_pinned_service_needs_a_second_machine_with_its_label() {
    // vault runs only where vault=yes: one safe-pi owned; losing it leaves vault down,
    // and only another safe-pi (95), not a cheaper pi5 (80), makes it fit.
    let yaml = PIS.replace("model: safe-pi, count: 0", "model: safe-pi, count: 1")
        + "---\nkind: Service\nname: vault\nplacement: { require: vault = yes }\ntask: { command: [v], resources: { cpu: 100m, memory: 64Mi } }\n";
    let r = ask(&yaml, 1);
    assert!(!r.fits);
    assert!(
        r.short.is_empty(),
        "it fits with every node up: {:?}",
        r.short
    );
    let (lost, hurt) = r.failure.as_ref().expect("a failure that hurts");
    assert_eq!(lost, &["safe-pi-1"]);
    assert_eq!(hurt[0].workload.to_string(), "service/vault");
    assert_eq!((hurt[0].running, hurt[0].wanted), (0, 1));
    assert!(hurt[0].why.contains("vault is not yes"), "{}", hurt[0].why);
    let add = r.addition.expect("an addition");
    assert_eq!(
        (add.model.as_str(), add.count, add.price),
        ("safe-pi", 1, Some(95.0))
    );
}

const MIXED: &str = "\
kind: Inventory
name: mixed
price_per_kwh: 0.25
models:
  - { model: mini, count: 2, arch: amd64, cpus: 4, cpu_score: 1500, memory: 16Gi, watts: { idle: 6, loaded: 25 }, price: 150 }
  - { model: gpu-box, count: 1, arch: amd64, cpus: 8, cpu_score: 1800, memory: 32Gi, gpus: { count: 1, vendor: amd }, watts: { idle: 40, loaded: 200 }, price: 900 }
---
kind: Service
name: web
replicas: 2
placement: { require: model = mini }
task: { command: [srv], resources: { cpu: 1, memory: 1Gi } }
---
kind: Job
name: training
task: { command: [train], resources: { cpu: 4, memory: 8Gi, gpu: { vendor: amd } } }
";

#[test]
fn a_mixed_cluster_with_a_gpu_box() {
    let r = ask(MIXED, 0);
    assert!(r.fits, "{r:#?}");
    // minis at 1/4 each: 2 × (6 + 19 × 0.25) = 21.5 W; the GPU box at 4/8:
    // 40 + 160 × 0.5 = 120 W; 141.5 W, 103.366 kWh a month, × 0.25.
    assert!((r.power.watts - 141.5).abs() < 1e-9, "{:?}", r.power);
    assert!((r.power.kwh_month - 103.36575).abs() < 1e-9);
    assert!((r.power.cost_month.expect("priced") - 25.8414375).abs() < 1e-9);
    assert_eq!((r.headroom.cpu, r.headroom.cpu_used), (16_000, 6_000));
    // The GPU box is the training job's only place.
    let r = ask(MIXED, 1);
    assert!(!r.fits);
    let (lost, hurt) = r.failure.as_ref().expect("a failure");
    assert_eq!(lost, &["gpu-box-1"]);
    assert_eq!(hurt[0].workload.to_string(), "job/training");
    assert!(hurt[0].why.contains("gpu"), "{}", hurt[0].why);
    let add = r.addition.expect("an addition");
    assert_eq!((add.model.as_str(), add.count), ("gpu-box", 1));
}

const FRANKEN: &str = "\
kind: Inventory
name: frankencluster
models:
  - { model: pi3, count: 1, arch: arm, cpus: 4, cpu_score: 300, memory: 1Gi, price: 35 }
  - { model: pi4, count: 2, arch: arm64, cpus: 4, cpu_score: 600, memory: 4Gi, price: 55 }
  - { model: celeron, count: 1, arch: amd64, cpus: 2, cpu_score: 400, memory: 2Gi, price: 40 }
  - { model: laptop, count: 1, arch: amd64, cpus: 4, cpu_score: 900, memory: 8Gi, price: 100 }
  - { model: nuc, count: 1, arch: amd64, cpus: 8, cpu_score: 1600, memory: 16Gi, price: 400 }
  - { model: ryzen, count: 1, arch: amd64, cpus: 16, cpu_score: 2000, memory: 32Gi, gpus: { count: 1, vendor: nvidia }, price: 1200 }
---
kind: Service
name: edge
replicas: 2
placement: { require: arch = arm64 }
task: { command: [edge], resources: { cpu: 500m, memory: 256Mi } }
---
kind: Service
name: db
task: { command: [db], resources: { cpu: 2, memory: 12Gi } }
---
kind: Job
name: render
task: { command: [render], resources: { cpu: 8, memory: 8Gi, gpu: { vendor: nvidia } } }
---
kind: Daemon
name: logs
task: { command: [ship], resources: { cpu: 50m, memory: 32Mi } }
";

#[test]
fn the_frankencluster_of_seven() {
    let r = ask(FRANKEN, 0);
    assert!(r.fits, "{r:#?}");
    // 4 + 2 × 4 + 2 + 4 + 8 + 16 CPUs; 1 + 2 × 4 + 2 + 8 + 16 + 32 GiB.
    assert_eq!(r.headroom.cpu, 42_000);
    assert_eq!(r.headroom.memory, 67 << 30);
    // edge 2 × 500m, db 2, render 8, logs 7 × 50m = 11,350m; memory 512Mi + 12Gi +
    // 8Gi + 7 × 32Mi.
    assert_eq!(r.headroom.cpu_used, 11_350);
    assert_eq!(
        r.headroom.memory_used,
        (512 << 20) + (20 << 30) + (224 << 20)
    );
    assert!(r.power.unknown.len() == 6, "no watts given: {:?}", r.power);
    // One failure: the ryzen is the render job's only machine (nvidia); db (12Gi)
    // survives losing either of its two places.
    let r = ask(FRANKEN, 1);
    assert!(!r.fits);
    let (lost, hurt) = r.failure.as_ref().expect("a failure");
    assert_eq!(lost, &["ryzen-1"]);
    assert!(
        hurt.iter().any(|h| h.workload.to_string() == "job/render"),
        "{hurt:?}"
    );
    assert!(
        hurt.iter().all(|h| h.workload.to_string() != "service/db"),
        "{hurt:?}"
    );
    let add = r.addition.expect("an addition");
    assert_eq!(
        (add.model.as_str(), add.count, add.price),
        ("ryzen", 1, Some(1200.0))
    );
}

#[test]
fn bad_inventories_are_refused_at_their_field() {
    let src = [Source {
        name: "inv.yaml",
        text: "kind: Inventory\nname: x\nmodels:\n  - { model: a, arch: arm64, cpus: 4, memory: 1Gi, watts: { idle: 9, loaded: 3 } }\n  - { model: a, arch: arm64, cpus: 0, memory: 1Gi }\n",
    }];
    let (invs, _) = take_kind::<Inventory>(&src, "Inventory").expect("parsed");
    let errors = inventory::validate(&invs[0]);
    let said: Vec<String> = errors
        .iter()
        .map(|e| format!("{}:{}:{} {}", e.file, e.line, e.field, e.message))
        .collect();
    assert!(
        said.iter()
            .any(|e| e.starts_with("inv.yaml:4:models[0].watts")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|e| e.starts_with("inv.yaml:5:models[1].model") && e.contains("also models[0]")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|e| e.starts_with("inv.yaml:5:models[1].cpus")),
        "{said:?}"
    );
    // A field the inventory does not have: the typed parse names it.
    let bad = [Source {
        name: "inv.yaml",
        text: "kind: Service\nname: s\ntask: { command: [x] }\n---\nkind: Inventory\nname: x\nmodels:\n  - { model: a, arch: arm64, cpus: 4, memory: 1Gi, ram: 3 }\n",
    }];
    let e = take_kind::<Inventory>(&bad, "Inventory").expect_err("unknown field");
    assert_eq!(e[0].line, 8, "{e:?}");
    assert!(e[0].message.contains("ram"), "{e:?}");
}

/// The GPU box of the mixed cluster powered only from 01:00 to 06:00: the training job
/// (only it can take) waits, 19 h at worst and 7.52 h on average (19 h off, waited on
/// 19/24 of the time, half of it on average: 19 × 19 / 48 h); the minis' web is not
/// touched. A mini given hours costs web one of its two replicas while it is off.
#[test]
fn a_machine_on_a_schedule_costs_its_queue_what_its_hours_say() {
    use motley_scheduler::capacity::{Existing, schedules};
    let (inv, w) = read(MIXED);
    let hours = [("gpu-box-1".to_string(), "01:00-06:00".to_string())];
    let s =
        schedules(&Existing::default(), &inv, &w, &hours, &Config::default()).expect("an answer");
    assert_eq!(s.len(), 1);
    assert!((s[0].on_hours - 5.0).abs() < 1e-9);
    let names: Vec<String> = s[0]
        .while_off
        .iter()
        .map(|x| x.workload.to_string())
        .collect();
    assert_eq!(names, ["job/training"]);
    assert_eq!(
        s[0].job_waits
            .iter()
            .map(|(r, mean, worst)| (r.to_string(), *mean, *worst))
            .collect::<Vec<_>>(),
        [("job/training".to_string(), 27_075_000, 68_400_000)]
    );
    assert!(s[0].services_short_hours.is_empty());
    // A mini off at night: web's two replicas fit on the other one; nothing is short.
    let mini = [("mini-2".to_string(), "22:00-06:00".to_string())];
    let s =
        schedules(&Existing::default(), &inv, &w, &mini, &Config::default()).expect("an answer");
    assert!(s[0].while_off.is_empty(), "{s:#?}");
    // A service only the box can run is down 19 hours a day.
    let (inv2, w2) = read(&format!(
        "{MIXED}---\nkind: Service\nname: infer\nplacement: {{ require: model = gpu-box }}\ntask: {{ command: [i], resources: {{ cpu: 1, memory: 1Gi }} }}\n"
    ));
    let s =
        schedules(&Existing::default(), &inv2, &w2, &hours, &Config::default()).expect("an answer");
    assert_eq!(
        s[0].services_short_hours
            .iter()
            .map(|(r, h)| (r.to_string(), *h))
            .collect::<Vec<_>>(),
        [("service/infer".to_string(), 19.0)]
    );
    let bad = [("nope-1".to_string(), "01:00-06:00".to_string())];
    let e = schedules(&Existing::default(), &inv, &w, &bad, &Config::default());
    assert!(e.is_err_and(|e| e.contains("no such machine")));
    let bad = [("mini-1".to_string(), "01:00".to_string())];
    let e = schedules(&Existing::default(), &inv, &w, &bad, &Config::default());
    assert!(e.is_err_and(|e| e.contains("HH:MM-HH:MM")));
}
