#!/usr/bin/env python3
"""Big plans, measured (scripts/bench/big.sh runs this; see docs/performance.md).

For each rigmind build given (a baseline and the build under test, side by side,
the rounds interleaved so that slow moments of a shared machine fall on both):

  - submit: a brain on a fresh root with no workers, then `rigmind submit` of a
    fan-out of N independent tasks; the clock runs from just before `submit` until
    every task is in tasks/queue/ (the submission's manifest is gone and queue/ holds
    N files). The brain's RSS is sampled meanwhile: peak (VmHWM) and steady (VmRSS
    3 s after the last task was queued, past a full rescan).
  - the floor: N files of a task file's size created, written and renamed in one
    directory by Python, unflushed (what any design that gives each task its own
    file pays, whatever else it does), once per round.
  - validate: `rigmind validate` of a plan of M tasks (a first stage fanned out over
    M/2 items, an item-wise second stage, a fan-in report: M + 1 tasks), wall time and
    maximum RSS from /usr/bin/time.

Usage: big.py N M ROUNDS LABEL=BIN [LABEL=BIN ...]
"""

import glob
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def fanout_plan(path, n):
    with open(path, "w") as f:
        f.write("# Plan: big-fanout\n\n## Task: t\n- task_class: cpu\n- retries: 0\n")
        f.write("- for_each: [" + ", ".join(str(i) for i in range(1, n + 1)) + "]\n")
        f.write("- command: `true`\n")


def staged_plan(path, items):
    inline = "[" + ", ".join(str(i) for i in range(1, items + 1)) + "]"
    with open(path, "w") as f:
        f.write("# Plan: big-staged\n\n")
        f.write(f"## Task: first\n- task_class: cpu\n- for_each: {inline}\n- command: `true`\n\n")
        f.write("## Task: second\n- task_class: cpu\n- depends_on: first\n")
        f.write(f"- for_each: {inline}\n- command: `true`\n\n")
        f.write("## Task: report\n- task_class: cpu\n- depends_on: second\n- command: `true`\n")


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def queued_all(root, n):
    """True once the submission's batch exists, its manifest is gone and the queue
    holds n task files."""
    if not glob.glob(f"{root}/brain/batches/*.json"):
        return False
    if glob.glob(f"{root}/brain/private_tasks/*/.ready.json"):
        return False
    with os.scandir(f"{root}/tasks/queue") as it:
        count = sum(1 for e in it if not e.name.startswith("."))
    return count >= n


def measure_submit(binary, plan, n, work):
    root = tempfile.mkdtemp(dir=work)
    brain = subprocess.Popen([binary, "brain", "--root", root], stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(f"{root}/brain/brain.json"):
            time.sleep(0.02)
        t0 = time.monotonic()
        subprocess.run([binary, "submit", plan, "--root", root],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        # Counting 100,000 directory entries takes a while: only once the manifest
        # is gone, and the end is taken when the count first says all.
        while not queued_all(root, n):
            time.sleep(0.02)
        secs = time.monotonic() - t0
        time.sleep(3)
        steady = status_kb(brain.pid, "VmRSS")
        peak = status_kb(brain.pid, "VmHWM")
    finally:
        brain.send_signal(signal.SIGTERM)
        brain.wait()
        subprocess.run(["rm", "-rf", root])
    return secs, peak / 1024, steady / 1024


def measure_floor(n, work):
    d = tempfile.mkdtemp(dir=work)
    body = b"x" * 750
    t = time.monotonic()
    for i in range(n):
        tmp = f"{d}/.t{i}.tmp"
        f = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(f, body)
        os.close(f)
        os.rename(tmp, f"{d}/p05-{i:08}-abcdef-t[{i}].json")
    secs = time.monotonic() - t
    subprocess.run(["rm", "-rf", d])
    return secs


def measure_validate(binary, plan):
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", binary, "validate", plan],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall, kb = out.stderr.strip().splitlines()[-1].split()
    if out.returncode != 0:
        sys.exit(f"{binary} validate failed: {out.stderr}")
    return float(wall), int(kb) / 1024


def main():
    n, m, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    builds = [a.split("=", 1) for a in sys.argv[4:]]
    work = tempfile.mkdtemp()
    try:
        fan, staged = f"{work}/fan.md", f"{work}/staged.md"
        fanout_plan(fan, n)
        staged_plan(staged, m // 2)
        rows = {label: [] for label, _ in builds}
        floors = []
        for r in range(rounds):
            floors.append(measure_floor(n, work))
            print(f"round {r + 1} floor: {floors[-1]:.2f} s", file=sys.stderr)
            for label, binary in builds:
                s = measure_submit(binary, fan, n, work)
                v = measure_validate(binary, staged)
                rows[label].append(s + v)
                print(f"round {r + 1} {label}: submit {s[0]:.2f} s, brain peak {s[1]:.0f} MB, "
                      f"steady {s[2]:.0f} MB; validate {v[0]:.2f} s, {v[1]:.0f} MB", file=sys.stderr)
        report(rows, n, m, rounds)
        print()
        print(f"floor (N files created, written, renamed by Python, unflushed): "
              f"{statistics.median(floors):.2f} s ({min(floors):.2f}–{max(floors):.2f})")
    finally:
        subprocess.run(["rm", "-rf", work])


def report(rows, n, m, rounds):
    cols = ["submit → all queued s", "brain peak RSS MB", "brain steady RSS MB",
            "validate s", "validate max RSS MB"]
    print(f"fan-out: {n} tasks, no workers; validate: {m + 1} tasks; median of {rounds} rounds (range)")
    print()
    print("| build | " + " | ".join(cols) + " |")
    print("| --- |" + " --- |" * len(cols))
    for label, rs in rows.items():
        cells = []
        for i in range(len(cols)):
            v = [r[i] for r in rs]
            cells.append(f"{statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    labels = list(rows)
    if len(labels) > 1:
        base = rows[labels[0]]
        for label in labels[1:]:
            # Ratios within each round (side by side), then their median; none
            # where the baseline measured 0 (a validate too small to time).
            cells = []
            for i in range(len(cols)):
                pairs = [(r[i], b[i]) for r, b in zip(rows[label], base)]
                if any(b == 0 for _, b in pairs):
                    cells.append("n/a")
                else:
                    cells.append(f"{statistics.median([r / b for r, b in pairs]):.2f}×")
            print(f"| {label} / {labels[0]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
