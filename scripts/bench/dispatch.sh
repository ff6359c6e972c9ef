#!/usr/bin/env bash
# Dispatch overhead, measured against doing the same work without rigmind.
#
#   1. 2,000 independent `true` tasks on 2 workers  vs  `xargs -P 2` running the same
#      2,000 `bash -c true` (side by side, same machine, same moment): a ratio.
#   2. A 300-task chain (each task waits for the previous one): milliseconds per link,
#      beside 300 serial `bash -c true` (what a link costs without rigmind).
#
# Usage: scripts/bench/dispatch.sh [N_TASKS] [CHAIN_LEN]   (release build, temp root)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
n=${1:-2000}
chain=${2:-300}
bin=$(release_rigmind)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the plans -----------------------------------------------------------------
{
  echo "# Plan: bench-independent"
  echo
  cpu_fanout_task t "$n" true "retries: 0"
} > "$work/independent.md"
{
  echo "# Plan: bench-chain"
  for i in $(seq 1 "$chain"); do
    echo
    echo "## Task: l$i"
    echo "- task_class: cpu"
    echo "- command: \`true\`"
    [ "$i" -gt 1 ] && echo "- depends_on: l$((i - 1))"
  done
} > "$work/chain.md"

batch_elapsed() { # root -> the batch record's elapsed_seconds (submit to done)
  python3 -c 'import json,glob,sys; print(json.load(open(glob.glob(sys.argv[1]+"/brain/batches/*.json")[0]))["elapsed_seconds"])' "$1"
}

# --- 1. independent tasks vs xargs ---------------------------------------------
t0=$(now)
seq "$n" | xargs -P 2 -I{} bash -c true
t1=$(now)
xargs_s=$(echo "$t1 - $t0" | calc)

t0=$(now)
"$bin" run "$work/independent.md" --root "$work/root1" --workers 2 > /dev/null 2>&1
t1=$(now)
run_s=$(echo "$t1 - $t0" | calc)
batch_s=$(batch_elapsed "$work/root1")

# --- 2. chain -------------------------------------------------------------------
t0=$(now)
for _ in $(seq "$chain"); do bash -c true; done
t1=$(now)
bash_link_ms=$(echo "($t1 - $t0) * 1000 / $chain" | calc)
"$bin" run "$work/chain.md" --root "$work/root2" --workers 2 > /dev/null 2>&1
chain_s=$(batch_elapsed "$work/root2")
link_ms=$(echo "$chain_s * 1000 / $chain" | calc)

# The filesystem's own cost per file, measured now: the protocol writes a few files
# per task, xargs none, so the ratio moves with this.
fs=$(python3 - "$work" << 'PY'
import os, sys, time
d = os.path.join(sys.argv[1], "fsprobe"); os.makedirs(d)
def probe(sync):
    t = time.perf_counter()
    for i in range(200):
        p = f"{d}/.t{i}"
        f = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(f, b"x" * 600)
        if sync:
            os.fdatasync(f)
        os.close(f)
        os.rename(p, f"{d}/{sync}-{i}")
    return (time.perf_counter() - t) / 200 * 1000
print("%.2f %.2f" % (probe(False), probe(True)))
PY
)
printf '| measure | value |\n| --- | --- |\n'
printf '| filesystem now: create+write+rename per file | %s ms |\n' "${fs%% *}"
printf '| filesystem now: the same with fdatasync | %s ms |\n' "${fs##* }"
printf '| xargs -P 2, %d x bash -c true | %.2f s |\n' "$n" "$xargs_s"
printf '| rigmind, %d tasks, 2 workers: submit to batch done | %.2f s |\n' "$n" "$batch_s"
printf '| rigmind run, whole command (start, submit, wait, stop) | %.2f s |\n' "$run_s"
printf '| ratio rigmind / xargs (batch) | %.2fx |\n' "$(echo "$batch_s / $xargs_s" | calc)"
printf '| ratio rigmind / xargs (whole command) | %.2fx |\n' "$(echo "$run_s / $xargs_s" | calc)"
printf '| chain of %d: per link | %.2f ms |\n' "$chain" "$link_ms"
printf '| serial bash -c true: per run | %.2f ms |\n' "$bash_link_ms"
printf '| chain overhead per link beyond bash | %.2f ms |\n' "$(echo "$link_ms - $bash_link_ms" | calc)"
