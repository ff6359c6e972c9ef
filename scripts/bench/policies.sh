#!/usr/bin/env bash
# How do the resource policies compare? Runs `rigmind simulate` on every workload of
# plans/workloads/ (sorted by name) on the first user's rig (plans/workloads/rig-5x1060.toml)
# and prints a Markdown table: per workload the lower bound and, for each policy, the
# makespan in minutes with its ratio to the lower bound; then the geometric mean of the
# ratios per policy and whether adaptive is at most every baseline on every workload.
# Each workload runs twice: as written (every task takes its estimate), and noisy
# (`rigmind simulate --noise 1`: estimates off by a seeded factor of 0.5 to 2 per plan
# task, heavy-tailed run times per task; the lower bound is the true times'); each
# kind has its own geometric mean. A workload NAME.md runs on plans/workloads/rig-NAME.toml
# instead when that file exists (two-models.md: cards of two sizes, two models).
#
# One seed is one draw of the noise: a single straggler can decide a row. So a second
# table follows: each workload noisy under seeds 1 to N, each policy's geometric
# mean of the ratio over those runs, and on how many of them adaptive is at most
# every baseline (the 100,000-task workload of --large is left out of it).
#
# Usage: scripts/bench/policies.sh [--write] [--large] [--seeds N]
#   --write   also replace the text between `<!-- policies:begin -->` and
#             `<!-- policies:end -->` in docs/scheduling.md with the tables.
#   --large   also the 100,000-task workload (`hundred-thousand`, written by
#             scripts/bench/big-plan.sh): opt-in, its simulation takes over
#             an hour of CPU (docs/scheduling.md, "At 100,000 tasks").
#   --seeds N the second table's seeds, 1 to N (default 12; 0: no second table).
# RIGMIND_BIN=path uses that binary instead of building target/release/rigmind.
set -euo pipefail
cd "$(dirname "$0")/../.."

write=0
large=0
seeds=12
while [ $# -gt 0 ]; do
  case "$1" in
    --write) write=1 ;;
    --large) large=1 ;;
    --seeds)
      seeds=${2:-}
      if ! [[ "$seeds" =~ ^[0-9]+$ ]]; then
        echo "policies.sh: --seeds needs a number of seeds (0 for none), not '${2:-}'" >&2
        exit 2
      fi
      shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "policies.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

doc=docs/scheduling.md
if [ "$write" = 1 ]; then
  # Check before the (long) simulations, not after.
  if [ ! -f "$doc" ]; then
    echo "policies.sh: --write: $doc does not exist; create it with a line '<!-- policies:begin -->' and a later line '<!-- policies:end -->' where the table belongs" >&2
    exit 1
  fi
  if ! grep -qx '<!-- policies:begin -->' "$doc" || ! grep -qx '<!-- policies:end -->' "$doc"; then
    echo "policies.sh: --write: $doc lacks the markers: it needs a line '<!-- policies:begin -->' and a later line '<!-- policies:end -->' (each alone on its line) where the table belongs" >&2
    exit 1
  fi
fi

if [ -n "${RIGMIND_BIN:-}" ]; then
  bin=$RIGMIND_BIN
else
  cargo build --release -q --bin rigmind
  bin=$PWD/target/release/rigmind
fi

rig=plans/workloads/rig-5x1060.toml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Workloads: every plan in plans/workloads/ but the README, in byte order.
workloads=()
while IFS= read -r f; do
  workloads+=("$f")
done < <(LC_ALL=C ls plans/workloads/*.md | grep -v '/README\.md$' | LC_ALL=C sort)
if [ "$large" = 1 ]; then
  scripts/bench/big-plan.sh 33333 > "$work/hundred-thousand.md"
  workloads+=("$work/hundred-thousand.md")
fi
if [ ${#workloads[@]} -eq 0 ]; then
  echo "policies.sh: no workloads in plans/workloads/" >&2
  exit 1
fi

# The seed of the noisy runs.
seed=1
args=()
for noisy in 0 1; do
  for plan in "${workloads[@]}"; do
    name=$(basename "$plan" .md)
    # A workload NAME.md with a rig of its own, rig-NAME.toml beside it, runs there.
    wl_rig=$rig
    if [ -f "plans/workloads/rig-$name.toml" ]; then
      wl_rig=plans/workloads/rig-$name.toml
      name="$name (on rig-$name.toml)"
    fi
    extra=()
    if [ "$noisy" = 1 ]; then
      extra=(--noise "$seed")
      name="$name (noisy)"
    fi
    out="$work/$name.json"
    if ! "$bin" simulate "$plan" --rig "$wl_rig" --policy all "${extra[@]}" --json > "$out" 2> "$work/$name.err"; then
      echo "policies.sh: rigmind simulate $plan ${extra[*]} failed:" >&2
      cat "$work/$name.err" >&2
      exit 1
    fi
    args+=("$name" "$out")
  done
done

# The second table's runs: each workload under seeds 1..N (seed 1's run is the first
# table's noisy row, reused).
many=()
if [ "$seeds" -gt 0 ]; then
  for plan in "${workloads[@]}"; do
    name=$(basename "$plan" .md)
    [ "$name" = hundred-thousand ] && continue
    wl_rig=$rig
    [ -f "plans/workloads/rig-$name.toml" ] && wl_rig=plans/workloads/rig-$name.toml
    for s in $(seq 1 "$seeds"); do
      out="$work/$name.seed$s.json"
      if [ "$s" = "$seed" ]; then
        shown=$name
        [ "$wl_rig" != "$rig" ] && shown="$name (on rig-$name.toml)"
        cp "$work/$shown (noisy).json" "$out"
        many+=("$name" "$out")
        continue
      fi
      if ! "$bin" simulate "$plan" --rig "$wl_rig" --policy all --noise "$s" --json > "$out" 2> "$work/$name.err"; then
        echo "policies.sh: rigmind simulate $plan --noise $s failed:" >&2
        cat "$work/$name.err" >&2
        exit 1
      fi
      many+=("$name" "$out")
    done
  done
fi

python3 - "$rig" "${args[@]}" > "$work/table.md" << 'PY'
import json, math, sys

POLICIES = ["adaptive", "phases", "static", "on-demand"]
rig, rest = sys.argv[1], sys.argv[2:]

def fail(msg):
    sys.exit(f"policies.sh: {msg}")

def minutes(s):
    return f"{s / 60:.1f} min"

def finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

KINDS = ["as written", "noisy"]
rows, adaptive_best, losses = [], True, []
ratios = {k: {p: [] for p in POLICIES} for k in KINDS}
for name, path in zip(rest[0::2], rest[1::2]):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{name}: the simulator's output is not JSON: {e}")
    kind = "noisy" if name.endswith(" (noisy)") else "as written"
    lb = data.get("lower_bound_s")
    if not finite(lb) or lb <= 0:
        fail(f"{name}: bad lower_bound_s {lb!r}")
    by = {p.get("policy"): p for p in data.get("policies", [])}
    cells, spans = [], {}
    for pol in POLICIES:
        if pol not in by:
            fail(f"{name}: the simulator reported no policy '{pol}' (it gave {sorted(map(str, by))})")
        ms = by[pol].get("makespan_s")
        if finite(ms):
            spans[pol] = ms
            ratios[kind][pol].append(ms / lb)
            cells.append(f"{minutes(ms)} ({ms / lb:.2f})")
        else:  # a policy that cannot finish the workload (e.g. no card may load the model)
            spans[pol] = math.inf
            ratios[kind][pol].append(math.inf)
            cells.append("did not finish")
    for pol in POLICIES[1:]:
        if spans["adaptive"] > spans[pol] + 1e-6:
            adaptive_best = False
            losses.append(f"{name} ({pol} {minutes(spans[pol])} < adaptive {minutes(spans['adaptive'])})")
    rows.append(f"| {name} | {minutes(lb)} | " + " | ".join(cells) + " |")

def geomean(xs):
    if any(math.isinf(x) for x in xs):
        return "∞"
    return f"{math.exp(sum(map(math.log, xs)) / len(xs)):.3f}"

print(f"Simulated on `{rig}` (`rigmind simulate PLAN --rig {rig} --policy all`, "
      "and with `--noise 1` for the noisy rows); each cell: makespan (its ratio to the lower bound).")
print()
print("| workload | lower bound | " + " | ".join(POLICIES) + " |")
print("| --- | ---: |" + " ---: |" * len(POLICIES))
for r in rows:
    print(r)
for k in KINDS:
    if ratios[k][POLICIES[0]]:
        print(f"| **geometric mean of the ratio, {k}** | | "
              + " | ".join(f"**{geomean(ratios[k][p])}**" for p in POLICIES) + " |")
print()
if adaptive_best:
    print("Adaptive ≤ every baseline (phases, static, on-demand) on every workload: **yes**.")
else:
    print("Adaptive ≤ every baseline (phases, static, on-demand) on every workload: **no** — "
          + "; ".join(losses) + ".")
PY

if [ "$seeds" -gt 0 ]; then
  python3 - "$seeds" "${many[@]}" >> "$work/table.md" << 'PY'
import json, math, sys

POLICIES = ["adaptive", "phases", "static", "on-demand"]
seeds, rest = int(sys.argv[1]), sys.argv[2:]
by_workload = {}
for name, path in zip(rest[0::2], rest[1::2]):
    with open(path) as f:
        data = json.load(f)
    lb = data["lower_bound_s"]
    # A policy that cannot finish the workload has no makespan (null): infinite.
    spans = {
        p["policy"]: p["makespan_s"] if isinstance(p.get("makespan_s"), (int, float)) else math.inf
        for p in data["policies"]
    }
    by_workload.setdefault(name, []).append({p: spans[p] / lb for p in POLICIES})

def geomean(xs):
    if any(not math.isfinite(x) for x in xs):
        return "∞"
    return f"{math.exp(sum(map(math.log, xs)) / len(xs)):.3f}"

print()
print(f"Noisy, over seeds 1 to {seeds} (`--noise 1` … `--noise {seeds}`): each policy's "
      "geometric mean of makespan / lower bound, and on how many seeds adaptive is at "
      "most every baseline.")
print()
print("| workload | " + " | ".join(POLICIES) + " | adaptive ≤ every baseline |")
print("| --- |" + " ---: |" * (len(POLICIES) + 1))
every = []
for name, runs in by_workload.items():
    every += runs
    wins = sum(1 for r in runs if all(r["adaptive"] <= r[p] + 1e-9 for p in POLICIES[1:]))
    print(f"| {name} | " + " | ".join(geomean([r[p] for r in runs]) for p in POLICIES)
          + f" | {wins} of {len(runs)} |")
wins = sum(1 for r in every if all(r["adaptive"] <= r[p] + 1e-9 for p in POLICIES[1:]))
print("| **all** | " + " | ".join(f"**{geomean([r[p] for r in every])}**" for p in POLICIES)
      + f" | **{wins} of {len(every)}** |")
PY
fi

cat "$work/table.md"

if [ "$write" = 1 ]; then
  python3 - "$doc" "$work/table.md" << 'PY'
import sys
doc, table = sys.argv[1], open(sys.argv[2]).read()
lines = open(doc).read().split("\n")
try:
    b = lines.index("<!-- policies:begin -->")
    e = lines.index("<!-- policies:end -->", b + 1)
except ValueError:
    sys.exit(f"policies.sh: --write: {doc} lacks '<!-- policies:begin -->' followed by '<!-- policies:end -->'")
out = lines[: b + 1] + [""] + table.rstrip("\n").split("\n") + [""] + lines[e:]
with open(doc, "w") as f:
    f.write("\n".join(out))
PY
  echo "policies.sh: wrote the table into $doc" >&2
fi
