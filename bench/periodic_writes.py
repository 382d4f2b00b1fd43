#!/usr/bin/env python3
"""Bytes a single-node cluster writes, and its CPU, at rest with a periodic job
(issue 26): `none` (no workload), `daily` (a periodic job not due in the window),
`periodic` (a run every 10 s). Usage: periodic_writes.py MOTLEY none|daily|periodic SECONDS
"""
import os, sys, time, json, subprocess, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skeleton import free_port, write_bytes, cpu_ticks, TICK
motley = sys.argv[1]; mode = sys.argv[2]; secs = int(sys.argv[3])
d = tempfile.mkdtemp(prefix="prof-periodic-"); os.chmod(d, 0o711)
port = free_port()
p = subprocess.Popen([motley, "up", "--data-dir", f"{d}/data", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
for line in p.stdout:
    if line.strip() == "ready": break
cfg = f"{d}/data/client.yaml"
def cli(*a): return subprocess.run([motley, "--config", cfg, *a], capture_output=True, text=True, check=True).stdout
if mode == "periodic":
    open(f"{d}/j.yaml","w").write('kind: Job\nname: tick\nschedule: "*/10 * * * * *"\nhistory: 3\ntask:\n  command: ["true"]\n  resources: { cpu: 10m, memory: 8Mi }\n')
    cli("apply", "-f", f"{d}/j.yaml")
elif mode == "daily":
    open(f"{d}/j.yaml","w").write('kind: Job\nname: nightly\nschedule: "@daily"\ntask:\n  command: ["true"]\n  resources: { cpu: 10m, memory: 8Mi }\n')
    cli("apply", "-f", f"{d}/j.yaml")
time.sleep(25)
w0, c0, t0 = write_bytes(p.pid), cpu_ticks(p.pid), time.monotonic()
time.sleep(secs)
w1, c1, t1 = write_bytes(p.pid), cpu_ticks(p.pid), time.monotonic()
runs = 0
if mode == "periodic":
    runs = sum(1 for j in json.loads(cli("get","jobs","-o","json")) if j["workload"].get("run_of"))
print(f"{mode}: {w1-w0} bytes written in {t1-t0:.0f} s, {100*(c1-c0)/TICK/(t1-t0):.3f} % of a core; runs kept {runs}")
p.terminate(); p.wait(10)
subprocess.run(["rm","-rf",d])
