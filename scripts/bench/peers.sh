#!/usr/bin/env bash
# rigmind against the tools its users would otherwise type: the same three workloads,
# the same 2 slots, the same command (`bash -c true` per task) on every peer.
#
#   fan      N independent tasks                            (default N = 2000)
#   chain    C tasks, each after the previous one           (default C = 300)
#   diamond  1 task -> D tasks after it -> D tasks item-wise (the i-th after the i-th)
#            -> 1 task after all of them: 2D+2 tasks        (default D = 500)
#
# Peers: xargs -P 2 (the baseline), GNU parallel -j 2, task-spooler (`tsp`, 2 slots),
# nq (two queues for the 2 slots), pueue (parallel 2) and rigmind (release build, a
# brain and 2 CPU workers). Every measurement starts its peer afresh in a new
# directory; daemons are started and ready before the clock starts, and the clock
# runs from the first enqueue to the peer's own record of the last task's end (see
# docs/performance.md, "Peers", for how each one is driven and waited on).
# Each workload is measured R times (default 3), rounds interleaved (every peer
# once per round), and the table shows the median (and the range).
#
# pueue starts queued tasks on a 300 ms tick of its daemon, so its measurements take
# minutes at these sizes (PEERS=... leaves it out of a quick run).
#
# Installs what is missing: task-spooler, nq and parallel with apt-get (as root),
# pueue with `cargo install --locked` into $CARGO_TARGET_DIR/peers (else target/peers).
#
# Usage: scripts/bench/peers.sh [N] [C] [D] [R]
#        PEERS="xargs tsp rigmind" scripts/bench/peers.sh   (a subset)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
n=${1:-2000}
chain=${2:-300}
items=${3:-500}
rounds=${4:-3}
peers=${PEERS:-xargs parallel tsp nq pueue rigmind}
pueue_version=${PUEUE_VERSION:-4.0.4}
peers_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}/peers")
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$work"' EXIT

# --- installing the peers -------------------------------------------------------
install_peers() {
  local need=()
  command -v tsp > /dev/null || need+=(task-spooler)
  command -v nq > /dev/null || need+=(nq)
  command -v parallel > /dev/null || need+=(parallel)
  if [ ${#need[@]} -gt 0 ]; then
    echo "peers: installing ${need[*]} (apt-get)" >&2
    apt-get update -qq > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
  fi
  if [[ " $peers " == *" pueue "* ]] && [ ! -x "$peers_dir/bin/pueue" ]; then
    echo "peers: installing pueue $pueue_version (cargo install) into $peers_dir" >&2
    CARGO_TARGET_DIR="$peers_dir/build" cargo install --quiet --locked \
      --version "$pueue_version" --root "$peers_dir" pueue >&2
  fi
}

# --- the clock --------------------------------------------------------------------
# Each workload function runs the whole workload from its first enqueue and prints
# the end time (seconds since the epoch) as the peer itself recorded it, or as the
# moment its wait returned where the peer keeps no such record.

# Runs `bash -c true` COUNT times, P at a time, through xargs.
xargs_n() { seq "$1" | xargs -P "$2" -I{} bash -c true; }
# The same through GNU parallel, whose shell is bash: each job is `bash -c true`.
parallel_n() { seq "$1" | PARALLEL_SHELL=/bin/bash parallel -j "$2" -N0 true; }

xargs_fan() { xargs_n "$n" 2 && now; }
xargs_chain() { xargs_n "$chain" 1 && now; }
xargs_diamond() { # stage by stage: a barrier between stages is the floor here
  bash -c true && xargs_n "$items" 2 && xargs_n "$items" 2 && bash -c true && now
}
parallel_fan() { parallel_n "$n" 2 && now; }
parallel_chain() { parallel_n "$chain" 1 && now; }
parallel_diamond() {
  bash -c true && parallel_n "$items" 2 && parallel_n "$items" 2 && bash -c true && now
}

# task-spooler: one server per measurement (own socket), 2 slots, output kept (its
# default, as rigmind keeps a log per task). Job ids come back from each enqueue.
tsp_setup() {
  export TS_SOCKET="$1/ts.sock" TMPDIR="$1" TS_MAXFINISHED=1000000 TS_SLOTS=2
  tsp -S 2
}
tsp_teardown() { tsp -K 2> /dev/null || true; }
tsp_fan() {
  local i a='' b=''
  for ((i = 1; i <= n; i++)); do
    a=$b
    b=$(tsp bash -c true)
  done
  # With 2 slots, once the last two have ended every earlier one has ended too.
  tsp -w "$a" && tsp -w "$b" && now
}
tsp_chain() {
  local i id
  id=$(tsp bash -c true)
  for ((i = 2; i <= chain; i++)); do id=$(tsp -d bash -c true); done
  tsp -w "$id" && now
}
tsp_diamond() {
  local i root ids=() id
  root=$(tsp bash -c true)
  for ((i = 0; i < items; i++)); do ids+=("$(tsp -D "$root" bash -c true)"); done
  for ((i = 0; i < items; i++)); do tsp -D "${ids[$i]}" bash -c true > /dev/null; done
  # This tsp (1.0.1) takes one id after -D; the fan-in is a job that needs both
  # slots (-N 2): it starts only once every job queued before it has ended.
  id=$(tsp -N 2 bash -c true)
  tsp -w "$id" && now
}

# nq: no daemon and no slots (each queue directory runs its jobs one after the
# other), so two queue directories are the 2 slots; `nq -w` waits on a queue.
nq_setup() { mkdir -p "$1/q1" "$1/q2" && q1="$1/q1" q2="$1/q2"; }
nq_teardown() { :; }
nq_add() { NQDIR=$1 nq -q bash -c true > /dev/null; }
nq_fan() {
  local i
  for ((i = 1; i <= n; i++)); do
    if ((i % 2)); then nq_add "$q1"; else nq_add "$q2"; fi
  done
  NQDIR=$q1 nq -w && NQDIR=$q2 nq -w && now
}
nq_chain() {
  local i
  for ((i = 1; i <= chain; i++)); do nq_add "$q1"; done
  NQDIR=$q1 nq -w && now
}
nq_diamond() { # item i of both stages in queue i mod 2; the ends wait on both queues
  local i
  nq_add "$q1" && NQDIR=$q1 nq -w
  for ((i = 0; i < items; i++)); do
    if ((i % 2)); then nq_add "$q1"; else nq_add "$q2"; fi
  done
  for ((i = 0; i < items; i++)); do
    if ((i % 2)); then nq_add "$q1"; else nq_add "$q2"; fi
  done
  NQDIR=$q2 nq -w && nq_add "$q1" && NQDIR=$q1 nq -w && now
}

# pueue: one daemon per measurement (own directory and socket), `parallel 2`, its
# shell set to bash (so a task `true` runs as `bash -c true`); the end is the last
# task's end in the daemon's state (`pueue wait` itself polls every 2 s).
pueue_setup() {
  local d=$1
  cat > "$d/pueue.yml" << EOF
shared:
  pueue_directory: $d/data
  runtime_directory: $d/run
  use_unix_socket: true
  unix_socket_path: $d/run/pueue.sock
daemon:
  shell_command: ["bash", "-c", "{{ pueue_command_string }}"]
EOF
  mkdir -p "$d/data" "$d/run"
  pueue_cfg=$d/pueue.yml
  "$peers_dir/bin/pueued" -c "$pueue_cfg" > "$d/pueued.log" 2>&1 &
  pids+=($!)
  until pq status > /dev/null 2>&1; do sleep 0.05; done
  pq parallel 2
}
pq() { "$peers_dir/bin/pueue" -c "$pueue_cfg" "$@"; }
pueue_teardown() { pq shutdown > /dev/null 2>&1 || true; wait "${pids[-1]}" 2> /dev/null || true; }
pueue_end() { # waits, then prints the latest end among the tasks
  PUEUED_TEST_ENV_VARIABLE=1 pq wait --quiet > /dev/null
  pq status --json | python3 -c '
import json, sys
from datetime import datetime
def ts(s):  # nanoseconds to microseconds, for fromisoformat
    head, _, tail = s.partition(".")
    digits = "".join(c for c in tail if c.isdigit())
    return datetime.fromisoformat(head + "." + digits[:6] + tail[len(digits):]).timestamp()
tasks = json.load(sys.stdin)["tasks"].values()
assert all(t["status"]["Done"]["result"] == "Success" for t in tasks), "a task failed"
print("%.6f" % max(ts(t["status"]["Done"]["end"]) for t in tasks))'
}
pueue_fan() {
  local i
  for ((i = 1; i <= n; i++)); do pq add --print-task-id -- true > /dev/null; done
  pueue_end
}
pueue_chain() {
  local i id
  id=$(pq add --print-task-id -- true)
  for ((i = 2; i <= chain; i++)); do id=$(pq add --print-task-id --after "$id" -- true); done
  pueue_end
}
pueue_diamond() {
  local i root ids=() last=()
  root=$(pq add --print-task-id -- true)
  for ((i = 0; i < items; i++)); do ids+=("$(pq add --print-task-id --after "$root" -- true)"); done
  for ((i = 0; i < items; i++)); do
    last+=("$(pq add --print-task-id --after "${ids[$i]}" -- true)")
  done
  pq add --print-task-id --after "${last[@]}" -- true > /dev/null
  pueue_end
}

# rigmind: a brain and 2 CPU workers (as `rigmind run` starts them) on a new root,
# all up before the clock starts; `submit` then `wait`; the end is the batch
# record's finished_at (`wait` itself polls every 100 ms).
rigmind_setup() {
  root=$1/root
  "$bin" brain --root "$root" > "$1/brain.log" 2>&1 &
  pids+=($!)
  local w
  for w in cpu_1 cpu_2; do
    "$bin" worker --id "$w" --classes cpu,script --grace 10 --root "$root" > "$1/$w.log" 2>&1 &
    pids+=($!)
  done
  until [ -e "$root/brain/brain.json" ] && [ -e "$root/workers/cpu_1.json" ] &&
    [ -e "$root/workers/cpu_2.json" ]; do sleep 0.05; done
}
rigmind_teardown() {
  kill "${pids[-1]}" "${pids[-2]}" "${pids[-3]}" 2> /dev/null || true
  wait "${pids[-1]}" "${pids[-2]}" "${pids[-3]}" 2> /dev/null || true
}
rigmind_plan() {
  local batch
  batch=$("$bin" submit "$1" --root "$root" 2> /dev/null)
  "$bin" wait "$batch" --root "$root" > /dev/null 2>&1 || return 1
  python3 -c 'import json,sys; from datetime import datetime
print("%.6f" % datetime.fromisoformat(json.load(open(sys.argv[1]))["finished_at"].replace("Z", "+00:00")).timestamp())' \
    "$root/brain/batches/$batch.json"
}
rigmind_fan() { rigmind_plan "$work/fan.md"; }
rigmind_chain() { rigmind_plan "$work/chain.md"; }
rigmind_diamond() { rigmind_plan "$work/diamond.md"; }

write_plans() {
  {
    echo "# Plan: peers-fan"
    echo
    cpu_fanout_task t "$n" true
  } > "$work/fan.md"
  {
    echo "# Plan: peers-chain"
    for i in $(seq 1 "$chain"); do
      printf '\n## Task: l%d\n- task_class: cpu\n- command: `true`\n' "$i"
      [ "$i" -gt 1 ] && echo "- depends_on: l$((i - 1))"
    done
  } > "$work/chain.md"
  {
    echo "# Plan: peers-diamond"
    printf '\n## Task: top\n- task_class: cpu\n- command: `true`\n\n'
    cpu_fanout_task first "$items" true "depends_on: top"
    echo
    cpu_fanout_task second "$items" true "depends_on: first"
    printf '\n## Task: bottom\n- task_class: cpu\n- depends_on: second\n- command: `true`\n'
  } > "$work/diamond.md"
}

# --- one measurement: setup, clock, teardown (in a subshell: nothing leaks; its
# status is tested, so `set -e` does not hold in it and each step is checked) ------
measure() { # PEER WORKLOAD -> seconds, or "fail"
  local peer=$1 load=$2 dir t0 end
  dir=$(mktemp -d "$work/$peer-$load.XXXX")
  (
    if [ "$(type -t "${peer}_setup")" = function ]; then
      trap '"${peer}_teardown" > /dev/null 2>&1' EXIT
      "${peer}_setup" "$dir" > /dev/null || exit 1
    fi
    t0=$(now)
    end=$("${peer}_$load") || exit 1
    echo "${end##*$'\n'} - $t0" | calc
  ) 2> "$dir.err" || { echo fail; sed 's/^/  /' "$dir.err" | tail -n 5 >&2; }
  rm -rf "$dir" "$dir.err"
}

install_peers
if [[ " $peers " == *" rigmind "* ]]; then bin=$(release_rigmind); fi
write_plans
results=$work/results
for r in $(seq 1 "$rounds"); do
  for load in fan chain diamond; do
    for peer in $peers; do
      s=$(measure "$peer" "$load")
      echo "$peer $load $r $s" >> "$results"
      echo "round $r: $peer $load ${s} s" >&2
    done
  done
done

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(uname -sr)"
echo "fan: $n tasks; chain: $chain links; diamond: $((2 * items + 2)) tasks (D = $items); median of $rounds rounds (range)"
echo
python3 - "$results" "$chain" $peers << 'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
chain, peers = int(sys.argv[2]), sys.argv[3:]
val = {}
for peer, load, r, s in rows:
    val.setdefault((peer, load), {})[r] = None if s == "fail" else float(s)
def cell(xs, fmt, scale=1.0):
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return "fail"
    return (fmt % statistics.median(xs)) + " (" + (fmt % min(xs)) + "–" + (fmt % max(xs)) + ")"
print("| peer | fan s | fan ratio to xargs -P 2 | chain ms/link | diamond s |")
print("| --- | --- | --- | --- | --- |")
base = val.get(("xargs", "fan"), {})
for p in peers:
    fan = val.get((p, "fan"), {})
    # The ratio is taken within each round (side by side), then the median.
    ratios = [fan[r] / base[r] for r in fan if fan[r] and base.get(r)]
    print("| %s | %s | %s | %s | %s |" % (
        p, cell(fan.values(), "%.2f"),
        cell(ratios, "%.2f×") if ratios else "-",
        cell(val.get((p, "chain"), {}).values(), "%.2f", 1000.0 / chain),
        cell(val.get((p, "diamond"), {}).values(), "%.2f")))
PY
