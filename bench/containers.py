#!/usr/bin/env python3
"""Container start, side by side in one run on this machine:

  * `ctr run -d` of busybox httpd (containerd's own client: the floor),
  * `motley apply` of a Service with the same image and command (image cached),
  * `motley apply` of a native Service running the host's busybox httpd,

each measured from the command's start to the first successful TCP connection to the
httpd (polled every 2 ms), median and min-max over --repeats. The image is built here
from busybox-static with umoci and served by Debian's docker-registry on loopback; the
test's own containerd (socket, root and state in a temporary directory) runs it.

Usage: python3 bench/containers.py [--motley target/release/motley] [--repeats 10]
Build first: cargo build --release -p motley. Needs root, containerd, runc, umoci,
skopeo, docker-registry, busybox-static (.ci/run installs them).
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


def build_image(d, host):
    layout, bundle = os.path.join(d, "oci"), os.path.join(d, "bundle")
    image = f"{layout}:img"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", image)
    run("umoci", "unpack", "--image", image, bundle)
    root = os.path.join(bundle, "rootfs")
    for sub in ("bin", "www", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    run("cp", "/bin/busybox", os.path.join(root, "bin/busybox"))
    for a in ("sh", "httpd"):
        os.symlink("busybox", os.path.join(root, "bin", a))
    open(os.path.join(root, "www/index.html"), "w").write("bench\n")
    run("umoci", "repack", "--image", image, bundle)
    run("umoci", "config", "--image", image, "--os", "linux", "--config.env", "PATH=/bin")
    ref = f"{host}/bench/busybox:1"
    run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{image}", f"docker://{ref}")
    return ref


def summary(name, xs):
    ms = [x * 1000 for x in xs]
    print(f"{name:<34} median {statistics.median(ms):7.1f} ms   (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--repeats", type=int, default=10)
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
    up = subprocess.Popen([a.motley, "up", "--data-dir", data, "--listen", f"127.0.0.1:{mport}", "--name", "bench",
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

    if a.memory:
        memory(a, d, sock, host, ref, up, motley)
        for p in procs:
            p.kill()
        return
    image_task = "  image: " + ref + "\n  command: [/bin/httpd, -f, -p, \"{port}\", -h, /www]\n"
    native_task = "  command: [/bin/busybox, httpd, -f, -p, \"{port}\", -h, \"" + www + "\"]\n"
    apply_and_time("warm", image_task)  # the first pull
    results = {"ctr run -d": [], "motley apply (image)": [], "motley apply (native)": []}
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


if __name__ == "__main__":
    main()
