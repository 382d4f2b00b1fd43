//! Configs, mounts, container ports, start order and users: refused where written.

use super::*;

/// Each case edits `good` (`from` → `to`, once) into a manifest refused with its first
/// error at `line`, on `field`, saying `msg`.
fn refused_where_written(good: &str, cases: &[(&str, &str, u64, &str, &str)]) {
    for (from, to, line, field, msg) in cases {
        let bad = good.replacen(from, to, 1);
        let errors = parse(&bad).unwrap_err();
        let e = &errors[0];
        assert_eq!((e.line, e.field.as_str()), (*line, *field), "{bad}\n{e}");
        assert!(e.message.contains(msg), "{e}");
    }
}

#[test]
fn configs_and_their_references_are_checked_where_written() {
    let good = "kind: Config\nname: app\ndata:\n  app.ini: |\n    [server]\n    port = 8080\n  extra: { fromFile: extra.txt }\n---\nkind: Service\nname: web\ntask:\n  command: [x]\n  configs:\n  - { config: app, key: app.ini, file: /etc/app/app.ini }\n  - { config: app, key: extra, env: EXTRA }\n";
    let docs = parse(good).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].spec.kind(), Kind::Config);
    let inputs = secret_inputs(&docs);
    assert_eq!(inputs.len(), 1);
    assert_eq!((inputs[0].1, inputs[0].2.as_str()), ("file", "extra.txt"));
    assert_eq!(inputs[0].3.field, "data.extra.fromFile");
    let cases: [(&str, &str, u64, &str, &str); 8] = [
        (
            "data:\n  app.ini",
            "data:\n  bad/key",
            5,
            "data.bad/key",
            "must be 1-253",
        ),
        (
            "extra: { fromFile: extra.txt }",
            "extra: { value: a, fromFile: b }",
            7,
            "data.extra",
            "exactly one of value and fromFile",
        ),
        (
            "file: /etc/app/app.ini",
            "file: etc/app.ini",
            14,
            "task.configs[0].file",
            "absolute path",
        ),
        (
            "file: /etc/app/app.ini",
            "file: /etc/../shadow",
            14,
            "task.configs[0].file",
            "no empty, . or .. parts",
        ),
        (
            "file: /etc/app/app.ini",
            "file: /run/secrets/x",
            14,
            "task.configs[0].file",
            "choose another path",
        ),
        (
            "env: EXTRA",
            "env: MOTLEY_X",
            15,
            "task.configs[1].env",
            "set by motley",
        ),
        (
            "env: EXTRA",
            "env: EXTRA, file: /etc/x",
            15,
            "task.configs[1]",
            "exactly one of env and file",
        ),
        (
            "key: app.ini",
            "key: \"../x\"",
            14,
            "task.configs[0].key",
            "not a config key",
        ),
    ];
    refused_where_written(good, &cases);
    // A variable given twice (by env and by a config) is refused.
    let twice = good.replace("  configs:\n", "  env: { EXTRA: a }\n  configs:\n");
    let e = &parse(&twice).unwrap_err()[0];
    assert_eq!(e.field, "task.configs[1].env", "{e}");
    assert!(e.message.contains("set twice"), "{e}");
}

#[test]
fn mounts_container_ports_and_start_order_are_checked_where_written() {
    let good = "kind: Service\nname: web\ndepends_on: [db]\ntask:\n  image: reg:5000/nginx:1\n  network: bridge\n  volumes: [data]\n  mounts:\n  - { volume: data, path: /usr/share/nginx/html }\n  - { host_path: /srv/conf, path: /etc/nginx/conf.d, read_only: true }\nports:\n  - { name: http, service_port: 80, container_port: 80 }\n";
    let docs = parse(good).unwrap();
    let Spec::Service(s) = &docs[0].spec else {
        panic!("a service")
    };
    assert_eq!(s.ports[0].container_port, Some(80));
    assert_eq!(s.task_with_ports().ports[0].container_port, Some(80));
    assert!(s.task.mounts[1].read_only);
    let cases: [(&str, &str, u64, &str, &str); 7] = [
        (
            "  network: bridge\n",
            "",
            11,
            "ports.0.container_port",
            "bridge network",
        ),
        (
            "volume: data,",
            "volume: other,",
            9,
            "task.mounts.0.volume",
            "not one of task.volumes",
        ),
        (
            "host_path: /srv/conf,",
            "host_path: srv/conf,",
            10,
            "task.mounts.1.host_path",
            "absolute path",
        ),
        (
            "path: /usr/share/nginx/html",
            "path: /proc/x",
            9,
            "task.mounts.0.path",
            "mounted by motley or the kernel",
        ),
        (
            "path: /etc/nginx/conf.d",
            "path: /usr/share/nginx/html",
            10,
            "task.mounts.1.path",
            "mounted twice",
        ),
        (
            "depends_on: [db]",
            "depends_on: [web]",
            3,
            "depends_on.0",
            "itself",
        ),
        (
            "{ volume: data, path",
            "{ volume: data, host_path: /x, path",
            9,
            "task.mounts.0",
            "exactly one of volume and host_path",
        ),
    ];
    refused_where_written(good, &cases);
    for (user, says) in [("\"1000:abc\"", "a numeric user"), ("\"0\"", "root: true")] {
        let bad = good.replacen(
            "  network: bridge\n",
            &format!("  network: bridge\n  user: {user}\n"),
            1,
        );
        let e = &parse(&bad).unwrap_err()[0];
        assert_eq!(e.field, "task.user", "{e}");
        assert!(e.message.contains(says), "{e}");
    }
    let ok = good.replacen(
        "  network: bridge\n",
        "  network: bridge\n  user: \"1000:100\"\n",
        1,
    );
    let docs = parse(&ok).unwrap();
    assert_eq!(docs[0].spec.task().numeric_user(), Some((1000, 100)));
    let process = "kind: Job\nname: j\ntask:\n  command: [x]\n  volumes: [v]\n  mounts: [{ volume: v, path: /data }]\n";
    let e = &parse(process).unwrap_err()[0];
    assert_eq!(e.field, "task.mounts.0", "{e}");
    assert!(e.message.contains("for containers"), "{e}");
}
