#!/usr/bin/env bash
# The suite's 100,000-task workload (scripts/bench/big-plan.sh) simulated under
# each policy, each its own process, side by side: for a host with cores to spare
# (the GPU host), where `policies.sh --large` would run them one after another.
# Each policy's output, with its wall and CPU time, goes to OUT_DIR/POLICY.txt as
# it finishes. LIMIT=SECONDS stops each policy's simulation after that long (its
# file then says so), so that a device call with a time limit still brings every
# file back; a policy cut off by the caller's own limit leaves its file empty.
# Usage: [LIMIT=SECONDS] scripts/device/hundred-thousand.sh RIGMIND_BIN OUT_DIR [N]
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
out=$(mkdir -p "$2" && cd "$2" && pwd)
n=${3:-33333}
cd "$(dirname "$0")/../.."
plan=$(mktemp --suffix=.md)
trap 'rm -f "$plan"' EXIT
scripts/bench/big-plan.sh "$n" > "$plan" || { echo "hundred-thousand.sh: big-plan.sh failed" >&2; exit 1; }
nproc; uptime
for p in adaptive phases on-demand static-1 static-2 static-3 static-4 static-5; do
  (
    TIMEFORMAT="$p wall %R s, user %U s, system %S s"
    time timeout "${LIMIT:-0}" "$bin" simulate "$plan" --rig plans/workloads/rig-5x1060.toml --policy "$p" > "$out/$p.txt" 2>&1
    rc=$?
    if [ "$rc" = 124 ]; then echo "$p: stopped after LIMIT=${LIMIT} s, unfinished"; fi
  ) 2>> "$out/$p.txt" >> "$out/$p.txt" &
done
wait
uptime
