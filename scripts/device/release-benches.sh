#!/usr/bin/env bash
# The release-path benchmarks on a quiet machine (the GPU host), a baseline build
# and this one side by side, without a Rust toolchain: the release binaries come in
# BASE_DIR and THIS_DIR.
#   release-dependents.sh 20000 3   a fan-out behind one task: until queued, until flushed
#   dispatch.sh 2000 300            fan vs `xargs -P 2`, chain per link (each build twice,
#                                   interleaved)
#   big.sh 100000 1000000 1         100,000-task submit until queued, brain RSS, 1M validate
# Usage: scripts/device/release-benches.sh BASE_DIR THIS_DIR OUT_DIR
set -uo pipefail
base=$(cd "$1" && pwd); this=$(cd "$2" && pwd); out=$(mkdir -p "$3" && cd "$3" && pwd)
cd "$(dirname "$0")/../.."
RUN_LIMIT=300 RUN_TAIL=12
. scripts/device/lib.sh
export BASELINE_BIN=$base/rigmind RIGMIND_BIN=$this/rigmind
run release-dependents scripts/bench/release-dependents.sh 20000 3
for r in 1 2; do
  RIGMIND_BIN=$base/rigmind run "dispatch-base-$r" scripts/bench/dispatch.sh 2000 300
  RIGMIND_BIN=$this/rigmind run "dispatch-this-$r" scripts/bench/dispatch.sh 2000 300
done
run big scripts/bench/big.sh 100000 1000000 1
say "== done $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
