#!/usr/bin/env bash
# What an idle rig costs: a brain, two CPU workers and a GPU worker (a fake GPU
# with a fake Ollama server unless REAL_GPU=1) run a small batch, then sit idle.
# Over SECONDS (default 60) of that idleness, each process's CPU time (user +
# system from /proc/PID/stat), its share of one core, and its wake-ups a second
# (context switches of all its threads, /proc/PID/task/*/status). Issue 13's
# target: ≈ 0 %.
#
# Usage: scripts/bench/idle.sh [SECONDS]
# RIGMIND_BIN=path measures that build (its brain and worker beside it).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
secs=${1:-60}
bin=$(release_rigmind)
fake=$(dirname "$bin")/fake-ollama
if [ ! -x "$fake" ] && [ -z "${REAL_GPU:-}" ]; then
  cargo build --release --quiet -p rigmind-ollama-fake >&2
  fake=${CARGO_TARGET_DIR:-$PWD/target}/release/fake-ollama
fi
work=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2> /dev/null || true
  wait 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
root=$work/root
mkdir -p "$root"

gpu_args=(--gpu 0)
if [ -z "${REAL_GPU:-}" ]; then
  mkdir -p "$work/fakegpu/0"
  "$fake" --port-file "$work/port" --fake-vram-file "$work/fakegpu/0/ollama.mb" 2> "$work/ollama.err" &
  pids+=($!)
  for _ in $(seq 300); do [ -s "$work/port" ] && break; sleep 0.1; done
  [ -s "$work/port" ] || { echo "idle.sh: fake-ollama did not start" >&2; cat "$work/ollama.err" >&2; exit 1; }
  export RIGMIND_FAKE_GPUS=1x6144 RIGMIND_FAKE_GPU_DIR=$work/fakegpu
  gpu_args+=(--llm-url "http://$(cat "$work/port")")
fi

"$bin" brain --root "$root" 2> "$work/brain.log" &
pids+=($!)
names=(brain)
for i in 1 2; do
  "$bin" worker --root "$root" --id "cpu_$i" --classes cpu 2> "$work/cpu_$i.log" &
  pids+=($!)
  names+=("cpu_$i")
done
"$bin" worker --root "$root" --id gpu0 "${gpu_args[@]}" 2> "$work/gpu0.log" &
pids+=($!)
names+=(gpu0)

# A batch first, so that every process has worked and settled.
{
  echo "# Plan: idle-warmup"
  echo
  cpu_fanout_task t 20 true "retries: 0"
} > "$work/plan.md"
batch=$("$bin" submit "$work/plan.md" --root "$root")
"$bin" wait "$batch" --root "$root" --timeout 120 > /dev/null
sleep 5

# Fields 14 and 15 of /proc/PID/stat (utime, stime) in clock ticks; the command
# name (field 2) has no spaces here.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Every thread's: /proc/PID/status counts the main thread's only.
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ { s += $2 } END { print s }'; }
hz=$(getconf CLK_TCK)
procs=("${pids[@]: -4}")
declare -a t0 c0
for k in "${!procs[@]}"; do
  t0[k]=$(ticks "${procs[k]}")
  c0[k]=$(switches "${procs[k]}")
done
sleep "$secs"
echo "idle for $secs s after a 20-task batch; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| process | CPU s | share of a core | wake-ups / s |"
echo "| --- | ---: | ---: | ---: |"
total=0
for k in "${!procs[@]}"; do
  dt=$(($(ticks "${procs[k]}") - t0[k]))
  dc=$(($(switches "${procs[k]}") - c0[k]))
  total=$((total + dt))
  printf '| %s | %.2f | %.3f %% | %.1f |\n' "${names[k]}" \
    "$(echo "$dt / $hz" | calc)" "$(echo "100 * $dt / $hz / $secs" | calc)" "$(echo "$dc / $secs" | calc)"
done
printf '| all four | %.2f | %.3f %% | |\n' "$(echo "$total / $hz" | calc)" "$(echo "100 * $total / $hz / $secs" | calc)"
