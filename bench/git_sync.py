#!/usr/bin/env python3
"""Git source sync (issue 21), side by side in one run on this machine.

A repository of --manifests manifests (a Service each, about 200 bytes) under
clusters/home, served by `git daemon` on loopback. Timed, median over --repeats:
- motley-git cold: a fresh bare repository, fetch (depth 1) and read every manifest;
- motley-git no change: the same, told the commit it has (the ref did not move);
- `git clone --depth 1 --bare` and `git clone --depth 1` (with a work tree) of the same,
  and `git ls-remote` of the ref (what asking alone costs git against this daemon).
For motley-git also the process's peak resident memory (VmHWM) and bytes written
(/proc/self/io write_bytes), and for "no change" whether any file of the repository
changed. Goals (issue 21): no-change sync < 50 ms and 0 bytes written; cold < 2 s.

Usage: python3 bench/git_sync.py [--manifests 500] [--repeats 5]
Build first: cargo build --release -p motley-git --example sync.
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNC = os.path.join(ROOT, "target/release/examples/sync")


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@example.invalid", *args],
                   cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def listing(d):
    out = []
    for root, _, files in os.walk(d):
        for f in files:
            st = os.stat(os.path.join(root, f))
            out.append((os.path.join(root, f), st.st_size, st.st_mtime_ns))
    return sorted(out)


def timed(cmd):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return (time.perf_counter() - t0) * 1e3, out


def make_repo(tmp, manifests, replicas):
    """A bare repository `tmp/srv/home.git` whose one commit holds `manifests` services
    under clusters/home; returns `tmp/srv`."""
    work, base = os.path.join(tmp, "work"), os.path.join(tmp, "srv")
    os.makedirs(os.path.join(work, "clusters/home"))
    os.makedirs(base)
    for i in range(manifests):
        with open(os.path.join(work, f"clusters/home/svc{i:04}.yaml"), "w") as f:
            f.write(f"kind: Service\nname: svc{i}\nreplicas: {replicas}\ntask:\n  command: [python3, -m, http.server]\n"
                    f"  resources: {{ cpu: 10m, memory: 16Mi }}\n")
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "manifests")
    git(tmp, "clone", "-q", "--bare", "work", "srv/home.git")
    return base


def start_git_daemon(base):
    """`git-daemon` serving `base` on a free loopback port, once it accepts: (process, port).
    `git-daemon` itself: `git daemon` runs it as a child, which outlives a kill of `git`."""
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    git_daemon = os.path.join(subprocess.run(["git", "--exec-path"], capture_output=True, text=True,
                                             check=True).stdout.strip(), "git-daemon")
    daemon = subprocess.Popen([git_daemon, "--reuseaddr", "--export-all", "--listen=127.0.0.1",
                               f"--port={port}", f"--base-path={base}", base],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return daemon, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifests", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    if not os.path.exists(SYNC):
        sys.exit(f"{SYNC} missing: cargo build --release -p motley-git --example sync")
    tmp = tempfile.mkdtemp(prefix="motley-gitbench-")
    base = make_repo(tmp, a.manifests, replicas=1)
    daemon, port = start_git_daemon(base)
    try:
        url = f"git://127.0.0.1:{port}/home.git"
        rows = {"motley-git cold": [], "motley-git no change": [], "git clone --depth 1 --bare": [],
                "git clone --depth 1": [], "git ls-remote (the ref alone)": []}
        extra = {"cold": [], "nochange": [], "changed_files": 0}
        for r in range(a.repeats):
            d = os.path.join(tmp, f"m{r}.git")
            ms, out = timed([SYNC, d, url, "main", "clusters/home"])
            j = json.loads(out)
            assert j["files"] == a.manifests and j["fetched"], j
            rows["motley-git cold"].append(ms)
            extra["cold"].append(j)
            before = listing(d)
            ms, out = timed([SYNC, d, url, "main", "clusters/home", j["commit"]])
            k = json.loads(out)
            assert k["files"] == a.manifests and not k["fetched"], k
            rows["motley-git no change"].append(ms)
            extra["nochange"].append(k)
            extra["changed_files"] += len(set(listing(d)) ^ set(before))
            for name, args in [("git clone --depth 1 --bare", ["--bare"]), ("git clone --depth 1", [])]:
                ms, _ = timed(["git", "clone", "-q", "--depth", "1", *args, url, os.path.join(tmp, f"g{r}{len(args)}")])
                rows[name].append(ms)
            ms, _ = timed(["git", "ls-remote", url, "refs/heads/main"])
            rows["git ls-remote (the ref alone)"].append(ms)
        print(f"{a.manifests} manifests, {a.repeats} rounds, git daemon on loopback; wall ms (median, min–max)")
        for name, v in rows.items():
            print(f"  {name:30} {statistics.median(v):8.1f}  ({min(v):.1f}–{max(v):.1f})")
        for key in ("cold", "nochange"):
            js = extra[key]
            print(f"  motley-git {key}: fetch {statistics.median([x['fetch_ms'] for x in js]):.1f} ms, "
                  f"read {statistics.median([x['read_ms'] for x in js]):.1f} ms, "
                  f"peak RSS {max(x['peak_rss_kib'] for x in js)} KiB, "
                  f"write_bytes {max(x['write_bytes'] for x in js)}")
        print(f"  files of the repository changed by no-change syncs: {extra['changed_files']}")
    finally:
        daemon.kill()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
