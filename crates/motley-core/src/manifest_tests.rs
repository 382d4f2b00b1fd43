use super::*;

fn parse(text: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    parse_set(&[Source {
        name: "m.yaml",
        text,
    }])
}

const GOOD: &str = "kind: Service\nname: web\nreplicas: 2\ntask:\n  command: [python3, -m, http.server]\n  resources: { cpu: 100m, memory: 64Mi }\n---\n# a job\nkind: Job\nname: batch\ncompletions: 10\nparallelism: 3\ntask:\n  command: [\"/bin/sh\", \"-c\", \"echo ${MOTLEY_INDEX}\"]\n";

#[test]
fn good_set() {
    let docs = parse(GOOD).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].spec.name(), "web");
    assert_eq!(docs[1].line, 9);
    assert_eq!(docs[1].spec.kind(), Kind::Job);
}

#[test]
fn errors_carry_line_column_field() {
    let bad = GOOD.replace("memory: 64Mi", "memory: 64Mx");
    let e = &parse(&bad).unwrap_err()[0];
    assert_eq!(e.line, 6, "{e}");
    assert_eq!(e.field, "task.resources.memory", "{e}");
    assert!(e.message.contains("64Mx"), "{e}");

    let bad = GOOD.replace("parallelism: 3", "parallelism: 3\nreplicas: 2");
    let e = &parse(&bad).unwrap_err()[0];
    assert_eq!(e.line, 13, "{e}");
    assert!(e.message.contains("unknown field"), "{e}");

    let bad = GOOD.replace("name: batch", "name: Batch_1");
    let e = &parse(&bad).unwrap_err()[0];
    assert_eq!((e.line, e.field.as_str()), (10, "name"), "{e}");
}

#[test]
fn scheduling_fields_are_checked_where_they_are_written() {
    let cases: [(&str, u64, &str, &str); 9] = [
        (
            "kind: Job\nname: a\ntask:\n  command: [x]\n  resources: { gpu: { count: 0 } }\n",
            5,
            "task.resources.gpu.count",
            "between 1 and 64",
        ),
        (
            "kind: Job\nname: a\nplacement:\n  prefer: [{ selector: \"a in (\", weight: 5 }]\ntask:\n  command: [x]\n",
            4,
            "placement.prefer.0.selector",
            "invalid selector",
        ),
        (
            "kind: Job\nname: a\nplacement:\n  prefer: [{ selector: a, weight: 500 }]\ntask:\n  command: [x]\n",
            4,
            "placement.prefer.0.weight",
            "between -100 and 100",
        ),
        (
            "kind: Service\nname: a\nplacement:\n  spread: [{ key: rack, max_skew: 0 }]\ntask:\n  command: [x]\n",
            4,
            "placement.spread.0.max_skew",
            "at least 1",
        ),
        (
            "kind: Job\nname: a\npriority: urgent\ntask:\n  command: [x]\n",
            3,
            "priority",
            "unknown priority class \"urgent\"",
        ),
        ("kind: Volume\nname: v\nsize: 0\n", 3, "size", "more than 0"),
        (
            "kind: Volume\nname: v\nclass: flash\nsize: 1Gi\n",
            3,
            "class",
            "unknown variant",
        ),
        (
            "kind: Service\nname: a\ntask:\n  command: [x]\n  ports: [{ name: h, port: 80 }, { name: g, port: 80 }]\n",
            5,
            "task.ports.1.port",
            "listed twice",
        ),
        (
            "kind: Daemon\nname: a\ntask:\n  command: [x]\n  volumes: [data]\n",
            5,
            "task.volumes",
            "a volume is bound to one",
        ),
    ];
    for (text, line, field, msg) in cases {
        let errs = parse(text).expect_err(text);
        let e = &errs[0];
        assert_eq!((e.line, e.field.as_str()), (line, field), "{text}: {e}");
        assert!(e.message.contains(msg), "{text}: {e}");
    }
    let ok = parse("kind: Service\nname: a\npriority: high\nplacement:\n  affinity: [{ workload: service/db, topology: rack }]\ntask:\n  command: [x]\n  resources: { cpu_units: 1500, gpu: { vendor: amd }, disk: 1Gi }\n  volumes: [data]\n")
        .expect("valid");
    assert_eq!(ok[0].spec.priority(), 100);
    assert_eq!(ok[0].spec.on_node_loss(), crate::model::NodeLoss::Fence);
}

#[test]
fn splitting_keeps_line_numbers() {
    let docs = split_documents("---\na: 1\n---\n\nb: 2\n...\nignored\n--- \nc: 3\n");
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[1].line_offset, 2);
    assert_eq!(docs[2].line_offset, 7);
}

#[test]
fn secrets_and_their_references_are_checked_where_written() {
    let good = "kind: Secret\nname: db\ndata:\n  password: hunter2\n  cert: { fromFile: ./cert.pem }\n  token: { fromEnv: API_TOKEN }\n";
    let docs = parse(good).unwrap();
    let Spec::Secret(s) = &docs[0].spec else {
        panic!("not a secret")
    };
    assert_eq!(s.data["password"].value.as_deref(), Some("hunter2"));
    assert_eq!(s.data["cert"].from_file.as_deref(), Some("./cert.pem"));
    let inputs = secret_inputs(&docs);
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[0].3.field, "data.cert.fromFile");
    assert_eq!(inputs[0].3.line, 5);

    let cases = [
        (
            "kind: Secret\nname: db\ndata:\n  k: { sealed: 'v1:x:y' }\n",
            "data.k.sealed",
            4,
        ),
        (
            "kind: Secret\nname: db\ndata:\n  k: { value: a, fromEnv: B }\n",
            "data.k",
            4,
        ),
        ("kind: Secret\nname: db\ndata:\n  'a/b': x\n", "data.a/b", 4),
        (
            "kind: Secret\nname: db\ndata:\n  k: { fromEnv: 'not a name' }\n",
            "data.k.fromEnv",
            4,
        ),
        ("kind: Secret\nname: db\ndata: {}\n", "data", 3),
        (
            "kind: Service\nname: w\ntask:\n  command: [x]\n  secrets:\n    - { secret: db, key: k, env: A, file: f }\n",
            "task.secrets[0]",
            6,
        ),
        (
            "kind: Service\nname: w\ntask:\n  command: [x]\n  secrets:\n    - { secret: db, key: k, file: ../etc/passwd }\n",
            "task.secrets[0].file",
            6,
        ),
        (
            "kind: Service\nname: w\ntask:\n  command: [x]\n  env: { A: x }\n  secrets:\n    - { secret: db, key: k, env: A }\n",
            "task.secrets[0].env",
            7,
        ),
        (
            "kind: Service\nname: w\ntask:\n  command: [x]\n  secrets:\n    - { secret: db, key: k, env: MOTLEY_X }\n",
            "task.secrets[0].env",
            6,
        ),
    ];
    for (text, field, line) in cases {
        let errs = parse(text).unwrap_err();
        assert!(
            errs.iter().any(|e| e.field == field && e.line == line),
            "{text}: {errs:?}"
        );
    }
    // An unknown field in a value's map is named.
    let errs = parse("kind: Secret\nname: db\ndata:\n  k: { valu: x }\n").unwrap_err();
    assert!(errs[0].message.contains("valu"), "{errs:?}");
}

#[test]
fn alias_bombs_deep_nesting_and_floods_stop_quickly_with_a_location() {
    // Billion laughs: 9 levels of 9 aliases each would be 387 million nodes.
    let mut bomb = String::from("kind: Service\nname: a\nlol0: &l0 [\"lol\"]\n");
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 9].join(", ");
        bomb.push_str(&format!("lol{i}: &l{i} [{refs}]\n"));
    }
    bomb.push_str("task:\n  command: [x]\n");
    let started = std::time::Instant::now();
    let errs = parse(&bomb).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(errs[0].line > 0, "{errs:?}");
    let deep = format!(
        "kind: Service\nname: a\nx: {}1{}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    let errs = parse(&deep).unwrap_err();
    assert!(errs[0].line == 3, "{errs:?}");
    let deep_block: String = (0..100)
        .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
        .collect();
    assert!(parse(&format!("kind: Service\nname: a\n{deep_block}")).is_err());
    // A good manifest with an anchor and an alias still parses.
    let ok = "kind: Service\nname: a\ntask:\n  command: &c [sleep, '1']\n  env: { A: x }\n";
    assert!(parse(ok).is_ok(), "{:?}", parse(ok).err());
}

#[test]
fn a_request_larger_than_every_node_is_refused_in_manifest_units() {
    let docs = parse(
        "kind: Service\nname: big\ntask:\n  command: [x]\n  resources: { cpu: 100m, memory: 32Gi }\n",
    )
    .expect("valid");
    let errs = check_against_cluster(
        &docs,
        &ClusterLimits {
            max_cpu: 4000,
            max_memory: 22_748_376_269,
        },
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "task.resources.memory");
    assert_eq!(
        errs[0].message,
        "requests 32Gi but the largest node has 21.1Gi"
    );
}

#[test]
fn checks_and_port_names_are_checked_where_written() {
    let svc = |ports: &str, check: &str| {
        format!(
            "kind: Service\nname: web\ntask:\n  command: [x]\n  ports: [{ports}]\ncheck:\n{check}"
        )
    };
    let good = svc(
        "{ name: http, port: 8080 }",
        "  http: { port: http, path: /health }\n  interval: 1s\n  timeout: 500ms\n",
    );
    let docs = parse(&good).expect("valid");
    let Spec::Service(s) = &docs[0].spec else {
        panic!("not a service")
    };
    let check = s.check.as_ref().expect("a check");
    assert_eq!(
        check.probe(&s.task),
        Some(crate::model::Probe::Http(8080, "/health"))
    );
    assert_eq!((check.healthy_after, check.unhealthy_after), (1, 3));
    let native_exec = svc("", "  exec: [/bin/check, --quick]\n");
    let docs = parse(&native_exec).expect("an exec check on a native task");
    let Spec::Service(s) = &docs[0].spec else {
        panic!("not a service")
    };
    let exec = s.check.as_ref().expect("a check");
    assert!(matches!(exec.probe(&s.task), Some(crate::model::Probe::Exec(c)) if c.len() == 2));
    let cases = [
        (
            svc("{ name: http, port: 80 }", "  http: { port: web }\n"),
            7,
            "check.http.port",
            "port \"web\" is not declared (the task's ports: http)",
        ),
        (
            svc("", "  tcp: { port: db }\n"),
            7,
            "check.tcp.port",
            "the task has no ports",
        ),
        (
            svc(
                "{ name: http, port: 80 }",
                "  tcp: { port: http }\n  exec: [true]\n",
            ),
            6,
            "check",
            "exactly one of http, tcp or exec",
        ),
        (
            svc("{ name: http, port: 80 }", "  interval: 1s\n"),
            6,
            "check",
            "exactly one of",
        ),
        (
            svc(
                "{ name: http, port: 80 }",
                "  tcp: { port: http }\n  interval: 1s\n  timeout: 2s\n",
            ),
            9,
            "check.timeout",
            "at most the interval",
        ),
        (
            svc(
                "{ name: http, port: 80 }",
                "  tcp: { port: http }\n  unhealthy_after: 0\n",
            ),
            8,
            "check.unhealthy_after",
            "1 to 100",
        ),
        (
            svc(
                "{ name: http, port: 80 }",
                "  http: { port: http, path: health }\n",
            ),
            7,
            "check.http.path",
            "must start with /",
        ),
        (
            svc(
                "{ name: http, port: 80 }",
                "  tcp: { port: http }\n  every: 2s\n",
            ),
            8,
            "check.every",
            "unknown field",
        ),
        (
            svc(
                "{ name: http, port: 80 }, { name: http, port: 81 }",
                "  tcp: { port: http }\n",
            ),
            5,
            "task.ports.1.name",
            "port name \"http\" is used twice",
        ),
    ];
    for (text, line, field, msg) in cases {
        let errs = parse(&text).expect_err(&text);
        let e = &errs[0];
        assert_eq!((e.line, e.field.as_str()), (line, field), "{text}: {e}");
        assert!(e.message.contains(msg), "{text}: {e}");
    }
}

#[test]
fn a_containers_exec_check_is_taken() {
    let text = "kind: Service\nname: web\ntask:\n  image: busybox:1\ncheck:\n  exec: [/bin/check, --quick]\n";
    let docs = parse(text).unwrap();
    let Spec::Service(s) = &docs[0].spec else {
        panic!("not a service: {:?}", docs[0].spec);
    };
    let check = s.check.as_ref().unwrap();
    assert_eq!(check.exec, ["/bin/check", "--quick"]);
}

#[test]
fn service_ports_expose_and_update_are_checked_where_written() {
    let svc = |name: &str, rest: &str| {
        format!(
            "kind: Service\nname: {name}\ntask:\n  command: [x]\n  ports: [{{ name: admin, port: 9000 }}]\n{rest}"
        )
    };
    let good = svc(
        "web",
        "ports:\n  - { name: http, service_port: 80 }\ncheck:\n  http: { port: http }\nexpose:\n  - { port: http, host: web.home.arpa }\n  - { port: http, host: web.home.arpa, path: /api }\nupdate: { max_parallel: 2, min_healthy: 5s, deadline: 2m }\n",
    );
    let docs = parse(&good).expect("valid");
    let Spec::Service(s) = &docs[0].spec else {
        panic!("not a service")
    };
    assert_eq!(s.ports[0].service_port, Some(80));
    assert_eq!(s.expose[0].path, "/");
    assert_eq!(s.update.max_parallel, 2);
    // The check names a service port: probed at the port chosen for the allocation.
    let run = s.task_with_ports();
    assert_eq!(run.ports[1].port, 0);
    let cases = [
        (
            svc("web", "ports:\n  - { name: http, service_port: 70000 }\n"),
            7,
            "ports[0].service_port",
            "invalid u16",
        ),
        (
            svc("web", "ports:\n  - { name: http, service_port: 0 }\n"),
            7,
            "ports.0.service_port",
            "1 to 65535",
        ),
        (
            svc("web", "ports:\n  - { name: admin }\n"),
            7,
            "ports.0.name",
            "used twice",
        ),
        (
            svc(
                "web",
                "ports:\n  - { name: http, service_port: 80 }\n  - { name: web, service_port: 80 }\n",
            ),
            8,
            "ports.1.service_port",
            "given twice",
        ),
        (
            svc(
                "web",
                "ports:\n  - { name: http }\ncheck:\n  tcp: { port: db }\n",
            ),
            9,
            "check.tcp.port",
            "not declared",
        ),
        (
            svc(
                "web",
                "ports:\n  - { name: http }\nexpose:\n  - { port: web, host: a.b }\n",
            ),
            9,
            "expose.0.port",
            "not one of the service's ports (http)",
        ),
        (
            svc(
                "web",
                "ports:\n  - { name: http }\nexpose:\n  - { port: http, host: \"bad host\" }\n",
            ),
            9,
            "expose.0.host",
            "host name",
        ),
        (
            svc(
                "web",
                "ports:\n  - { name: http }\nexpose:\n  - { port: http, host: a.b }\n  - { port: http, host: A.b, path: / }\n",
            ),
            10,
            "expose.1",
            "exposed twice",
        ),
        (
            svc(
                "web",
                "ports:\n  - { name: http }\nexpose_tcp:\n  - { port: db, node_port: 5432 }\n",
            ),
            9,
            "expose_tcp.0.port",
            "not one of the service's ports",
        ),
        (
            svc(
                "web",
                "ports:\n  - { name: http }\nexpose_tcp:\n  - { port: http, node_port: 5432 }\n  - { port: http, node_port: 5432 }\n",
            ),
            10,
            "expose_tcp.1.node_port",
            "exposed twice",
        ),
        (
            svc("web", "update: { max_parallel: 0 }\n"),
            6,
            "update.max_parallel",
            "1 to 1000",
        ),
        (
            svc("web", "update: { max_surge: 1 }\n"),
            6,
            "update.max_surge",
            "unknown field",
        ),
    ];
    for (text, line, field, msg) in cases {
        let errs = parse(&text).expect_err(&text);
        let e = &errs[0];
        assert_eq!((e.line, e.field.as_str()), (line, field), "{text}: {e}");
        assert!(e.message.contains(msg), "{text}: {e}");
    }
    // One route claimed by two services of a set: refused where the second claims it.
    let two = format!(
        "{}---\n{}",
        svc(
            "web",
            "ports:\n  - { name: http }\nexpose:\n  - { port: http, host: a.b }\n"
        ),
        svc(
            "api",
            "ports:\n  - { name: http }\nexpose:\n  - { port: http, host: a.b, path: / }\n"
        ),
    );
    let errs = parse(&two).expect_err("a route claimed twice");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        (errs[0].line, errs[0].field.as_str()),
        (19, "expose.0.host")
    );
    assert!(
        errs[0].message.contains("already exposed by service web"),
        "{}",
        errs[0]
    );
    // A TCP route's node port, likewise.
    let two_tcp = format!(
        "{}---\n{}",
        svc(
            "web",
            "ports:\n  - { name: http }\nexpose_tcp:\n  - { port: http, node_port: 5432 }\n"
        ),
        svc(
            "api",
            "ports:\n  - { name: db }\nexpose_tcp:\n  - { port: db, node_port: 5432 }\n"
        ),
    );
    let errs = parse(&two_tcp).expect_err("a node port claimed twice");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "expose_tcp.0.node_port");
    assert!(
        errs[0]
            .message
            .contains("node port 5432 is already exposed by service web"),
        "{}",
        errs[0]
    );
    // And against the cluster: another service's route, unless the set replaces it.
    let docs = parse(&svc(
        "api",
        "ports:\n  - { name: http }\nexpose:\n  - { port: http, host: a.b }\n",
    ))
    .expect("valid alone");
    let mut existing = BTreeMap::new();
    existing.insert(
        "web".to_string(),
        vec![("a.b".to_string(), "/".to_string())],
    );
    let errs = crate::manifest::expose_conflicts(&docs, &existing);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("service web"));
    existing.insert(
        "web".to_string(),
        vec![("a.b".to_string(), "/web".to_string())],
    );
    assert!(crate::manifest::expose_conflicts(&docs, &existing).is_empty());
}

#[test]
fn a_source_is_checked_where_written() {
    let good = "kind: Source\nname: home\ngit:\n  url: https://git.example.org/me/homelab.git\n  branch: main\n  path: clusters/home\ninterval: 1m\nprune: true\ndecrypt: { age_key: { secret: age-key, key: identity } }\n";
    let docs = parse(good).unwrap();
    let Spec::Source(s) = &docs[0].spec else {
        panic!("not a source: {:?}", docs[0].spec)
    };
    assert_eq!(
        (
            s.wanted(),
            s.interval.as_millis(),
            s.prune,
            s.health.timeout.as_millis()
        ),
        (("branch", "main"), 60_000, true, 300_000)
    );
    let cases = [
        (
            "https://git.example.org/me/homelab.git",
            "git@host:me/x.git",
            4,
            "git.url",
            "not a URL",
        ),
        (
            "  branch: main",
            "  branch: main\n  tag: v1",
            3,
            "git",
            "one of branch, tag and commit",
        ),
        (
            "  branch: main",
            "  commit: abc123",
            5,
            "git.commit",
            "40 hexadecimal",
        ),
        (
            "  branch: main",
            "  branch: a..b",
            5,
            "git.branch",
            "not a valid git ref",
        ),
        (
            "path: clusters/home",
            "path: ../etc",
            6,
            "git.path",
            "without ..",
        ),
        ("interval: 1m", "interval: 1s", 7, "interval", "at least 5s"),
        (
            "secret: age-key",
            "secret: Age_Key",
            9,
            "decrypt.age_key.secret",
            "lowercase",
        ),
        ("prune: true", "prune: yes please", 8, "prune", ""),
        (
            "https://git.example.org/me/homelab.git\n  branch: main",
            "http://git.example.org/me/homelab.git\n  credentials: { secret: creds }\n  branch: main",
            5,
            "git.credentials",
            "only over https://",
        ),
    ];
    for (from, to, line, field, says) in cases {
        let bad = good.replace(from, to);
        let errors = parse(&bad).unwrap_err();
        let e = &errors[0];
        assert_eq!((e.line, e.field.as_str()), (line, field), "{to}: {e}");
        assert!(e.message.contains(says), "{to}: {e}");
    }
    let e = &parse("kind: Sauce\nname: x\n").unwrap_err()[0];
    assert!(
        e.message.contains("Secret, Config, Source or Namespace"),
        "{e}"
    );
}

fn parse_in(text: &str, ns: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    parse_set_in(
        &[Source {
            name: "ns.yaml",
            text,
        }],
        Some(ns),
    )
}

#[test]
fn names_are_unique_per_namespace_and_minus_n_fills_in_or_refuses() {
    let two = "kind: Service\nname: web\ntask: { command: [x] }\n---\nkind: Service\nname: web\nnamespace: dev\ntask: { command: [x] }\n";
    let docs = parse(two).unwrap_or_else(|e| panic!("{e:?}"));
    let refs: Vec<String> = docs
        .iter()
        .map(|d| d.spec.reference().to_string())
        .collect();
    assert_eq!(refs, ["service/web", "dev/service/web"]);
    // `namespace: default` is stored as unset: what 0.1.0 wrote compares equal.
    let explicit = parse("kind: Job\nname: j\nnamespace: default\ntask: { command: [x] }\n")
        .unwrap_or_else(|e| panic!("{e:?}"));
    let plain =
        parse("kind: Job\nname: j\ntask: { command: [x] }\n").unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(explicit[0].spec, plain[0].spec);
    // The same name twice in one namespace is refused where the second is.
    let dup = "kind: Service\nname: web\nnamespace: dev\ntask: { command: [x] }\n---\nkind: Service\nname: web\ntask: { command: [x] }\n";
    let e = &parse_in(dup, "dev").unwrap_err()[0];
    assert_eq!((e.line, e.field.as_str()), (7, "name"), "{e}");
    assert!(e.message.contains("duplicate dev/service/web"), "{e}");
    // -n puts documents without a namespace there; one naming another is an error.
    let docs = parse_in("kind: Secret\nname: s\ndata: { a: b }\n", "dev")
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(docs[0].spec.reference().to_string(), "dev/secret/s");
    let e = &parse_in(
        "kind: Job\nname: j\nnamespace: prod\ntask: { command: [x] }\n",
        "dev",
    )
    .unwrap_err()[0];
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (3, 12, "namespace"),
        "{e}"
    );
    assert!(
        e.message
            .contains("is prod but the set is applied to namespace dev"),
        "{e}"
    );
    // Namespaces are cluster-wide and stay so under -n; a bad namespace name is named.
    let docs = parse_in("kind: Namespace\nname: dev\nquota: { cpu: 2 }\n", "dev")
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(docs[0].spec.reference().to_string(), "namespace/dev");
    let e =
        &parse("kind: Job\nname: j\nnamespace: Dev_1\ntask: { command: [x] }\n").unwrap_err()[0];
    assert_eq!(e.field, "namespace", "{e}");
    let e = &parse("kind: Namespace\nname: dev\nnamespace: x\n").unwrap_err()[0];
    assert!(e.message.contains("unknown field"), "{e}");
}

#[test]
fn a_quota_refuses_growth_past_it_at_the_document_and_allows_shrinking() {
    let ns = parse("kind: Namespace\nname: dev\nquota: { cpu: 1, memory: 1Gi, allocations: 3 }\n")
        .unwrap_or_else(|e| panic!("{e:?}"));
    let quotas: BTreeMap<String, crate::quota::Quota> = ns
        .iter()
        .filter_map(|d| match &d.spec {
            Spec::Namespace(n) => Some((n.name.clone(), n.quota)),
            _ => None,
        })
        .collect();
    let svc = |replicas: u32| {
        format!(
            "kind: Service\nname: web\nnamespace: dev\nreplicas: {replicas}\ntask:\n  command: [x]\n  resources: {{ cpu: 250m, memory: 128Mi }}\n"
        )
    };
    let empty = BTreeMap::new();
    let fits = parse(&svc(3)).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(quota_problems(&fits, &empty, &quotas, 2).is_empty());
    let over = parse(&svc(5)).unwrap_or_else(|e| panic!("{e:?}"));
    let errors = quota_problems(&over, &empty, &quotas, 2);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!((e.line, e.field.as_str()), (4, "replicas"), "{e}");
    assert!(
        e.message.contains("namespace dev would exceed its quota"),
        "{e}"
    );
    assert!(e.message.contains("cpu 1250m of 1"), "{e}");
    assert!(e.message.contains("allocations 5 of 3"), "{e}");
    // The same service in default, or a namespace without a quota, is not limited.
    let elsewhere = parse(&svc(5).replace("namespace: dev", "namespace: prod"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(quota_problems(&elsewhere, &empty, &quotas, 2).is_empty());
    // What is stored counts: another service at 2 replicas leaves room for 1 more.
    let other =
        parse(&svc(2).replace("name: web", "name: api")).unwrap_or_else(|e| panic!("{e:?}"));
    let current: BTreeMap<WorkloadRef, &Spec> = other
        .iter()
        .map(|d| (d.spec.reference(), &d.spec))
        .collect();
    assert!(quota_problems(&parse(&svc(1)).unwrap_or_default(), &current, &quotas, 2).is_empty());
    assert_eq!(
        quota_problems(&parse(&svc(2)).unwrap_or_default(), &current, &quotas, 2).len(),
        1
    );
    // Over the quota already (it was lowered): shrinking is allowed, growing is not.
    let big = parse(&svc(6)).unwrap_or_else(|e| panic!("{e:?}"));
    let stored: BTreeMap<WorkloadRef, &Spec> =
        big.iter().map(|d| (d.spec.reference(), &d.spec)).collect();
    assert!(quota_problems(&parse(&svc(4)).unwrap_or_default(), &stored, &quotas, 2).is_empty());
    assert_eq!(
        quota_problems(&parse(&svc(7)).unwrap_or_default(), &stored, &quotas, 2).len(),
        1
    );
    // A Namespace in the same set sets the quota the set is checked against.
    let both = format!(
        "kind: Namespace\nname: dev\nquota: {{ allocations: 10 }}\n---\n{}",
        svc(5)
    );
    let docs = parse(&both).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(quota_problems(&docs, &empty, &quotas, 2).is_empty());
}

#[test]
fn affinities_stay_inside_their_namespace() {
    let doc = |ns: &str, to: &str| {
        format!(
            "kind: Service\nname: web\n{ns}task: {{ command: [x] }}\nplacement:\n  affinity:\n    - {{ workload: {to} }}\n"
        )
    };
    let affinity = |docs: &[Document]| match &docs[0].spec {
        Spec::Service(s) => s.placement.affinity[0].workload.to_string(),
        _ => String::new(),
    };
    let written = parse(&doc("namespace: dev\n", "service/db")).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(affinity(&written), "dev/service/db");
    let by_n = parse_in(&doc("", "service/db"), "dev").unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(affinity(&by_n), "dev/service/db");
    let plain = parse(&doc("", "service/db")).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(affinity(&plain), "service/db");
    let e = &parse(&doc("namespace: dev\n", "prod/service/db")).unwrap_err()[0];
    assert_eq!(
        (e.line, e.field.as_str()),
        (7, "placement.affinity.0.workload"),
        "{e}"
    );
    assert!(e.message.contains("namespace dev"), "{e}");
}

#[test]
fn periodic_fields_are_checked_where_they_are_written() {
    let job = |extra: &str| format!("kind: Job\nname: backup\n{extra}task:\n  command: [x]\n");
    let cases: [(&str, u64, u64, &str, &str); 8] = [
        (
            "schedule: \"0 25 * * *\"\n",
            3,
            11,
            "schedule",
            "hour 25 is out of range 0-23",
        ),
        ("schedule: \"0 3 * *\"\n", 3, 11, "schedule", "4 fields"),
        (
            "schedule: \"0 0 30 2 *\"\n",
            3,
            11,
            "schedule",
            "never fires",
        ),
        (
            "schedule: \"@daily\"\ntime_zone: Mars/Base\n",
            4,
            12,
            "time_zone",
            "is not known",
        ),
        (
            "time_zone: UTC\n",
            3,
            12,
            "time_zone",
            "only a periodic job",
        ),
        (
            "concurrency: forbid\n",
            3,
            14,
            "concurrency",
            "only a periodic job",
        ),
        (
            "schedule: \"@daily\"\nhistory: 0\n",
            4,
            10,
            "history",
            "between 1 and 100",
        ),
        ("missed: skip\n", 3, 9, "missed", "only a periodic job"),
    ];
    for (extra, line, column, field, says) in cases {
        let text = job(extra);
        let errs = match parse(&text) {
            Ok(d) => panic!("{text}: accepted {d:?}"),
            Err(e) => e,
        };
        assert_eq!(errs.len(), 1, "{text}: {errs:?}");
        let e = &errs[0];
        assert_eq!(
            (e.line, e.column, e.field.as_str()),
            (line, column, field),
            "{text}: {e}"
        );
        assert!(e.message.contains(says), "{text}: {e}");
    }
    let long = format!(
        "kind: Job\nname: {}\nschedule: \"@daily\"\ntask:\n  command: [x]\n",
        "a".repeat(49)
    );
    let e = &parse(&long).expect_err("too long")[0];
    assert_eq!((e.line, e.field.as_str()), (2, "name"), "{e}");
    // Valid: every field, a zone, six fields.
    let ok = job(
        "schedule: \"*/10 * * * * *\"\ntime_zone: Europe/Berlin\nconcurrency: replace\nmissed: skip\nhistory: 5\n",
    );
    let docs = parse(&ok).expect("valid");
    let Spec::Job(j) = &docs[0].spec else {
        panic!("not a job")
    };
    assert_eq!(j.schedule.as_deref(), Some("*/10 * * * * *"));
    assert_eq!(
        (j.concurrency, j.missed, j.history),
        (model::Concurrency::Replace, model::Missed::Skip, Some(5))
    );
}

#[path = "manifest_tests_containers.rs"]
mod containers;
