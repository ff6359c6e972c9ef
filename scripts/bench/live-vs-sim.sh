#!/usr/bin/env bash
# Runs one workload live — the real brain and one worker per fake GPU
# (RIGMIND_FAKE_GPUS), each with its own fake Ollama server (the repo's
# Ollama-protocol test server) — with every duration divided by SCALE, and compares
# its makespan with `rigmind simulate` of the very same scaled plan and rig.
#
# Usage: scripts/bench/live-vs-sim.sh [WORKLOAD] [SCALE] [NOISE_SEED]
#   (RIGMIND_BIN_DIR=DIR uses the release binaries in DIR instead of building;
#   KEEP_ROOT=DIR keeps the live run's root there, for `rigmind report`)
#   WORKLOAD    a plan under plans/workloads/ (default stage-bursts)
#   SCALE       durations and load times are divided by this (default 30)
#   NOISE_SEED  run the noisy variant (`rigmind simulate --noise SEED`): each task
#               really runs for the time the simulator's noise gives it (the plan
#               keeps its written estimates, which the policy sees); live, a cpu or
#               script task sleeps that time (looked up by its name) and an llm
#               task's reply lasts it (the fake server's --reply-secs-file, keyed
#               by the task's item, which must then be unique among llm tasks)
#
# The scaled plan runs `sleep <estimate>` for cpu and script tasks; llm tasks take
# what the fake server takes to stream its reply (36 tokens at a rate set so that
# one reply lasts the plan's llm estimate: the workload's llm estimates must all be
# equal, as in stage-bursts). Prints both makespans and their ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
workload=${1:-stage-bursts}
scale=${2:-30}
seed=${3:-}
plan=plans/workloads/$workload.md
rig=plans/workloads/rig-5x1060.toml
[ -f "$plan" ] || { echo "no such workload: $plan" >&2; exit 2; }
# RIGMIND_BIN_DIR=DIR: the release binaries are already built there (a machine
# without a Rust toolchain runs them); else they are built now.
if [ -n "${RIGMIND_BIN_DIR:-}" ]; then
  bin=$RIGMIND_BIN_DIR
else
  cargo build --release -q --workspace --bins
  bin=target/release
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root" "$work/fakegpu"

# The scaled plan, and the scaled load / unload times and llm reply time.
read -r load unload llm_secs gpus < <(python3 - "$plan" "$rig" "$scale" "$work/plan.md" "$seed" "$work/truth.tsv" <<'PY'
import re, sys, tomllib
plan, rig, scale, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
noisy, truth = sys.argv[5] != "", sys.argv[6]
units = {"": 1, "s": 1, "ms": 0.001, "m": 60, "min": 60, "h": 3600}
def secs(text):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-z]*)\s*", text)
    return float(m.group(1)) * units[m.group(2)]
sections, cur = [], []
for line in open(plan):
    if line.startswith("## ") and cur:
        sections.append(cur); cur = []
    cur.append(line)
sections.append(cur)
llm, llm_tasks = set(), []
with open(out, "w") as f:
    for sec in sections:
        text = "".join(sec)
        cls = re.search(r"^- task_class:\s*(\w+)", text, re.M)
        est = re.search(r"^- estimate:\s*(.+)$", text, re.M)
        if est:
            e = secs(est.group(1)) / scale
            text = text.replace(est.group(0), f"- estimate: {e:.3f}s")
            if cls and cls.group(1) in ("cpu", "script"):
                cmd = f"sleep {e:.3f}"
                if noisy:
                    # The job's true time, by its name (NAME or NAME[ITEM]).
                    name = re.match(r"## Task:\s*(\S+)", text).group(1)
                    key = name + ("[$RIGMIND_ITEM]" if re.search(r"^- for_each:", text, re.M) else "")
                    # (no braces: the plan would read them as placeholders)
                    cmd = f"sleep \"$(awk -F'\\t' -v k=\"{key}\" '$1==k' {truth} | cut -f2)\""
                text = re.sub(r"^- command:.*$", f"- command: `{cmd}`", text, flags=re.M)
            if cls and cls.group(1) == "llm":
                llm.add(round(e, 3))
                llm_tasks.append(re.match(r"## Task:\s*(\S+)", text).group(1))
        f.write(text)
open(out + ".llm", "w").write("\n".join(llm_tasks))
if len(llm) > 1 and not noisy:
    sys.exit(f"{plan}: llm estimates differ ({sorted(llm)}); the fake server gives one reply time")
r = tomllib.load(open(rig, "rb"))
print(r["llm"]["load_seconds"] / scale, r["llm"]["unload_seconds"] / scale,
      (min(llm) if llm else 1.0), len(r.get("gpu", [])))
PY
)

# One fake Ollama per card; a scaled rig pointing at them.
python3 - "$rig" "$scale" > "$root/rig.toml" <<'PY'
import re, sys
rig, scale = sys.argv[1], float(sys.argv[2])
for line in open(rig):
    m = re.match(r"(load_seconds|unload_seconds)\s*=\s*([0-9.]+)", line)
    if m:
        line = f"{m.group(1)} = {float(m.group(2)) / scale:.3f}\n"
    if line.startswith("ollama"):
        continue
    if line.startswith("worker"):
        idx = line.split('"')[1].removeprefix("gpu")
        line += f'ollama = "http://127.0.0.1:PORT{idx}"\n'
    print(line, end="")
PY
noise=(); reply=()
if [ -n "$seed" ]; then
  noise=(--noise "$seed"); reply=(--reply-secs-file "$work/reply.tsv")
  # Each job's true time: by name for the sleeps, by item for the llm replies.
  "$bin/rigmind" simulate "$work/plan.md" --rig "$rig" --policy adaptive --noise "$seed" --json \
    | python3 -c '
import json, re, sys
truth, reply = open(sys.argv[1], "w"), open(sys.argv[2], "w")
llm_tasks = set(open(sys.argv[3]).read().split())
items = set()
for t in json.load(sys.stdin)["truth"]:
    name, secs = t["name"], t["secs"]
    truth.write(f"{name}\t{secs:.3f}\n")
    m = re.fullmatch(r"(.+)\[(.+)\]", name)
    if m and m.group(1) in llm_tasks:
        if m.group(2) in items:
            sys.exit(f"item {m.group(2)} is not unique among llm tasks: the fake server keys replies by item")
        items.add(m.group(2))
        reply.write(f"{secs:.3f}\t{m.group(2)}\n")
' "$work/truth.tsv" "$work/reply.tsv" "$work/plan.md.llm"
fi
for i in $(seq 0 $((gpus - 1))); do
  mkdir -p "$work/fakegpu/$i"
  "$bin/fake-ollama" --port-file "$work/port$i" --load-ms "$(python3 -c "print(int($load*1000))")" \
    --unload-ms "$(python3 -c "print(int($unload*1000))")" --tokens-per-sec "$(python3 -c "print(36/$llm_secs)")" \
    --fake-vram-file "$work/fakegpu/$i/ollama.mb" "${reply[@]}" 2> "$work/ollama$i.err" &
done
for i in $(seq 0 $((gpus - 1))); do
  for _ in $(seq 300); do [ -s "$work/port$i" ] && break; sleep 0.1; done
  [ -s "$work/port$i" ] || { echo "fake-ollama $i did not start:" >&2; cat "$work/ollama$i.err" >&2; exit 1; }
  sed -i "s|http://127.0.0.1:PORT$i\"|http://$(cat "$work/port$i")\"|" "$root/rig.toml"
done

sim=$("$bin/rigmind" simulate "$work/plan.md" --rig "$root/rig.toml" --policy adaptive "${noise[@]}" --json)
export RIGMIND_FAKE_GPUS="${gpus}x6144" RIGMIND_FAKE_GPU_DIR="$work/fakegpu"
"$bin/rigmind" run "$work/plan.md" --root "$root" > "$work/run.out" 2>&1 || { cat "$work/run.out"; exit 1; }
live=$(python3 -c 'import json,glob,sys; r=[json.load(open(f)) for f in glob.glob(sys.argv[1]+"/brain/batches/*.json")]; print(r[0]["elapsed_seconds"])' "$root")
loads=$(grep -c "decision=load_llm" "$root/logs/brain_decisions.log" || true)
unloads=$(grep -c "decision=unload_llm" "$root/logs/brain_decisions.log" || true)
# KEEP_ROOT=DIR keeps the run's root there (for `rigmind report`).
[ -n "${KEEP_ROOT:-}" ] && rm -rf "$KEEP_ROOT" && cp -a "$root" "$KEEP_ROOT"
python3 - "$sim" "$live" "$loads" "$unloads" "$workload" "$scale" "$seed" <<'PY'
import json, sys
sim = json.loads(sys.argv[1])["policies"][0]
live, loads, unloads, w, scale = float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
print(f"workload {w}{' (noisy, seed ' + sys.argv[7] + ')' if sys.argv[7] else ''}, durations / {scale}, adaptive policy")
print(f"simulated: {sim['makespan_s']:.2f} s, {sim['loads']} loads, {sim['unloads']} unloads")
print(f"live:      {live:.2f} s, {loads} loads, {unloads} unloads")
print(f"live / simulated = {live / sim['makespan_s']:.3f}")
PY
