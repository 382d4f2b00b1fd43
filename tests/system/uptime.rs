//! Services' availability and SLOs (issue 23) on a real `motley up`: a replica out of
//! rotation for a few seconds lowers the last hour's availability and spends error
//! budget; `get services -o wide` and `/metrics` show it; a clean restart keeps it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn uptime(c: &Cluster) -> Option<Value> {
    let v = c.json(&["get", "services", "flaky"]);
    let u = v[0]["uptime"].clone();
    (!u.is_null()).then_some(u)
}

#[test]
fn a_service_out_of_rotation_spends_its_error_budget_and_the_record_survives_a_restart() {
    let mut c = Cluster::up(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let flag = dir.path().join("ok");
    std::fs::write(&flag, "").expect("write");
    std::fs::set_permissions(&flag, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = c.apply_yaml(
        "flaky.yaml",
        &format!(
            "kind: Service\nname: flaky\nslo: {{ availability: 99.5% }}\ntask:\n  command: [sleep, '3600']\n  env: {{ FLAG: \"{}\" }}\n  resources: {{ cpu: 10m, memory: 8Mi }}\n  stop_grace: 1s\ncheck:\n  exec: [/bin/sh, -c, 'test -e \"$FLAG\"']\n  interval: 200ms\n  timeout: 200ms\n  unhealthy_after: 2\n",
            flag.display()
        ),
    );
    assert!(out.status.success(), "{out:?}");
    // Up: observed, and all of it up.
    wait_for("flaky observed up", Duration::from_secs(30), || {
        let u = uptime(&c)?;
        (u["h1"] == 1.0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    // Out of rotation for about three seconds.
    std::fs::remove_file(&flag).expect("remove");
    wait_for("flaky observed down", Duration::from_secs(30), || {
        let u = uptime(&c)?;
        (u["h1"].as_f64()? < 1.0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(&flag, "").expect("write");
    std::fs::set_permissions(&flag, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let healthy_again = |c: &Cluster| {
        let v = c.json(&["get", "services", "flaky"]);
        (v[0]["status"]["ready"] == 1).then_some(())
    };
    wait_for("flaky healthy again", Duration::from_secs(30), || {
        healthy_again(&c)
    });
    std::thread::sleep(Duration::from_secs(1));

    let u = uptime(&c).expect("uptime");
    let h1 = u["h1"].as_f64().expect("h1");
    assert!(h1 > 0.2 && h1 < 0.95, "{u}");
    assert_eq!(
        u["h24"], u["h1"],
        "one hour of history is the whole day's: {u}"
    );
    assert!(
        (u["target"].as_f64().expect("target") - 0.995).abs() < 1e-9,
        "{u}"
    );
    let left = u["budget_remaining"].as_f64().expect("budget");
    let burn = u["burn_rate"].as_f64().expect("burn");
    assert!(
        left < 0.0,
        "a few seconds in 10 spend far more than 0.5 %: {u}"
    );
    assert!(burn > 1.0, "{u}");
    let wide = c.ok(&["get", "services", "-o", "wide"]);
    assert!(
        wide.contains("AVAILABILITY 1H/24H/30D") && wide.contains("left of 99.5%, burn"),
        "{wide}"
    );
    let metrics = c.metrics();
    assert!(
        metrics.contains(
            "motley_service_availability{namespace=\"default\",service=\"flaky\",window=\"1h\"}"
        ) && metrics.contains(
            "motley_service_error_budget_remaining{namespace=\"default\",service=\"flaky\"}"
        ),
        "{metrics}"
    );

    // A clean stop writes the record; the next start goes on from it.
    c.stop();
    c.start(&[]);
    let after = wait_for("the record back", Duration::from_secs(30), || {
        let u = uptime(&c)?;
        u["h1"].as_f64().filter(|a| *a < 0.95)
    });
    assert!(after > 0.2, "{after}");
}
