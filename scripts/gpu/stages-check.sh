#!/usr/bin/env bash
# Issue 12's real-GPU evidence: scripts/gpu/stages.md (6 prep scripts -> 6 item-wise
# llm tasks -> 6 post scripts, estimates 2x too small) on two cards, each with a
# fake-ollama that holds 20 GB of real VRAM while its model is loaded (3 s loads),
# under the adaptive manager. Checks: at most two loads; no script task starts on a
# card while its model holds memory (each script task records its card's used
# memory as it starts). Writes the run's Gantt chart with `rigmind report --svg`.
#
# Usage: scripts/gpu/stages-check.sh BIN_DIR OUT_DIR
#   BIN_DIR: release rigmind, brain, worker and fake-ollama
# Writes OUT_DIR/summary.txt, OUT_DIR/stages.svg, OUT_DIR/report.txt,
# OUT_DIR/vram.csv and OUT_DIR/stages-results.tar.gz.
set -uo pipefail
bin=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
export PATH="$bin:$PATH"
work=$(mktemp -d); root=$work/root; mkdir -p "$root"
say() { echo "$*" | tee -a "$out/summary.txt"; }
model_mb=20000
ngpu=$(nvidia-smi -L | wc -l); [ "$ngpu" -gt 2 ] && ngpu=2
say "== $(date -u +%FT%TZ) on $(hostname): using $ngpu GPU(s)"
nvidia-smi -L | head -"$ngpu" | tee -a "$out/summary.txt"

nvidia-smi --query-gpu=timestamp,index,uuid,memory.used --format=csv,noheader,nounits -lms 200 > "$out/vram.csv" &
sampler=$!
cat > "$root/rig.toml" <<TOML
[llm]
model = "qwen2.5:7b"
load_seconds = 3
unload_seconds = 1

[resource_manager]
policy = "adaptive"
TOML
servers=()
for i in $(seq 0 $((ngpu - 1))); do
  uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$i")
  CUDA_VISIBLE_DEVICES=$uuid fake-ollama --port-file "$work/port$i" --load-ms 3000 --unload-ms 500 \
    --model-mb "$model_mb" --request-log "$work/ollama$i.jsonl" \
    --hold-vram-cmd "exec python3 $repo/crates/rigmind-ollama-fake/hold_vram.py {mb}" 2> "$work/ollama$i.err" &
  servers+=($!)
  for _ in $(seq 50); do [ -s "$work/port$i" ] && break; sleep 0.2; done
  printf '\n[[gpu]]\nindex = %s\nworker = "gpu%s"\nollama = "http://%s"\n' "$i" "$i" "$(cat "$work/port$i")" >> "$root/rig.toml"
done
cp "$here/stages.md" "$work/"
cd "$work"
rigmind run stages.md --root "$root" > "$out/run.out" 2>&1; say "rigmind run exit $?"
sleep 1; kill "$sampler" "${servers[@]}" 2>/dev/null; wait 2>/dev/null
batch=$(ls "$root/brain/batches" | head -1 | sed 's/\.json$//')
rigmind report "$batch" --root "$root" --svg "$out/stages.svg" > "$out/report.txt" 2>&1
cat "$out/report.txt" | tee -a "$out/summary.txt"
grep -E "decision=(load_llm|unload_llm)" "$root/logs/brain_decisions.log" | tee -a "$out/summary.txt"
loads=$(grep -c "decision=load_llm" "$root/logs/brain_decisions.log")
say "loads=$loads (at most 2 asked)"
sort -t= -k2 stages.txt | tee -a "$out/summary.txt"
# A script task that starts while its card's model holds memory sees >= model_mb used.
over=$(awk -v m="$model_mb" '{split($5, u, "="); if (u[2] + 0 >= m) print}' stages.txt | wc -l)
say "script starts on a card holding the model: $over (0 asked)"
[ "$loads" -le 2 ] && [ "$over" -eq 0 ] && say "RESULT: pass" || say "RESULT: fail"
cp stages.txt "$out/"; cp -r "$root/logs" "$work/logs-copy"
tar -czf "$out/stages-results.tar.gz" -C "$work" logs-copy stages.txt root/tasks root/batches 2>/dev/null
say "== done"
