#!/usr/bin/env python3
"""The dashboard: time to first byte of its overview with N simulated nodes, and the
server's private memory, CPU and bytes written with the dashboard open in 5 browsers.

One `motley server` (embedded store) and one `motley agent --simulate N` on loopback, a
service with 2 replicas per node running. Then:
  1. TTFB: --requests GETs of /ui/ (the overview: every node's card, every allocation)
     with the admin's session cookie, one at a time on a kept-alive TLS connection;
     the same for /v1/nodes, the API answer the page is built from.
  2. The server idle for --seconds with no browser: RssAnon at the end.
  3. 5 headless Chromium sessions (chromedriver, WebDriver over HTTP) on /ui/ for
     --seconds (the page refreshes its live part every 5 s): RssAnon sampled every
     second (the last and the highest), CPU and bytes written by the server.
  4. The browsers closed, 10 s later: RssAnon.

Usage: python3 bench/dashboard.py [--motley target/release/motley] [--nodes 100]
                                  [--requests 200] [--seconds 60] [--browsers 5]
Needs Debian's chromium and chromium-driver. Build first: cargo build --release -p motley
"""
import argparse, http.client, json, os, ssl, statistics, subprocess, sys, tempfile, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skeleton import ROOT, TICK, cpu_ticks, free_port, write_bytes  # noqa: E402
from scale import cli, rss_anon, terminate, wait_ready, FACTS  # noqa: E402


def ttfb(port, path, headers, n):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    times, size = [], 0
    for i in range(n + 5):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()  # returns once the status line and headers are read
        first = time.perf_counter() - t0
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"{path}: {r.status} {body[:200]!r}")
        size = len(body)
        if i >= 5:  # the first few warm the connection and the server's caches
            times.append(first * 1000)
    conn.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], size


def webdriver(url, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["value"]


def open_browser(driver, base, token, profile):
    caps = {"capabilities": {"alwaysMatch": {
        "browserName": "chrome", "acceptInsecureCerts": True,
        "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}"]}}}}
    sid = webdriver(f"{driver}/session", "POST", caps)["sessionId"]
    webdriver(f"{driver}/session/{sid}/url", "POST", {"url": f"{base}/ui/login"})
    webdriver(f"{driver}/session/{sid}/cookie", "POST", {"cookie": {
        "name": "motley_session", "value": token, "path": "/ui", "secure": True, "httpOnly": True}})
    webdriver(f"{driver}/session/{sid}/url", "POST", {"url": f"{base}/ui/"})
    title = webdriver(f"{driver}/session/{sid}/title")
    if not title.startswith("Overview"):
        raise SystemExit(f"a browser is not on the overview: {title!r}")
    return sid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--browsers", type=int, default=5)
    a = ap.parse_args()
    print(f"command: python3 bench/dashboard.py --nodes {a.nodes} --requests {a.requests} "
          f"--seconds {a.seconds:g} --browsers {a.browsers}")
    d = tempfile.mkdtemp(prefix="motley-dashboard-")
    os.chmod(d, 0o711)
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    srv = subprocess.Popen([a.motley, "server", "--data-dir", f"{d}/s", "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs = [srv]
    try:
        wait_ready(srv, "server")
        cfg = f"{d}/s/client.yaml"
        token = next(l.split()[1] for l in open(cfg) if l.startswith("token:"))
        join = open(f"{d}/s/server/join-token").read().strip()
        sim = subprocess.Popen([a.motley, "agent", "--server", base, "--token", join,
                                "--data-dir", f"{d}/a", "--name", "sim", "--simulate", str(a.nodes),
                                "--facts-root", FACTS],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.insert(0, sim)
        wait_ready(sim, f"{a.nodes} simulated nodes")
        with open(f"{d}/web.yaml", "w") as f:
            f.write(f"kind: Service\nname: web\nreplicas: {2 * a.nodes}\ntask:\n  command: [x]\n"
                    "  resources: { cpu: 10m, memory: 8Mi }\n")
        cli(a.motley, cfg, "apply", "-f", f"{d}/web.yaml")
        while json.loads(cli(a.motley, cfg, "get", "services", "web", "-o", "json"))[0]["status"]["running"] < 2 * a.nodes:
            time.sleep(0.1)
        time.sleep(5)

        cookie = {"Cookie": f"motley_session={token}"}
        med, p95, size = ttfb(port, "/ui/", cookie, a.requests)
        print(f"| TTFB /ui/ (overview, {a.nodes} nodes, {2 * a.nodes} allocations) | {med:.1f} ms | "
              f"{p95:.1f} ms | {size / 1024:.0f} KiB |")
        med, p95, size = ttfb(port, "/ui/", dict(cookie, **{"Accept-Encoding": "gzip"}), a.requests)
        print(f"| TTFB /ui/ gzipped, as a browser asks | {med:.1f} ms | {p95:.1f} ms | {size / 1024:.0f} KiB |")
        version = subprocess.run([a.motley, "--version"], capture_output=True, text=True,
                                 check=True).stdout.split()[-1]
        assets = sum(ttfb(port, f"/ui/assets/{version}/{f}", {"Accept-Encoding": "gzip"}, 1)[2]
                     for f in ("htmx.min.js", "motley.css", "motley.js"))
        print(f"assets gzipped: {assets / 1024:.0f} KiB (cached a week by the browser)")
        med, p95, size = ttfb(port, "/v1/nodes", {"Authorization": f"Bearer {token}"}, a.requests)
        print(f"| TTFB /v1/nodes (the API answer it is built from) | {med:.1f} ms | {p95:.1f} ms | "
              f"{size / 1024:.0f} KiB |")

        time.sleep(a.seconds)
        idle = rss_anon(srv.pid)
        print(f"server RssAnon after {a.seconds:g} s with no browser: {idle} kB")

        driver_port = free_port()
        drv = subprocess.Popen(["chromedriver", f"--port={driver_port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.insert(0, drv)
        driver = f"http://127.0.0.1:{driver_port}"
        for _ in range(100):
            try:
                webdriver(f"{driver}/status")
                break
            except OSError:
                time.sleep(0.1)
        sessions = [open_browser(driver, base, token, f"{d}/profile-{i}") for i in range(a.browsers)]
        c0, w0, t0 = cpu_ticks(srv.pid), write_bytes(srv.pid), time.monotonic()
        peak = 0
        while time.monotonic() - t0 < a.seconds:
            peak = max(peak, rss_anon(srv.pid))
            time.sleep(1)
        c1, w1, t1 = cpu_ticks(srv.pid), write_bytes(srv.pid), time.monotonic()
        last = rss_anon(srv.pid)
        cpu = 100.0 * (c1 - c0) / TICK / (t1 - t0)
        print(f"server with {a.browsers} browsers on the overview for {a.seconds:g} s: RssAnon {last} kB "
              f"(highest {peak} kB; {last - idle:+d} kB against no browser), CPU {cpu:.2f} % of a core, "
              f"{w1 - w0} bytes written")
        for sid in sessions:
            webdriver(f"{driver}/session/{sid}", "DELETE")
        time.sleep(10)
        print(f"server 10 s after the browsers closed: RssAnon {rss_anon(srv.pid)} kB")
    finally:
        terminate(procs)
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
