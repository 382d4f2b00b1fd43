#!/usr/bin/env python3
"""A highly available control plane on this machine: three etcd members (Debian's
etcd-server, default timing), three `motley server`s on them (default 3 s lease), two
agents. Measures:

* leader kill -> a new service running: kill -9 the leading server, apply a new
  service through the CLI at once (its config lists every server), time until the
  service's process exists (scanning /proc every 20 ms). Median of --trials. The killed
  server is restarted and the plane settles between trials.
* idle: bytes the etcd members, the servers and the agents write to disk
  (/proc/PID/io write_bytes) and the CPU they use over --idle-seconds, a service
  running.
* apply latency: `motley-bench apply` through the leader, through a follower (which
  forwards to the leader), and against a single server on the embedded store.

Usage: python3 bench/ha.py [--motley target/release/motley]
       [--bench target/release/motley-bench] [--trials 10] [--idle-seconds 120]
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

from skeleton import cpu_ticks, write_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(marker):
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                    return True
        except OSError:
            pass
    return False


class Plane:
    def __init__(self, motley, dir):
        self.motley, self.dir = motley, dir
        self.etcd, self.servers, self.agents = [], [], []
        members = [(f"m{i}", free_port(), free_port()) for i in range(3)]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, _, p in members)
        for name, client, peer in members:
            log = open(os.path.join(dir, f"{name}.log"), "w")
            self.etcd.append(subprocess.Popen([
                "etcd", "--name", name, "--data-dir", os.path.join(dir, name),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", initial, "--initial-cluster-state", "new"],
                stdout=subprocess.DEVNULL, stderr=log))
        self.url = "etcd://" + ",".join(f"127.0.0.1:{c}" for _, c, _ in members)
        endpoints = ",".join(f"http://127.0.0.1:{c}" for _, c, _ in members)
        for _ in range(100):
            r = subprocess.run(["etcdctl", "--endpoints", endpoints, "put", "/health", "ok"],
                               capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
            if r.returncode == 0:
                break
            time.sleep(0.2)
        else:
            sys.exit("etcd did not start")
        for i in range(3):
            port = free_port()
            self.servers.append({"url": f"https://127.0.0.1:{port}", "port": port,
                                 "data": os.path.join(dir, f"s{i}"), "proc": None})
            self.start_server(i)
        token = open(os.path.join(self.servers[0]["data"], "server/join-token")).read().strip()
        for name in ["a0", "a1"]:
            self.agents.append(self.spawn([
                "agent", "--server", self.servers[0]["url"], "--token", token,
                "--data-dir", os.path.join(dir, name), "--name", name], name))

    def spawn(self, args, name):
        log = open(os.path.join(self.dir, f"{name}.log"), "a")
        p = subprocess.Popen([self.motley, *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=log, text=True)
        for line in p.stdout:
            if line.strip() == "ready":
                return p
        sys.exit(f"{name} did not start: see {self.dir}/{name}.log")

    def start_server(self, i):
        s = self.servers[i]
        s["proc"] = self.spawn([
            "server", "--data-dir", s["data"], "--listen", f"127.0.0.1:{s['port']}",
            "--datastore", self.url, "--name", f"s{i}"], f"s{i}")

    def config(self):
        return os.path.join(self.servers[0]["data"], "client.yaml")

    def cli(self, *args, config=None):
        return subprocess.run([self.motley, "--config", config or self.config(), *args],
                              capture_output=True, text=True, cwd=ROOT)

    def leader(self):
        r = self.cli("get", "servers", "-o", "json")
        if r.returncode != 0:
            return None, 0
        servers = json.loads(r.stdout)
        for s in servers:
            if s.get("leader"):
                for i, mine in enumerate(self.servers):
                    if mine["url"] == s["url"] and mine["proc"]:
                        return i, len(servers)
        return None, len(servers)

    def settle(self):
        for _ in range(300):
            i, n = self.leader()
            if i is not None and n == 3:
                return i
            time.sleep(0.1)
        sys.exit("the plane did not settle")

    def apply(self, name, marker, replicas=1):
        path = os.path.join(self.dir, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(f"kind: Service\nname: {name}\nreplicas: {replicas}\ntask:\n"
                    f"  command: [sleep, \"{marker}\"]\n  resources:\n    cpu: 10m\n"
                    f"    memory: 8Mi\n")
        return self.cli("apply", "-f", path)

    def pids(self):
        return {"etcd": [p.pid for p in self.etcd],
                "servers": [s["proc"].pid for s in self.servers if s["proc"]],
                "agents": [p.pid for p in self.agents]}

    def close(self):
        for s in self.servers:
            if s["proc"]:
                s["proc"].kill()
                s["proc"].wait()
        for p in self.agents + self.etcd:
            p.kill()
            p.wait()
        subprocess.run(["pkill", "-f", f"sleep {MARK}"])


MARK = f"9{os.getpid()}"


def config_with_first(plane, url, path):
    cfg = _yaml_config(plane.config())
    cfg["servers"] = [url] + [u for u in cfg["servers"] if u != url]
    with open(path, "w") as f:
        json.dump(cfg, f)  # JSON is YAML
    return path


def _yaml_config(path):
    # client.yaml holds three keys: servers (a list), ca (a block) and token.
    text = open(path).read()
    out, key, block = {"servers": []}, None, []
    for line in text.splitlines():
        if line.startswith("servers:"):
            key = "servers"
        elif line.startswith("- ") and key == "servers":
            out["servers"].append(line[2:].strip().strip("'\""))
        elif line.startswith("ca:"):
            key = "ca"
        elif line.startswith("token:"):
            out["token"] = line.split(":", 1)[1].strip().strip("'\"")
            key = None
        elif key == "ca":
            block.append(line.strip())
    out["ca"] = "\n".join(block).strip() + "\n"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "target/release/motley-bench"))
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--idle-seconds", type=int, default=120)
    ap.add_argument("--applies", type=int, default=200)
    a = ap.parse_args()
    # On disk, not tmpfs: write_bytes counts what reaches the block layer.
    dir = tempfile.mkdtemp(prefix="motley-ha-", dir="/var/tmp")
    os.chmod(dir, 0o711)  # tasks run as nobody
    plane = Plane(a.motley, dir)
    result = {"bench": "ha"}
    try:
        plane.settle()
        r = plane.apply("steady", MARK, replicas=2)
        assert r.returncode == 0, r.stderr
        times = []
        for t in range(a.trials):
            leader = plane.settle()
            time.sleep(3)
            marker = f"{MARK}{t:02d}"
            plane.servers[leader]["proc"].kill()
            plane.servers[leader]["proc"].wait()
            plane.servers[leader]["proc"] = None
            t0 = time.monotonic()
            r = plane.apply(f"failover-{t}", marker)
            if r.returncode != 0:
                print(f"trial {t}: apply failed: {r.stderr.strip()}")
            while not running(marker):
                if time.monotonic() - t0 > 60:
                    sys.exit(f"trial {t}: the service did not run within 60 s ({dir})")
                time.sleep(0.02)
            took = time.monotonic() - t0
            times.append(took)
            print(f"trial {t}: killed s{leader}; new service running after {took:.2f} s")
            plane.start_server(leader)
            subprocess.run(["pkill", "-f", f"sleep {marker}"])
            plane.cli("delete", "service", f"failover-{t}")
        med = statistics.median(times)
        print(f"leader kill -> new service running: median {med:.2f} s, "
              f"min {min(times):.2f}, max {max(times):.2f} over {len(times)} trials")
        result.update(failover_median_s=round(med, 2), failover_min_s=round(min(times), 2),
                      failover_max_s=round(max(times), 2), trials=len(times))

        # Idle.
        plane.settle()
        time.sleep(10)
        pids = plane.pids()
        before = {k: [(write_bytes(p), cpu_ticks(p)) for p in v] for k, v in pids.items()}
        time.sleep(a.idle_seconds)
        hz = os.sysconf("SC_CLK_TCK")
        for k, v in pids.items():
            after = [(write_bytes(p), cpu_ticks(p)) for p in v]
            wrote = sum(x[0] - y[0] for x, y in zip(after, before[k]))
            cpu = sum(x[1] - y[1] for x, y in zip(after, before[k])) / hz
            pct = 100 * cpu / a.idle_seconds
            print(f"idle {a.idle_seconds} s: {k} ({len(v)}) wrote {wrote} bytes, "
                  f"used {pct:.3f} % of a core")
            result[f"idle_{k}_write_bytes"] = wrote
            result[f"idle_{k}_cpu_pct"] = round(pct, 3)

        # Apply latency: through the leader, through a follower, and embedded.
        leader = plane.settle()
        follower = (leader + 1) % 3
        for what, i in [("leader", leader), ("follower", follower)]:
            cfg = config_with_first(plane, plane.servers[i]["url"],
                                    os.path.join(dir, f"{what}.json"))
            r = subprocess.run([a.bench, "apply", "--config", cfg, "--count", str(a.applies),
                                "--prefix", f"lat-{what}"], capture_output=True, text=True)
            print(r.stdout.splitlines()[0] if r.returncode == 0 else r.stderr)
            if r.returncode == 0:
                result[f"apply_{what}_median_ms"] = json.loads(r.stdout.splitlines()[-1])["median_ms"]
    finally:
        plane.close()
    port = free_port()
    emb = subprocess.Popen([a.motley, "server", "--data-dir", os.path.join(dir, "embedded"),
                            "--listen", f"127.0.0.1:{port}"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in emb.stdout:
        if line.strip() == "ready":
            break
    r = subprocess.run([a.bench, "apply", "--config",
                        os.path.join(dir, "embedded/client.yaml"), "--count", str(a.applies),
                        "--prefix", "lat-embedded"], capture_output=True, text=True)
    print(r.stdout.splitlines()[0] if r.returncode == 0 else r.stderr)
    if r.returncode == 0:
        result["apply_embedded_median_ms"] = json.loads(r.stdout.splitlines()[-1])["median_ms"]
    emb.send_signal(signal.SIGTERM)
    emb.wait()
    shutil.rmtree(dir, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
