//! The dashboard (issue 23) in a real browser: Debian's Chromium, headless, driven
//! over WebDriver by `chromedriver` (installed by `.ci/run`; this test fails, never
//! skips, when either is missing). An admin logs in, sees the node and a running
//! service, follows an allocation's log and sees new lines arrive, reads a blocked
//! job's refusal matrix, restarts an allocation and drains a node (with
//! confirmation); a viewer sees no actions and is refused when it forges one; no
//! Secret value is anywhere in any page. Every page is saved as a screenshot under
//! `target/tmp/dashboard/` and checked to be non-empty, and weighed (with its
//! scripts and stylesheet) against the 150 KB budget.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::common::*;

const SECRET_VALUE: &str = "pw-Zq7v-never-shown";

/// `chromedriver` on a free port, killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver, installed by .ci/run) must be on PATH");
    let url = format!("http://127.0.0.1:{port}");
    wait_for("chromedriver to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Driver { child, url }
}

/// A Chromium session; `dark`: the system prefers the dark scheme.
async fn browser(driver: &Driver, profile: &std::path::Path, dark: bool) -> Client {
    let mut args = vec![
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1280,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    if dark {
        // Blink's PreferredColorScheme: 0 is dark.
        args.push("--blink-settings=preferredColorScheme=0".into());
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    // The cluster's certificate is signed by its own CA, which this throwaway profile
    // does not trust; the page is still served over TLS (the cookie is Secure).
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// The page's HTML as the browser has it now (the DOM, scripts' changes included).
async fn dom(b: &Client) -> String {
    b.source().await.expect("page source")
}

/// Waits until the DOM contains `text`.
async fn wait_text(b: &Client, what: &str, text: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let html = dom(b).await;
        if html.contains(text) {
            return html;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what} ({text:?}) in:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

/// Saves a screenshot of the page and checks it has content.
async fn shot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    assert!(png.len() > 1000, "{name}: a {} byte screenshot", png.len());
    assert_eq!(&png[..4], b"\x89PNG", "{name}: not a PNG");
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, &png).expect("write screenshot");
    let size = std::fs::metadata(&path).expect("screenshot saved").len();
    assert!(size > 0, "{}", path.display());
}

async fn login(b: &Client, base: &str, token: &str) {
    b.goto(&format!("{base}/ui/login"))
        .await
        .expect("login page");
    let input = b
        .find(Locator::Css("input#token"))
        .await
        .expect("token field");
    input.send_keys(token).await.expect("type the token");
    b.find(Locator::Css("form button[type=submit]"))
        .await
        .expect("login button")
        .click()
        .await
        .expect("log in");
}

/// Clicks the first button whose text is `label`.
async fn click_button(b: &Client, label: &str) {
    let xpath = format!("//button[normalize-space(.)='{label}']");
    b.find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("a {label:?} button: {e}"))
        .click()
        .await
        .expect("click");
}

#[test]
fn the_dashboard_in_chromium_for_an_admin_and_a_viewer() {
    let c = Cluster::up(&[]);
    let out = c.apply_yaml(
        "app.yaml",
        &format!(
            "kind: Secret\nname: creds\ndata:\n  password: {SECRET_VALUE}\n---\n\
             kind: Service\nname: web\nreplicas: 1\ntask:\n  command: [sh, -c, 'i=0; while true; do echo \"tick $i\"; i=$((i+1)); sleep 1; done']\n\
             \x20 resources: {{ cpu: 10m, memory: 8Mi }}\n  secrets:\n    - {{ secret: creds, key: password, env: PASSWORD }}\n---\n\
             kind: Job\nname: waits\nplacement: {{ require: vault = yes }}\ntask:\n  command: [sleep, '1']\n"
        ),
    );
    assert!(out.status.success(), "{out:?}");
    let mut running = Vec::new();
    wait_for("web running", Duration::from_secs(30), || {
        running = c
            .json(&["get", "allocs"])
            .as_array()?
            .iter()
            .filter(|a| a["workload"] == "service/web" && a["state"] == "running")
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .collect();
        (!running.is_empty()).then_some(())
    });
    let alloc = running[0].clone();
    let (_, base, admin) = c.http();
    let viewer = c
        .ok(&["token", "create", "--role", "viewer"])
        .trim()
        .to_string();
    let driver = chromedriver();
    let profiles = tempfile::tempdir().expect("profiles");

    rt().block_on(async {
        let b = browser(&driver, &profiles.path().join("admin"), false).await;
        let mut pages: Vec<String> = Vec::new();

        // A wrong token is refused on the login page.
        login(&b, &base, "not-a-token").await;
        wait_text(&b, "the refusal", "invalid or expired token", Duration::from_secs(10)).await;
        shot(&b, "login-refused").await;

        // The admin logs in: a Secure, HttpOnly, SameSite=Strict session cookie.
        login(&b, &base, &admin).await;
        let html = wait_text(&b, "the overview", "Nodes (1 of 1 ready)", Duration::from_secs(20)).await;
        assert!(html.contains("node1"), "{html}");
        assert!(html.contains("service/web"), "{html}");
        let cookies = b.get_all_cookies().await.expect("cookies");
        let session = cookies
            .iter()
            .find(|k| k.name() == "motley_session")
            .expect("the session cookie");
        assert_eq!(session.http_only(), Some(true));
        assert_eq!(session.secure(), Some(true));
        assert_eq!(
            session.same_site().map(|s| s.to_string()).as_deref(),
            Some("Strict")
        );
        // The cookie is not readable by scripts.
        let seen = b
            .execute("return document.cookie", vec![])
            .await
            .expect("document.cookie");
        assert!(
            !seen
                .as_str()
                .expect("document.cookie is a string")
                .contains("motley_session"),
            "{seen}"
        );
        shot(&b, "overview").await;
        pages.push(html);

        // The keyboard: the first Tab reaches the skip link, which leads to the content.
        b.find(Locator::Css("body"))
            .await
            .expect("body")
            .send_keys("\u{E004}")
            .await
            .expect("Tab");
        let focused = b.active_element().await.expect("the focused element");
        assert_eq!(focused.text().await.expect("its text"), "Skip to content");
        assert_eq!(
            focused.attr("href").await.expect("href").as_deref(),
            Some("#main")
        );

        for (path, expect, name) in [
            ("/ui/services", "service/web", "services"),
            ("/ui/jobs", "job/waits", "jobs"),
            ("/ui/daemons", "Daemons", "daemons"),
            ("/ui/volumes", "Volumes", "volumes"),
            ("/ui/sources", "Sources", "sources"),
            ("/ui/events", "blocked", "events"),
            ("/ui/uptime", "service/web", "uptime"),
            ("/ui/w/secret/creds", "password", "secret"),
            ("/ui/nodes/node1", "Hardware", "node"),
            ("/ui/whatif", "node1</a> is a single point of failure for", "what-if"),
            ("/ui/whatif?lose=node1", "What if node1 dies?", "what-if-node1"),
        ] {
            b.goto(&format!("{base}{path}")).await.expect("page");
            let html = wait_text(&b, path, expect, Duration::from_secs(20)).await;
            shot(&b, name).await;
            pages.push(html);
        }

        // What if node1 dies: on a cluster of one, web goes down, said as the API says.
        b.goto(&format!("{base}/ui/whatif?lose=node1")).await.expect("what-if page");
        let html = wait_text(&b, "the what-if", "What if node1 dies?", Duration::from_secs(20)).await;
        let row = b
            .find(Locator::XPath("//tr[td/a[normalize-space(.)='service/web']]"))
            .await
            .expect("web's row")
            .text()
            .await
            .expect("its text");
        assert!(row.contains("down") && row.contains("1 of 1") && row.contains("0 of 1"), "{row}");
        pages.push(html);

        // The blocked job's refusal matrix: node1, refused for the label it lacks.
        b.goto(&format!("{base}/ui/w/job/waits")).await.expect("job page");
        let html = wait_text(&b, "the refusal matrix", "table class=\"matrix\"", Duration::from_secs(20)).await;
        let matrix = b
            .find(Locator::Css("table.matrix"))
            .await
            .expect("the matrix")
            .text()
            .await
            .expect("its text");
        assert!(matrix.contains("node1"), "{matrix}");
        assert!(matrix.contains("vault is not yes"), "{matrix}");
        shot(&b, "blocked-job").await;
        pages.push(html);

        // The allocation's live log: lines arrive while the page is open.
        b.goto(&format!("{base}/ui/allocs/{alloc}")).await.expect("alloc page");
        wait_text(&b, "the log", "tick ", Duration::from_secs(20)).await;
        let pre = b.find(Locator::Css("pre.log")).await.expect("the log");
        let first = pre.text().await.expect("log text");
        let last_tick = |t: &str| {
            t.lines()
                .filter_map(|l| l.strip_prefix("tick ")?.trim().parse::<u64>().ok())
                .max()
        };
        let before = last_tick(&first).expect("a tick line");
        let start = Instant::now();
        loop {
            let now = pre.text().await.expect("log text");
            if last_tick(&now).is_some_and(|n| n >= before + 2) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no new line after tick {before}:\n{now}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        shot(&b, "allocation-log").await;
        pages.push(dom(&b).await);

        // Restart it, confirmed: the allocation stops and a new one runs.
        click_button(&b, "Restart").await;
        wait_text(&b, "the confirmation", "Restart allocation", Duration::from_secs(10)).await;
        shot(&b, "confirm-restart").await;
        click_button(&b, "Yes, restart").await;
        wait_for("a replacement of the restarted allocation", Duration::from_secs(30), || {
            let allocs = c.json(&["get", "allocs"]);
            let allocs = allocs.as_array()?;
            let old_stopped = allocs
                .iter()
                .any(|a| a["id"] == alloc.as_str() && a["state"] == "stopped");
            let new_runs = allocs.iter().any(|a| {
                a["workload"] == "service/web" && a["id"] != alloc.as_str() && a["state"] == "running"
            });
            (old_stopped && new_runs).then_some(())
        });
        let restarted = c.ok(&["events", "--for", "service/web"]);
        assert!(restarted.contains("restarted by token"), "{restarted}");

        // Drain node1 as admin, with confirmation.
        b.goto(&format!("{base}/ui/nodes/node1")).await.expect("node page");
        click_button(&b, "Drain").await;
        wait_text(&b, "the confirmation", "Drain node node1?", Duration::from_secs(10)).await;
        click_button(&b, "Yes, drain").await;
        wait_text(&b, "the node draining", "draining", Duration::from_secs(20)).await;
        let nodes = c.json(&["get", "nodes"]);
        assert_eq!(nodes[0]["node"]["draining"], true, "{nodes}");
        c.ok(&["uncordon", "node1"]);

        // On a phone's screen: nothing wider than the screen (tables scroll in place).
        b.set_window_size(390, 844).await.expect("a phone-sized window");
        b.goto(&format!("{base}/ui/")).await.expect("overview");
        wait_text(&b, "the overview", "Nodes (1 of 1 ready)", Duration::from_secs(20)).await;
        let fits = b
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth]",
                vec![],
            )
            .await
            .expect("widths");
        let w = |i: usize| fits[i].as_f64().expect("a width");
        assert!(w(0) <= w(1), "the page is {} px wide on a {} px screen", w(0), w(1));
        // The light scheme by default.
        let bg = b
            .execute("return getComputedStyle(document.body).backgroundColor", vec![])
            .await
            .expect("background");
        assert_eq!(bg.as_str(), Some("rgb(255, 255, 255)"));
        shot(&b, "overview-phone").await;
        b.close().await.expect("close");

        // A viewer: no action buttons, and a forged drain is refused by the API.
        let v = browser(&driver, &profiles.path().join("viewer"), true).await;
        login(&v, &base, &viewer).await;
        let html = wait_text(&v, "the overview", "Nodes (1 of 1 ready)", Duration::from_secs(20)).await;
        assert!(html.contains("(viewer)"), "{html}");
        // This browser prefers the dark scheme, and the page follows.
        let bg = v
            .execute("return getComputedStyle(document.body).backgroundColor", vec![])
            .await
            .expect("background");
        assert_eq!(bg.as_str(), Some("rgb(17, 19, 22)"), "not the dark scheme");
        shot(&v, "overview-dark").await;
        assert!(!html.contains("action=\"/ui/act\""), "a viewer is offered actions:\n{html}");
        pages.push(html);
        for path in ["/ui/w/secret/creds", "/ui/w/service/web", "/ui/events"] {
            v.goto(&format!("{base}{path}")).await.expect("page");
            pages.push(wait_text(&v, path, "</main>", Duration::from_secs(20)).await);
        }
        v.goto(&format!("{base}/ui/nodes/node1")).await.expect("node page");
        wait_text(&v, "the node page", "Hardware", Duration::from_secs(20)).await;
        v.execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = '/ui/act';\
             const csrf = document.querySelector('input[name=csrf]').value;\
             for (const [k, val] of [['csrf', csrf], ['action', 'drain'], ['target', 'node1'], ['namespace', ''], ['confirmed', 'yes']]) {\
               const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = val; f.appendChild(i); }\
             document.body.appendChild(f); f.submit();",
            vec![],
        )
        .await
        .expect("post a forged drain");
        let html = wait_text(&v, "the refusal", "a viewer token may not POST", Duration::from_secs(20)).await;
        shot(&v, "viewer-refused").await;
        pages.push(html);
        let nodes = c.json(&["get", "nodes"]);
        assert_eq!(nodes[0]["node"]["draining"], false, "{nodes}");
        assert_eq!(nodes[0]["node"]["cordoned"], false, "{nodes}");
        v.close().await.expect("close");

        // No Secret value in any page either saw.
        for p in &pages {
            assert!(!p.contains(SECRET_VALUE), "a Secret value in a page:\n{p}");
        }
    });
    // The viewer's forged drain is in the audit log as the API's refusal.
    let audit = c.json(&["get", "audit"]);
    let refused = audit.as_array().expect("audit entries").iter().any(|e| {
        e["path"] == "/v1/nodes/node1/drain"
            && e["status"] == 403
            && e["who"].as_str().is_some_and(|w| w.contains("viewer"))
    });
    assert!(refused, "{audit:#}");
}

/// Every page with its scripts and stylesheet stays under 150 KB, and answers
/// within the request deadline (timing itself is the benchmark's: docs/BENCHMARKS.md).
#[test]
fn every_page_weighs_under_150_kb_with_its_assets() {
    let c = Cluster::up(&[]);
    let out = c.apply_yaml(
        "web.yaml",
        "kind: Service\nname: web\nreplicas: 3\ntask:\n  command: [sleep, '3600']\n  resources: { cpu: 10m, memory: 8Mi }\n",
    );
    assert!(out.status.success(), "{out:?}");
    wait_for("web running", Duration::from_secs(30), || {
        let n = c
            .json(&["get", "allocs"])
            .as_array()?
            .iter()
            .filter(|a| a["state"] == "running")
            .count();
        (n == 3).then_some(())
    });
    let (http, base, token) = c.http();
    rt().block_on(async {
        let get = |path: String| {
            let http = http.clone();
            let token = token.clone();
            async move {
                let r = http
                    .get(&path)
                    .header("cookie", format!("motley_session={token}"))
                    .send()
                    .await
                    .expect("request");
                assert!(r.status().is_success(), "{path}: {}", r.status());
                r.bytes().await.expect("body").len()
            }
        };
        let version = env!("CARGO_PKG_VERSION");
        let mut assets = 0;
        for f in ["htmx.min.js", "motley.css", "motley.js"] {
            assets += get(format!("{base}/ui/assets/{version}/{f}")).await;
        }
        for p in [
            "/ui/",
            "/ui/services",
            "/ui/jobs",
            "/ui/daemons",
            "/ui/volumes",
            "/ui/sources",
            "/ui/events",
            "/ui/uptime",
            "/ui/nodes/node1",
            "/ui/w/service/web",
        ] {
            let page = get(format!("{base}{p}")).await;
            assert!(page > 500, "{p}: {page} bytes");
            assert!(
                page + assets < 150_000,
                "{p}: {page} bytes + {assets} of assets"
            );
        } // A browser says it takes gzip, and gets pages and assets gzipped.
        for p in [
            "/ui/".to_string(),
            format!("/ui/assets/{version}/htmx.min.js"),
        ] {
            let r = http
                .get(format!("{base}{p}"))
                .header("cookie", format!("motley_session={token}"))
                .header("accept-encoding", "gzip")
                .send()
                .await
                .expect("request");
            assert!(r.status().is_success(), "{p}: {}", r.status());
            assert_eq!(
                r.headers()
                    .get("content-encoding")
                    .and_then(|v| v.to_str().ok()),
                Some("gzip"),
                "{p}"
            );
            let z = r.bytes().await.expect("body");
            assert_eq!(&z[..2], b"\x1f\x8b", "{p}: not gzip");
        }
    });
    // `motley restart` from the CLI: the allocation stops, a replacement runs; a
    // viewer's token is refused.
    let running = c.json(&["get", "allocs"]);
    let id = running[0]["id"]
        .as_str()
        .expect("an allocation id")
        .to_string();
    let out = c.ok(&["restart", &id]);
    assert!(
        out.contains(&format!("alloc/{id} of service/web restarting")),
        "{out}"
    );
    wait_for("a replacement", Duration::from_secs(30), || {
        let allocs = c.json(&["get", "allocs"]);
        let allocs = allocs.as_array()?;
        let stopped = allocs
            .iter()
            .any(|a| a["id"] == id.as_str() && a["state"] == "stopped");
        let running = allocs.iter().filter(|a| a["state"] == "running").count();
        (stopped && running == 3).then_some(())
    });
    let again = c.cli(&["restart", &id]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("only a live allocation restarts"), "{err}");
    let viewer = c
        .ok(&["token", "create", "--role", "viewer"])
        .trim()
        .to_string();
    let other = c.json(&["get", "allocs"]);
    let live = other
        .as_array()
        .and_then(|a| a.iter().find(|a| a["state"] == "running"))
        .and_then(|a| a["id"].as_str())
        .expect("a running allocation")
        .to_string();
    let refused = std::process::Command::new(motley_bin())
        .args([
            "--config",
            &c.config().display().to_string(),
            "restart",
            &live,
        ])
        .env("MOTLEY_TOKEN", &viewer)
        .output()
        .expect("run motley");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("a viewer token may not POST"), "{err}");
}
