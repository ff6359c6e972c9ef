#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and PyTorch: start a brain and one worker pinned
# to GPU ${1:-0}, run scripts/gpu/gpu-check.md, and print what the task saw beside
# nvidia-smi's list. Usage: scripts/gpu/check.sh [GPU] (rigmind on PATH, or built).
set -euo pipefail
cd "$(dirname "$0")"
gpu=${1:-0}
bin=$(command -v rigmind || echo ../../target/release/rigmind)
root=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$root"' EXIT
"$bin" brain --root "$root" 2> "$root/brain.log" &
"$bin" worker --id "gpu$gpu" --gpu "$gpu" --classes script,cpu --root "$root" 2> "$root/worker.log" &
batch=$("$bin" submit gpu-check.md --root "$root")
"$bin" wait "$batch" --root "$root" --timeout 240
cat out.txt
