//! Each live batch's expected finish time (issue 12, point 6): the brain writes it
//! into the batch record and `rigmind status` shows it; `rigmind simulate --root`
//! simulates the rest of what is live under a root, reading it as a restarting
//! brain does and writing nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::gpu::fake_rig;
use common::{eventually, text, walk};

/// One fake GPU, no LLM server: script work only.
const RIG: &str = "[resource_manager]\npolicy = \"adaptive\"\n\n\
    [safety]\nmin_free_ram_mb = 0\nmax_swap_percent = 100\nmax_gpu_temp_c = 83\n\n\
    [[gpu]]\nindex = 0\nworker = \"gpu0\"\nvram_mb = 6144\n";

/// The batch's record (null before the brain has written it).
fn record(rig: &common::Rig, batch: &str) -> serde_json::Value {
    let path = rig.root().join(format!("brain/batches/{batch}.json"));
    std::fs::read_to_string(path).map_or(serde_json::Value::Null, |s| {
        serde_json::from_str(&s).unwrap()
    })
}

#[test]
fn a_running_batch_gets_an_eta_in_its_record_and_status_shows_it() {
    let (mut rig, _fake) = fake_rig(1);
    rig.write("root/rig.toml", RIG);
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    // Four 1 s scripts estimated at 30 s each, one after the other on one card:
    // the ETA is about two minutes ahead while they run.
    let plan = rig.write(
        "eta.md",
        "# Plan: eta\n\n## Task: step\n- task_class: script\n- for_each: [a, b, c, d]\n\
         - estimate: 30s\n- command: `sleep 1`\n",
    );
    let batch = rig.submit(&plan);
    eventually(10, "the batch record's eta", || {
        record(&rig, &batch).get("eta").is_some()
    });
    let r = record(&rig, &batch);
    let time = |k: &str| chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap()).unwrap();
    let ahead = (time("eta") - time("eta_computed_at")).num_seconds();
    assert!((30..=120).contains(&ahead), "eta {ahead}s ahead: {r}");

    let out = rig.rigmind(&["status"]);
    let shown = text(&out.stdout);
    assert!(
        shown
            .lines()
            .any(|l| l.trim_start().starts_with("eta ") && l.contains("(in ")),
        "{shown}"
    );
    let out = rig.rigmind(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["batches"][0]["eta"].is_string(), "{json}");
    let moved = rig.decisions_with(&["decision=eta", &batch]);
    assert!(!moved.is_empty(), "the first ETA is logged");

    assert_eq!(rig.wait(&batch), 0);
    // A batch that ended has its end, not an expected one.
    eventually(5, "the ETA cleared", || {
        record(&rig, &batch).get("eta").is_none()
    });
}

/// Every file under `root` with its size and modification time.
fn snapshot(root: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    walk(root)
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p.display().to_string(), (m.len(), m.modified().ok()?)))
        })
        .collect()
}

#[test]
fn simulate_root_runs_the_rest_of_a_part_done_batch_and_writes_nothing() {
    let (mut rig, _fake) = fake_rig(1);
    rig.write("root/rig.toml", RIG);
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0", "--grace", "0.2"]);
    // `first` completes; `hold` runs until the worker is stopped and goes back
    // into the queue; `after` (two items) waits for it.
    let plan = rig.write(
        "part.md",
        "# Plan: part\n\n## Defaults\n- retries: 0\n\n\
         ## Task: first\n- task_class: script\n- estimate: 5s\n- command: `true`\n\n\
         ## Task: hold\n- task_class: script\n- depends_on: first\n- estimate: 100s\n\
         - command: `touch held && sleep 60`\n\n\
         ## Task: after\n- task_class: script\n- depends_on: hold\n- for_each: [x, y]\n\
         - estimate: 50s\n- command: `true`\n",
    );
    let batch = rig.submit(&plan);
    rig.await_file("held");
    assert_eq!(rig.stop("gpu0"), Some(0));
    assert_eq!(rig.stop("brain"), Some(0));
    assert_eq!(rig.names_in("queue").len(), 1, "hold is back in the queue");

    let before = snapshot(&rig.root());
    let out = rig.rigmind(&["simulate", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        snapshot(&rig.root()),
        before,
        "simulate wrote under the root"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &json["policies"][0];
    assert_eq!(run["policy"], "adaptive", "{json}");
    // One card: hold (100 s), then x and y (50 s each).
    assert_eq!(run["batches"][0]["batch"], batch.as_str(), "{json}");
    assert_eq!(run["batches"][0]["end_s"], 200.0, "{json}");
    assert!(run["batches"][0]["eta"].is_string(), "{json}");

    let out = rig.rigmind(&["simulate", "--policy", "all"]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("batch {batch} (part): expected end ")),
        "{shown}"
    );
    assert!(
        shown.contains("phases: the rest ends in 200.0 s"),
        "{shown}"
    );
}
