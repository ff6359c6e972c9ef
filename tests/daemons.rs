//! A brain and workers started separately, driven by `rigmind submit`, `wait`,
//! `status` and `retry`, as a user runs them on a rig.

mod common;

use common::{eventually, text, Rig};

#[test]
fn submit_wait_and_status_with_two_batches_at_once() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &["--classes", "cpu,script"]);
    rig.start_worker("w2", &["--classes", "cpu,script"]);
    let order = rig.fixture("order.md");
    let hello = rig.write(
        "two/hello.md",
        "# Plan: second\n\n## Task: a\n- task_class: cpu\n- command: `echo a > a.txt`\n\n\
         ## Task: b\n- task_class: cpu\n- depends_on: a\n- command: `cat a.txt > b.txt`\n",
    );
    let b1 = rig.submit(&order);
    let b2 = rig.submit(&hello);
    assert_ne!(b1, b2);
    assert_eq!(rig.wait(&b1), 0);
    assert_eq!(rig.wait(&b2), 0);
    assert_eq!(
        std::fs::read_to_string(rig.dir.path().join("two/b.txt")).unwrap(),
        "a\n"
    );

    let out = rig.rigmind(&["status", "--json"]);
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let batches = s["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    assert!(batches.iter().all(|b| b["state"] == "complete"));
    // 14 + 2 tasks; the two execute_plan requests are not tasks (issue 9).
    assert_eq!(s["queues"]["complete"]["cpu"], 16, "{s}");
    assert_eq!(s["requests"], 0, "{s}");
    assert!(s["queues"]["queue"].as_object().unwrap().is_empty());
    assert_eq!(s["brain"]["alive"], true);
    // Worker state files are heartbeats: they catch up within a second or so.
    eventually(
        10,
        "both workers idle with 16 tasks done between them",
        || {
            let s: serde_json::Value =
                serde_json::from_slice(&rig.rigmind(&["status", "--json"]).stdout).unwrap();
            let workers = s["workers"].as_array().unwrap().clone();
            let done: u64 = workers
                .iter()
                .map(|w| w["tasks_done"].as_u64().unwrap())
                .sum();
            workers.len() == 2
                && workers
                    .iter()
                    .all(|w| w["alive"] == true && w["state"] == "idle")
                && done == 16
        },
    );

    let table = text(&rig.rigmind(&["status"]).stdout);
    for needle in ["brain: running", "w1", "w2", &b1, &b2, "complete"] {
        assert!(table.contains(needle), "{needle} missing from:\n{table}");
    }

    // SIGTERM: both exit 0 and say so in their state files.
    assert_eq!(rig.stop("w1"), Some(0));
    assert_eq!(rig.stop("brain"), Some(0));
    let w1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rig.root().join("workers/w1.json")).unwrap())
            .unwrap();
    assert_eq!(w1["state"], "stopped");
    let s: serde_json::Value =
        serde_json::from_slice(&rig.rigmind(&["status", "--json"]).stdout).unwrap();
    assert_eq!(s["brain"]["alive"], false);
    let w1 = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker_id"] == "w1")
        .unwrap();
    assert_eq!(w1["alive"], false);
}

#[test]
fn submit_before_the_brain_starts_waits_in_the_queue() {
    let mut rig = Rig::new();
    let plan = rig.fixture("long_task.md");
    let out = rig.rigmind(&["submit", plan.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("no brain is running"),
        "{}",
        text(&out.stderr)
    );
    let batch = text(&out.stdout).trim().to_string();
    assert_eq!(
        rig.names_in("queue").len(),
        1,
        "the execute_plan task waits"
    );
    // wait gives up with 2 on its timeout.
    let out = rig.rigmind(&["wait", &batch, "--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(2));
    rig.start_brain();
    rig.start_worker("w1", &[]);
    assert_eq!(rig.wait(&batch), 0);
}

#[test]
fn retry_and_a_hand_move_bring_failed_tasks_and_their_dependents_back() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.fixture("gated.md");
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 1, "needs_flag fails without the flag");
    assert_eq!(
        rig.task("failed", "follows")["failure_kind"],
        "dependency_failed"
    );

    // Retrying the dependent alone is refused: its dependency is what failed.
    let out = rig.rigmind(&["retry", "follows"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("retry that task"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(rig.dir.path().join("flag"), "").unwrap();
    let out = rig.rigmind(&["retry", "needs_flag"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("requeued needs_flag"));
    assert_eq!(rig.wait(&batch), 0);
    rig.task("complete", "follows");
    assert_eq!(
        rig.decisions_with(&["decision=revive", "task=follows"])
            .len(),
        1
    );
    assert_eq!(
        rig.decisions_with(&["decision=batch_reopened", &batch])
            .len(),
        1
    );

    // The same with a plain `mv`, as the queue-layout spec promises.
    let plan2 = rig.write("again/gated.md", &std::fs::read_to_string(&plan).unwrap());
    let batch2 = rig.submit(&plan2);
    assert_eq!(rig.wait(&batch2), 1);
    std::fs::write(rig.dir.path().join("again/flag"), "").unwrap();
    let name = rig
        .names_in("failed")
        .into_iter()
        .find(|n| n.contains(&batch2) && n.contains("needs_flag"))
        .unwrap();
    let failed = rig.root().join("tasks/failed").join(&name);
    std::fs::rename(&failed, rig.root().join("tasks/queue").join(&name)).unwrap();
    assert_eq!(rig.wait(&batch2), 0);
}

#[test]
fn environment_pinning_and_brain_executed_tasks() {
    let mut rig = Rig::new();
    // No GPU here: fake ones (tests/gpu.rs covers them; the device runs real ones).
    rig.env = vec![("RIGMIND_FAKE_GPUS".into(), "4x6144".into())];
    rig.start_brain();
    rig.start_worker("gpu_worker", &["--gpu", "3", "--classes", "script"]);
    let plan = rig.fixture("env.md");
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    let env = std::fs::read_to_string(rig.dir.path().join("env.txt")).unwrap();
    let t = rig.task("complete", "show_env");
    for line in [
        format!("task_id={}", t["task_id"].as_str().unwrap()),
        "task_name=show_env".to_string(),
        format!("batch_id={batch}"),
        "worker_id=gpu_worker".to_string(),
        "gpu=3".to_string(),
        // By UUID, so that CUDA and NVML agree whatever their numbering.
        "cuda=GPU-00000000-fake-4000-8000-000000000003".to_string(),
        "greeting=hello rig".to_string(),
        format!("pwd={}", rig.dir.path().canonicalize().unwrap().display()),
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "missing {line:?} in:\n{env}"
        );
    }
    assert_eq!(t["gpu"], "3");
    let on_brain = rig.task("complete", "on_brain");
    assert_eq!(on_brain["worker_id"], "brain");
    assert_eq!(
        std::fs::read_to_string(rig.dir.path().join("brain.txt")).unwrap(),
        "ran by brain\n"
    );
}

#[test]
fn sigterm_lets_a_worker_finish_its_task_then_exit_0() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.fixture("long_task.md");
    let batch = rig.submit(&plan);
    eventually(20, "the task to start", || {
        rig.names_in("processing")
            .iter()
            .any(|n| n.ends_with("-long.json"))
    });
    assert_eq!(rig.stop("w1"), Some(0));
    rig.task("complete", "long");
    assert_eq!(
        std::fs::read_to_string(rig.dir.path().join("long.txt")).unwrap(),
        "finished\n"
    );
    assert_eq!(rig.wait(&batch), 0);
}

#[test]
fn a_restarted_brain_carries_on_from_the_files() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.fixture("chain.md");
    let batch = rig.submit(&plan);
    eventually(20, "task two to run", || {
        rig.names_in("processing")
            .iter()
            .any(|n| n.ends_with("-two.json"))
    });
    // kill -9 the brain mid-batch, then start a new one on the same root.
    let i = rig.children.iter().position(|(w, _)| w == "brain").unwrap();
    let (_, mut brain) = rig.children.remove(i);
    brain.kill().unwrap();
    brain.wait().unwrap();
    rig.start_brain();
    assert_eq!(rig.wait(&batch), 0);
    assert_eq!(
        std::fs::read_to_string(rig.dir.path().join("chain.txt")).unwrap(),
        "done\n"
    );
    for name in ["one", "two", "three", "four"] {
        let releases = rig.decisions_with(&["decision=release", &format!("task={name} ")]);
        assert_eq!(
            releases.len(),
            1,
            "{name} released {} times",
            releases.len()
        );
    }
    assert_eq!(rig.decisions_with(&["decision=start"]).len(), 2);
}

#[test]
fn validate_reports_errors_with_lines_and_allows_warnings() {
    let rig = Rig::new();
    let bad = rig.fixture("invalid.md");
    let good = rig.fixture("inferred.md");
    let out = rig.rigmind(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid.md:9: task 'summarize' depends on unknown task 'transcibe'"),
        "{stderr}"
    );
    let out = rig.rigmind(&["validate", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("inferred.md:3: warning:"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("valid plan 'inferred', 1 tasks, 1 warning(s)"));
    // Several plans: one bad one makes the whole call fail.
    let out = rig.rigmind(&["validate", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn an_inferred_class_is_fixed_and_logged() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &["--classes", "cpu,script"]);
    let plan = rig.fixture("inferred.md");
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    let t = rig.task("complete", "embed_docs");
    assert_eq!(t["task_class"], "script");
    assert_eq!(t["fix_applied"], "task_class inferred as script");
    assert_eq!(
        rig.decisions_with(&["decision=fix", "task=embed_docs"])
            .len(),
        1
    );
}

/// A brain and a worker started with a relative `--root` (the default is the
/// relative `shared`) act on file events, not only on their full rescans (set to
/// ten minutes here): the watcher names its paths absolute, and a brain that
/// compared them with its relative directories saw no event of its queue.
#[test]
fn a_relative_root_is_followed_by_events_not_only_by_rescans() {
    let mut rig = Rig::new();
    for (what, exe, id) in [
        ("brain", common::BRAIN, None),
        ("w1", common::WORKER, Some("w1")),
    ] {
        let mut args = vec!["--root", "root", "--rescan", "600"];
        if let Some(id) = id {
            args.extend(["--id", id]);
        }
        let child = std::process::Command::new(exe)
            .current_dir(rig.dir.path())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(rig.dir.path().join(format!("{what}.stderr"))).unwrap())
            .spawn()
            .unwrap();
        rig.children.push((what.to_string(), child));
    }
    eventually(20, "the brain and the worker to be up", || {
        rig.root().join("brain/brain.json").exists() && rig.root().join("workers/w1.json").exists()
    });
    let plan = rig.write(
        "plan.md",
        "# Plan: rel\n\n## Task: a\n- task_class: cpu\n- command: `echo a > a.txt`\n\n\
         ## Task: b\n- task_class: cpu\n- depends_on: a\n- command: `cat a.txt > b.txt`\n",
    );
    let batch = rig.submit(&plan);
    // Well inside the ten minutes a rescan would take.
    eventually(60, "the batch to complete from events alone", || {
        rig.dir.path().join("b.txt").exists()
    });
    assert_eq!(rig.wait(&batch), 0);
}
