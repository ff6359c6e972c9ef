#!/usr/bin/env bash
# Writes the 100,000-task workload to stdout: N prep (script, 30 s) → N label (llm,
# 10 s, item-wise) → N post (script, 20 s, item-wise) → one report (cpu, fan-in):
# 3 N + 1 tasks (N = 33333 by default: 100,000). The suite's big batch
# (plans/workloads/README.md); `scripts/bench/policies.sh --large` simulates it.
#
# Usage: scripts/bench/big-plan.sh [N] > plan.md
set -euo pipefail
n=${1:-33333}
case "$n" in
  '' | *[!0-9]*) echo "big-plan.sh: N must be a number, not '$n'" >&2; exit 2 ;;
esac
list=$(python3 -c "import sys; n=int(sys.argv[1]); print('[' + ', '.join(f'i{i:06d}' for i in range(n)) + ']')" "$n")
cat << PLAN
# Plan: hundred-thousand

$n files prepared (script), labelled by the LLM each as its preparation ends, and
post-processed each as its label ends, then one report: $((3 * n + 1)) tasks.

## Task: prep
- task_class: script
- for_each: $list
- vram_mb: 3000
- estimate: 30s
- command: \`echo "prepare {item}" > /dev/null\`

## Task: label
- task_class: llm
- depends_on: prep
- for_each: $list
- estimate: 10s
- prompt: Label {item}.

## Task: post
- task_class: script
- depends_on: label
- for_each: $list
- vram_mb: 3000
- estimate: 20s
- command: \`echo "post-process {item}" > /dev/null\`

## Task: report
- task_class: cpu
- depends_on: post
- estimate: 5s
- command: \`echo "report" > /dev/null\`
PLAN
