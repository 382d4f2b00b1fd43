//! Pages rendered from API bodies: what a viewer is offered, escaping, no Secret value,
//! the refusal matrix, and the live part alone for a refresh.

use motley_core::api::{NodeView, Whoami, WorkloadDetail, WorkloadView};
use motley_core::model::{Allocation, Workload, WorkloadRef};
use serde_json::json;

use super::*;

fn who(role: &str) -> Whoami {
    Whoami {
        id: "t1".into(),
        role: role.into(),
        namespaces: vec![],
    }
}

fn ctx<'a>(who: &'a Whoami, path: &'a str) -> Ctx<'a> {
    Ctx {
        who,
        csrf: "c5f",
        namespace: None,
        namespaces: &[],
        now: 10_000,
        path,
    }
}

fn node(name: &str) -> NodeView {
    let v = json!({
        "node": {
            "name": name,
            "facts": { "arch": "arm64", "os": "linux", "cpus": 4, "memory": 1073741824u64,
                       "hostname": name, "agent_version": "0.1.0", "cpu_score": 820 },
            "labels": {}, "capacity": { "cpu": 4000, "memory": 1073741824u64 },
            "registered_at": 0
        },
        "state": "ready", "since": 0, "reason": "", "allocations": 1,
        "used_cpu": 500, "used_memory": 268435456u64
    });
    serde_json::from_value(v).expect("a node view")
}

fn alloc(id: &str, workload: &str, node: &str) -> Allocation {
    let v = json!({
        "id": id, "workload": workload, "workload_uid": "u", "generation": 1, "index": 0,
        "node": node, "task": { "command": ["true"] },
        "restart": { "mode": "always", "max_restarts": null, "backoff": {} },
        "desired": "run", "state": "running", "created_at": 0, "updated_at": 0
    });
    serde_json::from_value(v).expect("an allocation")
}

fn view(yaml: &str, blocked: Option<serde_json::Value>) -> WorkloadView {
    let docs = motley_core::manifest::parse_set(&[motley_core::manifest::Source {
        name: "w.yaml",
        text: yaml,
    }])
    .expect("a manifest");
    let spec = docs.into_iter().next().expect("one document").spec;
    let w = Workload::created(spec, "u".into(), 0);
    let mut v = serde_json::to_value(WorkloadView {
        workload: w,
        status: Default::default(),
        blocked: None,
        queue_position: None,
        rollout: None,
        uptime: None,
        periodic: None,
    })
    .expect("json");
    if let Some(b) = blocked {
        v["blocked"] = b;
    }
    serde_json::from_value(v).expect("a workload view")
}

fn page_html(c: &Ctx<'_>, p: &Page) -> String {
    document(c, p, false).into_string()
}

#[test]
fn a_viewer_is_offered_no_action_and_an_admin_every_one() {
    let nodes = [node("pi-1")];
    let allocs = [alloc("web-1", "service/web", "pi-1")];
    let web = view("kind: Service\nname: web\ntask:\n  command: [srv]\n", None);
    for (role, forms) in [("viewer", false), ("admin", true)] {
        let w = who(role);
        let c = ctx(&w, "/ui/");
        let pages = [
            nodes::overview(&c, Ok(&nodes), &allocs, std::slice::from_ref(&web)),
            nodes::node_page(&c, &nodes[0], &allocs, &[]),
            workloads::alloc(&c, &allocs[0], &[], "/ui/allocs/web-1/log"),
            workloads::workload(
                &c,
                &WorkloadDetail {
                    view: web.clone(),
                    allocations: allocs.to_vec(),
                    energy_mj: Default::default(),
                    energy_estimated: false,
                },
                &[],
            ),
        ];
        for p in &pages {
            let html = page_html(&c, p);
            assert_eq!(
                html.contains("action=\"/ui/act\""),
                forms,
                "{role} on {}: {html}",
                p.title
            );
            // Every page can log out, with the session's CSRF token.
            assert!(html.contains("name=\"csrf\" value=\"c5f\""), "{html}");
        }
        let html = page_html(&c, &pages[0]);
        assert_eq!(html.contains(">Drain</button>"), forms);
        assert_eq!(html.contains(">Cordon</button>"), forms);
        let html = page_html(&c, &pages[2]);
        assert_eq!(html.contains(">Restart</button>"), forms);
    }
}

#[test]
fn what_the_cluster_says_is_escaped() {
    let w = who("admin");
    let c = ctx(&w, "/ui/");
    let mut n = node("pi-1");
    n.reason = "<script>alert(1)</script>".into();
    n.state = "down".into();
    let p = nodes::overview(&c, Ok(std::slice::from_ref(&n)), &[], &[]);
    let html = page_html(&c, &p);
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert_eq!(urlencode("a b/<c>"), "a%20b%2F%3Cc%3E");
}

#[test]
fn a_secret_shows_its_keys_and_never_a_value() {
    let w = who("admin");
    let c = ctx(&w, "/ui/w/secret/db");
    let s = view(
        "kind: Secret\nname: db\ndata:\n  password: hunter2-value\n",
        None,
    );
    let p = workloads::workload(
        &c,
        &WorkloadDetail {
            view: s,
            allocations: vec![],
            energy_mj: Default::default(),
            energy_estimated: false,
        },
        &[],
    );
    let html = page_html(&c, &p);
    assert!(html.contains("<code>password</code>"), "{html}");
    assert!(!html.contains("hunter2"), "{html}");
}

#[test]
fn a_waiting_job_shows_its_refusal_matrix() {
    let w = who("viewer");
    let c = ctx(&w, "/ui/w/job/big");
    let blocked = json!({ "count": 2, "why": {
        "summary": "0/2 nodes: 1 insufficient memory, 1 not ready",
        "nodes": [["pi-1", "insufficient memory (512Mi free < 2Gi requested)"], ["pi-2", "not ready"]]
    }});
    let job = view(
        "kind: Job\nname: big\ntask:\n  command: [x]\n",
        Some(blocked),
    );
    let p = workloads::workload(
        &c,
        &WorkloadDetail {
            view: job,
            allocations: vec![],
            energy_mj: Default::default(),
            energy_estimated: false,
        },
        &[],
    );
    let html = page_html(&c, &p);
    assert!(html.contains("<table class=\"matrix\">"), "{html}");
    assert!(html.contains("insufficient memory (1)"), "{html}");
    assert!(
        html.contains("<td class=\"refused\"><span class=\"sr\">refused: </span>512Mi free &lt; 2Gi requested</td>"),
        "{html}"
    );
    assert!(html.contains("Waiting: 2 not placed"), "{html}");
}

#[test]
fn a_refresh_gets_the_live_part_alone() {
    let w = who("viewer");
    let c = ctx(&w, "/ui/events");
    let p = pages::events(&c, &[]);
    let whole = document(&c, &p, false).into_string();
    let part = document(&c, &p, true).into_string();
    assert!(whole.starts_with("<!DOCTYPE html>"));
    assert!(
        part.starts_with("<div id=\"live\" hx-get=\"/ui/events\""),
        "{part}"
    );
    assert!(!part.contains("<nav"), "{part}");
    assert!(whole.contains(&part), "the live part is the page's own");
    // Forms and confirmations are not refreshed under the user's hands.
    let f = pages::confirm(&c, "drain", "pi-1", "", "/ui/nodes/pi-1");
    let html = document(&c, &f, true).into_string();
    assert!(!html.contains("hx-trigger"), "{html}");
    assert!(html.contains("name=\"confirmed\" value=\"yes\""), "{html}");
}

#[test]
fn the_assets_are_embedded_and_small() {
    let total: usize = ["htmx.min.js", "motley.css", "motley.js"]
        .iter()
        .map(|f| assets::get(f).map_or(0, |(_, body)| body.len()))
        .sum();
    assert!(assets::get("htmx.min.js").is_some_and(|(_, b)| b.starts_with("var htmx")));
    assert!(assets::get("../Cargo.toml").is_none());
    // The budget is 150 KB a page, assets included; they leave room for the page.
    assert!(total < 70_000, "{total} bytes of assets");
}

/// WCAG 2 contrast of two `#rrggbb` colours.
fn contrast(a: &str, b: &str) -> f64 {
    let lum = |hex: &str| {
        let c = |i: usize| {
            let v = u8::from_str_radix(&hex[i..i + 2], 16).expect("hex colour") as f64 / 255.0;
            if v <= 0.03928 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * c(1) + 0.7152 * c(3) + 0.0722 * c(5)
    };
    let (x, y) = (lum(a), lum(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// The `--name: #hex` variables of one `:root { … }` block.
fn palette(block: &str) -> std::collections::BTreeMap<String, String> {
    block
        .split(';')
        .filter_map(|d| {
            let (k, v) = d.rsplit('{').next()?.split_once(':')?;
            let k = k.trim();
            let v = v.trim();
            (k.starts_with("--") && v.starts_with('#') && v.len() == 7)
                .then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn text_meets_aa_contrast_in_the_light_and_the_dark_scheme() {
    let css = assets::CSS;
    let light_start = css.find(":root {").expect("the light :root");
    let light = &css[light_start..light_start + css[light_start..].find('}').expect("end")];
    let dark_at = css
        .find("prefers-color-scheme: dark")
        .expect("a dark scheme");
    let dark_start = dark_at + css[dark_at..].find(":root {").expect("the dark :root");
    let dark = &css[dark_start..dark_start + css[dark_start..].find('}').expect("end")];
    let pairs = [
        ("--fg", "--bg"),
        ("--muted", "--bg"),
        ("--link", "--bg"),
        ("--fg", "--panel"),
        ("--muted", "--panel"),
        ("--link", "--panel"),
        ("--bad-fg", "--bg"),
        ("--good-fg", "--good-bg"),
        ("--warn-fg", "--warn-bg"),
        ("--bad-fg", "--bad-bg"),
        ("--plain-fg", "--plain-bg"),
    ];
    for (scheme, block) in [("light", light), ("dark", dark)] {
        let p = palette(block);
        assert!(p.len() >= 14, "{scheme}: {p:?}");
        for (fg, bg) in pairs {
            let (Some(f), Some(b)) = (p.get(fg), p.get(bg)) else {
                panic!("{scheme}: {fg} or {bg} missing from {p:?}");
            };
            let c = contrast(f, b);
            assert!(c >= 4.5, "{scheme}: {fg} {f} on {bg} {b} is {c:.2}:1");
        }
    }
    assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 0.01);
}

#[test]
fn what_if_pages_name_single_points_of_failure_and_verdicts() {
    use motley_scheduler::whatif::{Change, Effect, NodeLoss, Outcome, Verdict};
    let w = who("viewer");
    let c = ctx(&w, "/ui/whatif");
    let r = |s: &str| WorkloadRef::parse(s).expect("a reference");
    let losses = [
        NodeLoss {
            node: "pi-1".into(),
            down: vec![r("service/vault")],
            degraded: vec![],
            moved: vec![r("service/web")],
        },
        NodeLoss {
            node: "pi-2".into(),
            down: vec![],
            degraded: vec![r("service/web")],
            moved: vec![],
        },
    ];
    let html = page_html(&c, &pages::each_node(&c, &losses));
    assert!(
        html.contains("<a href=\"/ui/nodes/pi-1\">pi-1</a> is a single point of failure for <a href=\"/ui/w/service/vault\">service/vault</a>"),
        "{html}"
    );
    assert!(!html.contains("pi-2</a> is a single point"), "{html}");
    assert!(html.contains("href=\"/ui/whatif?lose=pi-2\""), "{html}");
    let o = Outcome {
        change: Change {
            lose: vec!["pi-1".into()],
            drain: vec![],
        },
        workloads: vec![
            Effect {
                workload: r("service/vault"),
                before: 1,
                after: 0,
                desired: 1,
                lost: 1,
                nodes_after: vec![],
                verdict: Verdict::Down,
                why: Some("0/2 nodes: 2 vault is not yes".into()),
            },
            Effect {
                workload: r("service/db"),
                before: 1,
                after: 1,
                desired: 1,
                lost: 0,
                nodes_after: vec!["pi-2".into()],
                verdict: Verdict::Unaffected,
                why: None,
            },
        ],
        passes: 3,
        settled_ms: 8_000,
    };
    let html = page_html(&c, &pages::whatif(&c, "pi-1", &o));
    assert!(
        html.contains("<span class=\"badge bad\">down</span>"),
        "{html}"
    );
    assert!(html.contains("0/2 nodes: 2 vault is not yes"), "{html}");
    assert!(
        !html.contains("service/db"),
        "unaffected workloads are not listed: {html}"
    );
    assert!(
        !html.contains("hx-trigger"),
        "not refreshed: each answer is a computation"
    );
}

#[test]
fn an_experiment_under_way_offers_its_abort_to_an_admin_and_its_report_shows_figures() {
    use motley_core::experiment_run::Runner;
    let text = "kind: Experiment\nname: lab\nsteady_state:\n  - { service: web, ready_at_least: 1 }\nfaults:\n  - { at: 0s, power_off: { node: n<2> }, for: 3s }\n";
    let (mut docs, _) = motley_core::manifest::take_kind::<motley_core::experiment::Experiment>(
        &[motley_core::manifest::Source {
            name: "e.yaml",
            text,
        }],
        "Experiment",
    )
    .expect("an experiment");
    let mut r = Runner::new(docs.remove(0).value, 1_000);
    r.probe(1_000, 0, true, "1 ready".into());
    r.tick(1_000);
    let running = r.report(&Default::default());
    for (role, offered) in [("viewer", false), ("admin", true)] {
        let w = who(role);
        let c = ctx(&w, "/ui/experiments/lab");
        let p = lab::experiment(&c, &running);
        assert!(p.live, "a run under way refreshes");
        let html = page_html(&c, &p);
        assert_eq!(
            html.contains("Abort (undo every fault now)"),
            offered,
            "{html}"
        );
        // What the experiment says is escaped.
        assert!(html.contains("power_off n&lt;2&gt; for 3s"), "{html}");
        assert!(!html.contains("n<2>"), "{html}");
    }
    r.tick(4_000);
    r.probe(9_000, 0, true, "1 ready".into());
    r.tick(9_000);
    let done = r.report(&Default::default());
    let w = who("admin");
    let c = ctx(&w, "/ui/experiments/lab");
    let p = lab::experiment(&c, &done);
    assert!(!p.live);
    let html = page_html(&c, &p);
    assert!(!html.contains("Abort"), "{html}");
    assert!(
        html.contains("The steady state held before the faults and came back after them."),
        "{html}"
    );
    assert!(html.contains("fault 0 undone: power_off"), "{html}");
    let rows = [motley_core::api::ExperimentSummary::from(&done)];
    let html = page_html(&c, &lab::experiments(&c, &rows));
    assert!(html.contains("href=\"/ui/experiments/lab\""), "{html}");
    assert!(html.contains("finished") && html.contains("held"), "{html}");
}
