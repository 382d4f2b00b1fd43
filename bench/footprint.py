#!/usr/bin/env python3
"""Footprint, startup and end to end with a server and agents as separate processes.

  1. one `motley server` and one `motley agent`, a service of 10 replicas (`sleep`)
     running: the largest RSS of each sampled every 0.5 s (VmRSS, and its anonymous
     part, RssAnon, which is what the process allocated rather than pages of its
     binary), CPU share of one core and bytes written over --idle-seconds;
  2. the same server with 10 agents and a service of 50 replicas: the same figures, the
     agents' as median and max over the 10;
  3. startup: `motley server` to ready (fresh data dir), and each agent's join to ready
     (its node registered and connected);
  4. end to end: a 1,000-replica service on the 10 agents, apply -> all 1,000 running.

Usage: python3 bench/footprint.py [--motley target/release/motley] [--idle-seconds 120]
Build first: cargo build --release -p motley
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skeleton import ROOT, TICK, cpu_ticks, free_port, write_bytes  # noqa: E402
from scale import cli, terminate, wait_ready  # noqa: E402


# Settling before each window: the CPU calibration, the last reports and the first
# facts refreshes are over.
SETTLE = 70


def status_kib(pid, *fields):
    """The given fields of /proc/PID/status, in KiB, from one read (0 when missing)."""
    out = dict.fromkeys(fields, 0)
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in out:
                out[name] = int(rest.split()[0])
    return out


def service(motley, cfg, d, name, replicas, timeout=600):
    path = f"{d}/{name}.yaml"
    with open(path, "w") as f:
        f.write(f"kind: Service\nname: {name}\nreplicas: {replicas}\ntask:\n"
                "  command: [sleep, \"86400\"]\n  resources: { cpu: 1m, memory: 1Mi }\n"
                "  logs: memory\n")
    t0 = time.monotonic()
    cli(motley, cfg, "apply", "-f", path)
    while time.monotonic() - t0 < timeout:
        s = json.loads(cli(motley, cfg, "get", "services", name, "-o", "json"))
        if s[0]["status"]["running"] >= replicas:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise SystemExit(f"{name}: not all {replicas} running")


def idle(pids, seconds):
    """Largest RSS and RssAnon (KiB) sampled every 0.5 s, CPU % of one core and bytes
    written over `seconds`. The largest, not the last, so that no sample flatters.
    RssAnon (private memory the process allocated) is the figure memory is judged by;
    VmRSS also counts the binary's clean pages, which the page cache shares."""
    c0 = {p: cpu_ticks(p) for p in pids}
    w0 = {p: write_bytes(p) for p in pids}
    rss = {p: 0 for p in pids}
    anon = {p: 0 for p in pids}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for p in pids:
            st = status_kib(p, "VmRSS", "RssAnon")
            rss[p] = max(rss[p], st["VmRSS"])
            anon[p] = max(anon[p], st["RssAnon"])
        time.sleep(0.5)
    dt = time.monotonic() - t0
    return {p: dict(rss=rss[p], anon=anon[p],
                    cpu=100.0 * (cpu_ticks(p) - c0[p]) / TICK / dt,
                    written=write_bytes(p) - w0[p]) for p in pids}


def row(name, m):
    print(f"| {name} | {m['rss'] / 1024:.1f} MiB ({m['rss']:,.0f} KiB) | {m['anon'] / 1024:.2f} MiB | {m['cpu']:.3f} % "
          f"| {m['written']} B |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--idle-seconds", type=float, default=120)
    a = ap.parse_args()
    motley = os.path.abspath(a.motley)
    print(f"command: python3 bench/footprint.py --idle-seconds {a.idle_seconds:g}", flush=True)
    d = tempfile.mkdtemp(prefix="motley-footprint-")
    os.chmod(d, 0o711)  # tasks run as nobody
    port = free_port()
    procs = []
    try:
        t0 = time.monotonic()
        srv = subprocess.Popen([motley, "server", "--data-dir", f"{d}/s", "--listen", f"127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(srv)
        server_ready = wait_ready(srv, "server")
        cfg = f"{d}/s/client.yaml"
        token = open(f"{d}/s/server/join-token").read().strip()

        def agent(i):
            p = subprocess.Popen([motley, "agent", "--server", f"https://127.0.0.1:{port}", "--token", token,
                                  "--data-dir", f"{d}/a{i}", "--name", f"n{i}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            procs.append(p)
            return p, wait_ready(p, f"agent n{i}")

        first, joined0 = agent(0)
        service(motley, cfg, d, "ten", 10)
        time.sleep(SETTLE)  # calibration, last reports
        print("\n| process (1 server, 1 agent, 10 tasks) | RSS | of it anonymous | CPU | written |")
        print("|---|---|---|---|---|")
        m = idle([srv.pid, first.pid], a.idle_seconds)
        row("server", m[srv.pid])
        row("agent", m[first.pid])

        joins = [joined0]
        agents = [first]
        for i in range(1, 10):
            p, t = agent(i)
            agents.append(p)
            joins.append(t)
        cli(motley, cfg, "delete", "service/ten")
        service(motley, cfg, d, "fifty", 50)
        time.sleep(SETTLE)
        m = idle([srv.pid] + [p.pid for p in agents], a.idle_seconds)
        print("\n| process (1 server, 10 agents, 50 tasks) | RSS | of it anonymous | CPU | written |")
        print("|---|---|---|---|---|")
        row("server", m[srv.pid])
        ag = [m[p.pid] for p in agents]
        for key, f in (("median", statistics.median), ("max", max)):
            row(f"agent ({key} of 10)", {k: f([x[k] for x in ag]) for k in ("rss", "anon", "cpu", "written")})
        cli(motley, cfg, "delete", "service/fifty")
        time.sleep(3)
        e2e = service(motley, cfg, d, "thousand", 1000)
        print("\n| figure | value |\n|---|---|")
        print(f"| `motley server` to ready (fresh data dir) | {server_ready * 1000:.0f} ms |")
        print(f"| agent join to ready, median of 10 (min–max) | {statistics.median(joins) * 1000:.0f} ms "
              f"({min(joins) * 1000:.0f}–{max(joins) * 1000:.0f} ms) |")
        print(f"| 1,000-replica service on 10 agents, apply → all running | {e2e:.2f} s |")
        cli(motley, cfg, "delete", "service/thousand")
        time.sleep(5)
    finally:
        terminate(reversed(procs))
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
