//! Issue 14, points 1 and 2, end to end: memory caps kill a runaway task alone
//! (as `oom`, with its peak), with cgroups and without; memory reservations keep
//! two tasks that do not fit together from running together; every task's peak
//! RSS is in its result.

mod common;

use common::{text, Rig};

/// `tail -n 1` keeps a line without a newline whole: it holds `mb` MB until its
/// input ends, `hold` seconds later.
fn hog(mb: u64, hold: u32) -> String {
    format!("(head -c {mb}M /dev/zero; sleep {hold}) | tail -n 1 > /dev/null")
}

/// Submits `plan` and waits for its batch: `rigmind wait`'s exit code.
fn run_plan(rig: &Rig, plan: &str) -> i32 {
    let plan = rig.write("plan.md", plan);
    let batch = rig.submit(&plan);
    rig.wait(&batch)
}

/// The line the worker `id` said about memory caps at its start.
fn cap_line(rig: &Rig, id: &str) -> String {
    let said = std::fs::read(rig.dir.path().join(format!("{id}.stderr"))).unwrap_or_default();
    text(&said)
        .lines()
        .find(|l| l.contains("memory caps by"))
        .unwrap_or("(no line about memory caps)")
        .to_string()
}

fn runaway_is_killed_alone(no_cgroup: bool) {
    let mut rig = Rig::new();
    if no_cgroup {
        rig.env.push(("RIGMIND_NO_CGROUP".into(), "1".into()));
    }
    rig.start_with_config("[safety]\nmem_limit_factor = 2\n", &["w1", "w2"]);
    let plan = format!(
        "# Plan: caps\n\n\
         ## Task: runaway\n- task_class: cpu\n- retries: 0\n- mem_limit_mb: 100\n- command: `{}`\n\n\
         ## Task: sibling\n- task_class: cpu\n- mem_mb: 200\n- command: `{}; echo ok > sibling.txt`\n\n\
         ## Task: after\n- task_class: cpu\n- depends_on: sibling\n- command: `echo after > after.txt`\n",
        hog(400, 30),
        hog(150, 2),
    );
    let code = run_plan(&rig, &plan);
    assert_ne!(code, 0, "the batch has a failed task");
    let said = cap_line(&rig, "w1");
    eprintln!("memory caps on this machine: {said}");
    if no_cgroup {
        assert!(said.contains("RIGMIND_NO_CGROUP is set"), "{said}");
    }
    let runaway = rig.task("failed", "runaway");
    assert_eq!(runaway["failure_kind"], "oom", "{runaway:#}");
    let error = runaway["error"].as_str().unwrap();
    assert!(
        error.starts_with("oom: past its memory cap of 100 MB"),
        "{error}"
    );
    assert_eq!(runaway["mem_cap_mb"], 100);
    assert!(
        runaway["elapsed_seconds"].as_f64().unwrap() < 25.0,
        "killed at once"
    );
    assert!(
        runaway["peak_rss_mb"].as_u64().unwrap() >= 90,
        "{runaway:#}"
    );
    // The sibling ran to its end under its own cap (mem_mb × 2), and so did the
    // task after it: the worker lived on.
    let sibling = rig.task("complete", "sibling");
    assert_eq!(sibling["mem_cap_mb"], 400);
    assert!(
        sibling["peak_rss_mb"].as_u64().unwrap() >= 150,
        "{sibling:#}"
    );
    if !no_cgroup {
        // Without a cgroup a task over before the runner's first look has no
        // peak (no memory.peak, no rusage of a std-spawned command).
        assert!(rig.task("complete", "after")["peak_rss_mb"].is_u64());
    }
    assert_eq!(rig.await_file("after.txt"), "after\n");
    assert!(rig.all_alive(), "brain and workers live on");
    let failed = rig.decisions_with(&["runaway", "oom"]);
    assert!(!failed.is_empty(), "{:?}", rig.decisions());
}

#[test]
fn a_runaway_task_is_killed_as_oom_while_its_sibling_and_the_worker_finish() {
    runaway_is_killed_alone(false);
}

#[test]
fn without_cgroups_the_runner_polls_and_kills_past_the_cap_too() {
    runaway_is_killed_alone(true);
}

/// `(start, end)` of each task of the journal's `start NAME T` / `end NAME T` lines.
fn spans(journal: &str) -> Vec<(String, f64, f64)> {
    let mut starts = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for l in journal.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let t: f64 = f[2].parse().unwrap();
        match f[0] {
            "start" => {
                starts.insert(f[1].to_string(), t);
            }
            _ => out.push((f[1].to_string(), starts[f[1]], t)),
        }
    }
    out
}

#[test]
fn two_reservations_that_do_not_fit_together_never_run_together() {
    let mut rig = Rig::new();
    // A 16 GB box with 12 GB available, whatever this machine has.
    let meminfo = rig.write(
        "meminfo",
        "MemTotal:       16318252 kB\nMemFree:         8000000 kB\nMemAvailable:   12582912 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n",
    );
    rig.env
        .push(("RIGMIND_MEMINFO".into(), meminfo.display().to_string()));
    // The group lets three run at once: only memory keeps them apart. Its
    // tasks reserve 10 GB each (the group's mem_mb), the small one 1 GB.
    let config = "[safety]\nmin_free_ram_mb = 1024\n\n[groups]\nwhisper_large = { slots = 3, mem_mb = 10240 }\n";
    rig.start_with_config(config, &["w1", "w2", "w3"]);
    let step = "echo \"start $RIGMIND_STEM $(date +%s.%N)\" >> journal; sleep 1; echo \"end $RIGMIND_STEM $(date +%s.%N)\" >> journal";
    let plan = format!(
        "# Plan: whisper\n\n\
         ## Task: transcribe\n- task_class: cpu\n- group: whisper_large\n- for_each: [a, b, c]\n- command: `{step}`\n\n\
         ## Task: small\n- task_class: cpu\n- mem_mb: 1024\n- command: `echo ok > small.txt`\n"
    );
    assert_eq!(run_plan(&rig, &plan), 0);
    let journal = std::fs::read_to_string(rig.dir.path().join("journal")).unwrap();
    let spans = spans(&journal);
    assert_eq!(spans.len(), 3, "{journal}");
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let overlap = a.1 < b.2 && b.1 < a.2;
            assert!(!overlap, "{a:?} and {b:?} ran together:\n{journal}");
        }
    }
    let tasks = rig.tasks_in("complete");
    let said: String = ["w1", "w2", "w3"]
        .iter()
        .map(|w| text(&std::fs::read(rig.dir.path().join(format!("{w}.stderr"))).unwrap()))
        .collect();
    assert!(
        said.contains("memory: a task reserving mem_mb = 10240 waits"),
        "a worker says why a task waits:\n{said}"
    );
    for t in tasks.iter().filter(|t| t["executor"] != "brain") {
        let want = if t["name"] == "small" { 1024 } else { 10240 };
        assert_eq!(t["mem_mb"], want, "{t:#}");
        assert!(
            t["peak_rss_mb"].is_u64(),
            "every result has its peak: {t:#}"
        );
    }
}
