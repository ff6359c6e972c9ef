#!/usr/bin/env bash
# Does a big fan-out scale linearly? For N items (one task fanned out over an inline
# list, an item-wise second stage and a fan-in report: 2N+1 tasks), measures:
#   - `rigmind validate` (parse + expand + checks), and
#   - submit to "all N first-stage tasks released into the queue" by a real brain
#     (no workers, so nothing else competes), from the decisions log's timestamps.
# Usage: scripts/bench/release.sh [N...]   (default: 5000 10000 20000)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(5000 10000 20000)
bin=$(release_rigmind)
work=$(mktemp -d)
trap 'kill $brain 2>/dev/null || true; rm -rf "$work"' EXIT
printf '| items N | tasks | validate | submit → N released | per released task |\n'
printf '| --- | --- | --- | --- | --- |\n'
for n in "${sizes[@]}"; do
  plan="$work/plan$n.md"
  {
    echo "# Plan: fanout-$n"
    echo
    cpu_fanout_task first "$n" true
    echo
    cpu_fanout_task second "$n" true "depends_on: first"
    echo
    echo "## Task: report"
    echo "- task_class: cpu"
    echo "- depends_on: second"
    echo "- command: \`true\`"
  } > "$plan"
  t0=$(now)
  "$bin" validate "$plan" > /dev/null
  t1=$(now)
  root="$work/root$n"
  "$bin" brain --root "$root" 2> /dev/null &
  brain=$!
  "$bin" submit "$plan" --root "$root" > /dev/null 2>&1
  while [ "$(grep -c 'decision=release' "$root/logs/brain_decisions.log" 2> /dev/null || true)" -lt "$n" ]; do
    sleep 0.05
  done
  kill "$brain"; wait "$brain" 2> /dev/null || true
  secs=$(python3 - "$root/logs/brain_decisions.log" << 'PY'
import sys
from datetime import datetime
lines = open(sys.argv[1]).read().splitlines()
ts = lambda l: datetime.fromisoformat(l.split(' ')[0].replace('Z', '+00:00'))
start = next(ts(l) for l in lines if 'decision=start' in l)
last = [ts(l) for l in lines if 'decision=release' in l][-1]
print((last - start).total_seconds())
PY
)
  printf '| %d | %d | %.2f s | %.2f s | %.0f µs |\n' "$n" $((2 * n + 1)) \
    "$(echo "$t1 - $t0" | calc)" "$secs" "$(echo "$secs * 1000000 / $n" | calc)"
done
