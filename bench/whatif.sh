#!/bin/bash
# `what-if --each-node` at 1,000 nodes, twice:
#  1. motley-bench whatif: the engine alone (motley_scheduler::whatif) on 1,000 nodes from
#     the fixture machines, 300 services of 3 replicas and a daemon;
#  2. through the product: `motley server` + `motley agent --simulate 1000` (facts of a
#     Pi 5), the same workloads applied and running, then `motley what-if --each-node`
#     timed end to end (CLI start, HTTPS, the server copying its cache, the answer).
# Run from the repository root after `cargo build --release -p motley -p motley-bench`.
set -euo pipefail
M=${MOTLEY:-target/release/motley}
N=${NODES:-1000}
S=${SERVICES:-300}
echo "motley-bench whatif --nodes $N --services $S"
target/release/motley-bench whatif --nodes "$N" --services "$S" | head -1
D=$(mktemp -d); chmod 711 "$D"; P=$((20000 + RANDOM % 20000))
$M server --data-dir "$D/s" --listen 127.0.0.1:$P > "$D/server.out" 2> "$D/server.err" &
SRV=$!
trap 'kill $SIM $SRV 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
for i in $(seq 100); do grep -q ready "$D/server.out" 2>/dev/null && break; sleep 0.2; done
$M agent --server https://127.0.0.1:$P --token "$(cat "$D/s/server/join-token")" --data-dir "$D/a" \
  --name sim --simulate "$N" --facts-root tests/fixtures/hw/constructed/pi5 > "$D/sim.out" 2> "$D/sim.err" &
SIM=$!
for i in $(seq 600); do grep -q ready "$D/sim.out" 2>/dev/null && break; sleep 0.5; done
C="--config $D/s/client.yaml"
{
  printf 'kind: Daemon\nname: logs\ntask:\n  command: [ship]\n  resources: { cpu: 10m, memory: 16Mi }\n'
  for i in $(seq 0 $((S - 1))); do
    printf -- '---\nkind: Service\nname: s%d\nreplicas: 3\ntask:\n  command: [s]\n  resources: { cpu: 50m, memory: 32Mi }\n' "$i"
  done
} > "$D/w.yaml"
$M $C apply -f "$D/w.yaml" --detach > /dev/null
want=$((N + 3 * S))
for i in $(seq 600); do
  n=$($M $C get allocs -o json | python3 -c "import json,sys; print(sum(a['state']=='running' for a in json.load(sys.stdin)))")
  [ "$n" -ge "$want" ] && break; sleep 1
done
echo "through the server: $n allocations running on $N simulated nodes"
start=$(date +%s.%N)
$M $C what-if --each-node -o json > "$D/each.json"
end=$(date +%s.%N)
python3 - "$D/each.json" "$start" "$end" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
print(f"motley what-if --each-node: {len(rows)} rows in {float(sys.argv[3]) - float(sys.argv[2]):.2f} s, "
      f"{sum(1 for r in rows if r['down'])} single points of failure")
PY
