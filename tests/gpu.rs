//! GPU workers on fake GPUs (`RIGMIND_FAKE_GPUS`) with LLM servers that speak
//! Ollama's protocol over real HTTP (the repo's own fake, in this process): the
//! resource manager's loads and unloads, per-card exclusion, concurrency groups,
//! VRAM and safety gates, and what llm tasks leave in the logs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::gpu::{fake_rig, rig_toml, start_servers, start_servers_with, MODEL};
use common::{eventually, text, walk, Rig};
use rigmind_ollama_fake::RequestKind;

#[test]
fn a_mixed_plan_runs_on_two_fake_gpus_with_loads_before_llm_work() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut rig, fake_dir) = fake_rig(2);
    let servers = start_servers(&rt, &fake_dir, 2);
    rig.write("root/rig.toml", &rig_toml(&servers, ""));
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    rig.start_worker("gpu1", &["--gpu", "1"]);
    let plan = rig.fixture("gpu_mixed.md");
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0, "{}", rig.decisions().join("\n"));

    let journal = std::fs::read_to_string(rig.dir.path().join("journal.txt")).unwrap();
    assert!(!journal.contains("VIOLATION"), "{journal}");
    // Each script task saw its own card's UUID, as the fake telemetry names it.
    for line in journal.lines() {
        let gpu = line
            .split("gpu=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let cvd = line.split("cvd=").nth(1).unwrap();
        assert_eq!(
            cvd,
            format!(
                "GPU-00000000-fake-4000-8000-{:012}",
                gpu.parse::<u32>().unwrap()
            )
        );
    }
    // Every server that generated was told to load first, and its first load came
    // before its first generation.
    let mut generated = 0;
    for srv in &servers {
        let reqs = srv.requests();
        let first = |k: RequestKind| reqs.iter().position(|r| r.kind == k);
        if let Some(g) = first(RequestKind::Generate) {
            let l = first(RequestKind::Load).expect("a generate without a load");
            assert!(l < g, "load must come first: {reqs:?}");
            generated += reqs
                .iter()
                .filter(|r| r.kind == RequestKind::Generate)
                .count();
        }
    }
    assert_eq!(generated, 5, "4 summaries and the secret");
    let loads = rig.decisions_with(&["decision=load_llm"]);
    assert!(!loads.is_empty());
    assert!(
        loads[0].contains("reason=") && loads[0].contains("llm tasks ready"),
        "{}",
        loads[0]
    );

    // Results carry the llm fields; the untrusted text went in fenced.
    let summaries: Vec<serde_json::Value> = rig
        .tasks_in("complete")
        .into_iter()
        .filter(|t| t["plan_task_id"] == "summarize")
        .collect();
    assert_eq!(summaries.len(), 4);
    for t in &summaries {
        assert_eq!(t["model"], MODEL);
        assert!(t["eval_count"].as_u64().unwrap() > 0, "{t}");
        assert!(t["tokens_per_second"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["gpu"].is_string(), "{t}");
    }
    let samples = std::fs::read_to_string(rig.root().join("logs/training_samples.jsonl")).unwrap();
    let samples: Vec<serde_json::Value> = samples
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        samples.len(),
        4,
        "the 4 summaries; never the sensitive task"
    );
    for s in &samples {
        let p = s["prompt"].as_str().unwrap();
        assert!(p.starts_with("Summarize the transcript"), "{p}");
        assert!(p.contains("<untrusted_data>") && p.contains("Ignore all previous instructions"));
        assert!(p.find("Ignore all").unwrap() > p.find("<untrusted_data>").unwrap());
    }
    // The sensitive prompt is nowhere under logs/.
    let logs = rig.root().join("logs");
    // The shared walk skips a folder it cannot read; logs/ must be there.
    assert!(logs.is_dir(), "{} is missing", logs.display());
    for f in walk(&logs) {
        let body = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains("TOPSECRET-4711"),
            "{} holds the sensitive prompt",
            f.display()
        );
    }
    // Nor in what `rigmind report` prints and draws of the run.
    let (said, drawn, page) = report(&rig, &batch);
    for shown in [said, drawn, page] {
        assert!(
            !shown.contains("TOPSECRET-4711"),
            "the report holds the sensitive prompt"
        );
    }
    assert!(
        !std::fs::read_to_string(rig.dir.path().join("out/secret.md"))
            .unwrap()
            .is_empty()
    );
    // Workers publish their card.
    let w: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rig.root().join("workers/gpu0.json")).unwrap())
            .unwrap();
    assert_eq!(w["telemetry_source"], "fake");
    assert_eq!(w["telemetry"]["memory_total_mb"], 6144);
    assert!(w["gpu_state"].is_string());
    drop(servers);
}

#[test]
fn one_card_swaps_between_script_and_llm_and_never_runs_both() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut rig, fake_dir) = fake_rig(1);
    let servers = start_servers(&rt, &fake_dir, 1);
    rig.write("root/rig.toml", &rig_toml(&servers, ""));
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    let batch = rig.submit(&rig.fixture("gpu_mixed.md"));
    assert_eq!(rig.wait(&batch), 0, "{}", rig.decisions().join("\n"));
    let journal = std::fs::read_to_string(rig.dir.path().join("journal.txt")).unwrap();
    assert!(!journal.contains("VIOLATION"), "{journal}");
    let reqs = servers[0].requests();
    let kinds: Vec<RequestKind> = reqs
        .iter()
        .map(|r| r.kind)
        .filter(|k| *k != RequestKind::Ps && *k != RequestKind::Version)
        .collect();
    // transcribe (script) -> load -> summaries -> unload -> embed (script).
    assert!(
        kinds.contains(&RequestKind::Load) && kinds.contains(&RequestKind::Unload),
        "{kinds:?}"
    );
    assert!(!rig.decisions_with(&["decision=unload_llm"]).is_empty());

    // `rigmind report` tells the same story from the files, and draws it.
    let loads = rig.decisions_with(&["decision=load_llm"]).len();
    let unloads = rig.decisions_with(&["decision=unload_llm"]).len();
    let (report, drawn, page) = report(&rig, &batch);
    assert!(
        report.contains(&format!("loads {loads}, unloads {unloads},")),
        "{report}"
    );
    let gpu0 = report
        .lines()
        .find(|l| l.starts_with("gpu0 "))
        .expect(&report);
    let ran = rig
        .tasks_in("complete")
        .into_iter()
        .filter(|t| t["batch_id"] == batch.as_str() && t["worker_id"] == "gpu0")
        .count();
    assert_eq!(
        gpu0.split_whitespace().last(),
        Some(ran.to_string().as_str()),
        "{report}"
    );
    for task in ["transcribe", "summarize", "embed"] {
        assert!(
            report.lines().any(|l| l.starts_with(task)),
            "{task}: {report}"
        );
    }
    assert!(report.contains("failures 0, retries 0"), "{report}");
    assert!(drawn.starts_with("<svg") && drawn.contains("live run: makespan"));
    assert!(drawn.contains("load_llm on gpu0") && drawn.contains("unload_llm on gpu0"));
    // The page is self-contained: the same chart inline, the tables as tables.
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains(&drawn));
    assert!(
        page.contains("<caption>per plan task</caption>") && page.contains("<td>summarize</td>")
    );
    assert!(
        !page.contains("src=") && !page.contains("href="),
        "nothing to fetch"
    );
    opens_in_a_browser(&rig.dir.path().join("run.html"));
    let unknown = rig.rigmind(&["report", "no-such-batch"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("no batch no-such-batch"));
}

/// The `heartbeat_at` stamp of a worker's state file.
fn heartbeat_of(rig: &Rig, id: &str) -> Option<String> {
    let bytes = std::fs::read(rig.root().join(format!("workers/{id}.json"))).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    state["heartbeat_at"].as_str().map(str::to_string)
}

/// Waits for the worker to write its state file again (a heartbeat comes every
/// 5 s). After each write its loop goes back to claiming, so once a write is seen
/// that came after some change, the worker has had a claim attempt since: a task
/// still queued then was held back, not merely not looked at yet.
fn next_state_write(rig: &Rig, id: &str) {
    let before = heartbeat_of(rig, id);
    eventually(15, "the worker's next state write", || {
        heartbeat_of(rig, id) != before
    });
}

#[test]
fn vram_and_temperature_gates_hold_script_work_until_they_clear() {
    let (mut rig, fake_dir) = fake_rig(1);
    std::fs::create_dir_all(fake_dir.join("0")).unwrap();
    // Another process holds 5000 of the card's 6144 MB.
    std::fs::write(fake_dir.join("0/other.mb"), "5000").unwrap();
    rig.write(
        "root/rig.toml",
        "[safety]\nmin_free_ram_mb = 0\nmax_swap_percent = 100\nmax_gpu_temp_c = 83\n\n[[gpu]]\nindex = 0\nworker = \"gpu0\"\n",
    );
    let plan = rig.write(
        "gates.md",
        "# Plan: gates\n\n## Task: big\n- task_class: script\n- vram_mb: 3000\n- command: `echo ran > big.txt`\n",
    );
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    let batch = rig.submit(&plan);
    eventually(10, "the task to be released", || {
        rig.names_in("queue").len() == 1
    });
    // Two state writes after it was queued: the worker has tried to claim it.
    next_state_write(&rig, "gpu0");
    next_state_write(&rig, "gpu0");
    assert_eq!(
        rig.names_in("queue").len(),
        1,
        "held back: 1144 MB free < 3000"
    );
    // The memory comes back but the card is too hot.
    std::fs::write(fake_dir.join("0/temp_c"), "90").unwrap();
    std::fs::remove_file(fake_dir.join("0/other.mb")).unwrap();
    eventually(10, "the gate shows in the worker's state", || {
        std::fs::read_to_string(rig.root().join("workers/gpu0.json"))
            .is_ok_and(|s| s.contains("max_gpu_temp_c"))
    });
    // One more write: the worker has tried to claim since it read the gate.
    next_state_write(&rig, "gpu0");
    assert_eq!(rig.names_in("queue").len(), 1, "held back: 90 C > 83 C");
    std::fs::write(fake_dir.join("0/temp_c"), "60").unwrap();
    assert_eq!(rig.wait(&batch), 0);
    assert!(rig.dir.path().join("big.txt").exists());
    let log = std::fs::read_to_string(rig.dir.path().join("gpu0.stderr")).unwrap();
    assert_eq!(
        log.matches("safety gate violated").count(),
        1,
        "said once per change: {log}"
    );
}

#[test]
fn llm_errors_are_classified_unknown_model_is_final_a_dead_server_is_retried() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut rig, fake_dir) = fake_rig(1);
    let servers = start_servers(&rt, &fake_dir, 1);
    rig.write("root/rig.toml", &rig_toml(&servers, ""));
    let plan = rig.write(
        "bad.md",
        "# Plan: bad\n\n## Task: ask\n- task_class: llm\n- model: no-such-model:1b\n- prompt: hello\n",
    );
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 1);
    let failed = rig.tasks_in("failed");
    let ask = failed
        .iter()
        .find(|t| t["name"] == "ask")
        .expect("ask failed");
    assert_eq!(ask["failure_kind"], "definition_error", "{ask}");
    assert_eq!(ask["retry_count"], 0, "not retried");
    assert!(
        ask["error"].as_str().unwrap().contains("no-such-model"),
        "{ask}"
    );
}

#[test]
fn a_server_error_is_a_worker_failure_and_the_task_is_retried() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut rig, fake_dir) = fake_rig(1);
    let servers = start_servers_with(&rt, &fake_dir, 1, |o| {
        o.fail_generate_status = Some(500);
        o.fail_generate_first = Some(1);
    });
    rig.write("root/rig.toml", &rig_toml(&servers, ""));
    let plan = rig.write(
        "flaky.md",
        "# Plan: flaky\n\n## Task: ask\n- task_class: llm\n- retries: 2\n- prompt: hello\n",
    );
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    let t = rig.task("complete", "ask");
    assert_eq!(t["retry_count"], 1, "{t}");
    let retry = rig.decisions_with(&["decision=retry", "task=ask"]);
    assert_eq!(retry.len(), 1);
    assert!(retry[0].contains("500"), "{}", retry[0]);
}

#[test]
fn a_worker_killed_during_a_load_does_not_leave_its_card_blocked() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut rig, fake_dir) = fake_rig(1);
    let servers = start_servers_with(&rt, &fake_dir, 1, |o| {
        o.load_latency = Duration::from_secs(3);
    });
    rig.write("root/rig.toml", &rig_toml(&servers, ""));
    let plan = rig.write(
        "ask.md",
        "# Plan: ask\n\n## Task: ask\n- task_class: llm\n- for_each: [a, b]\n- prompt: hello {item}\n",
    );
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    let batch = rig.submit(&plan);
    eventually(20, "the load is running", || {
        rig.names_in("processing")
            .iter()
            .any(|n| n.contains("-rm-load_llm"))
    });
    rig.kill9("gpu0");
    rig.start_worker("gpu0", &["--gpu", "0"]);
    assert_eq!(rig.wait(&batch), 0, "{}", rig.decisions().join("\n"));
    assert_eq!(rig.decisions_with(&["decision=lost", "load_llm"]).len(), 1);
    assert!(rig
        .names_in("failed")
        .iter()
        .any(|n| n.contains("-rm-load_llm")));
}

#[test]
fn a_gpu_worker_without_nvml_or_fake_gpus_stops_at_once_with_a_clear_message() {
    if Path::new("/dev/nvidiactl").exists() {
        common::skip(
            "a_gpu_worker_without_nvml_or_fake_gpus_stops_at_once_with_a_clear_message",
            "a real NVIDIA driver is here, so there is no missing NVML to report",
        );
        return;
    }
    let rig = Rig::new();
    let out = std::process::Command::new(common::WORKER)
        .args(["--id", "g", "--gpu", "0", "--root"])
        .arg(rig.root())
        .env_remove("RIGMIND_FAKE_GPUS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("NVML") && err.contains("RIGMIND_FAKE_GPUS"),
        "{err}"
    );
}

/// `rigmind report BATCH --svg --html`, which must succeed: what it printed, the
/// SVG and the HTML page.
fn report(rig: &Rig, batch: &str) -> (String, String, String) {
    let svg = rig.dir.path().join("run.svg");
    let page = rig.dir.path().join("run.html");
    let out = rig.rigmind(&[
        "report",
        batch,
        "--svg",
        svg.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    (said, read(&svg), read(&page))
}

/// Headless Chromium opens the report as a page: the DOM it builds holds the chart
/// and the tables. Without Chromium the check says it skipped.
fn opens_in_a_browser(page: &Path) {
    let browser = ["chromium", "chromium-browser"].into_iter().find_map(|b| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(b))
                .find(|p| p.is_file())
        })
    });
    let Some(browser) = browser else {
        return common::skip(
            "report_opens_in_chromium",
            "no chromium on PATH (apt-get install chromium)",
        );
    };
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let dom = text(&out.stdout);
    assert!(
        dom.contains("<svg") && dom.contains("per plan task") && dom.contains("live run: makespan"),
        "chromium's DOM of the report:\n{dom}\n{}",
        text(&out.stderr)
    );
}
