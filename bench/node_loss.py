#!/usr/bin/env python3
"""Node power-off → replacement running, over repeated trials (needs root).

Each trial builds a fresh lab of network namespaces on a bridge (one server, four
agents), applies a 4-replica service (one replica per node), then "powers off" one
node (link down, every process in it SIGKILLed) and measures the time until four
replicas run on the remaining nodes, by counting the task processes in each
namespace every 20 ms. Default failure-detection settings.

Usage: python3 bench/node_loss.py [--motley target/release/motley] [--trials 20]
"""
import argparse, os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def pids(ns):
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def count(ns, marker):
    n = 0
    for p in pids(ns):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                    n += 1
        except OSError:
            pass
    return n


class Lab:
    def __init__(self, motley, tag):
        self.motley, self.tag, self.hosts, self.procs = motley, tag, [], []
        self.dir = tempfile.mkdtemp(prefix="motley-nodeloss-")
        os.chmod(self.dir, 0o711)  # tasks run as nobody
        self.hub = f"bh{tag}"
        sh("ip", "netns", "add", self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")

    def host(self, name):
        n = len(self.hosts) + 1
        ns, inside, outside = f"b{self.tag}{name}", f"bv{self.tag}{n}", f"bp{self.tag}{n}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
        sh("ip", "link", "set", inside, "netns", ns)
        sh("ip", "link", "set", outside, "netns", self.hub)
        sh("ip", "-n", self.hub, "link", "set", outside, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"10.78.0.{n}/24", "dev", inside)
        sh("ip", "-n", ns, "link", "set", inside, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.hosts.append((name, ns, inside))
        return ns

    def run(self, ns, *args):
        p = subprocess.Popen(["ip", "netns", "exec", ns, self.motley, *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in p.stdout:
            if line.strip() == "ready":
                break
        self.procs.append(p)

    def close(self):
        for _, ns, _ in self.hosts:
            for p in pids(ns):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        for p in self.procs:
            p.kill()
            p.wait()
        for _, ns, _ in self.hosts:
            subprocess.run(["ip", "netns", "del", ns])
        subprocess.run(["ip", "netns", "del", self.hub])
        shutil.rmtree(self.dir, ignore_errors=True)


def trial(motley, i):
    lab = Lab(motley, f"{os.getpid() % 1000:03d}{i:02d}")
    try:
        srv = lab.host("s")
        lab.run(srv, "server", "--data-dir", f"{lab.dir}/s", "--listen", "10.78.0.1:7443")
        token = open(f"{lab.dir}/s/server/join-token").read().strip()
        nodes = []
        for n in ["a", "b", "c", "d"]:
            ns = lab.host(n)
            lab.run(ns, "agent", "--server", "https://10.78.0.1:7443", "--token", token,
                    "--data-dir", f"{lab.dir}/{n}", "--name", n)
            nodes.append((n, ns))
        marker = f"9{os.getpid()}{i:02d}"
        path = f"{lab.dir}/svc.yaml"
        with open(path, "w") as f:
            f.write(f"kind: Service\nname: web\nreplicas: 4\ntask:\n  command: [sleep, \"{marker}\"]\n"
                    "  resources: { cpu: 10m, memory: 8Mi }\n  stop_grace: 1s\n")
        sh("ip", "netns", "exec", srv, motley, "--config", f"{lab.dir}/s/client.yaml", "apply", "-f", path)
        deadline = time.time() + 30
        while not all(count(ns, marker) == 1 for _, ns in nodes):
            if time.time() > deadline:
                raise SystemExit("replicas did not spread")
            time.sleep(0.05)
        victim_ns = nodes[1][1]
        victim_if = lab.hosts[2][2]
        t0 = time.monotonic()
        sh("ip", "-n", victim_ns, "link", "set", victim_if, "down")
        for p in pids(victim_ns):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        others = [ns for n, ns in nodes if ns != victim_ns]
        while sum(count(ns, marker) for ns in others) < 4:
            if time.monotonic() - t0 > 30:
                raise SystemExit("replacements did not start")
            time.sleep(0.02)
        return (time.monotonic() - t0) * 1000
    finally:
        lab.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--trials", type=int, default=20)
    a = ap.parse_args()
    global motley
    motley = os.path.abspath(a.motley)
    times = [trial(motley, i) for i in range(a.trials)]
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
    print(f"command: python3 bench/node_loss.py --trials {a.trials}")
    print(f"| node power-off → replacements running | median {statistics.median(times):.0f} ms | p95 {p95:.0f} ms | "
          f"min–max {times[0]:.0f}–{times[-1]:.0f} ms | {len(times)} trials |")


if __name__ == "__main__":
    sys.exit(main())
