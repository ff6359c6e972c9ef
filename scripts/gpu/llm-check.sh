#!/usr/bin/env bash
# The real-GPU LLM check written up in docs/llm.md: llama.cpp's llama-server (built
# with CUDA) in router mode, one per card, pinned with CUDA_VISIBLE_DEVICES, a real
# model, and one rigmind worker per card; a plan of PyTorch script tasks, llm tasks
# and script tasks again, while nvidia-smi samples every card's memory every 200 ms.
#
# Usage: scripts/gpu/llm-check.sh BIN_DIR MODELS_DIR OUT_DIR
#   BIN_DIR: release rigmind, brain, worker and a CUDA llama-server
#   MODELS_DIR: holds SmolLM2-135M-Instruct.Q4_1.gguf
# Writes OUT_DIR/summary.txt, OUT_DIR/vram.csv and OUT_DIR/llm-results.tar.gz.
set -uo pipefail
bin=$(cd "$1" && pwd); models=$(cd "$2" && pwd); out=$(mkdir -p "$3" && cd "$3" && pwd)
export PATH="$bin:$PATH"
work=$(mktemp -d); root=$work/root; mkdir -p "$root"
say() { echo "$*" | tee -a "$out/summary.txt"; }
model=SmolLM2-135M-Instruct.Q4_1
ngpu=$(nvidia-smi -L | wc -l); [ "$ngpu" -gt 2 ] && ngpu=2
say "== $(date -u +%FT%TZ) on $(hostname): using $ngpu GPU(s)"
nvidia-smi -L | head -"$ngpu" | tee -a "$out/summary.txt"

nvidia-smi --query-gpu=timestamp,index,memory.used,memory.total,utilization.gpu \
  --format=csv,noheader,nounits -lms 200 > "$out/vram.csv" &
sampler=$!

: > "$root/rig.toml"
cat >> "$root/rig.toml" <<TOML
[llm]
model = "$model"
load_seconds = 3
unload_seconds = 0.5

[resource_manager]
policy = "adaptive"
idle_unload = "2s"

TOML
routers=()
for i in $(seq 0 $((ngpu - 1))); do
  uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$i")
  port=$((18080 + i))
  CUDA_VISIBLE_DEVICES=$uuid llama-server --models-dir "$models" --no-models-autoload \
    --host 127.0.0.1 --port "$port" -ngl 99 -c 4096 > "$work/router$i.log" 2>&1 &
  routers+=($!)
  printf '[[gpu]]\nindex = %d\nworker = "gpu%d"\nllama_server = "http://127.0.0.1:%d"\n\n' \
    "$i" "$i" "$port" >> "$root/rig.toml"
done
for i in $(seq 0 $((ngpu - 1))); do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((18080 + i))/models" > /dev/null && break; sleep 0.2; done
done
say "routers up: $(for i in $(seq 0 $((ngpu - 1))); do curl -s "http://127.0.0.1:$((18080 + i))/models" | head -c 200; echo; done)"

cat > "$work/plan.md" <<'PLAN'
# Plan: gpu-llm

Script work on each card (PyTorch, 2 GB for a few seconds), then llm work on the
cards' real llama-servers, then script work again.

## Task: prep
- task_class: script
- estimate: 4s
- for_each: [a, b, c, d, e, f]
- command: `mkdir -p out && python3 -c "import torch,time,os; x=torch.ones(512,1024,1024,device='cuda'); torch.cuda.synchronize(); time.sleep(3); print('on', torch.cuda.get_device_name(0), os.environ.get('CUDA_VISIBLE_DEVICES'))" > out/{item}.gpu && echo 'The sea is blue and wide, and the ships sail on it.' > out/{item}.txt`

## Task: say
- task_class: llm
- depends_on: prep
- for_each: [a, b, c, d, e, f]
- prompt_file: out/{item}.txt
- output: out/{item}.answer.md
- prompt: Repeat the text in other words, in two sentences.

## Task: post
- task_class: script
- estimate: 4s
- depends_on: say
- for_each: [a, b, c, d, e, f]
- command: `python3 -c "import torch; x=torch.ones(512,1024,1024,device='cuda'); torch.cuda.synchronize(); print(torch.cuda.memory_allocated()//2**20, 'MiB')" > out/{item}.post && cat out/{item}.answer.md >> out/{item}.post`
PLAN
cd "$work"
brain --root "$root" 2> "$work/brain.err" &
bpid=$!
wpids=()
for i in $(seq 0 $((ngpu - 1))); do
  worker --id "gpu$i" --gpu "$i" --root "$root" 2> "$work/worker$i.err" &
  wpids+=($!)
done
t0=$(date +%s.%N)
batch=$(rigmind submit plan.md --root "$root" | tail -1)
rigmind wait "$batch" --root "$root" --timeout 480; rc=$?; say "wait exit $rc after $(python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),1))" "$t0") s"
sleep 3
kill "$bpid" "${wpids[@]}"; wait "$bpid" "${wpids[@]}" 2>/dev/null
rigmind status --root "$root" | tee -a "$out/summary.txt"
grep -E "decision=(load_llm|unload_llm|complete)" "$root/logs/brain_decisions.log" | grep -E "load|unload|task=say" | cut -c1-220 | tee -a "$out/summary.txt"
python3 - "$root" <<'PY' | tee -a "$out/summary.txt"
import glob, json, sys
root = sys.argv[1]
rows = []
for f in glob.glob(root + "/tasks/complete/*.json"):
    t = json.load(open(f))
    rows.append((t.get("started_at"), t.get("worker_id"), t.get("name"), t.get("elapsed_seconds"),
                 t.get("eval_count"), t.get("tokens_per_second"), t.get("load_seconds"), t.get("vram_freed_mb")))
rows.sort()
print("started_at | worker | task | elapsed s | tokens | tokens/s | load s | freed MB")
for r in rows:
    print(" | ".join("" if v is None else str(v) for v in r))
PY
for f in out/a.answer.md out/b.answer.md out/a.gpu out/a.post; do say "-- $f: $(head -c 300 "$f")"; done
kill "${routers[@]}"; wait "${routers[@]}" 2>/dev/null
sleep 1; kill "$sampler"
tar -czf "$out/llm-results.tar.gz" -C "$work" root/logs root/tasks root/workers root/brain out brain.err worker0.err router0.log $( [ "$ngpu" -gt 1 ] && echo worker1.err router1.log ) 2>/dev/null
say "== done"
