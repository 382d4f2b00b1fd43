#!/usr/bin/env python3
"""Service networking, side by side in one run on this machine.

Default: HTTP through motley's ingress against nginx (Debian) as a reverse proxy to the
same backend, and straight to the backend, each with wrk (Debian): requests/s and
latency percentiles, median over --repeats rounds run in turn (motley, nginx, direct,
motley, ...). The backend is nginx serving a 13-byte file, run by motley as a service
(so the ingress routes to it through the catalog); the reverse proxy is a second nginx
with Debian's defaults for proxying (HTTP/1.0 to the upstream, a new connection per
request: what motley's ingress does too).

--memory: the agent's private memory (RssAnon) without service networking, then with
the proxy, DNS and the ingress on and 20 services with a port each (one replica each),
and its CPU and bytes written over --idle-seconds idle with those 20.

Usage: python3 bench/mesh.py [--motley target/release/motley] [--repeats 5] [--seconds 10]
       python3 bench/mesh.py --memory [--idle-seconds 60]
Build first: cargo build --release -p motley. Needs root, wrk, nginx.
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skeleton import ROOT, free_port  # noqa: E402
from scale import cli  # noqa: E402
from footprint import status_kib, idle  # noqa: E402


def wait_ready(p, what, limit=60):
    t0 = time.monotonic()
    for line in p.stdout:
        if line.strip() == "ready":
            return
        if time.monotonic() - t0 > limit:
            break
    raise SystemExit(f"{what} did not become ready")


def wait(what, f, limit=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        v = f()
        if v:
            return v
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def catalog_endpoints(motley, cfg, name):
    out = cli(motley, cfg, "describe", "service", name)
    return [l for l in out.split("Endpoints:")[-1].splitlines() if l.strip().endswith("yes")]


def wrk(url, seconds, host=None):
    args = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url]
    if host:
        args[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        lat[pct] = v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return dict(rps=rps, p50=lat["50"], p99=lat["99"], non2xx=int(errors.group(1)) if errors else 0,
                socket=sock.group(1) if sock else "")


def start_cluster(motley, d, extra):
    port = free_port()
    args = [motley, "up", "--data-dir", f"{d}/data", "--listen", f"127.0.0.1:{port}", "--name", "bench", *extra]
    p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env=dict(os.environ, HOME=d))
    wait_ready(p, "motley up")
    return p, f"{d}/data/client.yaml"


def throughput(a):
    motley = os.path.abspath(a.motley)
    d = tempfile.mkdtemp(prefix="motley-mesh-")
    os.chmod(d, 0o755)
    www = f"{d}/www"
    os.makedirs(www)
    open(f"{www}/index.html", "w").write("hello, mesh\n")
    os.chmod(www, 0o755)
    ingress = free_port()
    p, cfg = start_cluster(motley, d, ["--ingress-listen", f"127.0.0.1:{ingress}"])
    backend_conf = f"{d}/backend.conf"
    with open(backend_conf, "w") as f:
        f.write("worker_processes 1; pid /dev/null; error_log stderr; daemon off;\n"
                "events { worker_connections 1024; }\n"
                "http { access_log off; client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi; server { listen 127.0.0.1:BACKEND_PORT; root " + www + "; } }\n")
    # nginx wants a literal port: the task writes its own config from the variable.
    svc = f"{d}/web.yaml"
    with open(svc, "w") as f:
        f.write("kind: Service\nname: web\ntask:\n"
                f"  command: [/bin/sh, -c, 'sed \"s/BACKEND_PORT/$MOTLEY_PORT_HTTP/\" {backend_conf} > $MOTLEY_ALLOC_DIR/n.conf && exec /usr/sbin/nginx -c $MOTLEY_ALLOC_DIR/n.conf -p $MOTLEY_ALLOC_DIR']\n"
                "  env: { PATH: /usr/bin:/bin:/usr/sbin }\n"
                "ports:\n  - { name: http, service_port: 80 }\n"
                "check:\n  http: { port: http }\n"
                "expose:\n  - { port: http, host: web.bench }\n")
    proxy = None
    try:
        cli(motley, cfg, "apply", "-f", svc)
        rows = wait("the backend in rotation", lambda: catalog_endpoints(motley, cfg, "web"))
        backend = int(re.search(r"http=(\d+)", rows[0]).group(1))
        nport = free_port()
        nconf = f"{d}/proxy.conf"
        with open(nconf, "w") as f:
            f.write(f"worker_processes auto; pid {d}/proxy.pid; error_log stderr; daemon off;\n"
                    "events { worker_connections 4096; }\n"
                    "http { access_log off; client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi; server { listen 127.0.0.1:%d; location / { proxy_pass http://127.0.0.1:%d; "
                    "proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; } } }\n"
                    % (nport, backend))
        proxy = subprocess.Popen(["nginx", "-c", nconf, "-p", d], stderr=subprocess.DEVNULL)
        time.sleep(1)
        targets = [("motley ingress", f"http://127.0.0.1:{ingress}/", "web.bench"),
                   ("nginx reverse proxy", f"http://127.0.0.1:{nport}/", None),
                   ("backend direct", f"http://127.0.0.1:{backend}/", None)]
        for name, url, host in targets:  # warm up
            wrk(url, 2, host)
        res = {t[0]: [] for t in targets}
        for _ in range(a.repeats):
            for name, url, host in targets:
                res[name].append(wrk(url, a.seconds, host))
        print(f"command: python3 bench/mesh.py --repeats {a.repeats} --seconds {a.seconds}")
        print("wrk -t2 -c32, median (min–max) over rounds\n")
        print("| path | requests/s | p50 latency | p99 latency | errors |\n|---|---|---|---|---|")
        for name, _, _ in targets:
            r = res[name]
            rps = [x["rps"] for x in r]
            p50 = [x["p50"] for x in r]
            p99 = [x["p99"] for x in r]
            errs = sum(x["non2xx"] for x in r)
            sock = "; ".join(x["socket"] for x in r if x["socket"])
            print(f"| {name} | {statistics.median(rps):,.0f} ({min(rps):,.0f}–{max(rps):,.0f}) "
                  f"| {statistics.median(p50):.2f} ms | {statistics.median(p99):.2f} ms "
                  f"({min(p99):.2f}–{max(p99):.2f}) | {errs} non-2xx{'; ' + sock if sock else ''} |")
        m, n, direct = (statistics.median([x[k] for x in res[t[0]]]) for t, k in
                        ((targets[0], "rps"), (targets[1], "rps"), (targets[2], "rps")))
        m99, n99, d99 = (statistics.median([x["p99"] for x in res[t[0]]]) for t in targets)
        print(f"\nthroughput motley / nginx: {m / n:.2f}; added p99 (over direct): motley "
              f"{m99 - d99:.2f} ms, nginx {n99 - d99:.2f} ms, ratio {(m99 - d99) / max(n99 - d99, 1e-9):.2f}")
    finally:
        if proxy:
            proxy.send_signal(signal.SIGQUIT)
            proxy.wait(timeout=30)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)


def memory(a):
    motley = os.path.abspath(a.motley)
    d = tempfile.mkdtemp(prefix="motley-meshmem-")
    os.chmod(d, 0o711)
    port = free_port()
    srv = subprocess.Popen([motley, "server", "--data-dir", f"{d}/s", "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs = [srv]
    try:
        wait_ready(srv, "server")
        cfg = f"{d}/s/client.yaml"
        token = open(f"{d}/s/server/join-token").read().strip()

        def agent(name, extra):
            p = subprocess.Popen([motley, "agent", "--server", f"https://127.0.0.1:{port}", "--token", token,
                                  "--data-dir", f"{d}/{name}", "--name", name, *extra],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            procs.append(p)
            wait_ready(p, name)
            return p

        plain = agent("plain", ["--no-proxy", "--label", "role=plain"])
        dns, ing = free_port(), free_port()
        mesh = agent("mesh", ["--dns-listen", f"127.0.0.1:{dns}", "--ingress-listen", f"127.0.0.1:{ing}",
                              "--label", "role=mesh"])
        time.sleep(5)
        base = {p.pid: status_kib(p.pid, "RssAnon")["RssAnon"] for p in (plain, mesh)}
        path = f"{d}/svcs.yaml"
        with open(path, "w") as f:
            for i in range(20):
                f.write(f"---\nkind: Service\nname: s{i}\nreplicas: 2\ntask:\n  command: [sleep, \"86400\"]\n"
                        "  resources: { cpu: 1m, memory: 1Mi }\n  logs: memory\n"
                        f"ports:\n  - {{ name: http, service_port: 80 }}\n"
                        f"expose:\n  - {{ port: http, host: s{i}.bench }}\n")
        cli(motley, cfg, "apply", "-f", path)
        wait("20 services in the catalog", lambda: len(json.loads(cli(motley, cfg, "get", "services", "-o", "json"))) == 20
             and all(catalog_endpoints(motley, cfg, f"s{i}") for i in range(20)), 120)
        time.sleep(10)
        m = idle([plain.pid, mesh.pid], a.idle_seconds)
        print(f"command: python3 bench/mesh.py --memory --idle-seconds {a.idle_seconds:g}\n")
        print("Both agents run one replica of each of 20 services with a port (spread) and get the catalog.\n")
        print("| agent | RssAnon, no tasks | RssAnon, 20 tasks (max over idle) | CPU idle | written idle |")
        print("|---|---|---|---|---|")
        for name, p in (("no service networking (--no-proxy)", plain),
                        ("proxy + DNS + ingress (20 listeners)", mesh)):
            print(f"| {name} | {base[p.pid] / 1024:.2f} MiB | {m[p.pid]['anon'] / 1024:.2f} MiB "
                  f"| {m[p.pid]['cpu']:.3f} % | {m[p.pid]['written']} B |")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--idle-seconds", type=float, default=60)
    a = ap.parse_args()
    (memory if a.memory else throughput)(a)


main()
