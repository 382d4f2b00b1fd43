#!/usr/bin/env python3
"""Batch throughput and dispatch latency of `motley up` (one node), as Slurm's peer
benchmark (../shared/bench/slurm) measures Slurm:

  * throughput, one by one: N trivial jobs (/bin/true, one CPU each), each its own
    `motley apply` of its own Job; completions per second from the first submission
    to the last completion;
  * throughput, array: one Job with N completions (one CPU each, parallelism N);
  * dispatch latency: submit (just before `motley apply` starts) -> the task's process
    running (it writes `date +%s%N` first thing), median and p99 over --samples jobs,
    submitted one after another.

Usage: python3 bench/batch.py [--motley target/release/motley] [--n 1000] [--repeats 3]
                              [--samples 100]
Build first: cargo build --release -p motley
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skeleton import ROOT, free_port, start, stop, summary  # noqa: E402


def cli(motley, data, *args, stdin=None):
    return subprocess.run([motley, "--config", os.path.join(data, "client.yaml"), *args],
                          input=stdin, capture_output=True, text=True, check=True).stdout


def job(name, command, completions=1):
    return (f"kind: Job\nname: {name}\ncompletions: {completions}\nparallelism: {completions}\n"
            f"retries: 0\ntask:\n  command: {json.dumps(command)}\n  resources: {{ cpu: 1, memory: 8Mi }}\n"
            "  logs: memory\n")


def wait_complete(motley, data, names, timeout=3600):
    want = set(names)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        jobs = json.loads(cli(motley, data, "get", "jobs", "-o", "json"))
        done = {j["workload"]["spec"]["name"] for j in jobs if j["status"]["phase"] in ("complete", "failed")}
        failed = [j["workload"]["spec"]["name"] for j in jobs if j["status"]["phase"] == "failed"]
        if failed:
            raise SystemExit(f"failed jobs: {failed[:5]}")
        if want <= done:
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit("timed out")


def delete_all(motley, data):
    jobs = json.loads(cli(motley, data, "get", "jobs", "-o", "json"))
    for j in jobs:
        cli(motley, data, "delete", f"job/{j['workload']['spec']['name']}")


def one_by_one(motley, data, n):
    t0 = time.monotonic()
    names = []
    for i in range(n):
        name = f"t{i}"
        cli(motley, data, "apply", "-f", "-", stdin=job(name, ["/bin/true"]))
        names.append(name)
    submitted = time.monotonic() - t0
    end = wait_complete(motley, data, names)
    return n / (end - t0), submitted


def array(motley, data, n):
    t0 = time.monotonic()
    cli(motley, data, "apply", "-f", "-", stdin=job("arr", ["/bin/true"], n))
    end = wait_complete(motley, data, ["arr"])
    return n / (end - t0)


def latency(motley, data, samples, tmp):
    out = []
    for i in range(samples):
        stamp = os.path.join(tmp, f"start-{i}")
        cmd = ["/bin/sh", "-c", f"date +%s%N > {stamp}"]
        t_submit = time.time_ns()
        cli(motley, data, "apply", "-f", "-", stdin=job(f"lat{i}", cmd))
        while not os.path.exists(stamp) or os.path.getsize(stamp) == 0:
            time.sleep(0.001)
        started = int(open(stamp).read().strip())
        out.append((started - t_submit) / 1e6)
        wait_complete(motley, data, [f"lat{i}"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=100)
    a = ap.parse_args()
    print(f"command: python3 bench/batch.py --n {a.n} --repeats {a.repeats} --samples {a.samples}")
    tmp = tempfile.mkdtemp(prefix="motley-batch-")
    os.chmod(tmp, 0o777)  # tasks run as nobody and write their start times here
    data = os.path.join(tmp, "data")
    p, _ = start(a.motley, data, free_port())
    try:
        ind, arr = [], []
        for r in range(a.repeats):
            rate, sub = one_by_one(a.motley, data, a.n)
            ind.append(rate)
            print(f"one by one #{r + 1}: {rate:.1f} jobs/s (submission took {sub:.1f} s)", flush=True)
            delete_all(a.motley, data)
            rate = array(a.motley, data, a.n)
            arr.append(rate)
            print(f"array #{r + 1}: {rate:.1f} jobs/s", flush=True)
            delete_all(a.motley, data)
        lat = latency(a.motley, data, a.samples, tmp)
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
        summary(f"{a.n} jobs one by one", ind, "jobs/s")
        summary(f"{a.n}-task array", arr, "jobs/s")
        print(f"| submit → started, {len(lat)} jobs one after another | median {statistics.median(lat):.1f} ms, "
              f"p99 {p99:.1f} ms | {lat[0]:.1f}–{lat[-1]:.1f} ms | {len(lat)} |")
    finally:
        stop(p)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
