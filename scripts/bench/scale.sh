#!/usr/bin/env bash
# A big fan-out to completion, and how fast `rigmind status` answers while it runs.
#
# N independent `true` tasks (one cpu task fanned out over an inline list) on a
# brain and W cpu workers, on a fresh root. From `submit` until the batch is done,
# `rigmind status` is called again and again (one call, then 0.5 s of rest); each
# call's wall time is kept, and the median, p95 and max are printed with the run's
# length (the batch record's elapsed_seconds).
#
# RIGMIND_BASE_BIN=PATH also calls that build's `status` right after each of
# ours, on the same root at the same moment (a baseline side by side: e.g. the
# release `rigmind` of main before issue 13), and prints its numbers and the
# ratios of the medians. RIGMIND_BIN=PATH measures another build than the
# working tree's release build (scripts/bench/lib.sh).
#
# Usage: scripts/bench/scale.sh [N] [W]     (defaults 100000 4)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
n=${1:-100000}
workers=${2:-4}
bin=$(release_rigmind)
base=${RIGMIND_BASE_BIN:-}
work=$(mktemp -d)
root="$work/root"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; wait; rm -rf "$work"' EXIT

fanout_rig "$bin" "$work" scale "$n" "$workers"

# ms_of CMD...: runs CMD (output dropped) and prints its wall time in ms.
ms_of() {
  local t0 t1
  t0=$(now)
  "$@" > /dev/null 2>&1 || true
  t1=$(now)
  echo "($t1 - $t0) * 1000" | calc
}

t0=$(now)
batch=$("$bin" submit "$work/plan.md" --root "$root" 2> /dev/null | tail -1)
record="$root/brain/batches/$batch.json"
state() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$record" 2> /dev/null || echo none; }
: > "$work/ours.ms"
: > "$work/base.ms"
while [ "$(state)" = none ] || [ "$(state)" = running ]; do
  ms_of "$bin" status --root "$root" >> "$work/ours.ms"
  [ -n "$base" ] && ms_of "$base" status --root "$root" >> "$work/base.ms"
  sleep 0.5
done
t1=$(now)
elapsed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["elapsed_seconds"])' "$record")
complete=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["counts"]["complete"])' "$record")

stats() { # FILE -> "calls median p95 max"
  python3 - "$1" << 'PY'
import sys, statistics
v = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
if not v:
    print("0 - - -"); sys.exit()
p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
print("%d %.1f %.1f %.1f" % (len(v), statistics.median(v), p95, v[-1]))
PY
}
read -r calls med p95 max <<< "$(stats "$work/ours.ms")"
printf 'machine: %s cores, load average %s at the end; %s\n' "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$(uname -sr)"
printf '| measure | value |\n| --- | --- |\n'
printf '| tasks, workers | %d, %d |\n' "$n" "$workers"
printf '| complete | %d |\n' "$complete"
printf '| submit to batch done (record) | %.1f s |\n' "$elapsed"
printf '| submit to done seen (script) | %.1f s |\n' "$(echo "$t1 - $t0" | calc)"
printf '| status calls while it ran | %d |\n' "$calls"
printf '| status ms: median / p95 / max | %s / %s / %s |\n' "$med" "$p95" "$max"
if [ -n "$base" ]; then
  read -r bcalls bmed bp95 bmax <<< "$(stats "$work/base.ms")"
  printf '| baseline status calls | %d |\n' "$bcalls"
  printf '| baseline status ms: median / p95 / max | %s / %s / %s |\n' "$bmed" "$bp95" "$bmax"
  printf '| ratio of medians, baseline / ours | %.1fx |\n' "$(echo "$bmed / $med" | calc)"
fi
