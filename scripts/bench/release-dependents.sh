#!/usr/bin/env bash
# How fast does a fan-out behind one task reach the queue? A plan of one `gate`
# task (run by the brain itself) and N `true` tasks that depend on it; a brain with
# no workers (nothing else competes). Measured from the decisions log and the files:
#   - released: from the gate's `decision=complete` to the last of the N
#     `decision=release` lines (the N tasks are in `queue/`, claimable);
#   - durable: from the gate's completion until the batch's private copies are gone
#     (every released task flushed where it is; with the build that flushes each
#     release on the loop, that is the same moment as released).
# Each round runs the baseline build and this build side by side (interleaved, so
# that slow moments of a shared machine fall on both); medians and the per-round
# ratio this / baseline are printed as a Markdown table.
# Usage: BASELINE_BIN=/path/to/old/rigmind scripts/bench/release-dependents.sh [N] [ROUNDS]
#   (defaults 20000 3; RIGMIND_BIN=path uses that binary as "this" instead of building)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
n=${1:-20000}
rounds=${2:-3}
base=${BASELINE_BIN:?set BASELINE_BIN to the baseline build of rigmind}
this=$(release_rigmind)
work=$(mktemp -d)
brain=
trap '[ -n "$brain" ] && kill "$brain" 2>/dev/null; rm -rf "$work"' EXIT

plan="$work/plan.md"
{
  echo "# Plan: behind-$n"
  echo
  echo "## Task: gate"
  echo "- task_class: cpu"
  echo "- executor: brain"
  echo "- command: \`true\`"
  echo
  cpu_fanout_task fan "$n" true "depends_on: gate"
} > "$plan"

# One run: prints "released_s durable_s".
run_one() {
  local bin=$1 root=$2 t_gate t_rel t_dur
  "$bin" brain --root "$root" 2> "$root.log" &
  brain=$!
  "$bin" submit "$plan" --root "$root" > /dev/null 2>&1
  local log=$root/logs/brain_decisions.log
  until [ "$(grep -c 'decision=release' "$log" 2> /dev/null || true)" -ge $((n + 1)) ]; do
    sleep 0.05
  done
  # Durable: no task file left in the batch's private directory.
  until [ -z "$(ls "$root"/brain/private_tasks/*/ 2> /dev/null)" ]; do
    sleep 0.05
  done
  t_dur=$(now)
  kill "$brain"
  wait "$brain" 2> /dev/null || true
  brain=
  python3 - "$log" "$t_dur" << 'PY'
import sys
from datetime import datetime
lines = open(sys.argv[1]).read().splitlines()
ts = lambda l: datetime.fromisoformat(l.split(' ')[0].replace('Z', '+00:00')).timestamp()
gate = next(ts(l) for l in lines if 'decision=complete' in l and 'task=gate' in l)
last = [ts(l) for l in lines if 'decision=release' in l][-1]
print(f"{last - gate:.3f} {float(sys.argv[2]) - gate:.3f}")
PY
}

results="$work/results"
for r in $(seq 1 "$rounds"); do
  for build in baseline this; do
    bin=$base
    [ "$build" = this ] && bin=$this
    root="$work/$build-$r"
    echo "$build $(run_one "$bin" "$root")" >> "$results"
    rm -rf "$root"
  done
done

python3 - "$results" "$n" << 'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
n = int(sys.argv[2])
by = {b: [(float(r), float(d)) for bb, r, d in rows if bb == b] for b in ("baseline", "this")}
med = lambda xs: statistics.median(xs)
print(f"| build | released (median, range) | durable (median, range) | per released task |")
print("| --- | --- | --- | --- |")
for b, xs in by.items():
    rel = [x[0] for x in xs]; dur = [x[1] for x in xs]
    print(f"| {b} | {med(rel):.2f} s ({min(rel):.2f}–{max(rel):.2f}) | {med(dur):.2f} s ({min(dur):.2f}–{max(dur):.2f}) | {med(rel) * 1e6 / n:.0f} µs |")
ratio_rel = med([t[0] / b[0] for t, b in zip(by["this"], by["baseline"])])
ratio_dur = med([t[1] / b[1] for t, b in zip(by["this"], by["baseline"])])
print(f"| this / baseline (per round, median) | {ratio_rel:.2f}× | {ratio_dur:.2f}× | |")
PY
