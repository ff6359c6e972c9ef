#!/usr/bin/env bash
# Issue 14 on real hardware (the GPU host): memory caps by the kernel, an `oom`
# result with its peak, reservations against the host's real RAM, peak VRAM and
# GPU utilisation of a real PyTorch script task read through NVML, and the CPU
# temperature reading.
#
# Each worker runs alone in a cgroup made for it (as under a systemd unit with
# Delegate=yes), so that it can hand the memory controller to its tasks' cgroups.
#
# Usage: scripts/gpu/safety-check.sh BIN_DIR OUT_DIR   (BIN_DIR: release rigmind, brain, worker)
# Writes OUT_DIR/summary.txt, OUT_DIR/results.json, OUT_DIR/journal.txt, OUT_DIR/*.log.
set -uo pipefail
bin=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd)
export PATH="$bin:$PATH"
work=$(mktemp -d); root=$work/root
say() { echo "$*" | tee -a "$out/summary.txt"; }
say "== $(date -u +%FT%TZ) on $(hostname): $(nproc) cores, $(grep MemTotal /proc/meminfo)"
say "cgroup of this shell: $(cat /proc/self/cgroup)"
say "root cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers); subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || echo +memory > /sys/fs/cgroup/cgroup.subtree_control
say "hwmon: $(cat /sys/class/hwmon/hwmon*/name 2>/dev/null | tr '\n' ' ')thermal zones: $(cat /sys/class/thermal/thermal_zone*/type 2>/dev/null | tr '\n' ' ')"
rigmind init --root "$root" | tee -a "$out/summary.txt"
cat > "$root/rig.toml" <<TOML
[safety]
min_free_ram_mb = 2048
mem_limit_factor = 1.5

[[gpu]]
index = 0
worker = "gpu0"
TOML
rigmind gpus | tee -a "$out/summary.txt"

avail_mb=$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)
big_mb=$((avail_mb * 45 / 100))
cat > "$work/vram.py" <<'PY'
import time, torch
x = torch.empty(int(6e9), dtype=torch.uint8, device="cuda")  # 6 GB held
y = torch.randn(8192, 8192, device="cuda")
t = time.time()
while time.time() - t < 6:
    y = y @ y
    y = y / y.norm()
torch.cuda.synchronize()
print("vram task done")
PY
cat > "$work/plan.md" <<PLAN
# Plan: safety-check

## Task: runaway
- task_class: cpu
- mem_mb: 200
- retries: 0
- command: \`python3 -c "b = bytearray(1500 * 1024 * 1024); import time; time.sleep(2)"\`

## Task: sibling
- task_class: cpu
- mem_mb: 400
- command: \`python3 -c "b = bytearray(300 * 1024 * 1024); print('sibling ok')"\`

## Task: vram
- task_class: script
- timeout: 300
- command: \`python3 vram.py\`

## Task: big
- task_class: cpu
- mem_mb: $big_mb
- for_each: [a, b, c]
- command: \`echo "start \$RIGMIND_STEM \$(date +%s.%N)" >> journal.txt; sleep 4; echo "end \$RIGMIND_STEM \$(date +%s.%N)" >> journal.txt\`
PLAN
say "big tasks reserve $big_mb MB each (45% of MemAvailable $avail_mb MB): at most two at once"

brain --root "$root" --rescan 0.5 > "$out/brain.log" 2>&1 &
start_alone() { # id, worker args...: the worker alone in a cgroup of its own
  local id=$1 cg=/sys/fs/cgroup/rigmind-check-$1-$$
  shift
  mkdir -p "$cg"
  sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" worker --id "$id" --root "$root" --rescan 0.5 "$@" > "$out/$id.log" 2>&1 &
}
start_alone gpu0 --gpu 0
for i in 1 2 3; do start_alone "c$i" --classes cpu; done
sleep 2
batch=$(rigmind submit "$work/plan.md" --root "$root" | tail -1)
say "batch $batch"
rigmind wait "$batch" --root "$root" --timeout 400; say "wait exit $?"
rigmind status --root "$root" | tee -a "$out/summary.txt"
grep -h "memory caps" "$out"/*.log | sort | uniq -c | tee -a "$out/summary.txt"
cp "$work/journal.txt" "$out/journal.txt" 2>/dev/null
python3 - "$root" "$out" <<'PY' | tee -a "$out/summary.txt"
import glob, json, sys
root, out = sys.argv[1:]
rows = []
for d in ("complete", "failed"):
    for f in glob.glob(f"{root}/tasks/{d}/*.json"):
        t = json.load(open(f))
        rows.append(t)
        keys = ("failure_kind", "mem_mb", "mem_cap_mb", "peak_rss_mb", "peak_vram_mb", "gpu_util_mean", "worker_id")
        print(d, t["name"], " ".join(f"{k}={t.get(k)}" for k in keys))
json.dump(rows, open(f"{out}/results.json", "w"), indent=1)
ev = []
for l in open(f"{root}/../journal.txt"):
    kind, who, ts = l.split()
    ev.append((float(ts), 1 if kind == "start" else -1, who))
ev.sort(); now = most = 0
for _, d, _ in ev:
    now += d; most = max(most, now)
print(f"big tasks: at most {most} at once (journal of {len(ev)} lines)")
PY
pkill -f "worker --id" ; pkill -f "brain --root"; sleep 1
for cg in /sys/fs/cgroup/rigmind-check-*-$$; do find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null; done
say "== done $(date -u +%FT%TZ)"
