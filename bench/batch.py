#!/usr/bin/env python3
"""Batch throughput and dispatch latency of `motley up` (one node), side by side with
Slurm measured by its peer benchmark (../shared/bench/slurm/bench.sh), interleaved run
by run so that both see the same machine:

  * throughput, one by one: N trivial jobs (/bin/true, one CPU each), each its own
    `motley apply` of its own Job, from a shell loop as Slurm's `sbatch` loop;
    completions per second from the first submission to the last completion;
  * throughput, array: one Job with N completions (one CPU each, parallelism N);
  * dispatch latency: submit (just before `motley apply` starts) -> the task's process
    running (it writes `date +%s%N` first thing), median and p99 over --samples jobs,
    submitted one after another;
  * for each throughput run, what the daemons cost per job: bytes written
    (`write_bytes` of /proc/PID/io: motley's one process, its store, log, agent state
    and allocation directories; Slurm's slurmctld + slurmd as its benchmark reports
    them) and CPU time of the daemons themselves (utime + stime, the tasks' own
    processes not counted). motley's window ends 1.5 s after the last completion, so
    that the group commit (at most 1 s after a change) is counted.

Each motley run starts a fresh `motley up` (it is ready in ~40 ms). The last completion
is the latest `updated_at` the server stored for the jobs' allocations (milliseconds of
this machine's clock), found after polling sparsely, so that polling does not slow the
run; Slurm's script polls squeue every 0.5 s.

Usage: python3 bench/batch.py [--motley target/release/motley] [--sizes 1000,10000]
                              [--repeats 3] [--samples 100]
                              [--slurm ../shared/bench/slurm/bench.sh]
Build first: cargo build --release -p motley. Slurm: see ../shared/bench/slurm/README.md.
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skeleton import ROOT, free_port, start, stop  # noqa: E402


def cli(motley, data, *args, stdin=None):
    return subprocess.run([motley, "--config", os.path.join(data, "client.yaml"), *args],
                          input=stdin, capture_output=True, text=True, check=True).stdout


def job(name, command, completions=1):
    return (f"kind: Job\nname: {name}\ncompletions: {completions}\nparallelism: {completions}\n"
            f"retries: 0\ntask:\n  command: {json.dumps(command)}\n  resources: {{ cpu: 1, memory: 8Mi }}\n"
            "  logs: memory\n")


def phases(motley, data, *names):
    jobs = json.loads(cli(motley, data, "get", "jobs", *names, "-o", "json"))
    return {j["workload"]["spec"]["name"]: j["status"]["phase"] for j in jobs}


def wait_complete(motley, data, names, last, timeout=3600):
    """Waits until every job in `names` is complete, polling only `last` (the last one
    submitted) until it is, then everything once; returns when the last allocation ended
    (server time, seconds)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if phases(motley, data, last).get(last) in ("complete", "failed"):
            ph = phases(motley, data)
            failed = [n for n in names if ph.get(n) == "failed"]
            if failed:
                raise SystemExit(f"failed jobs: {failed[:5]}")
            if all(ph.get(n) == "complete" for n in names):
                allocs = json.loads(cli(motley, data, "get", "allocs", "-o", "json"))
                return max(a["updated_at"] for a in allocs) / 1000
        time.sleep(0.25)
    raise SystemExit("timed out")


def busy_fraction(seconds=1.0):
    """Share of the machine's CPU time busy over `seconds`."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)
    b0, t0 = sample()
    time.sleep(seconds)
    b1, t1 = sample()
    return (b1 - b0) / max(1, t1 - t0)


def quiet(limit=0.05, timeout=60):
    """Waits until the machine is idle (under 5 % busy over a second), so that a run does
    not share the cores with what the previous one left behind (Slurm's daemons finish
    their bookkeeping for many seconds after its last job completes)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if busy_fraction() < limit:
            return
    print(f"warning: the machine stayed over {limit:.0%} busy for {timeout} s", flush=True)


def usage(pid):
    """(write_bytes, cancelled_write_bytes, own CPU seconds) of a process."""
    io = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            io[k] = int(v)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return io["write_bytes"], io["cancelled_write_bytes"], cpu


def cost(before, after, n):
    """KiB written, KiB of that cancelled (truncated before writeback) and ms of CPU per job."""
    return {"kib": (after[0] - before[0]) / 1024 / n, "cancelled_kib": (after[1] - before[1]) / 1024 / n,
            "cpu_ms": (after[2] - before[2]) * 1000 / n}


def fresh(motley):
    tmp = tempfile.mkdtemp(prefix="motley-batch-")
    os.chmod(tmp, 0o777)  # tasks run as nobody and write their start times here
    data = os.path.join(tmp, "data")
    p, _ = start(motley, data, free_port())
    return tmp, data, p


def finish(p, tmp):
    stop(p)
    subprocess.run(["rm", "-rf", tmp])


def job_files(tmp, n):
    """Writes jobs t0 … t{n-1} (/bin/true) as files of a new directory; returns it."""
    d = os.path.join(tmp, "jobs")
    os.mkdir(d)
    for i in range(n):
        with open(os.path.join(d, f"t{i}.yaml"), "w") as f:
            f.write(job(f"t{i}", ["/bin/true"]))
    return d


def one_by_one(motley, n):
    quiet()
    tmp, data, p = fresh(motley)
    try:
        d = job_files(tmp, n)
        # A shell loop, one process per submission, as Slurm's benchmark runs sbatch.
        loop = (f'for i in $(seq 0 {n - 1}); do "$M" --config "$C" apply -f "$D/t$i.yaml" >/dev/null'
                ' || exit 1; done')
        env = dict(os.environ, M=motley, C=os.path.join(data, "client.yaml"), D=d)
        before = usage(p.pid)
        t0 = time.time()
        subprocess.run(["bash", "-c", loop], env=env, check=True)
        submitted = time.time() - t0
        end = wait_complete(motley, data, [f"t{i}" for i in range(n)], f"t{n - 1}")
        time.sleep(1.5)
        return n / (end - t0), submitted, cost(before, usage(p.pid), n)
    finally:
        finish(p, tmp)


def one_set(motley, n):
    """N separate Jobs in one `motley apply -f DIR` (one request): what the server and
    agent do with individual jobs when submission is not one process per job."""
    tmp, data, p = fresh(motley)
    try:
        d = job_files(tmp, n)
        t0 = time.time()
        cli(motley, data, "apply", "-f", d)
        end = wait_complete(motley, data, [f"t{i}" for i in range(n)], f"t{n - 1}")
        return n / (end - t0)
    finally:
        finish(p, tmp)


def array(motley, n):
    quiet()
    tmp, data, p = fresh(motley)
    try:
        before = usage(p.pid)
        t0 = time.time()
        cli(motley, data, "apply", "-f", "-", stdin=job("arr", ["/bin/true"], n))
        end = wait_complete(motley, data, ["arr"], "arr")
        time.sleep(1.5)
        return n / (end - t0), cost(before, usage(p.pid), n)
    finally:
        finish(p, tmp)


def latency(motley, samples):
    tmp, data, p = fresh(motley)
    out = []
    try:
        for i in range(samples):
            stamp = os.path.join(tmp, f"start-{i}")
            cmd = ["/bin/sh", "-c", f"date +%s%N > {stamp}"]
            t_submit = time.time_ns()
            cli(motley, data, "apply", "-f", "-", stdin=job(f"lat{i}", cmd))
            while not os.path.exists(stamp) or os.path.getsize(stamp) == 0:
                time.sleep(0.001)
            started = int(open(stamp).read().strip())
            out.append((started - t_submit) / 1e6)
            wait_complete(motley, data, [f"lat{i}"], f"lat{i}")
        return out
    finally:
        finish(p, tmp)


SLURM_PROFILE = "tuned"


def slurm(script, env):
    """One run of Slurm's peer benchmark; returns its output."""
    e = dict(os.environ, RESTART="0", STOP="0", REPEATS="1")
    e.update(env)
    r = subprocess.run(["bash", script, SLURM_PROFILE], env=e, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"slurm bench failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def slurm_thru(script, kind, n):
    """Slurm's jobs/s, and its daemons' bytes written and CPU per job."""
    quiet()
    out = slurm(script, {"MODES": f"thru_{kind}", "N": str(n)})
    m = re.search(r"all-finished=[0-9.]+s \(([0-9.]+) jobs/s\)", out)
    if not m:
        raise SystemExit(f"no throughput in slurm output:\n{out}")
    c = re.search(r"cpu: slurmctld=([0-9.]+)s slurmd=([0-9.]+)s.*write_bytes: slurmctld=([0-9]+) slurmd=([0-9]+)", out)
    if not c:
        raise SystemExit(f"no cpu/write_bytes in slurm output:\n{out}")
    per = {"kib": (int(c.group(3)) + int(c.group(4))) / 1024 / n, "cancelled_kib": 0.0,
           "cpu_ms": (float(c.group(1)) + float(c.group(2))) * 1000 / n}
    return float(m.group(1)), per


def slurm_latency(script, samples):
    out = slurm(script, {"MODES": "lat", "LAT_N": str(samples), "LAT_GAP": "0"})
    m = re.search(r"samples: ([0-9. ]+)", out)
    if not m:
        raise SystemExit(f"no latency samples in slurm output:\n{out}")
    return [float(x) * 1000 for x in m.group(1).split()]


def p99(values):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]


def cell(values, unit, fmt="{:.1f}"):
    if not values:
        return "–"
    return (f"{fmt.format(statistics.median(values))} {unit} "
            f"({fmt.format(min(values))}–{fmt.format(max(values))})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--motley", default=os.path.join(ROOT, "target/release/motley"))
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--slurm", help="Slurm's peer benchmark script (bench.sh), to run interleaved")
    ap.add_argument("--slurm-profile", default="tuned",
                    help="bench.sh profile: tuned, or a file of slurm.conf lines (arrays over "
                         "1,000 tasks need bench/slurm-tuned-large-arrays.conf: MaxArraySize)")
    ap.add_argument("--one-set", action="store_true",
                    help="also N separate Jobs in one apply (motley only: sbatch has no such form)")
    a = ap.parse_args()
    global SLURM_PROFILE
    SLURM_PROFILE = os.path.abspath(a.slurm_profile) if os.path.exists(a.slurm_profile) else a.slurm_profile
    motley = os.path.abspath(a.motley)
    sizes = [int(s) for s in a.sizes.split(",")]
    cmd = f"python3 bench/batch.py --sizes {a.sizes} --repeats {a.repeats} --samples {a.samples}"
    if a.slurm:
        cmd += f" --slurm {a.slurm}"
    if a.slurm_profile != "tuned":
        cmd += f" --slurm-profile {a.slurm_profile}"
    if a.one_set:
        cmd += " --one-set"
    print(f"command: {cmd}", flush=True)
    res = {}  # (figure) -> {"motley": [...], "slurm": [...]}
    per_job = {}  # (figure) -> {"motley": [cost, ...], "slurm": [cost, ...]}
    try:
        for r in range(a.repeats):
            for n in sizes:
                if a.one_set:
                    fig = f"{n:,} separate jobs in one apply (motley only)"
                    rate = one_set(motley, n)
                    res.setdefault(fig, {"motley": [], "slurm": []})["motley"].append(rate)
                    print(f"#{r + 1} {fig}: motley {rate:.1f} jobs/s", flush=True)
                for kind in ("ind", "arr"):
                    fig = f"{n:,} jobs " + ("one by one" if kind == "ind" else "as one array")
                    row = res.setdefault(fig, {"motley": [], "slurm": []})
                    per_row = per_job.setdefault(fig, {"motley": [], "slurm": []})
                    if kind == "ind":
                        rate, sub, per = one_by_one(motley, n)
                        extra = f" (submission {n / sub:.0f}/s)"
                    else:
                        (rate, per), extra = array(motley, n), ""
                    row["motley"].append(rate)
                    per_row["motley"].append(per)
                    print(f"#{r + 1} {fig}: motley {rate:.1f} jobs/s{extra}; per job {per['kib']:.1f} KiB "
                          f"written ({per['cancelled_kib']:.1f} KiB cancelled), {per['cpu_ms']:.2f} ms CPU",
                          flush=True)
                    if a.slurm:
                        s, sper = slurm_thru(a.slurm, kind, n)
                        row["slurm"].append(s)
                        per_row["slurm"].append(sper)
                        print(f"#{r + 1} {fig}: slurm {s:.1f} jobs/s; per job {sper['kib']:.1f} KiB written, "
                              f"{sper['cpu_ms']:.2f} ms CPU", flush=True)
        lat = latency(motley, a.samples)
        print(f"latency motley: median {statistics.median(lat):.1f} ms p99 {p99(lat):.1f} ms", flush=True)
        slat = slurm_latency(a.slurm, a.samples) if a.slurm else []
        if slat:
            print(f"latency slurm: median {statistics.median(slat):.1f} ms p99 {p99(slat):.1f} ms",
                  flush=True)
    finally:
        if a.slurm:
            slurm(a.slurm, {"MODES": " ", "STOP": "1"})  # no measurement; stops its daemons
    print("\n| figure | motley: median (min–max) | Slurm tuned: median (min–max) | motley ÷ Slurm | runs |")
    print("|---|---|---|---|---|")
    for fig, row in res.items():
        ratio = (f"{statistics.median(row['motley']) / statistics.median(row['slurm']):.1f}×"
                 if row["slurm"] else "–")
        print(f"| {fig} | {cell(row['motley'], 'jobs/s')} | {cell(row['slurm'], 'jobs/s')} | {ratio} "
              f"| {len(row['motley'])} |")
    lat_m = f"median {statistics.median(lat):.1f} ms, p99 {p99(lat):.1f} ms, max {max(lat):.1f} ms"
    lat_s = (f"median {statistics.median(slat):.0f} ms, p99 {p99(slat):.0f} ms, max {max(slat):.0f} ms"
             if slat else "–")
    ratio = f"{statistics.median(slat) / statistics.median(lat):.0f}× sooner" if slat else "–"
    print(f"| submit → started, {len(lat)} jobs one after another | {lat_m} | {lat_s} | {ratio} | 1 |")
    print("\n| figure | motley: written per job | motley: daemon CPU per job | Slurm: written per job "
          "| Slurm: daemon CPU per job |")
    print("|---|---|---|---|---|")
    for fig, row in per_job.items():
        def med(xs, k):
            return statistics.median([x[k] for x in xs]) if xs else None
        mk, mc, mx = med(row["motley"], "kib"), med(row["motley"], "cpu_ms"), med(row["motley"], "cancelled_kib")
        sk, sc = med(row["slurm"], "kib"), med(row["slurm"], "cpu_ms")
        print(f"| {fig} | {mk:.1f} KiB ({mx:.1f} KiB of it cancelled) | {mc:.2f} ms | "
              + (f"{sk:.1f} KiB | {sc:.2f} ms |" if sk is not None else "– | – |"))


if __name__ == "__main__":
    main()
