#!/usr/bin/env python3
"""Whole-system benchmarks of the single-node skeleton (`motley up`).

Prints, for each figure, the median and min-max over repeats:
  * startup: `motley up` to `ready` (fresh data dir, and restart on an existing one)
  * idle: RSS, CPU share and bytes written by `motley up` with the examples running
  * scale-out: applying a 100-replica service until all 100 run

Usage: python3 bench/skeleton.py [--motley target/release/motley] [--repeats N] [--idle-seconds S]
Build first: cargo build --release -p motley
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(motley, data, port, files=()):
    args = [motley, "up", "--data-dir", data, "--listen", f"127.0.0.1:{port}", "--name", "bench"]
    for f in files:
        args += ["-f", f]
    t0 = time.monotonic()
    p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env=dict(os.environ, HOME=data, XDG_CONFIG_HOME=os.path.join(data, "cfg")))
    for line in p.stdout:
        if line.strip() == "ready":
            return p, time.monotonic() - t0
    raise SystemExit("motley up exited before ready")


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


def cli(motley, data, *args):
    out = subprocess.run([motley, "--config", os.path.join(data, "client.yaml"), *args], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return out.stdout


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def summary(name, values, unit, fmt="{:.1f}"):
    med = statistics.median(values)
    print(f"| {name} | {fmt.format(med)} {unit} | {fmt.format(min(values))}–{fmt.format(max(values))} {unit} | {len(values)} |")
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--idle-seconds", type=int, default=60)
    a = ap.parse_args()
    motley = os.path.abspath(a.motley)
    print(f"command: python3 bench/skeleton.py --repeats {a.repeats} --idle-seconds {a.idle_seconds}")
    print(f"binary: {motley} ({os.path.getsize(motley) / 1e6:.1f} MB)")
    print("| figure | median | min–max | runs |\n|---|---|---|---|")

    fresh, again = [], []
    for _ in range(a.repeats):
        d = tempfile.mkdtemp(prefix="motley-bench-")
        os.chmod(d, 0o711)  # tasks run as nobody
        port = free_port()
        p, t = start(motley, d, port)
        fresh.append(t * 1000)
        stop(p)
        p, t = start(motley, d, port)
        again.append(t * 1000)
        stop(p)
        shutil.rmtree(d, ignore_errors=True)
    summary("`motley up` to ready, first start (CA, token, store created)", fresh, "ms")
    summary("`motley up` to ready, restart", again, "ms")

    rss, cpu, wrote = [], [], []
    for _ in range(max(1, a.repeats // 2)):
        d = tempfile.mkdtemp(prefix="motley-bench-")
        os.chmod(d, 0o711)  # tasks run as nobody
        p, _ = start(motley, d, free_port(), ["examples/"])
        deadline = time.time() + 60
        while time.time() < deadline:
            jobs = json.loads(cli(motley, d, "get", "jobs", "-o", "json"))
            if jobs and jobs[0]["status"]["phase"] == "complete":
                break
            time.sleep(0.2)
        time.sleep(5)
        c0, w0, t0 = cpu_ticks(p.pid), write_bytes(p.pid), time.monotonic()
        samples = []
        while time.monotonic() - t0 < a.idle_seconds:
            samples.append(rss_kib(p.pid))
            time.sleep(1)
        c1, w1, t1 = cpu_ticks(p.pid), write_bytes(p.pid), time.monotonic()
        rss.append(statistics.median(samples) / 1024)
        cpu.append((c1 - c0) / TICK / (t1 - t0) * 100)
        wrote.append(w1 - w0)
        stop(p)
        shutil.rmtree(d, ignore_errors=True)
    summary("idle `motley up` RSS (server + agent, examples running)", rss, "MiB")
    summary(f"idle `motley up` CPU over {a.idle_seconds} s", cpu, "% of a core", "{:.3f}")
    summary(f"idle `motley up` bytes written over {a.idle_seconds} s", wrote, "B", "{:.0f}")

    d = tempfile.mkdtemp(prefix="motley-bench-")
    os.chmod(d, 0o711)  # tasks run as nobody
    p, _ = start(motley, d, free_port())
    scale = []
    for r in range(a.repeats):
        path = os.path.join(d, "hundred.yaml")
        with open(path, "w") as f:
            f.write("kind: Service\nname: hundred\nreplicas: 100\ntask:\n  command: [sleep, \"86400\"]\n"
                    "  resources: { cpu: 1m, memory: 1Mi }\n  stop_grace: 1s\n")
        t0 = time.monotonic()
        cli(motley, d, "apply", "-f", path)
        while True:
            svc = json.loads(cli(motley, d, "get", "services", "hundred", "-o", "json"))
            if svc[0]["status"]["running"] == 100:
                break
            time.sleep(0.02)
        scale.append((time.monotonic() - t0) * 1000)
        cli(motley, d, "delete", "service/hundred")
        while json.loads(cli(motley, d, "get", "allocs", "-o", "json")):
            time.sleep(0.1)
    summary("apply a 100-replica service → all 100 running", scale, "ms")
    stop(p)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
