#!/usr/bin/env python3
"""Turns the raw output of scripts/bench/profile.sh into the tables of
docs/performance.md ("Profile"): perf stat per task, syscalls per task by process
and syscall (strace -ff -T), file operations per task, and the top perf samples.

Usage: profile_report.py OUT_DIR N_TASKS
"""
import collections
import glob
import os
import re
import sys

CALL = re.compile(r"^(\w+)\((.*)")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>")
TIME = re.compile(r"<(\d+\.\d+)>$")
EXECVE = re.compile(r'^execve\("([^"]+)"', re.M)
PROCS = ["brain", "cpu_1", "cpu_2"]


def perf_stat(out, n):
    """perf stat -x , files: CPU ms and context switches per task."""
    print("### perf stat (whole life of each process; per task = total / %d)\n" % n)
    print("| process | CPU ms (task-clock) | per task | context switches | per task | page faults |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ["xargs"] + PROCS:
        path = os.path.join(out, "perf-%s.csv" % name)
        if not os.path.exists(path):
            continue
        vals = {}
        for line in open(path):
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[0] and not line.startswith("#"):
                try:
                    vals[parts[2]] = float(parts[0])
                except ValueError:
                    pass
        clock, cs = vals.get("task-clock", 0.0), vals.get("context-switches", 0.0)
        label = "xargs -P 2 + its bash (baseline)" if name == "xargs" else name + " (+ its tasks' bash)" if name != "brain" else name
        print("| %s | %.0f | %.3f | %.0f | %.2f | %.0f |" % (
            label, clock, clock / n, cs, cs / n, vals.get("page-faults", 0.0)))
    print()


def read_trace(path):
    """(calls, seconds) by syscall name for one strace -ff file, and its text."""
    calls, secs = collections.Counter(), collections.Counter()
    text = open(path, errors="replace").read()
    for line in text.splitlines():
        r = RESUMED.match(line)
        m = CALL.match(line)
        name = r.group(1) if r else m.group(1) if m else None
        if name is None:
            continue
        if m:
            calls[name] += 1
        t = TIME.search(line)
        if t:
            secs[name] += float(t.group(1))
    return calls, secs, text


def file_ops(text):
    """File operations in one trace's text, by kind."""
    ops = collections.Counter()
    for line in text.splitlines():
        m = CALL.match(line)
        if not m:
            continue
        name, args = m.groups()
        if name in ("openat", "open") and "O_CREAT" in args:
            ops["open with O_CREAT (see below)"] += 1
        elif name in ("openat", "open"):
            ops["open (no create)"] += 1
        elif name.startswith("rename"):
            ops["rename"] += 1
        elif name in ("fsync", "fdatasync", "syncfs", "sync_file_range"):
            ops[name] += 1
        elif name.startswith("unlink"):
            ops["unlink"] += 1
        elif name.startswith("mkdir") or name == "rmdir":
            where = "a cgroup" if "/sys/fs/cgroup" in args else "a directory"
            ops["%s (%s)" % ("rmdir" if name == "rmdir" else "mkdir", where)] += 1
        elif name in ("statx", "newfstatat", "fstat", "stat", "lstat"):
            ops["stat (statx/newfstatat/fstat)"] += 1
        elif name == "getdents64":
            ops["getdents64 (directory listing)"] += 1
        elif name == "flock":
            ops["flock"] += 1
    return ops


def is_task_process(text):
    """A forked task process: it executes something other than rigmind (the
    process's own first thread executes rigmind itself)."""
    return any(not p.endswith("/rigmind") for p in EXECVE.findall(text))


def inotify_reads(texts):
    """(reads with events, reads that found none) on the inotify fds of one
    process; an fd counts from its inotify_init1 on (it may have served a file
    before)."""
    fds = set()
    for text in texts:
        fds.update(re.findall(r"^inotify_init1\(.*\)\s+= (\d+)", text, re.M))
    full = empty = 0
    for text in texts:
        init = re.search(r"^inotify_init1\(", text, re.M)
        if init:
            text = text[init.start():]
        for fd in fds:
            for line in re.findall(r"^read\(%s, .*$" % fd, text, re.M):
                if "EAGAIN" in line:
                    empty += 1
                else:
                    full += 1
    return full, empty


def created(text):
    """openat calls with O_CREAT in one trace, by what they open."""
    kinds = collections.Counter()
    for m in re.finditer(r'^openat\([^"]*"([^"]*)", ([A-Z_|]*O_CREAT[A-Z_|]*)', text, re.M):
        path, flags = m.groups()
        name = os.path.basename(path)
        if "O_EXCL" in flags and name.endswith(".tmp"):
            kinds["new file: a temporary, renamed in"] += 1
        elif "O_APPEND" in flags:
            log = name if name in ("events.jsonl", "brain_decisions.log") else "a task's log"
            kinds["append: opens %s" % log] += 1
        else:
            kinds["other (%s)" % re.sub(r"[0-9]+", "N", name)] += 1
    return kinds


def strace_tables(out, n):
    """Syscalls per task: each process's own threads and the task processes apart."""
    per = {}
    for name in PROCS:
        files = glob.glob(os.path.join(out, "strace-%s" % name, "t.*"))
        own_c, own_s, task_c, task_s = (collections.Counter() for _ in range(4))
        own_texts, ops, made = [], collections.Counter(), collections.Counter()
        tasks = 0
        for f in files:
            c, s, text = read_trace(f)
            if is_task_process(text):
                tasks += 1
                task_c.update(c)
                task_s.update(s)
            else:
                own_c.update(c)
                own_s.update(s)
                own_texts.append(text)
                ops.update(file_ops(text))
                made.update(created(text))
        per[name] = dict(own_c=own_c, own_s=own_s, task_c=task_c, task_s=task_s,
                         ops=ops, made=made, threads=len(files) - tasks, tasks=tasks,
                         inotify=inotify_reads(own_texts))
    print("### Syscalls per task (strace -ff -T; %d tasks)\n" % n)
    print("| process | own threads | own syscalls per task | own syscall ms per task (strace-inflated) "
          "| inotify reads per task (with events / empty) | task processes forked | their syscalls per task |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, p in per.items():
        tc = sum(p["task_c"].values())
        print("| %s | %d | %.1f | %.3f | %.2f / %.2f | %d | %s |" % (
            name, p["threads"], sum(p["own_c"].values()) / n,
            sum(p["own_s"].values()) * 1000 / n, p["inotify"][0] / n, p["inotify"][1] / n,
            p["tasks"],
            "%.1f" % (tc / p["tasks"]) if p["tasks"] else "-"))
    print()
    workers = [per[w] for w in PROCS[1:]]
    both = lambda key: sum((w[key] for w in workers), collections.Counter())
    print("By syscall, per task (own threads only; the workers summed):\n")
    print("| syscall | brain calls | workers calls | brain ms | workers ms |")
    print("| --- | --- | --- | --- | --- |")
    wc, ws = both("own_c"), both("own_s")
    bc, bs = per["brain"]["own_c"], per["brain"]["own_s"]
    names = sorted(set(bc) | set(wc), key=lambda k: -(bc[k] + wc[k]))
    for k in names[:25]:
        print("| %s | %.2f | %.2f | %.3f | %.3f |" % (
            k, bc[k] / n, wc[k] / n, bs[k] * 1000 / n, ws[k] * 1000 / n))
    print()
    print("File operations per task (own threads):\n")
    print("| operation | brain | workers |")
    print("| --- | --- | --- |")
    wo, bo = both("ops"), per["brain"]["ops"]
    for k in sorted(set(wo) | set(bo)):
        print("| %s | %.2f | %.2f |" % (k, bo[k] / n, wo[k] / n))
    print()
    print("Of those, the opens with O_CREAT, per task:\n")
    print("| what | brain | workers |")
    print("| --- | --- | --- |")
    wm, bm = both("made"), per["brain"]["made"]
    for k in sorted(set(wm) | set(bm), key=lambda k: -(wm[k] + bm[k])):
        print("| %s | %.2f | %.2f |" % (k, bm[k] / n, wm[k] / n))
    print()
    tc = both("task_c")
    print("A task process (fork to exit: the child before exec, then `bash -c true`), "
          "per task: %s\n" % ", ".join("%s %.1f" % (k, v / n) for k, v in tc.most_common(8)))


def top_samples(out):
    for name in ("brain", "cpu_1"):
        path = os.path.join(out, "record-%s.top" % name)
        if os.path.exists(path) and os.path.getsize(path):
            print("### perf record, %s: top symbols (self, cpu-clock samples)\n" % name)
            print("```")
            for line in open(path):
                # perf pads the dso,symbol columns with trailing "-" fields
                print(re.sub(r"(\s+-)+\s*$", "", line.rstrip()))
            print("```\n")


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    perf_stat(out, n)
    strace_tables(out, n)
    top_samples(out)


if __name__ == "__main__":
    main()
