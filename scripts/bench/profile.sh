#!/usr/bin/env bash
# Where a rigmind task's time goes: N independent `true` tasks (default 2000) on a
# brain and 2 CPU workers (release build, a fresh root), taken three ways:
#
#   1. perf stat (software events: these VMs expose no hardware counters) around
#      the brain and each worker for their whole life, beside the same around
#      `xargs -P 2` running N `bash -c true`: CPU time and context switches (each
#      one a sleep and a wake-up) per task, the task's own bash included.
#   2. strace -ff -T on the brain and each worker: every syscall, split into the
#      processes' own threads and the task processes they fork (the child before
#      exec, then bash), counted per task and by syscall with the time spent in it;
#      then the file operations per task (creations, renames, flushes, unlinks).
#   3. perf record (cpu-clock samples, flat) on one worker and the brain:
#      the top symbols, user space and kernel.
#
# strace slows every syscall down, so its run says how many, not how long the
# unstraced run takes; the perf stat run is the one whose times count.
#
# Usage: scripts/bench/profile.sh [N] [OUT_DIR]   (OUT_DIR keeps the raw traces)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
n=${1:-2000}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
bin=$(release_rigmind)
work=$(mktemp -d)
children=()
trap 'for p in "${children[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$work"' EXIT
{
  echo "# Plan: profile-fan"
  echo
  cpu_fanout_task t "$n" true
} > "$work/fan.md"

# Starts the brain and 2 workers on ROOT, each under the wrapper WRAP NAME (a
# function printing the command prefix), and waits until all three are up.
start_rig() { # ROOT WRAP
  local root=$1 wrap=$2 w
  $($wrap brain) "$bin" brain --root "$root" > "$work/brain.out" 2>&1 &
  children+=($!)
  for w in cpu_1 cpu_2; do
    $($wrap "$w") "$bin" worker --id "$w" --classes cpu,script --grace 10 --root "$root" \
      > "$work/$w.out" 2>&1 &
    children+=($!)
  done
  until [ -e "$root/brain/brain.json" ] && [ -e "$root/workers/cpu_1.json" ] &&
    [ -e "$root/workers/cpu_2.json" ]; do sleep 0.05; done
}

# Submits the plan, waits for it, then stops the rig: SIGTERM to each rigmind
# process (the wrapper's child; the wrappers then exit on their own).
run_and_stop() { # ROOT
  local batch p
  batch=$("$bin" submit "$work/fan.md" --root "$1" 2> /dev/null)
  "$bin" wait "$batch" --root "$1" > /dev/null
  for p in "${children[@]}"; do
    pkill -TERM -P "$p" 2> /dev/null || true
  done
  for p in "${children[@]}"; do wait "$p" 2> /dev/null || true; done
  children=()
}

perf_wrap() { echo "perf stat -x , -e task-clock,context-switches,cpu-migrations,page-faults -o $out/perf-$1.csv --"; }
strace_wrap() { mkdir -p "$out/strace-$1" && echo "strace -ff -T -o $out/strace-$1/t"; }
record_wrap() { echo "perf record -q -e cpu-clock -F 499 -o $out/record-$1.data --"; }

echo "== 1. perf stat ($n tasks)" >&2
perf stat -x , -e task-clock,context-switches,cpu-migrations,page-faults -o "$out/perf-xargs.csv" \
  -- bash -c "seq $n | xargs -P 2 -I{} bash -c true"
start_rig "$work/root-stat" perf_wrap
run_and_stop "$work/root-stat"
echo "== 2. strace" >&2
start_rig "$work/root-strace" strace_wrap
run_and_stop "$work/root-strace"
echo "== 3. perf record" >&2
start_rig "$work/root-record" record_wrap
run_and_stop "$work/root-record"
for w in brain cpu_1; do
  perf report -i "$out/record-$w.data" --stdio --no-children --sort dso,symbol 2> /dev/null |
    grep -v '^#' | grep -v '^$' | grep '%' | head -n 25 > "$out/record-$w.top" || true
done

python3 scripts/bench/profile_report.py "$out" "$n"
echo "raw traces: $out" >&2
