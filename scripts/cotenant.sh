#!/usr/bin/env bash
# Runs a command beside a controlled neighbour: one busy shell loop per allowed CPU (each
# pinned with taskset, same priority as the command), started before the command and killed
# after it. The same neighbour as `corestream bench --cotenant` and CORESTREAM_COTENANT=1 in
# the benches (corestream::Cotenant), for peers that are not corestream, e.g.
#
#   bash scripts/cotenant.sh python3 scripts/peer_ort.py assets/models/examplenet1.onnx
#
# Exit status: the command's.
set -euo pipefail
if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
cpus=$(python3 -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for cpu in $cpus; do
    taskset -c "$cpu" sh -c 'while :; do :; done' &
    pids+=($!)
done
"$@"
