#!/usr/bin/env bash
# The real-GPU checks written up in docs/gpu.md, on a machine with NVIDIA GPUs,
# NVML and PyTorch. Usage: scripts/gpu/device-check.sh BIN_DIR OUT_DIR
# (BIN_DIR holds release builds of rigmind, brain, worker and fake-ollama).
# Everything it saw goes to OUT_DIR/results.tar.gz, a summary to OUT_DIR/summary.txt.
set -uo pipefail
bin=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export PATH="$bin:$PATH"
work=$(mktemp -d); res=$work/results; mkdir -p "$res"
say() { echo "$*" | tee -a "$out/summary.txt"; }
ngpu=$(nvidia-smi -L | wc -l)
say "== $(date -u +%FT%TZ) on $(hostname): $ngpu GPU(s)"
nvidia-smi -L | tee -a "$out/summary.txt"
uuid0=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0)

say "== 1. telemetry: rigmind gpus beside nvidia-smi (read one right after the other)"
rigmind gpus --json > "$res/gpus.json" 2> "$res/gpus.err"
nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu,temperature.gpu,power.draw \
  --format=csv,noheader,nounits > "$res/nvidia-smi.csv"
rigmind gpus | tee -a "$out/summary.txt"
cat "$res/nvidia-smi.csv" | tee -a "$out/summary.txt"

say "== 2. pinning: one worker per GPU, 8 PyTorch tasks"
root=$work/pin; mkdir -p "$root"; cp "$here/pin-all.md" "$work/pin-all.md"
cd "$work"
rigmind run pin-all.md --root "$root" > "$res/pin-run.out" 2>&1; say "rigmind run exit $?"
sort pins.txt | tee -a "$out/summary.txt"
for f in "$root"/workers/*.json; do python3 -c 'import json,sys; w=json.load(open(sys.argv[1])); print(w["worker_id"], w.get("gpu"), w.get("gpu_uuid"), w.get("telemetry_source"))' "$f"; done | tee -a "$out/summary.txt"
cp pins.txt "$res/"; cp -r "$root/logs" "$res/pin-logs"; cp -r "$root/workers" "$res/pin-workers"

say "== 3. vram gate: another process holds all but ~10 GB of GPU 0"
root=$work/gate; mkdir -p "$root"; cp "$here/vram-gate.md" "$work/"
printf '[[gpu]]\nindex = 0\nworker = "gpu0"\n' > "$root/rig.toml"
total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0)
hold=$((total - 10000))
CUDA_VISIBLE_DEVICES=$uuid0 python3 "$repo/crates/rigmind-ollama-fake/hold_vram.py" "$hold" > "$work/holder.out" 2>&1 &
holder=$!
for _ in $(seq 60); do grep -q ready "$work/holder.out" && break; sleep 1; done
say "holder pid $holder holds $hold MB; nvidia-smi used: $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0) MB"
brain --root "$root" 2> "$res/gate-brain.err" &
bpid=$!
worker --id gpu0 --gpu 0 --root "$root" 2> "$res/gate-worker.err" &
wpid=$!
batch=$(rigmind submit vram-gate.md --root "$root" | tail -1)
sleep 10
say "after 10 s: queue=$(ls "$root/tasks/queue" | wc -l) processing=$(ls "$root/tasks/processing" | wc -l) complete=$(ls "$root/tasks/complete" | grep -c big)"
say "worker says: $(python3 -c 'import json,sys; w=json.load(open(sys.argv[1])); t=w["telemetry"]; print("free", t["memory_free_mb"], "used", t["memory_used_mb"], "state", w.get("gpu_state"))' "$root/workers/gpu0.json")"
kill "$holder"; t_free=$(date +%s.%N); wait "$holder" 2>/dev/null
rigmind wait "$batch" --root "$root" --timeout 60; say "wait exit $?"
say "holder killed at $t_free; task: $(cat "$work/big.txt")"
kill $bpid $wpid; wait $bpid $wpid 2>/dev/null
cp -r "$root/logs" "$res/gate-logs"

say "== 4. load/unload: fake-ollama holding 20 GB of real VRAM while loaded, one card, script -> llm -> script"
root=$work/swap; mkdir -p "$root"; cp "$here/swap.md" "$work/"
CUDA_VISIBLE_DEVICES=$uuid0 fake-ollama --port-file "$work/port" --load-ms 2000 --unload-ms 500 --model-mb 20000 \
  --request-log "$res/ollama-requests.jsonl" \
  --hold-vram-cmd "exec python3 $repo/crates/rigmind-ollama-fake/hold_vram.py {mb}" 2> "$res/ollama.err" &
opid=$!
for _ in $(seq 30); do [ -s "$work/port" ] && break; sleep 0.2; done
cat > "$root/rig.toml" <<TOML
[llm]
model = "qwen2.5:7b"
load_seconds = 2
unload_seconds = 1

[resource_manager]
policy = "adaptive"

[[gpu]]
index = 0
worker = "gpu0"
ollama = "http://$(cat "$work/port")"
TOML
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -i 0 -lms 250 > "$res/mem-samples.csv" &
spid=$!
rigmind run swap.md --root "$root" > "$res/swap-run.out" 2>&1; say "rigmind run exit $?"
sleep 1; kill $spid; kill $opid; wait $opid 2>/dev/null
cat swap.txt | tee -a "$out/summary.txt"
grep -E "decision=(load_llm|unload_llm|resource_failed)" "$root/logs/brain_decisions.log" | tee -a "$out/summary.txt"
for f in "$root"/tasks/complete/*-rm-*.json; do python3 -c 'import json,sys; t=json.load(open(sys.argv[1])); print(t["name"], t["started_at"], t["finished_at"], t["elapsed_seconds"])' "$f"; done | tee -a "$out/summary.txt"
python3 - "$res/mem-samples.csv" <<'PY' | tee -a "$out/summary.txt"
import sys
rows = [l.strip().split(", ") for l in open(sys.argv[1]) if l.strip()]
used = [int(r[1]) for r in rows]
print("memory samples:", len(used), "min", min(used), "max", max(used), "MB")
prev = None
for ts, u in ((r[0], int(r[1])) for r in rows):
    if prev is None or abs(u - prev) > 1000:
        print("  ", ts, u, "MB")
    prev = u
PY
cp swap.txt answer.md "$res/" 2>/dev/null; cp -r "$root/logs" "$res/swap-logs"; cp -r "$root/tasks" "$res/swap-tasks"
tar -czf "$out/results.tar.gz" -C "$work" results
say "== done"
