//! `rigmind run`: the one-command path, end to end, with real processes.

mod common;

use common::{text, Rig};

#[test]
fn hello_runs_end_to_end_and_leaves_everything_visible_as_files() {
    let rig = Rig::new();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/examples/hello.md"),
    )
    .unwrap();
    let plan = rig.write("hello.md", &example);
    let out = rig.rigmind(&["run", plan.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("complete — 5 of 5 complete, 0 failed"),
        "{stdout}"
    );
    assert!(stderr.contains("starting 2 CPU workers"), "{stderr}");

    // The commands ran in the plan's directory, in dependency order.
    let all = std::fs::read_to_string(rig.dir.path().join("out/all.txt")).unwrap();
    assert!(all.starts_with("hello from cpu_"), "{all}");
    for who in ["HELLO, ALICE (0)", "HELLO, BOB (1)", "HELLO, CAROL (2)"] {
        assert!(all.contains(who), "{all}");
    }

    // Every task is in complete/, once, with its result fields.
    assert!(rig.names_in("queue").is_empty());
    assert!(rig.names_in("processing").is_empty());
    assert!(rig.names_in("failed").is_empty());
    let done = rig.tasks_in("complete");
    let names: Vec<&str> = done.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for n in [
        "greet",
        "shout[alice]",
        "shout[bob]",
        "shout[carol]",
        "gather",
        "@execute_plan",
    ] {
        assert_eq!(
            names.iter().filter(|x| **x == n).count(),
            1,
            "{n} in {names:?}"
        );
    }
    let gather = rig.task("complete", "gather");
    assert_eq!(gather["status"], "complete");
    assert_eq!(gather["return_code"], 0);
    assert_eq!(gather["depends_on"], serde_json::json!(["shout"]));
    assert!(gather["worker_id"].as_str().unwrap().starts_with("cpu_"));
    for field in [
        "started_at",
        "finished_at",
        "elapsed_seconds",
        "output_lines",
        "log_path",
    ] {
        assert!(!gather[field].is_null(), "gather lacks {field}: {gather}");
    }
    assert_eq!(
        gather["output_lines"], 4,
        "gather prints the four greeting lines"
    );
    let log = std::fs::read_to_string(gather["log_path"].as_str().unwrap()).unwrap();
    assert!(log.contains("HELLO, BOB (1)"), "{log}");
    // File names sort in claim order: p05 (priority 5), then the sequence.
    assert!(rig
        .names_in("complete")
        .iter()
        .all(|n| n.starts_with("p05-")));

    // The decisions log tells the story, one key=value line per decision.
    let batch = gather["batch_id"].as_str().unwrap().to_string();
    assert_eq!(
        rig.decisions_with(&["decision=submit", &batch, "tasks=5"])
            .len(),
        1
    );
    assert_eq!(rig.decisions_with(&["decision=release", &batch]).len(), 5);
    assert_eq!(rig.decisions_with(&["decision=complete", &batch]).len(), 5);
    let shout = rig.decisions_with(&["decision=release", "task=shout[bob]"]);
    assert!(shout[0].contains("plan_task_id=shout"), "{shout:?}");
    assert!(
        shout[0].contains("reason=\"its 1 dependency is complete\""),
        "{shout:?}"
    );
    let completed = rig.decisions_with(&["decision=complete", "task=greet"]);
    assert!(completed[0].contains("elapsed_seconds="), "{completed:?}");
    let done_line = rig.decisions_with(&["decision=batch_done", &batch]);
    assert!(done_line[0].contains("state=complete"), "{done_line:?}");
    assert!(done_line[0].contains("complete=5") && done_line[0].contains("failed=0"));

    // The batch record and the event stream.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rig.root().join(format!("brain/batches/{batch}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["state"], "complete");
    assert_eq!(record["counts"]["complete"], 5);
    assert_eq!(record["name"], "hello");
    let events = std::fs::read_to_string(rig.root().join("logs/events.jsonl")).unwrap();
    let kinds: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "\"release\"").count() == 5,
        "{kinds:?}"
    );
    // The private DAG is empty once everything is released.
    let private = std::fs::read_dir(rig.root().join("brain/private_tasks").join(&batch))
        .unwrap()
        .count();
    assert_eq!(private, 0);
}

/// Reads the complete task files and checks that no task started before every task
/// it depends on had finished.
#[test]
fn no_task_starts_before_its_dependencies_finish() {
    let rig = Rig::new();
    let plan = rig.fixture("order.md");
    let out = rig.rigmind(&["run", plan.to_str().unwrap(), "--workers", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let tasks = rig.tasks_in("complete");
    let by_name: std::collections::HashMap<String, &serde_json::Value> = tasks
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t))
        .collect();
    let time = |t: &serde_json::Value, f: &str| t[f].as_str().unwrap().to_string();
    let mut checked = 0;
    for t in &tasks {
        if t["name"] == "@execute_plan" {
            continue;
        }
        for dep in t["depends_on"].as_array().unwrap() {
            let dep = dep.as_str().unwrap();
            // `stage1[a]` is one task; `stage2` means all its items (fan-in).
            let deps: Vec<&&serde_json::Value> = match by_name.get(dep) {
                Some(d) => vec![d],
                None => by_name
                    .iter()
                    .filter(|(n, _)| n.starts_with(&format!("{dep}[")))
                    .map(|(_, v)| v)
                    .collect(),
            };
            assert!(!deps.is_empty(), "{dep} not found");
            for d in deps {
                assert!(
                    time(d, "finished_at") <= time(t, "started_at"),
                    "{} started at {} before {} finished at {}",
                    t["name"],
                    time(t, "started_at"),
                    d["name"],
                    time(d, "finished_at")
                );
                checked += 1;
            }
        }
    }
    // init->6 stage1, 6 item-wise stage2 edges, 6 fan-in edges into report.
    assert_eq!(checked, 18);
    assert_eq!(
        std::fs::read_to_string(rig.dir.path().join("out/report.txt"))
            .unwrap()
            .trim(),
        "6"
    );
    let item_wise = rig.task("complete", "stage2[c]");
    assert_eq!(item_wise["depends_on"], serde_json::json!(["stage1[c]"]));
}

#[test]
fn a_failure_fails_its_dependents_and_run_exits_1() {
    let rig = Rig::new();
    let plan = rig.fixture("failing.md");
    let out = rig.rigmind(&["run", plan.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("failed — 1 of 4 complete, 3 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed: breaks (worker_failure): exit code 3"),
        "{stdout}"
    );

    let breaks = rig.task("failed", "breaks");
    assert_eq!(breaks["failure_kind"], "worker_failure");
    assert_eq!(breaks["return_code"], 3);
    assert_eq!(breaks["error_snippet"], "disk on fire\n");
    for name in ["after", "after_after"] {
        let t = rig.task("failed", name);
        assert_eq!(t["failure_kind"], "dependency_failed", "{t}");
    }
    assert_eq!(
        rig.task("failed", "after_after")["error"],
        "dependency 'breaks' failed"
    );
    rig.task("complete", "independent");

    let fail = rig.decisions_with(&["decision=fail", "task=breaks"]);
    assert_eq!(fail.len(), 1);
    assert!(fail[0].contains("failure_kind=worker_failure"), "{fail:?}");
    assert!(
        fail[0].contains("reason=\"exit code 3; worker_failure; no retries left (0 allowed)\""),
        "{fail:?}"
    );
    let cascades = rig.decisions_with(&["decision=cascade", "failure_kind=dependency_failed"]);
    assert_eq!(cascades.len(), 2, "{cascades:?}");
    assert!(cascades[1].contains("task=after_after"));
    assert!(
        rig.decisions_with(&["decision=batch_done", "state=failed"])
            .len()
            == 1
    );
}

#[test]
fn worker_failures_are_retried_with_backoff() {
    let rig = Rig::new();
    let plan = rig.fixture("flaky.md");
    let out = rig.rigmind(&["run", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = rig.task("complete", "flaky");
    assert_eq!(t["retry_count"], 1);
    assert_eq!(t["last_error"], "exit code 1");
    assert!(t["not_before"].is_string());
    let retry = rig.decisions_with(&["decision=retry", "task=flaky"]);
    assert_eq!(retry.len(), 1, "{retry:?}");
    assert!(
        retry[0].contains("reason=\"worker_failure; retry 1 of 2 in "),
        "{retry:?}"
    );
    // The first attempt's stderr and the second's stdout are both in the task log.
    let log = std::fs::read_to_string(t["log_path"].as_str().unwrap()).unwrap();
    assert!(
        log.contains("first try fails") && log.contains("second try"),
        "{log}"
    );
    assert_eq!(
        log.matches("--- rigmind: flaky attempt").count(),
        2,
        "{log}"
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let rig = Rig::new();
    let plan = rig.fixture("slow.md");
    let started = std::time::Instant::now();
    let out = rig.rigmind(&["run", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        started.elapsed().as_secs() < 25,
        "the 30 s sleeps were not killed"
    );
    let t = rig.task("failed", "hangs");
    assert_eq!(t["failure_kind"], "timeout");
    assert!(t["error"].as_str().unwrap().starts_with("timeout"), "{t}");
    // The background sleep of the group is gone too.
    let pid = std::fs::read_to_string(rig.dir.path().join("bg.pid")).unwrap();
    assert!(!common::running(&pid), "background sleep {pid} still runs");
}

#[test]
fn run_refuses_an_invalid_plan_before_starting_anything() {
    let rig = Rig::new();
    let plan = rig.fixture("invalid.md");
    let out = rig.rigmind(&["run", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid.md:9: task 'summarize' depends on unknown task 'transcibe' (did you mean 'transcribe'?)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalid.md:11: unknown field 'timout' (did you mean 'timeout'?)"),
        "{stderr}"
    );
    assert!(!rig.root().join("brain/batches").exists() || rig.names_in("queue").is_empty());
}
