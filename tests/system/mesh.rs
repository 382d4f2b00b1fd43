//! Service networking across machines: a server and three agents in their own network
//! namespaces, and a client namespace with no motley in it. Needs root, curl, dig.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::netns::Lab;

fn in_ns(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{args:?} in {ns}: {e}"))
}

/// `GET url` with `Host: web.test` from namespace `ns`: the body, or `Err` with why.
fn get(ns: &str, url: &str) -> Result<String, String> {
    let out = in_ns(
        ns,
        &["curl", "-sS", "-m", "5", "-f", "-H", "Host: web.test", url],
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `dig +short` in `ns`, asking `server`.
fn dig(ns: &str, server: &str, args: &[&str]) -> Vec<String> {
    let at = format!("@{server}");
    let mut a = vec!["dig", "+short", "+time=2", "+tries=2", at.as_str()];
    a.extend(args);
    let out = in_ns(ns, &a);
    assert!(out.status.success(), "dig {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A service of 3 replicas of busybox httpd answering `VERSION ALLOC_ID`; its check is
/// `/ok`, made at the first start only (a replica whose `ok` is removed stays unhealthy
/// through restarts).
fn web(version: &str) -> String {
    web_with(version, true, "")
}

/// [`web`], whose replicas never pass their check unless `healthy`, with more `update:`
/// fields.
fn web_with(version: &str, healthy: bool, update: &str) -> String {
    let ok = if healthy { "touch $d/ok" } else { "true" };
    format!(
        r##"kind: Service
name: web
replicas: 3
task:
  command: [/bin/sh, -c, 'd=$MOTLEY_ALLOC_DIR/www; mkdir -p $d/cgi-bin; echo "{version} $MOTLEY_ALLOC_ID" > $d/index.html; printf "#!/bin/sh\nsleep 0.4\necho Content-Type: text/plain\necho\necho {version} slow\n" > $d/cgi-bin/slow; chmod +x $d/cgi-bin/slow; [ -e $MOTLEY_ALLOC_DIR/started ] || {ok}; touch $MOTLEY_ALLOC_DIR/started; exec /bin/busybox httpd -f -p $MOTLEY_PORT_HTTP -h $d']
  env: {{ PATH: /usr/bin:/bin }}
  resources: {{ cpu: 10m, memory: 16Mi }}
  stop_grace: 1s
ports:
  - {{ name: http, service_port: 80, protocol: http }}
check:
  http: {{ port: http, path: /ok }}
  interval: 500ms
  timeout: 400ms
  unhealthy_after: 2
expose:
  - {{ port: http, host: web.test, tls: {{}} }}
  - {{ port: http, host: secure.test, tls: {{ secret: web-tls }} }}
expose_tcp:
  - {{ port: http, node_port: 8088 }}
update:
  max_parallel: 1
  min_healthy: 1s
{update}"##
    )
}

/// The replicas of `web` in rotation, by allocation id, from `describe service web`.
fn in_rotation(lab: &Lab) -> Vec<String> {
    let out = lab.cli(&["describe", "service", "web"]);
    assert!(out.status.success(), "describe: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // `describe` shows no Endpoints table while no replica runs (just after an apply):
    // that, read from its Status line, is an empty rotation. Any other missing table is
    // a failure, not an empty rotation (the output changed, or failed).
    if text
        .lines()
        .any(|l| l.starts_with("Status:") && l.contains(", running 0,"))
    {
        return Vec::new();
    }
    let table = text
        .split("Endpoints:\n")
        .nth(1)
        .map(|t| t.split("Allocations:").next().unwrap_or(""))
        .unwrap_or_else(|| panic!("no Endpoints table in describe service web:\n{text}"));
    table
        .lines()
        .skip(1)
        .filter(|l| l.trim_end().ends_with("yes"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Runs `scripts/load.py` in `ns` against `urls` until the returned closure is called,
/// which gives its JSON summary.
fn load(ns: &str, urls: &[String]) -> impl FnOnce() -> serde_json::Value {
    let stop = std::env::temp_dir().join(format!("motley-load-stop-{}", free_port()));
    let _ = std::fs::remove_file(&stop);
    let script = repo_root().join("tests/system/scripts/load.py");
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "python3"])
        .arg(&script)
        .arg("web.test")
        .arg(&stop)
        .args(urls)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the load");
    move || {
        std::fs::write(&stop, b"").expect("stop file");
        let out = child.wait_with_output().expect("load output");
        let _ = std::fs::remove_file(&stop);
        assert!(out.status.success(), "load.py: {out:?}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("load.py printed no JSON ({e}): {out:?}"))
    }
}

/// The pid and allocation dir of the replica `alloc` of `web`, in namespace `ns`.
fn replica_dir(ns: &str, alloc: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|p| pid_alive(*p))
        .find_map(|p| {
            let env = environ(p);
            env.iter()
                .any(|kv| kv == &format!("MOTLEY_ALLOC_ID={alloc}"))
                .then(|| {
                    env.iter()
                        .find_map(|kv| kv.strip_prefix("MOTLEY_ALLOC_DIR=").map(str::to_string))
                })?
        })
}

#[test]
fn services_are_reached_by_name_and_through_any_nodes_ingress_and_update_with_no_failed_request() {
    let mut lab = Lab::new();
    lab.server();
    let nodes = ["n1", "n2", "n3"];
    for n in nodes {
        lab.agent_with(
            n,
            &[
                "--dns-listen",
                "{ip}:53",
                "--ingress-listen",
                "{ip}:80",
                "--ingress-tls-listen",
                "{ip}:443",
                "--metrics-listen",
                "{ip}:9100",
                "--dns-upstream",
                "127.0.0.1:9",
            ],
        );
    }
    lab.host("client");
    let client = lab.hosts.last().expect("client").ns.clone();
    let ip = |n: &str| lab.by_name(n).ip.clone();
    let ingress: Vec<String> = nodes.iter().map(|n| format!("http://{}/", ip(n))).collect();
    // A certificate of our own for secure.test, kept in a Secret.
    let pki = lab.dir.path().join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    let (crt, key) = (pki.join("tls.crt"), pki.join("tls.key"));
    let openssl = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=secure.test"])
        .args(["-addext", "subjectAltName=DNS:secure.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(openssl.status.success(), "{openssl:?}");
    let secret = format!(
        "kind: Secret\nname: web-tls\ndata:\n  tls.crt: {{ fromFile: {} }}\n  tls.key: {{ fromFile: {} }}\n---\n",
        crt.display(),
        key.display()
    );
    lab.apply(&format!("{secret}{}", web("v1")));
    wait_for("3 replicas in rotation", Duration::from_secs(60), || {
        (in_rotation(&lab).len() == 3).then_some(())
    });

    // Any node's ingress reaches a healthy replica; every replica answers in turn.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..12 {
        let body = get(&client, &ingress[i % 3]).unwrap_or_else(|e| panic!("{e}"));
        assert!(body.starts_with("v1 web-"), "{body}");
        seen.insert(body);
    }
    assert_eq!(seen.len(), 3, "every replica answers: {seen:?}");
    let other = in_ns(
        &client,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: nope.test",
            &ingress[0],
        ],
    );
    assert_eq!(String::from_utf8_lossy(&other.stdout), "404", "{other:?}");

    // DNS: the name is the service's loopback address (the node's own proxy), SRV its
    // three endpoints at their node addresses; other names go upstream (none here:
    // refused, so SERVFAIL and no answer, not a made-up one).
    let a = dig(&client, &ip("n1"), &["web.motley"]);
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0].starts_with("127.77."), "{a:?}");
    assert_eq!(
        dig(&client, &ip("n2"), &["web.motley"]),
        a,
        "same on every node"
    );
    // AAAA: the same address, IPv4-mapped (an IPv6 client reaches it: below).
    assert_eq!(
        dig(&client, &ip("n1"), &["web.motley", "AAAA"]),
        [format!("::ffff:{}", a[0])]
    );
    let srv = dig(&client, &ip("n3"), &["_http._tcp.web.motley", "SRV"]);
    assert_eq!(srv.len(), 3, "{srv:?}");
    let target = srv[0].split_whitespace().nth(3).expect("SRV target");
    let addr = dig(&client, &ip("n3"), &[target]);
    assert_eq!(addr.len(), 1);
    assert!(nodes.iter().any(|n| ip(n) == addr[0]), "{addr:?}");
    assert!(dig(&client, &ip("n1"), &["nope.motley"]).is_empty());
    // The same name in namespace dev is another service: `web.dev.motley`, its own
    // address and endpoints.
    lab.apply(
        "kind: Namespace\nname: dev\n---\nkind: Service\nname: web\nnamespace: dev\ntask:\n  command: [sleep, '3600']\n  resources: { cpu: 10m, memory: 8Mi }\nports:\n  - { name: http }\n",
    );
    let dev = wait_for("web.dev.motley in DNS", Duration::from_secs(30), || {
        let srv = dig(&client, &ip("n2"), &["_http._tcp.web.dev.motley", "SRV"]);
        let a = dig(&client, &ip("n2"), &["web.dev.motley"]);
        (srv.len() == 1 && a.len() == 1).then_some(a)
    });
    assert!(
        dev[0].starts_with("127.77.") && dev != a,
        "{dev:?} vs {a:?}"
    );
    assert_eq!(
        dig(&client, &ip("n1"), &["web.motley"]),
        a,
        "default's web unchanged"
    );
    // HTTPS through every node: the cluster CA's certificate for web.test, the
    // Secret's for secure.test, each chosen by SNI.
    let ca = format!("{}/server/ca.crt", lab.data("srv"));
    for n in nodes {
        for (host, trust) in [
            ("web.test", ca.clone()),
            ("secure.test", crt.display().to_string()),
        ] {
            let resolve = format!("{host}:443:{}", ip(n));
            let url = format!("https://{host}/");
            let out = in_ns(
                &client,
                &[
                    "curl",
                    "-sS",
                    "-m",
                    "5",
                    "-f",
                    "--cacert",
                    &trust,
                    "--resolve",
                    &resolve,
                    &url,
                ],
            );
            let body = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && body.starts_with("v1 web-"),
                "{host} via {n}: {out:?}"
            );
        }
    }
    // A TCP route: connections to port 8088 of any node reach the service.
    for n in nodes {
        let body = in_ns(
            &client,
            &[
                "curl",
                "-sS",
                "-m",
                "5",
                "-f",
                &format!("http://{}:8088/", ip(n)),
            ],
        );
        let body = String::from_utf8_lossy(&body.stdout).to_string();
        assert!(body.starts_with("v1 web-"), "TCP route via {n}: {body:?}");
    }
    // With PROXY protocol v2 the service learns the client's address: a backend that
    // reads the header and answers with the source address it carries.
    let echo = "kind: Service\nname: echo\ntask:\n  command: [python3, -c, \"import os, socket\\ns = socket.socket()\\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\\ns.bind(('0.0.0.0', int(os.environ['MOTLEY_PORT_TCP'])))\\ns.listen()\\nwhile True:\\n  c, _ = s.accept()\\n  h = c.recv(28, socket.MSG_WAITALL)\\n  c.sendall(('from ' + '.'.join(str(b) for b in h[16:20]) + chr(10)).encode())\\n  c.close()\\n\"]\n  env: { PATH: /usr/bin:/bin }\n  stop_grace: 1s\nports:\n  - { name: tcp }\ncheck:\n  tcp: { port: tcp }\n  interval: 500ms\n  timeout: 400ms\nexpose_tcp:\n  - { port: tcp, node_port: 8090, proxy_protocol: true }\n";
    lab.apply(echo);
    let client_ip = lab.by_name("client").ip.clone();
    let script = format!(
        "import socket; s = socket.create_connection(('{}', 8090), timeout=5); print(s.recv(100).decode().strip())",
        ip("n1")
    );
    let said = wait_for(
        "the echo service through a TCP route",
        Duration::from_secs(60),
        || {
            let out = in_ns(&client, &["python3", "-c", &script]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            text.starts_with("from ").then_some(text)
        },
    );
    assert_eq!(
        said,
        format!("from {client_ip}"),
        "the PROXY header carries the client"
    );
    // A task's view: from a node, the name's address and port reach the service.
    let node_ns = lab.by_name("n2").ns.clone();
    let via_proxy =
        get(&node_ns, &format!("http://{}:80/", a[0])).unwrap_or_else(|e| panic!("{e}"));
    assert!(via_proxy.starts_with("v1 web-"), "{via_proxy}");
    let via_v6 =
        get(&node_ns, &format!("http://[::ffff:{}]:80/", a[0])).unwrap_or_else(|e| panic!("{e}"));
    assert!(via_v6.starts_with("v1 web-"), "{via_v6}");
    // `protocol: http`: the node proxy forwarded those as requests, counted per endpoint.
    let metrics = in_ns(
        &client,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            &format!("http://{}:9100/metrics", ip("n2")),
        ],
    );
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    let proxied: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("motley_proxy_requests_total{") && l.contains("service=\"web\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        proxied, 2,
        "two requests through n2's proxy (IPv4, IPv6):\n{metrics}"
    );

    // A replica whose check fails leaves the rotation: no request reaches it after.
    let victim = in_rotation(&lab)[0].clone();
    let victim_ns = lab
        .hosts
        .iter()
        .map(|h| h.ns.clone())
        .find(|ns| replica_dir(ns, &victim).is_some())
        .expect("the victim's node");
    let dir = replica_dir(&victim_ns, &victim).expect("its directory");
    std::fs::remove_file(format!("{dir}/www/ok")).expect("remove ok");
    let t0 = Instant::now();
    wait_for(
        "the failing replica out of rotation",
        Duration::from_secs(15),
        || (!in_rotation(&lab).contains(&victim)).then_some(()),
    );
    eprintln!("check failing → out of rotation: {:?}", t0.elapsed());
    for i in 0..12 {
        let body = get(&client, &ingress[i % 3]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!body.contains(&victim), "{body} after it left the rotation");
    }

    // A rolling update under continuous load through every ingress: no failed request.
    // Alongside, three loops of slow requests (0.4 s each, a CGI script): a replica
    // asked to stop keeps running for the drain after it left the catalog, so one in
    // flight when the stop comes still gets its answer (without the drain some fail:
    // the whole process group is stopped mid-request).
    let done = load(&client, &ingress);
    let slow_urls: Vec<String> = ingress.iter().map(|u| format!("{u}cgi-bin/slow")).collect();
    let slow: Vec<_> = (0..3).map(|_| load(&client, &slow_urls)).collect();
    std::thread::sleep(Duration::from_secs(1));
    lab.apply(&web("v2"));
    wait_for("3 v2 replicas in rotation", Duration::from_secs(90), || {
        let r = in_rotation(&lab);
        let all_v2 =
            (0..6).all(|i| get(&client, &ingress[i % 3]).is_ok_and(|b| b.starts_with("v2 ")));
        (r.len() == 3 && all_v2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let summary = done();
    eprintln!("rolling update under load: {summary}");
    assert_eq!(summary["failures"], 0, "{summary}");
    for done in slow {
        let summary = done();
        eprintln!("slow requests through the rolling update: {summary}");
        assert_eq!(summary["failures"], 0, "{summary}");
        assert!(summary["requests"].as_u64().unwrap_or(0) > 5, "{summary}");
        assert!(
            summary["answers"]["v2"].as_u64().unwrap_or(0) > 0,
            "{summary}"
        );
    }
    assert!(summary["requests"].as_u64().unwrap_or(0) > 100, "{summary}");
    assert!(
        summary["answers"]["v1"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(
        summary["answers"]["v2"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );

    // A version whose check never passes, with auto-revert: its first replica never
    // takes traffic, the update fails at its deadline and goes back to v2; no request
    // fails meanwhile.
    let done = load(&client, &ingress);
    lab.apply(&web_with(
        "v3",
        false,
        "  deadline: 4s\n  auto_revert: true\n",
    ));
    let out = lab.cli(&["rollout", "status", "web", "--timeout", "60s"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "a failed update: {out:?}");
    assert!(
        text.contains("generation 3 failed and was reverted"),
        "{text}"
    );
    wait_for("v2 everywhere again", Duration::from_secs(60), || {
        let r = in_rotation(&lab);
        let all_v2 =
            (0..6).all(|i| get(&client, &ingress[i % 3]).is_ok_and(|b| b.starts_with("v2 ")));
        (r.len() == 3 && all_v2).then_some(())
    });
    let summary = done();
    eprintln!("auto-revert under load: {summary}");
    assert_eq!(summary["failures"], 0, "{summary}");
    assert_eq!(
        summary["answers"]["v3"],
        serde_json::Value::Null,
        "v3 never took traffic: {summary}"
    );
    let hist = lab.cli(&["rollout", "history", "web"]);
    let hist = String::from_utf8_lossy(&hist.stdout).to_string();
    assert!(
        hist.contains("failed") && hist.contains("revert of 3"),
        "{hist}"
    );

    // Canaries: one replica of v5 runs, the rest waits for `motley promote web`.
    lab.apply(&web_with("v5", true, "  canary: 1\n"));
    let out = lab.cli(&["rollout", "status", "web", "--timeout", "60s"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("waiting for promotion"),
        "{out:?}"
    );
    let versions = || -> std::collections::BTreeSet<String> {
        (0..12)
            .filter_map(|i| get(&client, &ingress[i % 3]).ok())
            .filter_map(|b| b.split_whitespace().next().map(str::to_string))
            .collect()
    };
    wait_for(
        "v2 and the v5 canary answer",
        Duration::from_secs(30),
        || (versions().len() == 2).then_some(()),
    );
    let promote = lab.cli(&["promote", "web"]);
    assert!(promote.status.success(), "{promote:?}");
    let out = lab.cli(&["rollout", "status", "web", "--timeout", "60s"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("only v5 answers", Duration::from_secs(30), || {
        (versions() == ["v5".to_string()].into()).then_some(())
    });

    // Its answer from a Config (a file for the page, a variable for the CGI script):
    // changing the Config alone rolls the service, under load, with no failed request,
    // and `describe` says which version of the Config each replica runs.
    let config = |v: &str| format!("kind: Config\nname: web-version\ndata:\n  version: {v}\n---\n");
    let from_config = web_with("$(cat $MOTLEY_CONFIGS/etc/web/version)", true, "").replacen(
        "  stop_grace: 1s\n",
        "  stop_grace: 1s\n  configs:\n  - { config: web-version, key: version, file: /etc/web/version }\n  - { config: web-version, key: version, env: WEB_VERSION }\n",
        1,
    );
    assert!(from_config.contains("configs:"), "{from_config}");
    lab.apply(&format!("{}{from_config}", config("v6")));
    wait_for("only v6 answers", Duration::from_secs(90), || {
        (versions() == ["v6".to_string()].into() && in_rotation(&lab).len() == 3).then_some(())
    });
    let done = load(&client, &ingress);
    let slow: Vec<_> = (0..2).map(|_| load(&client, &slow_urls)).collect();
    std::thread::sleep(Duration::from_secs(1));
    lab.apply(&config("v7"));
    wait_for("only v7 answers", Duration::from_secs(90), || {
        (versions() == ["v7".to_string()].into() && in_rotation(&lab).len() == 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let summary = done();
    eprintln!("a Config change under load: {summary}");
    assert_eq!(summary["failures"], 0, "{summary}");
    assert!(
        summary["answers"]["v6"].as_u64().is_some_and(|n| n > 0),
        "{summary}"
    );
    assert!(
        summary["answers"]["v7"].as_u64().is_some_and(|n| n > 0),
        "{summary}"
    );
    for done in slow {
        let summary = done();
        eprintln!("slow requests through the Config change: {summary}");
        assert_eq!(summary["failures"], 0, "{summary}");
        assert!(
            summary["answers"]["v7"].as_u64().is_some_and(|n| n > 0),
            "the variable too: {summary}"
        );
    }
    let version = lab.cli(&["get", "config", "web-version"]);
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let v7 = version
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no VERSION in get config:\n{version}"))
        .to_string();
    // Replaced replicas may still drain for a moment: wait for the three running ones.
    wait_for(
        "three replicas on the new Config version",
        Duration::from_secs(30),
        || {
            let described = lab.cli(&["describe", "service", "web"]);
            assert!(described.status.success(), "describe: {described:?}");
            let described = String::from_utf8_lossy(&described.stdout).to_string();
            let running: Vec<&str> = described
                .lines()
                .filter(|l| l.contains(" running ") && l.contains(" run "))
                .collect();
            (running.len() == 3
                && running
                    .iter()
                    .all(|l| l.contains(&format!("web-version@{v7}"))))
            .then_some(())
        },
    );

    // A node powered off: its endpoints leave every proxy; after that, no request
    // through the other nodes' ingresses fails.
    let before = in_rotation(&lab);
    lab.power_off("n3");
    let t0 = Instant::now();
    let on_n3: Vec<String> = lab
        .allocs()
        .iter()
        .filter(|x| x["node"] == "n3")
        .filter_map(|x| x["id"].as_str().map(str::to_string))
        .collect();
    wait_for(
        "n3's endpoints out of rotation",
        Duration::from_secs(15),
        || {
            let r = in_rotation(&lab);
            r.iter().all(|id| !on_n3.contains(id)).then_some(())
        },
    );
    eprintln!(
        "power-off → endpoints out of rotation: {:?} (in rotation before: {before:?})",
        t0.elapsed()
    );
    let survivors: Vec<String> = ingress[..2].to_vec();
    let done = load(&client, &survivors);
    std::thread::sleep(Duration::from_secs(5));
    let summary = done();
    eprintln!("after power-off: {summary}");
    assert_eq!(summary["failures"], 0, "{summary}");
    assert!(summary["requests"].as_u64().unwrap_or(0) > 50, "{summary}");
}
