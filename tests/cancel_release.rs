//! Cancellation that holds from the moment it is accepted, and releases in claim
//! order — with the real brain, workers and CLI.

mod common;

use common::{eventually, text, Rig};

/// An RFC 3339 UTC time (`...SS[.fff]Z`) as a string that sorts in time order
/// whatever the number of fraction digits.
fn time_key(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    format!("{whole}.{frac:0<9}")
}

fn sleepy_plan(rig: &Rig, n: usize) -> std::path::PathBuf {
    let items: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    rig.write(
        "many.md",
        &format!(
            "# Plan: many\n\n## Task: nap\n- task_class: cpu\n- for_each: [{}]\n- command: `sleep 0.05`\n",
            items.join(", ")
        ),
    )
}

#[test]
fn no_task_starts_after_a_cancel_is_accepted_and_the_batch_ends_cancelled() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    rig.start_worker("w2", &[]);
    let plan = sleepy_plan(&rig, 2000);
    let batch = rig.submit(&plan);
    eventually(60, "some tasks to complete", || {
        rig.names_in("complete").len() >= 10
    });
    let out = rig.rigmind(&["cancel", &batch, "--timeout", "120"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let accepted = stdout
        .split("cancellation accepted at ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("no acceptance time in: {stdout}"))
        .to_string();
    assert!(stdout.contains("cancelled"), "{stdout}");
    let mut tasks = rig.tasks_in("complete");
    tasks.extend(rig.tasks_in("failed"));
    let ours: Vec<_> = tasks
        .iter()
        .filter(|t| t["batch_id"] == batch.as_str() && t["name"] != "@execute_plan")
        .collect();
    assert_eq!(ours.len(), 2000, "every task is complete or failed");
    let late: Vec<_> = ours
        .iter()
        .filter_map(|t| t["started_at"].as_str().map(|s| (s, &t["name"])))
        .filter(|(s, _)| time_key(s) > time_key(&accepted))
        .collect();
    assert!(late.is_empty(), "started after {accepted}: {late:?}");
    let cancelled = ours
        .iter()
        .filter(|t| t["failure_kind"] == "cancelled")
        .count();
    assert!(cancelled > 1000, "only {cancelled} cancelled");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rig.root().join(format!("brain/batches/{batch}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["state"], "cancelled");
    let lines = rig.decisions_with(&["decision=cancel_batch", &batch]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("reason=\"requested by "), "{lines:?}");
    assert!(rig.root().join("tasks/cancel").join(&batch).exists());
}

#[test]
fn cancel_refuses_unknown_batches_and_sets_aside_a_marker_of_none() {
    let mut rig = Rig::new();
    let out = rig.rigmind(&["cancel", "abcdef"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no batch abcdef"),
        "{}",
        text(&out.stderr)
    );
    assert!(!rig.root().join("tasks/cancel/abcdef").exists());
    rig.start_brain();
    eventually(30, "the brain to start", || {
        rig.root().join("tasks/cancel").exists()
    });
    // A marker by hand for a batch that does not exist.
    std::fs::write(rig.root().join("tasks/cancel/fedcba"), b"").unwrap();
    eventually(30, "the stray marker to be set aside", || {
        !rig.decisions_with(&["decision=cancel_ignored", "batch=fedcba"])
            .is_empty()
    });
    assert!(!rig.root().join("tasks/cancel/fedcba").exists());
    assert!(rig.root().join("tasks/rejected/cancel.fedcba").exists());
}

#[test]
fn a_submission_cancelled_before_the_brain_took_it_never_runs() {
    let mut rig = Rig::new();
    rig.start_worker("w1", &[]);
    let plan = rig.write(
        "never.md",
        "# Plan: never\n\n## Task: touch\n- task_class: cpu\n- command: `touch ran.txt`\n",
    );
    let batch = rig.submit(&plan);
    let out = rig.rigmind(&["cancel", &batch]);
    assert_eq!(out.status.code(), Some(2), "no brain: not finished");
    assert!(
        text(&out.stderr).contains("no brain is running"),
        "{}",
        text(&out.stderr)
    );
    rig.start_brain();
    eventually(30, "the submission to be cancelled", || {
        !rig.decisions_with(&[
            "decision=cancel_batch",
            &batch,
            "before the plan was submitted",
        ])
        .is_empty()
    });
    let request = rig.task("failed", "@execute_plan");
    assert_eq!(request["failure_kind"], "cancelled");
    assert!(!rig
        .root()
        .join(format!("brain/batches/{batch}.json"))
        .exists());
    assert!(!rig.dir.path().join("ran.txt").exists());
}

#[test]
fn an_old_style_cancel_request_file_is_taken_as_a_marker() {
    let mut rig = Rig::new();
    rig.start_brain();
    let plan = rig.write(
        "slow.md",
        "# Plan: slow\n\n## Task: wait\n- task_class: cpu\n- for_each: [a, b]\n- command: `sleep 60`\n",
    );
    let batch = rig.submit(&plan);
    // The record is written before the submission's own task is filed: wait for both.
    eventually(30, "the batch to be submitted", || {
        rig.root()
            .join(format!("brain/batches/{batch}.json"))
            .exists()
            && rig
                .names_in("complete")
                .iter()
                .any(|n| n.ends_with("-@execute_plan.json"))
    });
    // What `rigmind cancel` of earlier versions wrote.
    let mut req = rig.task("complete", "@execute_plan");
    for k in [
        "worker_id",
        "started_at",
        "finished_at",
        "elapsed_seconds",
        "return_code",
        "plan_file",
    ] {
        req.as_object_mut().unwrap().remove(k);
    }
    req["name"] = "@cancel_batch.0123abcd".into();
    req["task_id"] = "0123abcd0123abcd0123abcd0123abcd".into();
    req["action"] = "cancel_batch".into();
    req["status"] = "queued".into();
    let name = format!("p01-00000000-{batch}-@cancel_batch.0123abcd.json");
    let tmp = rig.root().join("tasks/queue").join(format!(".{name}"));
    std::fs::write(&tmp, serde_json::to_vec(&req).unwrap()).unwrap();
    std::fs::rename(&tmp, rig.root().join("tasks/queue").join(&name)).unwrap();
    eventually(30, "the batch to end cancelled", || {
        !rig.decisions_with(&["decision=batch_done", &batch, "state=cancelled"])
            .is_empty()
    });
    assert!(rig.root().join("tasks/cancel").join(&batch).exists());
    assert_eq!(
        rig.task("complete", "@cancel_batch.0123abcd")["status"],
        "complete"
    );
    let lines = rig.decisions_with(&["decision=cancel_batch", &batch]);
    assert_eq!(lines.len(), 1, "{lines:?}");
}

/// One worker, two ready tasks of one submission (or two released together): the
/// priority-9 one starts first, whichever the plan lists first.
#[test]
fn ready_tasks_are_released_in_claim_order() {
    let plans = [
        "## Task: low\n- task_class: cpu\n- priority: 1\n- command: `sleep 0.2`\n\n\
         ## Task: high\n- task_class: cpu\n- priority: 9\n- command: `sleep 0.2`\n",
        "## Task: high\n- task_class: cpu\n- priority: 9\n- command: `sleep 0.2`\n\n\
         ## Task: low\n- task_class: cpu\n- priority: 1\n- command: `sleep 0.2`\n",
        // Released together when their one dependency completes.
        "## Task: root\n- task_class: cpu\n- command: `true`\n\n\
         ## Task: low\n- task_class: cpu\n- priority: 1\n- depends_on: root\n- command: `sleep 0.2`\n\n\
         ## Task: high\n- task_class: cpu\n- priority: 9\n- depends_on: root\n- command: `sleep 0.2`\n",
    ];
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    for (i, body) in plans.iter().enumerate() {
        let plan = rig.write(
            &format!("prio{i}.md"),
            &format!("# Plan: prio{i}\n\n{body}"),
        );
        let batch = rig.submit(&plan);
        assert_eq!(rig.wait(&batch), 0);
        let started = |name: &str| {
            let t = rig
                .tasks_in("complete")
                .into_iter()
                .find(|t| t["batch_id"] == batch.as_str() && t["name"] == name)
                .unwrap_or_else(|| panic!("no {name} of {batch}"));
            time_key(t["started_at"].as_str().unwrap())
        };
        assert!(
            started("high") < started("low"),
            "plan {i}: the priority-1 task ran first"
        );
    }
}
