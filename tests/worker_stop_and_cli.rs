//! Issue 9, slice C: a worker's graceful stop, `rigmind wait` on unknown batches,
//! the counts `status` and `run` show, and the checks and help of the three
//! binaries — all through the real binaries on a temp root.

mod common;

use std::process::{Command, Stdio};

use common::{eventually, text, Rig, BRAIN, RIGMIND, WORKER};
use serde_json::Value;

/// A task that sleeps 30 s on its first run and finishes at once on any later
/// one, so that a test can interrupt it and then see the batch complete.
const LONG_ONCE: &str = "# Plan: long\n\n## Task: long\n- task_class: cpu\n- retries: 0\n- command: `if [ -e started ]; then echo again > again.txt; exit 0; fi; touch started; sleep 30`\n";

fn stderr_of(rig: &Rig, what: &str) -> String {
    std::fs::read_to_string(rig.dir.path().join(format!("{what}.stderr"))).unwrap_or_default()
}

/// A stop asked for (SIGTERM or SIGINT) past `--grace` puts the running task back
/// into the queue with its attempts unchanged and no retry spent; nothing is filed
/// as lost, and a new worker completes the batch although `retries` is 0.
fn stop_requeues_without_spending_a_retry(sig: i32) {
    let mut rig = Rig::new();
    let plan = rig.write("long.md", LONG_ONCE);
    rig.start_brain();
    rig.start_worker("w1", &["--grace", "0.5"]);
    let batch = rig.submit(&plan);
    // Running: the first run has started its command.
    rig.await_file("started");
    eventually(30, "the start record in processing/", || {
        rig.tasks_in("processing")
            .iter()
            .any(|t| t["name"] == "long" && t["worker_id"] == "w1")
    });

    assert_eq!(rig.signal("w1", sig), Some(0));
    let log = stderr_of(&rig, "w1");
    assert!(
        log.contains("put back into the queue unfinished") && log.contains("spends no retry"),
        "{log}"
    );
    assert!(!log.contains("taken from this runner"), "{log}");
    assert!(rig.names_in("processing").is_empty());
    let back = rig.task("queue", "long");
    assert_eq!(back["status"], "queued");
    assert_eq!(back["attempts"].as_u64().unwrap_or(0), 0, "{back}");
    assert_eq!(back["retry_count"].as_u64().unwrap_or(0), 0, "{back}");
    assert!(back["worker_session"].is_null(), "{back}");

    rig.start_worker("w2", &[]);
    assert_eq!(rig.wait(&batch), 0, "{:?}", rig.decisions());
    assert_eq!(rig.await_file("again.txt").trim(), "again");
    let done = rig.task("complete", "long");
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(done["worker_id"], "w2");
    assert!(rig.decisions_with(&["decision=lost"]).is_empty());
    assert!(rig.decisions_with(&["lost_worker"]).is_empty());
}

#[test]
fn sigterm_past_the_grace_requeues_the_task_without_spending_a_retry() {
    stop_requeues_without_spending_a_retry(libc::SIGTERM);
}

#[test]
fn sigint_past_the_grace_requeues_the_task_without_spending_a_retry() {
    stop_requeues_without_spending_a_retry(libc::SIGINT);
}

#[test]
fn wait_on_an_unknown_batch_fails_at_once_and_waits_for_a_queued_submission() {
    let mut rig = Rig::new();
    let plan = rig.write(
        "one.md",
        "# Plan: one\n\n## Task: a\n- task_class: cpu\n- command: `true`\n",
    );
    // No brain yet: the submission waits in queue/, and its id is known.
    let batch = rig.submit(&plan);
    let out = rig.rigmind(&["wait", &batch, "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("still running"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !text(&out.stderr).contains("no batch"),
        "{}",
        text(&out.stderr)
    );

    // An id nobody submitted is an error at once, naming it, the root and the
    // ids that are known.
    let out = rig.rigmind(&["wait", "ffffff", "--timeout", "30"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no batch ffffff under"), "{err}");
    assert!(err.contains(&rig.root().display().to_string()), "{err}");
    assert!(err.contains(&format!("known batches: {batch}")), "{err}");
    assert!(!text(&out.stdout).contains("still running"));

    rig.start_brain();
    rig.start_worker("w1", &[]);
    assert_eq!(rig.wait(&batch), 0);
    let out = rig.rigmind(&["wait", "abc123", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&format!("no batch abc123 under {}", rig.root().display())));
}

#[test]
fn wait_on_an_unknown_batch_under_an_empty_root_says_none_was_submitted() {
    let rig = Rig::new();
    let out = rig.rigmind(&["wait", "0a0a0a", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("no batch 0a0a0a under"), "{err}");
    assert!(err.contains("no batch has been submitted there"), "{err}");
}

/// The text table's row for `dir`: its total.
fn dir_total(status: &str, dir: &str) -> Option<usize> {
    status.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(dir)).then(|| w.next()?.parse().ok())?
    })
}

#[test]
fn status_does_not_count_requests_as_tasks() {
    let mut rig = Rig::new();
    let plan = rig.write(
        "five.md",
        "# Plan: five\n\n## Task: t\n- task_class: cpu\n- for_each: [a, b, c, d, e]\n- command: `true`\n",
    );
    let batch = rig.submit(&plan);
    // Before a brain runs, the submission is a request waiting, not a task.
    let out = rig.rigmind(&["status"]);
    let s = text(&out.stdout);
    assert_eq!(dir_total(&s, "queue"), Some(0), "{s}");
    assert_eq!(dir_total(&s, "requests"), Some(1), "{s}");

    rig.start_brain();
    rig.start_worker("w1", &[]);
    assert_eq!(rig.wait(&batch), 0);
    let s = text(&rig.rigmind(&["status"]).stdout);
    assert_eq!(dir_total(&s, "complete"), Some(5), "{s}");
    assert_eq!(dir_total(&s, "requests"), None, "{s}");
    let j: Value = serde_json::from_slice(&rig.rigmind(&["status", "--json"]).stdout).unwrap();
    let complete: u64 = j["queues"]["complete"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(complete, 5, "{j}");
    assert_eq!(j["batches"][0]["counts"]["total"], 5);
}

#[test]
fn run_with_one_worker_never_reports_two_running() {
    let rig = Rig::new();
    let plan = rig.write(
        "chain.md",
        "# Plan: chain\n\n## Task: s\n- task_class: cpu\n- for_each: [a, b, c, d, e, f, g, h, i, j, k, l]\n- command: `sleep 0.3`\n",
    );
    let out = rig.rigmind(&["run", plan.to_str().unwrap(), "--workers", "1"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let progress: Vec<&str> = err.lines().filter(|l| l.contains(" running, ")).collect();
    assert!(progress.iter().any(|l| l.contains(" 1 running, ")), "{err}");
    assert!(
        progress
            .iter()
            .all(|l| l.contains(" 0 running, ") || l.contains(" 1 running, ")),
        "{err}"
    );
}

#[test]
fn a_task_waiting_for_its_retry_is_retrying_not_failed() {
    let rig = Rig::new();
    let plan = rig.write(
        "flaky.md",
        "# Plan: flaky\n\n## Task: flaky\n- task_class: cpu\n- retries: 2\n- command: `echo x >> runs.txt; exit 1`\n",
    );
    // `run` in the background, `status` polled meanwhile.
    let run = Command::new(RIGMIND)
        .args(["run", plan.to_str().unwrap(), "--workers", "1", "--root"])
        .arg(rig.root())
        .current_dir(rig.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen: Option<(Value, String)> = None;
    eventually(30, "a batch record with a task retrying", || {
        let out = rig.rigmind(&["status", "--json"]);
        let Ok(j) = serde_json::from_slice::<Value>(&out.stdout) else {
            return false;
        };
        let c = j["batches"][0]["counts"].clone();
        if c["retrying"] == 1 {
            seen = Some((c, text(&rig.rigmind(&["status"]).stdout)));
        }
        seen.is_some()
    });
    let (counts, table) = seen.unwrap();
    assert_eq!(counts["failed"], 0, "{counts}");
    assert!(table.contains("retrying"), "{table}");
    let out = run.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(" 1 retrying, "), "{err}");
    assert!(
        err.lines()
            .filter(|l| l.contains(" 1 retrying, "))
            .all(|l| l.contains(" 0 failed")),
        "{err}"
    );
    assert_eq!(rig.await_file("runs.txt").lines().count(), 3);
}

#[test]
fn run_refuses_an_unreasonable_worker_count_before_starting_anything() {
    let rig = Rig::new();
    let plan = rig.write(
        "one.md",
        "# Plan: one\n\n## Task: a\n- task_class: cpu\n- command: `true`\n",
    );
    for n in ["1000000", "0", "257", "many"] {
        let out = rig.rigmind(&["run", plan.to_str().unwrap(), "--workers", n]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{n}: {err}");
        assert!(err.contains("--workers"), "{err}");
        assert!(err.contains(n), "{err}");
        if n != "many" {
            assert!(err.contains("1 to 256"), "{err}");
        }
        assert!(!err.contains("starting"), "{err}");
    }
    // Refused while parsing the arguments: not even the root was made.
    assert!(!rig.root().exists());
    let help = text(&rig.rigmind(&["run", "--help"]).stdout);
    assert!(help.contains("1 to 256"), "{help}");
}

#[test]
fn worker_ids_are_checked_where_they_enter() {
    let rig = Rig::new();
    let long = "w".repeat(65);
    for (id, why) in [
        (".", "may not start with '.'"),
        (".hidden", "may not start with '.'"),
        ("", "may not be empty"),
        ("a/b", "only letters"),
        ("sp ace", "only letters"),
        (long.as_str(), "at most 64 bytes"),
    ] {
        let out = Command::new(WORKER)
            .args(["--id", id, "--root"])
            .arg(rig.root())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{id:?}: {err}");
        assert!(err.contains(&format!("worker id '{id}'")), "{err}");
        assert!(err.contains(why), "{id:?}: {err}");
    }
    // Accepted: 64 bytes, and dots after the first character.
    let ok = "w".repeat(64);
    for id in [ok.as_str(), "gpu0.a_b-c"] {
        let mut child = Command::new(WORKER)
            .args(["--id", id, "--root"])
            .arg(rig.root())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let state = rig.root().join(format!("workers/{id}.json"));
        eventually(30, "the worker's state file", || state.exists());
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }

    // `run` checks the ids rig.toml gives its workers before starting anything.
    rig.write("root/rig.toml", "[[gpu]]\nindex = 0\nworker = \".gpu0\"\n");
    let plan = rig.write(
        "one.md",
        "# Plan: one\n\n## Task: a\n- task_class: cpu\n- command: `true`\n",
    );
    let out = rig.rigmind(&["run", plan.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rig.toml") && err.contains("worker id '.gpu0'"),
        "{err}"
    );
    assert!(!rig.root().join("logs/brain.log").exists(), "{err}");
}

#[test]
fn a_missing_plan_is_reported_before_anything_starts_without_a_line_zero() {
    let rig = Rig::new();
    let missing = rig.dir.path().join("nope.md");
    let m = missing.to_str().unwrap();
    let out = rig.rigmind(&["run", m]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("cannot read {m}: ")), "{err}");
    assert!(!err.contains(":0:"), "{err}");
    assert!(!err.contains("starting"), "{err}");
    assert!(!rig.root().join("logs/brain.log").exists());

    let out = rig.rigmind(&["submit", m]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot read {m}: ")) && !err.contains(":0:"),
        "{err}"
    );

    // validate names the file, with no made-up line number.
    let out = rig.rigmind(&["validate", m]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!("{m}: ")) && !err.contains(":0:"),
        "{err}"
    );

    let dir = rig.dir.path().to_str().unwrap().to_string();
    let out = rig.rigmind(&["run", &dir]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot read {dir}: ")), "{err}");
}

#[test]
fn each_binary_has_its_own_help_and_rigmind_lists_every_command() {
    let help = |exe: &str, args: &[&str]| {
        let out = Command::new(exe).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        text(&out.stdout)
    };
    let brain = help(BRAIN, &["--help"]);
    let worker = help(WORKER, &["--help"]);
    let rigmind = help(RIGMIND, &["--help"]);
    assert!(brain.starts_with("brain: "), "{brain}");
    assert!(worker.starts_with("worker: "), "{worker}");
    assert!(worker.contains("--grace"), "{worker}");
    assert!(rigmind.starts_with("rigmind: "), "{rigmind}");
    for h in [&brain, &worker, &rigmind] {
        assert!(!h.contains("argument sets"), "{h}");
    }
    let commands = [
        "run", "submit", "wait", "status", "validate", "retry", "cancel", "gpus", "simulate",
        "brain", "worker",
    ];
    for c in commands {
        let line = rigmind
            .lines()
            .find(|l| l.split_whitespace().next() == Some(c))
            .unwrap_or_else(|| panic!("{c} is not listed:\n{rigmind}"));
        let description = line.trim_start()[c.len()..].trim();
        assert!(description.len() > 10, "{c} has no description: {line}");
    }
}

#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    let rig = Rig::new();
    std::fs::create_dir_all(rig.root().join("tasks/queue")).unwrap();
    // A reader that is gone before rigmind writes: `rigmind status | true`.
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills the two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: closing the read end we own; nothing else holds it.
    unsafe { libc::close(fds[0]) };
    use std::os::fd::FromRawFd;
    // SAFETY: the write end is ours and handed over exactly once.
    let write_end = unsafe { Stdio::from_raw_fd(fds[1]) };
    let out = Command::new(RIGMIND)
        .args(["status", "--root"])
        .arg(rig.root())
        .stdout(write_end)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
}

/// `rigmind logs`: a task's log by name, id or file name; `-f` follows a running
/// task's output and returns once the task is done; a name two tasks share is
/// refused with both listed.
#[test]
fn logs_shows_a_task_by_name_or_id_and_follows_it_while_it_runs() {
    let mut rig = Rig::new();
    let plan = rig.write(
        "talk.md",
        "# Plan: talk\n\n## Task: talk\n- task_class: cpu\n- retries: 0\n- command: `echo first; until [ -e go ]; do sleep 0.1; done; echo second`\n",
    );
    rig.start_brain();
    rig.start_worker("cpu1", &["--classes", "cpu"]);
    let batch = rig.submit(&plan);
    // Started: in processing/ (the plan's own `@execute_plan` passes there first).
    eventually(60, "talk running", || {
        rig.names_in("processing")
            .iter()
            .any(|n| n.ends_with("-talk.json"))
    });
    // Follow it: the first line is there, the second comes once the task goes on.
    let follow = Command::new(RIGMIND)
        .args(["logs", "talk", "-f", "--root"])
        .arg(rig.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(30, "the first line in the log", || {
        let out = rig.rigmind(&["logs", "talk"]);
        text(&out.stdout).contains("first")
    });
    rig.write("go", "");
    let out = follow.wait_with_output().unwrap();
    let followed = text(&out.stdout);
    assert!(
        out.status.success(),
        "{followed}{} processing: {:?} complete: {:?}",
        text(&out.stderr),
        rig.names_in("processing"),
        rig.names_in("complete")
    );
    let (first, second) = (followed.find("first"), followed.find("second"));
    assert!(first.is_some() && second > first, "{followed}");
    assert_eq!(rig.wait(&batch), 0);

    // By id (the log is found without reading task files) and by file name.
    let done = rig.task("complete", "talk");
    let by_id = rig.rigmind(&["logs", done["task_id"].as_str().unwrap()]);
    assert_eq!(text(&by_id.stdout), followed);
    let file = rig
        .names_in("complete")
        .into_iter()
        .find(|n| n.contains("talk"))
        .unwrap();
    assert_eq!(text(&rig.rigmind(&["logs", &file]).stdout), followed);

    // Two batches of the same plan: the name is ambiguous, and says so.
    let again = rig.submit(&plan);
    rig.write("go", "");
    assert_eq!(rig.wait(&again), 0);
    let out = rig.rigmind(&["logs", "talk"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("'talk' names 2 tasks; show one by its id"),
        "{err}"
    );
    assert!(err.contains(&batch) && err.contains(&again), "{err}");
    let out = rig.rigmind(&["logs", "nosuch"]);
    assert!(text(&out.stderr).contains("no task 'nosuch'"));
}

/// `rigmind drain`: the worker finishes the task it runs, then claims nothing new
/// (its state file and `status` say so) until `rigmind resume`.
#[test]
fn a_drained_worker_finishes_its_task_claims_nothing_new_and_resumes() {
    let mut rig = Rig::new();
    let plan = rig.write(
        "two.md",
        "# Plan: two\n\n## Task: first\n- task_class: cpu\n- retries: 0\n- command: `until [ -e go ]; do sleep 0.1; done`\n\n## Task: second\n- task_class: cpu\n- retries: 0\n- command: `echo second`\n",
    );
    rig.start_brain();
    rig.start_worker("cpu1", &["--classes", "cpu"]);
    let batch = rig.submit(&plan);
    let state = |rig: &Rig| -> Value {
        serde_json::from_slice(&std::fs::read(rig.root().join("workers/cpu1.json")).unwrap())
            .unwrap()
    };
    let status_of = |rig: &Rig| -> String {
        let out = rig.rigmind(&["status", "--json"]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        s["workers"][0]["state"].as_str().unwrap_or("").to_string()
    };
    eventually(60, "first running", || {
        rig.names_in("processing")
            .iter()
            .any(|n| n.ends_with("-first.json"))
    });
    let out = rig.rigmind(&["drain", "cpu1"]);
    assert!(
        text(&out.stdout).contains("cpu1: drained"),
        "{}",
        text(&out.stdout)
    );
    assert!(rig.root().join("workers/cpu1.drain").exists());
    eventually(30, "the worker says it drains", || {
        state(&rig)["draining"] == true
    });
    assert_eq!(status_of(&rig), "busy, draining");
    // What it runs, it finishes.
    rig.write("go", "");
    eventually(30, "first done and the worker drained", || {
        rig.names_in("complete")
            .iter()
            .any(|n| n.ends_with("-first.json"))
            && status_of(&rig) == "drained"
    });
    // A heartbeat later (it has looked at the queue many times by then), the
    // second task still waits.
    let beat = state(&rig)["heartbeat_at"].clone();
    eventually(30, "a heartbeat", || state(&rig)["heartbeat_at"] != beat);
    assert!(
        rig.names_in("queue")
            .iter()
            .any(|n| n.ends_with("-second.json")),
        "queue: {:?}, processing: {:?}",
        rig.names_in("queue"),
        rig.names_in("processing")
    );
    let out = rig.rigmind(&["resume", "--all"]);
    assert!(
        text(&out.stdout).contains("cpu1: resumed"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(rig.wait(&batch), 0);
    assert!(
        state(&rig).get("draining").is_none(),
        "not draining any more"
    );
    let log = std::fs::read_to_string(rig.root().join("logs/cpu1.log")).unwrap_or_default()
        + &std::fs::read_to_string(rig.dir.path().join("cpu1.stderr")).unwrap_or_default();
    assert!(
        log.contains("drained: finishes what it runs") && log.contains("resumed"),
        "{log}"
    );
}
