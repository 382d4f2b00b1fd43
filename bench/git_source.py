#!/usr/bin/env python3
"""A git source synced by a real `motley server` (issue 21): the whole path, not only git.

A repository of --manifests services (`replicas: 0`: planned, applied and gated like any
service, with nothing to start) under clusters/home, served by `git daemon` on loopback.
One `motley server` (no agent: its figures are the server's alone) gets a Source for it:
- cold: from the Source's apply to the commit applied (fetch, read, parse, plan with the
  scheduler, one transaction of --manifests objects), wall time as the CLI sees it and as
  the server measures it (motley_source_sync_duration_seconds); the server's RssAnon
  before and its peak during (sampled every 5 ms), and bytes it wrote;
- no change: `motley source sync` --repeats times (the ref did not move): wall time of
  the command and the server's own duration, bytes the server wrote (goal: 0) and
  whether any file under its data directory changed;
- side by side: `git clone --depth 1` of the same repository.
Each over `git daemon` (git://) and over file:// (the transport's own cost apart: git
daemon answers git's protocol v2 after a TCP delayed-ACK stall of about 40 ms, which
`git ls-remote` shows as well).
Goals (issue 21): no-change sync < 50 ms and 0 bytes written; cold < 2 s.

Usage: python3 bench/git_source.py [--motley target/release/motley] [--manifests 500] [--repeats 20]
Build first: cargo build --release -p motley
"""
import argparse, json, os, ssl, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skeleton import ROOT, free_port, write_bytes  # noqa: E402
from scale import cli, wait_ready  # noqa: E402
from footprint import status_kib  # noqa: E402
from git_sync import listing, make_repo, start_git_daemon, timed  # noqa: E402


def metric(cfg_path, name, label):
    """Sum and count of a histogram of the server's /metrics, for one label set."""
    text = open(cfg_path).read()
    token = next(l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("token:"))
    server = next(l.strip()[2:] for l in text.splitlines() if l.strip().startswith("- https://"))
    ca = text[text.index("-----BEGIN CERTIFICATE-----"):text.index("-----END CERTIFICATE-----") + 25]
    ctx = ssl.create_default_context(cadata="\n".join(l.strip() for l in ca.splitlines()) + "\n")
    req = urllib.request.Request(f"{server}/metrics", headers={"Authorization": f"Bearer {token}"})
    body = urllib.request.urlopen(req, context=ctx).read().decode()
    out = {}
    for line in body.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f"{name}_{part}{{{label}}}"):
                out[part] = float(line.split()[-1])
    return out.get("sum", 0.0), int(out.get("count", 0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--manifests", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    motley = os.path.abspath(a.motley)
    tmp = tempfile.mkdtemp(prefix="motley-gitsrc-")
    os.chmod(tmp, 0o711)
    base = make_repo(tmp, a.manifests, replicas=0)
    daemon, gport = start_git_daemon(base)
    try:
        print(f"{a.manifests} services in git, `motley server` alone")
        for label, url in (("git daemon", f"git://127.0.0.1:{gport}/home.git"),
                           ("file://", f"file://{base}/home.git")):
            server_run(a, motley, tmp, label, url)
    finally:
        daemon.kill()
        subprocess.run(["rm", "-rf", tmp])


def server_run(a, motley, tmp, label, url):
    port = free_port()
    data = f"{tmp}/data-{'daemon' if 'daemon' in label else 'file'}"
    srv = subprocess.Popen([motley, "server", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_ready(srv, "server")
        cfg = f"{data}/client.yaml"
        src = f"{tmp}/source.yaml"
        with open(src, "w") as f:
            f.write(f"kind: Source\nname: home\ngit:\n  url: {url}\n  path: clusters/home\ninterval: 1h\n")
        time.sleep(3)  # settle after start
        rss0 = status_kib(srv.pid, "RssAnon")["RssAnon"]
        peak, stop = [rss0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], status_kib(srv.pid, "RssAnon")["RssAnon"])
                time.sleep(0.005)

        th = threading.Thread(target=sample)
        th.start()
        w0 = write_bytes(srv.pid)
        t0 = time.perf_counter()
        cli(motley, cfg, "apply", "-f", src)
        while True:
            v = json.loads(cli(motley, cfg, "get", "source", "home", "-o", "json"))[0]
            if v.get("applied"):
                break
            if time.perf_counter() - t0 > 120:
                sys.exit(f"no sync: {v}")
            time.sleep(0.01)
        cold_ms = (time.perf_counter() - t0) * 1e3
        stop.set()
        th.join()
        cold_written = write_bytes(srv.pid) - w0
        series = 'source="home"'
        s_sum, s_count = metric(cfg, "motley_source_sync_duration_seconds", series)
        objects = len(json.loads(cli(motley, cfg, "get", "services", "-o", "json")))
        assert objects == a.manifests, (objects, v)
        time.sleep(2)
        rss_after = status_kib(srv.pid, "RssAnon")["RssAnon"]
        # No change.
        before = listing(data)
        w0 = write_bytes(srv.pid)
        walls = []
        for _ in range(a.repeats):
            ms, out = timed([motley, "--config", cfg, "source", "sync", "home"])
            assert "nothing to change" in out, out
            walls.append(ms)
        written = write_bytes(srv.pid) - w0
        changed = len(set(listing(data)) ^ set(before))
        n_sum, n_count = metric(cfg, "motley_source_sync_duration_seconds", series)
        server_ms = (n_sum - s_sum) / max(1, n_count - s_count) * 1e3
        clone = []
        for r in range(5):
            ms, _ = timed(["git", "clone", "-q", "--depth", "1", url, os.path.join(tmp, f"c{len(data)}{r}")])
            clone.append(ms)
        print(f"{label}:")
        print(f"  cold: apply of the Source -> commit applied {cold_ms:.0f} ms "
              f"(the server's sync: {s_sum * 1e3 / max(1, s_count):.0f} ms); server wrote {cold_written} bytes")
        print(f"  server RssAnon: {rss0} KiB before, peak {peak[0]} KiB during, {rss_after} KiB 2 s after")
        print(f"  no change x{a.repeats}: `motley source sync` {statistics.median(walls):.1f} ms median "
              f"({min(walls):.1f}-{max(walls):.1f}); the server's sync {server_ms:.1f} ms mean; "
              f"server wrote {written} bytes; files changed under the data dir: {changed}")
        print(f"  git clone --depth 1: {statistics.median(clone):.1f} ms median ({min(clone):.1f}-{max(clone):.1f})")
    finally:
        srv.terminate()
        srv.wait()


main()
