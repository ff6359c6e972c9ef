#!/usr/bin/env bash
# Big plans: submit of a 100,000-task fan-out until all are queued, the brain's
# peak and steady RSS meanwhile, and `rigmind validate` of a 1,000,000-task plan
# (time and max RSS). scripts/bench/big.py says exactly what is measured.
#
# Usage: scripts/bench/big.sh [N] [M] [ROUNDS]     (defaults 100000 1000000 3)
#   BASELINE_BIN=PATH  also measures another build (a `rigmind` with its brain beside
#                      it), round by round side by side, and prints the ratios.
#   RIGMIND_BIN=PATH   measures that build instead of the working tree's release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh
bin=$(release_rigmind)
builds=()
[ -n "${BASELINE_BIN:-}" ] && builds+=("baseline=$BASELINE_BIN")
builds+=("this=$bin")
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
python3 scripts/bench/big.py "${1:-100000}" "${2:-1000000}" "${3:-3}" "${builds[@]}"
