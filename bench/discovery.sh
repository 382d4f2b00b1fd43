#!/bin/sh
# Hardware discovery benchmarks (docs/BENCHMARKS.md, "Hardware discovery" and
# "CPU calibration"): the cost of one facts refresh on this machine and on the largest
# fixture trees, and the CPU calibration's time and spread over 10 runs.
# Usage: sh bench/discovery.sh   (from the repository root; builds in release)
set -eu
cargo build --release -q -p motley-bench
B=target/release/motley-bench
for root in / tests/fixtures/hw/hwloc/raptorlake tests/fixtures/hw/constructed/x86-nvme-gpu; do
    echo "+ $B discovery --root $root --runs 200"
    $B discovery --root "$root" --runs 200
done
for i in 1 2 3; do
    echo "+ $B calibrate --runs 10"
    $B calibrate --runs 10
done
