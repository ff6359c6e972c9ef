#!/usr/bin/env bash
# What `rigmind top` costs while it watches a rig, beside what operators did
# before it: `watch -n 2 rigmind status` (a `status` every 2 s).
#
# A fresh root, a brain and W cpu workers run N `true` tasks (one cpu task fanned
# out). From `submit` on, `rigmind top` runs in tmux (80x24, `--every 2`) and, at
# the same time on the same root, a loop calls `rigmind status` every 2 s. The CPU
# time (user + system) each side spends is read twice: while the batch runs (a
# stream of file events: top redraws at most every 0.3 s) and over IDLE seconds
# after it ended (no events: top reads the root every 2 s, as the loop does).
# Printed: CPU seconds per minute of each side in each phase, and top / loop.
#
# Usage: scripts/bench/top.sh [N] [W] [IDLE]     (defaults 10000 2 30)
# Needs tmux. RIGMIND_BIN=PATH measures another build (scripts/bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
n=${1:-10000}
workers=${2:-2}
idle=${3:-30}
bin=$(release_rigmind)
tick=$(getconf CLK_TCK)
work=$(mktemp -d)
root="$work/root"
sock="rigmind-bench-top-$$"
pids=()
trap 'tmux -L "$sock" kill-server 2> /dev/null || true; for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; wait 2> /dev/null; rm -rf "$work"' EXIT

fanout_rig "$bin" "$work" top "$n" "$workers"
sleep 1

# cpu_of PID: its user + system CPU time so far, in clock ticks.
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The loop: a `status` every 2 s; its children's CPU time is what `times`
# reports for it, read from a file it rewrites after each call.
status_loop() {
  while :; do
    "$bin" status --root "$root" > /dev/null 2>&1 || true
    # Not in a pipeline: a forked `times` would count no children.
    times > "$work/loop.all"
    tail -1 "$work/loop.all" > "$work/loop.times"
    sleep 2
  done
}
# Children's user + system seconds from a `times` line (`0m1.234s 0m0.567s`).
loop_secs() {
  [ -s "$work/loop.times" ] || { echo 0; return; }
  sed 's/\([0-9]*\)m\([0-9.]*\)s/\1*60+\2/g; s/ /+/' "$work/loop.times" | bc -l
}

batch=$("$bin" submit "$work/plan.md" --root "$root" 2> /dev/null | tail -1)
record="$root/brain/batches/$batch.json"
tmux -L "$sock" new-session -d -x 80 -y 24 -s top "exec $bin top --root $root --every 2"
status_loop &
loop=$!
pids+=($loop)
sleep 0.5
top_pid=$(pgrep -f "^$bin top --root $root" | head -1)
t0=$(now)
state() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$record" 2> /dev/null || echo none; }
while [ "$(state)" = none ] || [ "$(state)" = running ]; do sleep 0.5; done
t1=$(now)
busy_top=$(cpu_of "$top_pid")
busy_loop=$(loop_secs)
sleep "$idle"
t2=$(now)
idle_top=$(( $(cpu_of "$top_pid") - busy_top ))
idle_loop=$(echo "$(loop_secs) - $busy_loop" | bc -l)

per_min() { echo "scale=3; $1 * 60 / ($2)" | bc -l; }
run_s=$(echo "$t1 - $t0" | bc -l)
idle_s=$(echo "$t2 - $t1" | bc -l)
bt=$(per_min "$busy_top / $tick" "$run_s")
bl=$(per_min "$busy_loop" "$run_s")
it=$(per_min "$idle_top / $tick" "$idle_s")
il=$(per_min "$idle_loop" "$idle_s")
printf 'tasks %d, workers %d, batch ran %.1f s, then idle %.1f s\n' "$n" "$workers" "$run_s" "$idle_s"
printf 'while running: top %s CPU s/min, status every 2 s %s CPU s/min, top/loop %s\n' "$bt" "$bl" "$(echo "scale=2; $bt / $bl" | bc -l)"
printf 'idle:          top %s CPU s/min, status every 2 s %s CPU s/min, top/loop %s\n' "$it" "$il" "$(echo "scale=2; $it / $il" | bc -l)"
