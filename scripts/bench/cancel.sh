#!/usr/bin/env bash
# How soon does the brain take a cancellation on a huge batch? Submits N tasks
# (default 100000, `sleep 0.05` each) to a real brain and 2 workers, waits until the
# batch is submitted and running, cancels it, and reports:
#   - marker → `decision=cancel_batch`: from the marker's write (its mtime) to the
#     brain's decision line (the number that must stay under a second);
#   - tasks started after the acceptance (must be 0);
#   - how long the brain took to file the whole batch as cancelled.
# Usage: scripts/bench/cancel.sh [N]   (BIN=dir with brain/worker/rigmind to skip the build)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
n=${1:-100000}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bin rigmind --bin brain --bin worker
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
fi
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
root=$work/root
plan=$work/plan.md
{
  echo "# Plan: cancel-$n"
  echo
  cpu_fanout_task nap "$n" "sleep 0.05"
} > "$plan"
"$BIN/brain" --root "$root" 2> "$work/brain.log" & pids+=($!)
"$BIN/worker" --root "$root" --id w1 2> "$work/w1.log" & pids+=($!)
"$BIN/worker" --root "$root" --id w2 2> "$work/w2.log" & pids+=($!)
t0=$(now)
batch=$("$BIN/rigmind" submit "$plan" --root "$root" 2> /dev/null | tail -1)
until [ -f "$root/brain/batches/$batch.json" ]; do sleep 0.1; done
t1=$(now)
# Let it run for a while, as an operator would notice a wrong batch.
sleep 5
out=$("$BIN/rigmind" cancel "$batch" --root "$root" --timeout 600 || true)
t2=$(now)
accepted=$(sed -n 's/.*cancellation accepted at \([^;]*\);.*/\1/p' <<< "$out" | head -1)
python3 - "$root" "$batch" "$accepted" "$n" "$t0" "$t1" "$t2" << 'PY'
import json, os, sys
from datetime import datetime, timezone
root, batch, accepted, n, t0, t1, t2 = sys.argv[1:]
ts = lambda s: datetime.fromisoformat(s.replace('Z', '+00:00'))
marker = datetime.fromtimestamp(os.stat(f"{root}/tasks/cancel/{batch}").st_mtime, timezone.utc)
lines = open(f"{root}/logs/brain_decisions.log").read().splitlines()
decided = next(ts(l.split(' ')[0]) for l in lines if 'decision=cancel_batch' in l and batch in l)
done = [ts(l.split(' ')[0]) for l in lines if 'decision=batch_done' in l and batch in l]
late = 0
started = 0
for d in ('complete', 'failed'):
    p = f"{root}/tasks/{d}"
    for name in os.listdir(p):
        if f"-{batch}-" not in name or '@' in name:
            continue
        t = json.load(open(os.path.join(p, name)))
        if t.get('started_at'):
            started += 1
            if ts(t['started_at']) > ts(accepted):
                late += 1
print(f"tasks: {n}; submit → batch record: {float(t1) - float(t0):.1f} s; ran before the cancel: {started}")
print(f"marker → decision=cancel_batch: {(decided - marker).total_seconds() * 1000:.0f} ms")
print(f"tasks started after the acceptance: {late}")
if done:
    print(f"marker → batch_done (all {n} filed as cancelled): {(done[0] - marker).total_seconds():.1f} s")
else:
    print(f"batch not settled when `rigmind cancel` returned after {float(t2) - float(t0):.0f} s")
PY
