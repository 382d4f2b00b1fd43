//! Criterion benchmarks of the scheduler's stages on a 2,000-node fixture cluster:
//! a pass's start with a workload's profile (accounting every node, then static
//! filters over every node), one placement (dynamic
//! filters, scores and selection over a sample) and an explanation (every node's
//! reason).
//!
//! `cargo bench -p motley-bench --bench scheduler` (from the repository root).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use motley_core::reconcile::{Placer, Request};
use motley_scheduler::{Config, Scheduler};

fn stages(c: &mut Criterion) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hw");
    let synthetic = match motley_bench::Synthetic::new(&fixtures, 2000, 10) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return;
        }
    };
    let cluster = || synthetic.cluster();
    let workloads = &synthetic.workloads;
    let (svc_ref, svc) = workloads
        .iter()
        .find(|(r, _)| r.name == "w4")
        .map(|(r, w)| (r.clone(), w))
        .expect("workload w4 exists");
    c.bench_function(
        "begin + profile: accounting and static filters over 2000 nodes",
        |b| {
            b.iter(|| {
                let mut s = Scheduler::new(Config::default());
                s.begin(cluster());
                let req = Request::new(svc, &svc_ref, 0, 0);
                black_box(s.place(&req).is_ok())
            })
        },
    );
    let mut s = Scheduler::new(Config::default());
    s.begin(cluster());
    let mut i = 0;
    c.bench_function(
        "place: dynamic filters, score, select (warm profile)",
        |b| {
            b.iter(|| {
                i += 1;
                let req = Request::new(svc, &svc_ref, i, 0);
                black_box(s.place(&req).is_ok())
            })
        },
    );
    let huge = motley_core::manifest::parse_set(&[motley_core::manifest::Source {
        name: "b",
        text: "kind: Service\nname: huge\ntask:\n  command: [h]\n  resources: { memory: 1Ti }\n",
    }])
    .expect("valid manifest");
    let huge_w = motley_core::model::Workload {
        spec: huge[0].spec.clone(),
        generation: 1,
        uid: "h".into(),
        created_at: 0,
        updated_at: 0,
        binding: None,
        image_platforms: Vec::new(),
        history: Vec::new(),
        rollout: None,
        source: None,
        run_of: None,
    };
    let huge_ref = huge_w.spec.reference();
    c.bench_function("explain: a refusal with every node's reason", |b| {
        let mut s = Scheduler::new(Config::default());
        s.begin(cluster());
        b.iter(|| {
            let req = Request::new(&huge_w, &huge_ref, 0, 0);
            black_box(s.place(&req).is_err())
        })
    });
}

criterion_group!(benches, stages);
criterion_main!(benches);
