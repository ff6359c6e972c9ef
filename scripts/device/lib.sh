# Shared by the scripts/device/ benchmark runners; source it with `out` set to the
# output directory. Each step's output goes to $out/NAME.txt, and its last lines,
# its exit code and its time to $out/summary.txt (and the terminal).

say() { echo "$*" | tee -a "$out/summary.txt"; }

# Runs one step under a time limit:  run NAME COMMAND...
# RUN_LIMIT (seconds, default 240) and RUN_TAIL (lines kept in the summary, 25).
run() {
  local name=$1; shift
  say "== $name: $*"
  local t0; t0=$(date +%s.%N)
  timeout "${RUN_LIMIT:-240}" "$@" > "$out/$name.txt" 2>&1; local rc=$?
  say "   rc=$rc in $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s"
  tail -"${RUN_TAIL:-25}" "$out/$name.txt" | tee -a "$out/summary.txt"
}

say "== $(date -u +%FT%TZ) on $(hostname): $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
