#!/usr/bin/env python3
"""Container start, side by side in one run on this machine:

  * `ctr run -d` of busybox httpd (containerd's own client: the floor),
  * `motley apply` of a Service with the same image and command (image cached),
  * `motley apply` of a native Service running the host's busybox httpd,
  * `docker service create` of the same image and command (Docker Swarm, Debian's
    docker.io, a private dockerd with its own data root: the single-binary peer),

each measured from the command's start to the first successful TCP connection to the
httpd (polled every 2 ms), median and min-max over --repeats. The image is built here
from busybox-static with umoci and served by Debian's docker-registry on loopback; the
test's own containerd (socket, root and state in a temporary directory) runs it.

Usage: python3 bench/containers.py [--motley target/release/motley] [--repeats 10]
       python3 bench/containers.py --memory   (the agent's private memory)
       python3 bench/containers.py --idle     (10 idle containers: motley vs Swarm)
       python3 bench/containers.py --pull     (pull time and bytes: motley vs ctr)
Build first: cargo build --release -p motley. Needs root, containerd, runc, umoci,
skopeo, docker-registry, busybox-static, docker.io (.ci/run installs all but docker.io).
The Swarm peer follows shared/bench/swarm/bench.sh (private dockerd, no iptables, host
network), rewritten here so this repository does not depend on that directory.
"""
import argparse, os, signal, socket, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skeleton import ROOT, free_port  # noqa: E402


def wait_port(port, limit=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return time.monotonic()
        except OSError:
            time.sleep(0.002)
        finally:
            s.close()
    raise SystemExit(f"nothing listened on {port} within {limit} s")


def wait_closed(port, limit=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            time.sleep(0.05)
        except OSError:
            return
        finally:
            s.close()
    raise SystemExit(f"{port} still open after {limit} s")


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def build_image(d, host, name="bench/busybox:1", payload=0):
    """busybox-static in a one-layer image; `payload` bytes of random data in a second
    layer (each image's own: nothing cached between pulls)."""
    sub = name.replace("/", "-").replace(":", "-")
    layout, bundle = os.path.join(d, f"oci-{sub}"), os.path.join(d, f"bundle-{sub}")
    image = f"{layout}:img"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", image)
    run("umoci", "unpack", "--image", image, bundle)
    root = os.path.join(bundle, "rootfs")
    for sub in ("bin", "www", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    run("cp", "/bin/busybox", os.path.join(root, "bin/busybox"))
    for a in ("sh", "httpd", "sleep"):
        os.symlink("busybox", os.path.join(root, "bin", a))
    open(os.path.join(root, "www/index.html"), "w").write("bench\n")
    run("umoci", "repack", "--image", image, bundle)
    if payload:
        with open(os.path.join(root, "payload"), "wb") as f:
            f.write(os.urandom(payload))
        run("umoci", "repack", "--image", image, bundle)
    run("umoci", "config", "--image", image, "--os", "linux", "--config.env", "PATH=/bin")
    ref = f"{host}/{name}"
    run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{image}", f"docker://{ref}")
    return ref

class Swarm:
    """A private dockerd in swarm mode (its own data root, exec root and socket; no
    iptables, host network), with `ref` pulled from the loopback registry."""

    def __init__(self, d, ref):
        b = os.path.join(d, "swarm")
        os.makedirs(b, exist_ok=True)
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{b}/docker.sock")
        self.p = subprocess.Popen(
            ["dockerd", "--data-root", f"{b}/root", "--exec-root", f"{b}/exec",
             "--host", self.env["DOCKER_HOST"], "--pidfile", f"{b}/docker.pid",
             "--iptables=false", "--ip-masq=false", "--bridge=none"],
            stdout=subprocess.DEVNULL, stderr=open(f"{b}/dockerd.log", "w"))
        t0 = time.monotonic()
        while subprocess.run(["/usr/bin/docker", "info"], env=self.env,
                             capture_output=True).returncode != 0:
            if time.monotonic() - t0 > 60 or self.p.poll() is not None:
                raise SystemExit(f"dockerd did not start: see {b}/dockerd.log")
            time.sleep(0.2)
        self.docker("pull", ref)
        self.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        self.version = self.docker("version", "--format", "{{.Server.Version}}").strip()

    def docker(self, *args):
        return run("/usr/bin/docker", *args, env=self.env)

    def create(self, name, ref, *cmd, replicas=1):
        self.docker("service", "create", "-d", "--name", name, "--replicas", str(replicas),
                    "--network", "host", "--stop-grace-period", "1s", ref, *cmd)

    def wait_replicas(self, name, n, limit=120.0):
        t0 = time.monotonic()
        while self.docker("service", "ls", "--filter", f"name={name}",
                          "--format", "{{.Replicas}}").strip() != f"{n}/{n}":
            if time.monotonic() - t0 > limit:
                raise SystemExit(f"swarm service {name}: not {n}/{n} within {limit} s")
            time.sleep(0.1)

    def stop(self):
        ids = self.docker("service", "ls", "-q").split()
        if ids:
            self.docker("service", "rm", *ids)
            time.sleep(3)
        subprocess.run(["/usr/bin/docker", "swarm", "leave", "--force"], env=self.env,
                       capture_output=True)
        self.p.terminate()
        self.p.wait(timeout=60)


def summary(name, xs):
    ms = [x * 1000 for x in xs]
    print(f"{name:<34} median {statistics.median(ms):7.1f} ms   (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--idle", action="store_true",
                    help="instead: 10 idle containers, motley (+ containerd + shims) against Docker "
                         "Swarm (dockerd + containerd + shims): memory, CPU and bytes written")
    ap.add_argument("--pull", action="store_true",
                    help="instead: pull time and bytes written for fresh 32 MiB images, motley against "
                         "`ctr image pull`")
    ap.add_argument("--memory", action="store_true",
                    help="instead: the agent's private memory (RssAnon of `motley up`) with containers "
                         "disabled, enabled and idle, and with 20 running")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="motley-bench-ctr-")
    sock = os.path.join(d, "containerd.sock")
    cfg = os.path.join(d, "containerd.toml")
    open(cfg, "w").write(
        f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n')
    procs = [subprocess.Popen(["containerd", "--config", cfg], stderr=subprocess.DEVNULL)]
    rport = free_port()
    rcfg = os.path.join(d, "registry.yml")
    open(rcfg, "w").write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/registry\n"
                          f"http:\n  addr: 127.0.0.1:{rport}\n")
    procs.append(subprocess.Popen(["docker-registry", "serve", rcfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(rport)
    while not os.path.exists(sock):
        time.sleep(0.05)
    host = f"127.0.0.1:{rport}"
    ref = build_image(d, host)
    ctr = ["ctr", "--address", sock, "-n", "bench"]
    run(*ctr, "image", "pull", "--plain-http", ref)

    data = os.path.join(d, "motley")
    mport = free_port()
    # MOTLEY_BENCH_WRAP: a command to run `motley up` under (a profiler: `heaptrack -o F`).
    wrap = os.environ.get("MOTLEY_BENCH_WRAP", "").split()
    up = subprocess.Popen([*wrap, a.motley, "up", "--data-dir", data, "--listen", f"127.0.0.1:{mport}", "--name", "bench",
                           "--containerd", sock, "--insecure-registry", host],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=dict(os.environ, HOME=data))
    for line in up.stdout:
        if line.strip() == "ready":
            break
    motley = [a.motley, "--config", os.path.join(data, "client.yaml")]
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    open(os.path.join(www, "index.html"), "w").write("bench\n")
    os.chmod(d, 0o755)

    def apply_and_time(name, task):
        port = free_port()
        path = os.path.join(d, f"{name}.yaml")
        open(path, "w").write(f"kind: Service\nname: {name}\ntask:\n{task.format(port=port)}  stop_grace: 1s\n")
        t0 = time.monotonic()
        run(*motley, "apply", "-f", path)
        t1 = wait_port(port)
        run(*motley, "delete", f"service/{name}")
        wait_closed(port)
        return t1 - t0

    if a.memory or a.idle or a.pull:
        if a.memory:
            memory(a, d, sock, host, ref, up, motley)
        elif a.idle:
            idle(d, sock, ref, up, motley, procs[0].pid)
        else:
            pull(a, d, sock, host, up, motley, procs[0].pid)
        for p in procs:
            p.kill()
        return
    image_task = "  image: " + ref + "\n  command: [/bin/httpd, -f, -p, \"{port}\", -h, /www]\n"
    native_task = "  command: [/bin/busybox, httpd, -f, -p, \"{port}\", -h, \"" + www + "\"]\n"
    apply_and_time("warm", image_task)  # the first pull
    swarm = Swarm(d, ref)
    results = {"ctr run -d": [], "motley apply (image)": [], "motley apply (native)": [],
               f"docker service create ({swarm.version})": []}
    for i in range(a.repeats):
        port = free_port()
        t0 = time.monotonic()
        run(*ctr, "run", "-d", "--net-host", ref, f"c{i}", "/bin/httpd", "-f", "-p", str(port), "-h", "/www")
        results["ctr run -d"].append(wait_port(port) - t0)
        run(*ctr, "task", "kill", "-s", "9", f"c{i}")
        time.sleep(0.2)
        run(*ctr, "task", "rm", f"c{i}")
        run(*ctr, "container", "rm", f"c{i}")
        results["motley apply (image)"].append(apply_and_time(f"img{i}", image_task))
        results["motley apply (native)"].append(apply_and_time(f"nat{i}", native_task))
        port = free_port()
        t0 = time.monotonic()
        swarm.create(f"sw{i}", ref, "/bin/httpd", "-f", "-p", str(port), "-h", "/www")
        results[f"docker service create ({swarm.version})"].append(wait_port(port) - t0)
        swarm.docker("service", "rm", f"sw{i}")
        wait_closed(port)
    swarm.stop()
    print(f"container start to serving, {a.repeats} runs each, interleaved ({os.cpu_count()} cores)")
    for k, v in results.items():
        summary(k, v)
    ratio = statistics.median(results["motley apply (image)"]) / statistics.median(results["ctr run -d"])
    print(f"motley / ctr run: {ratio:.2f}x (goal <= 1.2x)")
    up.send_signal(signal.SIGTERM)
    up.wait(timeout=60)
    for p in procs:
        p.kill()


def rss_anon_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise SystemExit("no RssAnon")


def memory(a, d, sock, host, ref, up, motley):
    time.sleep(5)
    enabled_idle = rss_anon_kib(up.pid)
    path = os.path.join(d, "twenty.yaml")
    open(path, "w").write(f"kind: Service\nname: twenty\nreplicas: 20\nplacement:\n  spread: []\n"
                          f"task:\n  image: {ref}\n  command: [/bin/sh, -c, 'while true; do sleep 1000; done']\n"
                          "  resources: { cpu: 10m, memory: 8Mi }\n  stop_grace: 1s\n")
    run(*motley, "apply", "-f", path)
    t0 = time.monotonic()
    while True:
        out = run(*motley, "get", "allocs", "-o", "json")
        import json
        if sum(1 for x in json.loads(out) if x["state"] == "running") == 20:
            break
        if time.monotonic() - t0 > 120:
            raise SystemExit("20 containers did not run within 120 s")
        time.sleep(0.5)
    time.sleep(float(os.environ.get("MOTLEY_BENCH_SETTLE", "15")))  # past the blocking pool's 10 s keep-alive
    twenty = rss_anon_kib(up.pid)
    if os.environ.get("MOTLEY_BENCH_SMAPS"):
        regions = []
        cur = None
        for line in open(f"/proc/{up.pid}/smaps"):
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5:
                cur = [parts[0], parts[-1] if len(parts) >= 6 else "[anon]", 0]
                regions.append(cur)
            elif parts[0] == "Anonymous:" and cur:
                cur[2] = int(parts[1])
        regions.sort(key=lambda r: -r[2])
        print("largest anonymous regions (kB):", [(r[1], r[2]) for r in regions[:12]])
        print("threads:", len(os.listdir(f"/proc/{up.pid}/task")))
    run(*motley, "delete", "service/twenty")
    up.send_signal(signal.SIGTERM)
    up.wait(timeout=120)
    # The same node with containers disabled (no containerd at the socket).
    data = os.path.join(d, "motley-off")
    off = subprocess.Popen([a.motley, "up", "--data-dir", data, "--listen", f"127.0.0.1:{free_port()}",
                            "--name", "bench", "--containerd", os.path.join(d, "none.sock")],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, HOME=data))
    for line in off.stdout:
        if line.strip() == "ready":
            break
    time.sleep(5)
    disabled = rss_anon_kib(off.pid)
    mot_off = [a.motley, "--config", os.path.join(data, "client.yaml")]
    native = os.path.join(d, "native.yaml")
    open(native, "w").write("kind: Service\nname: twenty\nreplicas: 20\nplacement:\n  spread: []\n"
                            "task:\n  command: [/bin/sh, -c, 'while true; do sleep 1000; done']\n"
                            "  resources: { cpu: 10m, memory: 8Mi }\n  stop_grace: 1s\n")
    run(*mot_off, "apply", "-f", native)
    t0 = time.monotonic()
    import json
    while sum(1 for x in json.loads(run(*mot_off, "get", "allocs", "-o", "json")) if x["state"] == "running") < 20:
        if time.monotonic() - t0 > 120:
            raise SystemExit("20 native tasks did not run within 120 s")
        time.sleep(0.5)
    time.sleep(15)
    native_twenty = rss_anon_kib(off.pid)
    off.send_signal(signal.SIGTERM)
    off.wait(timeout=60)
    print("RssAnon of `motley up` (server + agent in one process), idle (5 s; 15 s after the 20 started):")
    print(f"  containerd unreachable (containers off): {disabled} kB")
    print(f"  containerd connected, no container:      {enabled_idle} kB  (+{enabled_idle - disabled} kB)")
    print(f"  20 containers running:                   {twenty} kB  (+{twenty - disabled} kB)")
    print(f"  20 native tasks running (containers off): {native_twenty} kB  (+{native_twenty - disabled} kB)")


def status_kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def write_bytes(pid):
    for line in open(f"/proc/{pid}/io"):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    stat = open(f"/proc/{pid}/stat").read()
    f = stat[stat.rfind(")") + 2:].split()
    return int(f[11]) + int(f[12])


def shims(namespace):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and namespace.encode() in cmd:
            out.append(int(p))
    return out


def footprint(groups, secs):
    """Memory now, then CPU and bytes written over `secs`, per group of pids."""
    before = {k: (sum(write_bytes(p) for p in ps), sum(cpu_ticks(p) for p in ps)) for k, ps in groups.items()}
    mem = {k: (sum(status_kib(p, "VmRSS") for p in ps), sum(status_kib(p, "RssAnon") for p in ps))
           for k, ps in groups.items()}
    time.sleep(secs)
    hz = os.sysconf("SC_CLK_TCK")
    rows = []
    for k, ps in groups.items():
        w = sum(write_bytes(p) for p in ps) - before[k][0]
        c = sum(cpu_ticks(p) for p in ps) - before[k][1]
        rows.append((k, len(ps), mem[k][0], mem[k][1], c / hz / secs * 100, w))
    return rows


def idle(d, sock, ref, up, motley, containerd_pid, n=10, secs=30):
    path = os.path.join(d, "idle.yaml")
    open(path, "w").write(f"kind: Service\nname: idle\nreplicas: {n}\nplacement:\n  spread: []\n"
                          f"task:\n  image: {ref}\n  command: [/bin/sleep, '100000']\n"
                          "  resources: { cpu: 10m, memory: 8Mi }\n  stop_grace: 1s\n")
    run(*motley, "apply", "-f", path)
    import json
    t0 = time.monotonic()
    while sum(1 for x in json.loads(run(*motley, "get", "allocs", "-o", "json")) if x["state"] == "running") < n:
        if time.monotonic() - t0 > 120:
            raise SystemExit(f"{n} containers did not run within 120 s")
        time.sleep(0.5)
    time.sleep(15)
    mine = footprint({"motley up (server + agent)": [up.pid], "containerd": [containerd_pid],
                      "shims": shims("motley")}, secs)
    run(*motley, "delete", "service/idle")
    up.send_signal(signal.SIGTERM)
    up.wait(timeout=60)
    swarm = Swarm(d, ref)
    swarm.create("idle", ref, "/bin/sleep", "100000", replicas=n)
    swarm.wait_replicas("idle", n)
    time.sleep(15)
    dockerd = swarm.p.pid
    theirs_containerd = [int(x) for x in run("pgrep", "-P", str(dockerd), "containerd").split()]
    theirs = footprint({f"dockerd {swarm.version}": [dockerd], "containerd": theirs_containerd,
                        "shims": shims("moby")}, secs)
    swarm.stop()
    print(f"{n} idle containers (busybox sleep), {secs} s after 15 s settling ({os.cpu_count()} cores)")
    print(f"{'process':<30} {'n':>3} {'VmRSS kB':>10} {'RssAnon kB':>11} {'CPU % core':>11} {'written B':>10}")
    for side, rows in (("motley", mine), ("Docker Swarm", theirs)):
        print(f"-- {side}")
        for k, cnt, rss, anon, cpu, w in rows:
            print(f"{k:<30} {cnt:>3} {rss:>10} {anon:>11} {cpu:>11.3f} {w:>10}")
        tot = [sum(r[i] for r in rows) for i in (2, 3, 4, 5)]
        print(f"{'total':<30} {'':>3} {tot[0]:>10} {tot[1]:>11} {tot[2]:>11.3f} {tot[3]:>10}")


def pull(a, d, sock, host, up, motley, containerd_pid, payload=32 << 20):
    import json
    ctr = ["ctr", "--address", sock, "-n", "bench"]
    reps = max(1, min(a.repeats, 5))
    refs = [(build_image(d, host, f"pull/m{i}:1", payload), build_image(d, host, f"pull/c{i}:1", payload))
            for i in range(reps)]
    got = {"motley apply → running (pull, unpack, start)": [], "ctr image pull": [],
           "ctr image pull, then ctr run -d": []}
    written = {k: [] for k in got}
    for i, (mref, cref) in enumerate(refs):
        path = os.path.join(d, f"pull{i}.yaml")
        open(path, "w").write(f"kind: Service\nname: pull{i}\ntask:\n  image: {mref}\n"
                              "  command: [/bin/sleep, '100000']\n  stop_grace: 1s\n")
        w0 = write_bytes(containerd_pid) + write_bytes(up.pid)
        t0 = time.monotonic()
        run(*motley, "apply", "-f", path)
        while not any(x["state"] == "running" for x in json.loads(run(*motley, "get", "allocs", "-o", "json"))
                      if x["workload"] == f"service/pull{i}"):
            if time.monotonic() - t0 > 300:
                raise SystemExit("the pull did not finish within 300 s")
            time.sleep(0.02)
        k = "motley apply → running (pull, unpack, start)"
        got[k].append(time.monotonic() - t0)
        written[k].append(write_bytes(containerd_pid) + write_bytes(up.pid) - w0)
        run(*motley, "delete", f"service/pull{i}")
        w0 = write_bytes(containerd_pid)
        t0 = time.monotonic()
        run(*ctr, "image", "pull", "--plain-http", cref)
        t1 = time.monotonic()
        w1 = write_bytes(containerd_pid)
        run(*ctr, "run", "-d", "--net-host", cref, f"p{i}", "/bin/sleep", "100000")
        t2 = time.monotonic()
        w2 = write_bytes(containerd_pid)
        got["ctr image pull"].append(t1 - t0)
        written["ctr image pull"].append(w1 - w0)
        got["ctr image pull, then ctr run -d"].append(t2 - t0)
        written["ctr image pull, then ctr run -d"].append(w2 - w0)
        run(*ctr, "task", "kill", "-s", "9", f"p{i}")
        time.sleep(0.2)
        run(*ctr, "task", "rm", f"p{i}")
        run(*ctr, "container", "rm", f"p{i}")
    print(f"pull of a fresh image (busybox + {payload >> 20} MiB of random bytes, 2 layers), "
          f"{reps} runs each, interleaved; bytes written by containerd (+ motley up)")
    for k, v in got.items():
        mib = [w / (1 << 20) for w in written[k]]
        print(f"{k:<48} median {statistics.median(v) * 1000:8.1f} ms (min {min(v) * 1000:.1f}, "
              f"max {max(v) * 1000:.1f})   written median {statistics.median(mib):.1f} MiB "
              f"(min {min(mib):.1f}, max {max(mib):.1f})")


if __name__ == "__main__":
    main()
