#!/usr/bin/env python3
"""Scale: one server with N simulated nodes (`motley agent --simulate N`).

For each N: start a fresh server and one simulation process, wait until all N nodes
are connected (join + connect time), apply a service with 2 replicas per node and wait
until all run (apply to running), then measure the server idle for --idle-seconds:
RSS (and RssAnon, its private part), CPU share of one core, bytes written. The
simulation's own RSS is printed too. `--per-node K` sets the replicas per node (issue
25: 10,000 nodes with 10 each, 100,000 allocations).

Usage: python3 bench/scale.py [--motley target/release/motley] [--sizes 10,100,300,1000]
                              [--idle-seconds 60]
Build first: cargo build --release -p motley
"""
import argparse, json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skeleton import ROOT, TICK, cpu_ticks, free_port, rss_kib, write_bytes  # noqa: E402

FACTS = os.path.join(ROOT, "tests/fixtures/hw/constructed/pi5")


def wait_ready(p, what, timeout=600):
    t0 = time.monotonic()
    for line in p.stdout:
        if line.strip() == "ready":
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            break
    raise SystemExit(f"{what} did not become ready")


def cli(motley, cfg, *args):
    r = subprocess.run([motley, "--config", cfg, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"motley {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def rss_anon(pid):
    """RssAnon of a process, KiB (the memory it allocated, not its binary's pages)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise SystemExit(f"no RssAnon for {pid}")


def one(motley, n, idle, per_node):
    d = tempfile.mkdtemp(prefix=f"motley-scale-{n}-")
    os.chmod(d, 0o711)
    port = free_port()
    srv = subprocess.Popen([motley, "server", "--data-dir", f"{d}/s", "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wait_ready(srv, "server")
    cfg = f"{d}/s/client.yaml"
    token = open(f"{d}/s/server/join-token").read().strip()
    sim = subprocess.Popen([motley, "agent", "--server", f"https://127.0.0.1:{port}", "--token", token,
                            "--data-dir", f"{d}/a", "--name", "sim", "--simulate", str(n),
                            "--facts-root", FACTS],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        joined = wait_ready(sim, f"{n} simulated nodes")
        manifest = f"{d}/web.yaml"
        with open(manifest, "w") as f:
            f.write(f"kind: Service\nname: web\nreplicas: {per_node * n}\ntask:\n  command: [x]\n"
                    "  resources: { cpu: 10m, memory: 8Mi }\n")
        t0 = time.monotonic()
        cli(motley, cfg, "apply", "-f", manifest)
        while True:
            s = json.loads(cli(motley, cfg, "get", "services", "web", "-o", "json"))
            if s[0]["status"]["running"] >= per_node * n:
                break
            time.sleep(0.05 if n < 1000 else 1.0)
        running = time.monotonic() - t0
        time.sleep(5)  # let the last reports settle
        c0, w0, t0 = cpu_ticks(srv.pid), write_bytes(srv.pid), time.monotonic()
        time.sleep(idle)
        c1, w1, t1 = cpu_ticks(srv.pid), write_bytes(srv.pid), time.monotonic()
        cpu = 100.0 * (c1 - c0) / TICK / (t1 - t0)
        print(f"| {n} | {joined:.2f} s | {running:.2f} s | {rss_kib(srv.pid) / 1024:.1f} MiB "
              f"({rss_anon(srv.pid) / 1024:.1f} MiB private) | "
              f"{cpu:.2f} % | {w1 - w0} | {rss_kib(sim.pid) / 1024:.1f} MiB |", flush=True)
    finally:
        terminate([sim, srv])
        subprocess.run(["rm", "-rf", d])


def terminate(procs, timeout=60):
    """SIGTERM each process in turn, SIGKILL if it is not gone within `timeout` s."""
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--sizes", default="10,100,300,1000")
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--per-node", type=int, default=2, help="replicas of the service per node")
    a = ap.parse_args()
    print(f"command: python3 bench/scale.py --sizes {a.sizes} --idle-seconds {a.idle_seconds:g} "
          f"--per-node {a.per_node}")
    print(f"| nodes | all connected | {a.per_node} replicas per node running | server RSS (RssAnon) | "
          "server CPU (steady) | server bytes written (steady) | simulation RSS |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(x) for x in a.sizes.split(",")]:
        one(a.motley, n, a.idle_seconds, a.per_node)


if __name__ == "__main__":
    main()
