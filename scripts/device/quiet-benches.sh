#!/usr/bin/env bash
# The speed benchmarks on a quiet machine (the GPU host: 16 cores nobody else uses),
# without a Rust toolchain: the release binaries come in BIN_DIR.
#   dispatch.sh 2000 300      fan vs `xargs -P 2`, chain per link
#   big.sh 100000 1000000 1   100,000-task submit until queued, brain RSS, 1M validate
#   round_time                one adaptive decision round at 100,000 jobs (issue 12)
#   live-vs-sim.sh            stage-bursts, scale 30, noise seeds 1 and 2 (issue 12)
# Usage: scripts/device/quiet-benches.sh BIN_DIR OUT_DIR
set -uo pipefail
bin=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd)
cd "$(dirname "$0")/../.."
export PATH="$bin:$PATH" RIGMIND_BIN="$bin/rigmind" RIGMIND_BIN_DIR="$bin"
. scripts/device/lib.sh
run dispatch scripts/bench/dispatch.sh 2000 300
run round_time "$bin/round_time"
run live-vs-sim-1 scripts/bench/live-vs-sim.sh stage-bursts 30 1
run live-vs-sim-2 scripts/bench/live-vs-sim.sh stage-bursts 30 2
run big scripts/bench/big.sh 100000 1000000 1
say "== done $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
