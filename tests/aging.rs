//! No starvation, live: with `[scheduling] aging_seconds_per_level = 1`, a
//! priority-1 task queued behind a stream of priority-7 work waits at most about
//! 8 levels (it reaches priority 9, where the older task wins), not behind all of it.

mod common;

use common::Rig;

#[test]
fn an_aged_low_priority_task_runs_before_the_urgent_stream_ends() {
    let mut rig = Rig::new();
    rig.write(
        "root/rig.toml",
        "[scheduling]\naging_seconds_per_level = 1\n",
    );
    let items: Vec<String> = (1..=40).map(|i| format!("h{i:02}")).collect();
    let plan = rig.write(
        "aging/plan.md",
        &format!(
            "# Plan: aging\n\n## Task: low\n- task_class: cpu\n- priority: 1\n- command: `true`\n\n\
             ## Task: high\n- task_class: cpu\n- priority: 7\n- for_each: [{}]\n- command: `sleep 0.3`\n",
            items.join(", ")
        ),
    );
    rig.start_brain();
    rig.start_worker("w1", &["--classes", "cpu"]);
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    let tasks = rig.tasks_in("complete");
    let time = |t: &serde_json::Value, key: &str| {
        chrono::DateTime::parse_from_rfc3339(t[key].as_str().unwrap()).unwrap()
    };
    let started = |t: &serde_json::Value| time(t, "started_at");
    let low = tasks.iter().find(|t| t["name"] == "low").expect("low ran");
    let created = time(low, "created_at");
    let waited = (started(low) - created).num_milliseconds() as f64 / 1000.0;
    let later_highs = tasks
        .iter()
        .filter(|t| t["name"] != "low" && started(t) > started(low))
        .count();
    // 8 levels of 1 s, one 0.3 s task running then, and the live latencies.
    assert!(waited < 8.0 + 3.0, "low waited {waited}s");
    assert!(later_highs > 0, "low ran after every priority-7 task");
}
