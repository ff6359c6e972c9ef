#!/usr/bin/env bash
# What the brain's once-a-second operator work (alerts, notify, metrics:
# crates/rigmind-brain/src/ops.rs) costs: the brain's CPU seconds (utime + stime
# from /proc) for an N-task cpu fan-out of `true` run by W workers, and the wall
# time of the batch, for a baseline build and this one, side by side, REPEATS
# times (alternating). Prints each run and the medians with their ratio.
#
# Usage: BASE_BIN=/path/to/old/rigmind scripts/bench/ops.sh [N] [W] [REPEATS]
#   (RIGMIND_BIN=PATH measures another candidate than this tree's release build;
#   each `rigmind` needs its `brain` and `worker` beside it.)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
n=${1:-20000}
w=${2:-2}
repeats=${3:-3}
cand=$(release_rigmind)
base=${BASE_BIN:?set BASE_BIN to the baseline rigmind}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ticks=$(getconf CLK_TCK)
{
  echo "# Plan: bench-ops"
  echo
  cpu_fanout_task t "$n" true "retries: 0"
} > "$work/plan.md"

# one BIN LABEL: prints "LABEL brain_cpu_s wall_s"
one() {
  local bin=$1 label=$2 dir root bp pids=() t0 t1 cpu batch
  dir=$(mktemp -d "$work/run.XXXX")
  root=$dir/root
  "$(dirname "$bin")/brain" --root "$root" 2>"$dir/brain.err" &
  bp=$!
  for i in $(seq 1 "$w"); do
    "$(dirname "$bin")/worker" --id "w$i" --classes cpu --root "$root" 2>"$dir/w$i.err" &
    pids+=($!)
  done
  t0=$(now)
  batch=$("$bin" submit "$work/plan.md" --root "$root" | tail -1)
  "$bin" wait "$batch" --root "$root" >/dev/null
  t1=$(now)
  cpu=$(awk -v t="$ticks" '{printf "%.2f", ($14 + $15) / t}' "/proc/$bp/stat")
  kill "${pids[@]}" "$bp"
  wait "${pids[@]}" "$bp" 2>/dev/null || true
  echo "$label $cpu $(echo "$t1 - $t0" | bc -l | xargs printf '%.1f')"
}

results=$work/results
for r in $(seq 1 "$repeats"); do
  one "$base" base | tee -a "$results"
  one "$cand" cand | tee -a "$results"
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
bc_cpu=$(awk '$1 == "base" {print $2}' "$results" | median)
cc_cpu=$(awk '$1 == "cand" {print $2}' "$results" | median)
bw=$(awk '$1 == "base" {print $3}' "$results" | median)
cw=$(awk '$1 == "cand" {print $3}' "$results" | median)
echo "brain CPU s, median of $repeats: base $bc_cpu, this $cc_cpu, ratio $(echo "$cc_cpu / $bc_cpu" | bc -l | xargs printf '%.3f')"
echo "batch wall s, median of $repeats: base $bw, this $cw, ratio $(echo "$cw / $bw" | bc -l | xargs printf '%.3f')"
