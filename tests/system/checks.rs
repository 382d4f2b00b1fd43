//! Health checks with `motley up`: a replica takes traffic (READY) once its check
//! passes; one that was healthy and fails is restarted; one that never passes stays
//! out of rotation without a restart loop; passing again brings it back.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;

/// The server's `/metrics`, as Prometheus text.
fn metrics(c: &Cluster) -> String {
    let (http, url, token) = c.http();
    rt().block_on(async {
        let r = http
            .get(format!("{url}/metrics"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.expect("metrics text")
    })
}

#[test]
fn a_failing_check_takes_a_replica_out_and_restarts_it_once() {
    let mut c = Cluster::up(&[]);
    // busybox httpd (run as the task user) serves this directory; `/ok` is the check.
    let www = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(www.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ok = www.path().join("ok");
    std::fs::write(&ok, "ok\n").expect("write");
    std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let port = free_port();
    let yaml = format!(
        "kind: Service\nname: web\ntask:\n  command: [/bin/busybox, httpd, -f, -p, \"{port}\", -h, \"{}\"]\n  ports: [{{ name: http, port: {port} }}]\n  stop_grace: 1s\ncheck:\n  http: {{ port: http, path: /ok }}\n  interval: 200ms\n  timeout: 200ms\n  healthy_after: 1\n  unhealthy_after: 2\n",
        www.path().display()
    );
    let out = c.apply_yaml("web.yaml", &yaml);
    assert!(out.status.success(), "{out:?}");
    let ready = |c: &Cluster| -> Option<String> {
        let v = c.json(&["get", "services", "web"]);
        let v = if v.is_array() { v[0].clone() } else { v };
        Some(format!(
            "{}/{}",
            v["status"]["ready"].as_u64()?,
            v["status"]["desired"].as_u64()?
        ))
    };
    wait_for("web ready", Duration::from_secs(30), || {
        (ready(&c).as_deref() == Some("1/1")).then_some(())
    });
    let alloc = c.running("service/web").pop().expect("web runs");
    let id = alloc["id"].as_str().expect("id").to_string();
    let first_pid = alloc["pid"].as_u64().expect("pid");
    assert_eq!(alloc["health"], "healthy", "{alloc}");
    let described = String::from_utf8_lossy(&c.cli(&["describe", "alloc", &id]).stdout).to_string();
    assert!(
        described.contains(&format!(
            "Health:      healthy (GET :{port}/ok every 200ms, timeout 200ms, healthy after 1, unhealthy after 2)"
        )),
        "{described}"
    );
    let table = String::from_utf8_lossy(&c.cli(&["get", "services"]).stdout).to_string();
    assert!(table.contains("web   1/1"), "{table}");
    let service =
        String::from_utf8_lossy(&c.cli(&["describe", "service", "web"]).stdout).to_string();
    assert!(
        service.contains("Ready:       1/1 (running and passing their check)"),
        "{service}"
    );
    let m = metrics(&c);
    for line in [
        "motley_service_replicas{namespace=\"default\",service=\"web\",health=\"healthy\"} 1",
        "motley_service_replicas{namespace=\"default\",service=\"web\",health=\"unhealthy\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in /metrics:\n{m}");
    }
    let endpoint = service
        .lines()
        .skip_while(|l| !l.starts_with("Endpoints:"))
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no endpoint row for {id}: {service}"));
    let cells: Vec<&str> = endpoint.split_whitespace().collect();
    assert_eq!(
        cells,
        [id.as_str(), "node1", &format!("http={port}"), "healthy"],
        "{service}"
    );

    // The check fails: out of rotation and restarted, once.
    std::fs::remove_file(&ok).expect("rm ok");
    let restarted = wait_for(
        "a restart after the check failed",
        Duration::from_secs(30),
        || {
            let a = c.running("service/web").pop()?;
            (a["pid"].as_u64()? != first_pid && a["restarts"].as_u64()? == 1).then_some(a)
        },
    );
    let reasons = restarted["reasons"].to_string();
    assert!(
        reasons
            .contains("unhealthy: GET /ok answered 404 (2 checks in a row); restarting in 1000ms"),
        "{reasons}"
    );
    // Never healthy since: it stays running, out of rotation, and is not restarted again.
    wait_for("web not ready", Duration::from_secs(30), || {
        (ready(&c).as_deref() == Some("0/1")).then_some(())
    });
    let service =
        String::from_utf8_lossy(&c.cli(&["describe", "service", "web"]).stdout).to_string();
    assert!(service.contains("Ready:       0/1"), "{service}");
    wait_for("/metrics says unhealthy", Duration::from_secs(30), || {
        let m = metrics(&c);
        (m.lines()
            .any(|l| l == "motley_service_replicas{namespace=\"default\",service=\"web\",health=\"unhealthy\"} 1")
            && m.lines()
                .any(|l| l == "motley_service_replicas{namespace=\"default\",service=\"web\",health=\"healthy\"} 0"))
        .then_some(())
    });
    let a = wait_for("its health unhealthy", Duration::from_secs(30), || {
        let a = c.running("service/web").pop()?;
        (a["health"] == "unhealthy").then_some(a)
    });
    std::thread::sleep(Duration::from_secs(2));
    let later = c.running("service/web").pop().expect("still runs");
    assert_eq!(later["pid"], a["pid"], "restarted again: {later}");
    assert_eq!(later["restarts"], 1, "{later}");

    // Passing again: back in rotation, same process.
    std::fs::write(&ok, "ok\n").expect("write");
    std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    wait_for("web ready again", Duration::from_secs(30), || {
        (ready(&c).as_deref() == Some("1/1")).then_some(())
    });
    let back = c.running("service/web").pop().expect("runs");
    assert_eq!(back["pid"], a["pid"]);
    assert_eq!(back["health"], "healthy");
}

/// An `exec` check runs next to a native task, as its user, with its environment.
#[test]
fn an_exec_check_runs_as_the_task_with_its_environment() {
    let mut c = Cluster::up(&[]);
    let flags = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(flags.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ok = flags.path().join("ok");
    std::fs::write(&ok, "").expect("write");
    // Passes only as the task's user (its home is its own) with its variables set.
    let yaml = format!(
        "kind: Service\nname: worker\ntask:\n  command: [sleep, \"1000\"]\n  env: {{ FLAG: \"{}\" }}\n  stop_grace: 1s\ncheck:\n  exec: [/bin/sh, -c, 'test \"$(id -u)\" = \"$(stat -c %u \"$HOME\")\" && test -n \"$MOTLEY_ALLOC_ID\" && test -e \"$FLAG\"']\n  interval: 200ms\n  timeout: 200ms\n  unhealthy_after: 2\n",
        ok.display()
    );
    let out = c.apply_yaml("worker.yaml", &yaml);
    assert!(out.status.success(), "{out:?}");
    let first = wait_for("worker healthy", Duration::from_secs(30), || {
        let a = c.running("service/worker").pop()?;
        (a["health"] == "healthy").then_some(a)
    });
    std::fs::remove_file(&ok).expect("rm");
    let restarted = wait_for("restarted once", Duration::from_secs(30), || {
        let a = c.running("service/worker").pop()?;
        (a["pid"] != first["pid"] && a["restarts"] == 1).then_some(a)
    });
    // The restart names the check (its command, then how it ended), not the SIGTERM.
    let reasons = restarted["reasons"].as_array().expect("reasons");
    assert!(
        reasons
            .iter()
            .filter_map(|r| r.as_str())
            .any(|r| r.starts_with("unhealthy: /bin/sh -c test ")
                && r.ends_with("exited with 1 (2 checks in a row); restarting in 1000ms")),
        "{reasons:?}"
    );
}
