# What the benchmarks of scripts/bench share; sourced (from the repository root),
# not run.

# Now, in seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# The value of the arithmetic on stdin (`echo "$a / $b" | calc`), with awk:
# bc is not on every machine the benchmarks run on.
calc() { awk "BEGIN { printf \"%.6f\\n\", $(cat) }"; }

# Builds the release `rigmind` and prints its path (release/ under
# $CARGO_TARGET_DIR, else under the repository's target/); fails when the build
# does. RIGMIND_BIN=PATH measures another build instead (a before/after
# comparison: its brain and worker lie beside it).
release_rigmind() {
  if [ -n "${RIGMIND_BIN:-}" ]; then
    echo "$RIGMIND_BIN"
    return
  fi
  cargo build --release --quiet --bin rigmind >&2 && echo "${CARGO_TARGET_DIR:-$PWD/target}/release/rigmind"
}

# Prints the `## Task:` section of a cpu task fanned out over the inline list
# [1, 2, ..., N]:  cpu_fanout_task NAME N COMMAND [FIELD...]
# Each FIELD (`key: value`) becomes an item after task_class.
cpu_fanout_task() {
  local name=$1 n=$2 cmd=$3 field
  shift 3
  echo "## Task: $name"
  echo "- task_class: cpu"
  for field in "$@"; do
    echo "- $field"
  done
  printf -- "- for_each: ["
  seq -s ', ' 1 "$n" | tr -d '\n'
  echo "]"
  echo "- command: \`$cmd\`"
}

# Writes WORK/plan.md (plan NAME-N: N `true` tasks, one cpu task fanned out, no
# retries) and starts a brain and W cpu workers (`cpu_1`...) on WORK/root, their
# stderr in WORK/*.log; appends their pids to the caller's `pids` array.
#   fanout_rig BIN WORK NAME N W
fanout_rig() {
  local bin=$1 work=$2 name=$3 n=$4 workers=$5 i
  {
    echo "# Plan: $name-$n"
    echo
    cpu_fanout_task t "$n" true "retries: 0"
  } > "$work/plan.md"
  "$bin" brain --root "$work/root" 2> "$work/brain.log" &
  pids+=($!)
  for i in $(seq 1 "$workers"); do
    "$bin" worker --root "$work/root" --id "cpu_$i" --classes cpu,script 2> "$work/cpu_$i.log" &
    pids+=($!)
  done
}
