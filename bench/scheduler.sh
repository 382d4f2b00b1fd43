#!/bin/sh
# Scheduler throughput: placements per second on one thread, 10,000 heterogeneous
# nodes (drawn from the fixture machines), 1,000 workloads, 1,000,000 allocations,
# three seeds; then the criterion benchmark of each pipeline stage.
# Run from the repository root. Prints each run's line and its JSON.
set -eu
cargo build --release -p motley-bench
for seed in 1 2 3; do
  echo "motley-bench scheduler --nodes 10000 --allocations 1000000 --seed $seed"
  target/release/motley-bench scheduler --nodes 10000 --allocations 1000000 --seed "$seed"
done
if [ "${CRITERION:-1}" = 1 ]; then
  cargo bench -p motley-bench --bench scheduler
fi
