//! End to end with the real binaries and the repo's OpenAI test server behind
//! `[[endpoint]]`s (no model needed): the cost of each batch summed per endpoint
//! in its record and shown by `rigmind status`, and `requests_per_minute` holding
//! an endpoint's tasks back across workers.

mod common;

use common::{eventually, text, Rig};
use rigmind_ollama_fake::{start_api, ApiFakeHandle, ApiFakeOptions, ApiFlavor};

const SAFETY: &str =
    "[safety]\nmin_free_ram_mb = 0\nmax_swap_percent = 100\nmax_gpu_temp_c = 83\n\n";

fn api(rt: &tokio::runtime::Runtime, models: &[&str]) -> ApiFakeHandle {
    let mut opts = ApiFakeOptions::new(ApiFlavor::OpenAi, models);
    opts.tokens_per_sec = 200.0;
    rt.block_on(start_api(opts)).unwrap()
}

/// The plan's tasks in a directory (not the brain's `execute_plan` request).
fn llm_tasks(rig: &Rig, dir: &str) -> Vec<serde_json::Value> {
    rig.tasks_in(dir)
        .into_iter()
        .filter(|t| t["task_class"] == "llm")
        .collect()
}

fn status_json(rig: &Rig) -> serde_json::Value {
    let out = rig.rigmind(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Two priced endpoints: the batch record sums each result's `cost_usd` per
/// endpoint, and `rigmind status` shows the sums (text and JSON).
#[test]
fn a_batch_record_sums_cost_per_endpoint_and_status_shows_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = api(&rt, &["small", "large"]);
    let mut rig = Rig::new();
    let toml = format!(
        "{SAFETY}[[endpoint]]\nname = \"cheap\"\napi = \"openai\"\nurl = \"{0}\"\nmodels = [\"small\"]\n\
         max_concurrent = 0\nprice_in_per_mtok = 0.5\nprice_out_per_mtok = 1.5\n\n\
         [[endpoint]]\nname = \"dear\"\napi = \"openai\"\nurl = \"{0}\"\nmodels = [\"large\"]\n\
         max_concurrent = 0\nprice_in_per_mtok = 3.0\nprice_out_per_mtok = 15.0\n",
        server.url()
    );
    rig.start_with_config(&toml, &["cpu1"]);
    let plan = rig.write(
        "plan.md",
        "# Plan: costs\n\n## Task: s\n- task_class: llm\n- model: small\n- for_each: [1, 2, 3]\n\
         - prompt: Say hello.\n\n## Task: l\n- task_class: llm\n- model: large\n- prompt: Say hello.\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0, "{}", rig.decisions().join("\n"));

    let mut want = std::collections::BTreeMap::<String, f64>::new();
    for t in llm_tasks(&rig, "complete") {
        let e = t["endpoint"].as_str().unwrap().to_string();
        *want.entry(e).or_default() += t["cost_usd"].as_f64().unwrap();
    }
    assert_eq!(want.len(), 2, "{want:?}");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rig.root().join(format!("brain/batches/{batch}.json"))).unwrap(),
    )
    .unwrap();
    for (e, usd) in &want {
        let got = record["cost_usd"][e].as_f64().unwrap();
        assert!((got - usd).abs() < 1e-12, "{e}: {got} != {usd}: {record}");
        assert!(got > 0.0);
    }
    let s = status_json(&rig);
    let b = &s["batches"].as_array().unwrap()[0];
    assert_eq!(b["cost_usd"], record["cost_usd"]);
    let out = text(&rig.rigmind(&["status"]).stdout);
    assert!(
        out.contains("cost: cheap $") && out.contains("dear $"),
        "{out}"
    );
}

/// `requests_per_minute = 2` and five tasks on two workers: two start, complete,
/// and the other three stay queued (the minute is not over), with the hold in
/// `rigmind status` and the endpoint's start file. No timed assertion: the batch
/// is cancelled rather than waited out.
#[test]
fn requests_per_minute_holds_an_endpoints_tasks_across_workers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = api(&rt, &["m"]);
    let mut rig = Rig::new();
    let toml = format!(
        "{SAFETY}[[endpoint]]\nname = \"slow\"\napi = \"openai\"\nurl = \"{}\"\nmodels = [\"m\"]\n\
         max_concurrent = 0\nrequests_per_minute = 2\n",
        server.url()
    );
    rig.start_with_config(&toml, &["cpu1", "cpu2"]);
    let plan = rig.write(
        "plan.md",
        "# Plan: rate\n\n## Task: r\n- task_class: llm\n- model: m\n- for_each: [1, 2, 3, 4, 5]\n\
         - prompt: Say hello.\n",
    );
    let batch = rig.submit(&plan);
    eventually(30, "two tasks complete", || {
        llm_tasks(&rig, "complete").len() == 2
    });
    // Past the lanes' 200 ms re-looks: had the limit not held, more would run.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(llm_tasks(&rig, "complete").len(), 2);
    assert_eq!(llm_tasks(&rig, "processing").len(), 0);
    assert_eq!(llm_tasks(&rig, "queue").len(), 3);
    let s = status_json(&rig);
    let holds = s["rate_holds"].as_array().unwrap();
    assert_eq!(holds.len(), 1, "{s}");
    assert_eq!(holds[0]["endpoint"], "slow");
    assert_eq!(holds[0]["starts"], 2);
    assert_eq!(holds[0]["limit"], 2);
    let out = text(&rig.rigmind(&["status"]).stdout);
    assert!(
        out.contains("endpoint slow: held by requests_per_minute = 2"),
        "{out}"
    );
    let starts = std::fs::read_to_string(rig.root().join("tasks/rate/slow.json")).unwrap();
    let starts: serde_json::Value = serde_json::from_str(&starts).unwrap();
    assert_eq!(starts["starts"].as_array().unwrap().len(), 2);
    let out = rig.rigmind(&["cancel", &batch, "--timeout", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `endpoint: NAME` that rig.toml does not declare, or one that serves neither
/// the task's model nor a tier above it: `rigmind validate` and `submit` refuse
/// the plan, naming the file, the task's line and what rig.toml knows.
#[test]
fn a_plan_pinned_to_an_unknown_or_wrong_endpoint_is_refused_with_its_line() {
    let rig = Rig::new();
    rig.write(
        "root/rig.toml",
        "[escalation]\ntiers = [\"small\", \"big\"]\n\n\
         [[endpoint]]\nname = \"lan\"\napi = \"openai\"\nurl = \"http://127.0.0.1:9\"\nmodels = [\"big\"]\n\n\
         [[endpoint]]\nname = \"other\"\napi = \"openai\"\nurl = \"http://127.0.0.1:9\"\nmodels = [\"odd\"]\n",
    );
    let plan = rig.write(
        "plan.md",
        "# Plan: pins\n\n## Task: a\n- task_class: llm\n- model: big\n- endpoint: nope\n- prompt: x\n\n\
         ## Task: b\n- task_class: llm\n- model: odd\n- endpoint: lan\n- prompt: x\n\n\
         ## Task: c\n- task_class: llm\n- model: small\n- endpoint: lan\n- prompt: x\n",
    );
    let p = plan.to_str().unwrap();
    for args in [vec!["validate", p], vec!["submit", p]] {
        let out = rig.rigmind(&args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "{p}:3: task 'a': endpoint 'nope' is not declared in rig.toml (known endpoints: lan, other)"
            )),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&format!(
                "{p}:9: task 'b': endpoint 'lan' serves neither model 'odd' nor a tier above it (it serves: big)"
            )),
            "{args:?}: {err}"
        );
        // c starts on the small tier (a card) and climbs to lan's model: fine.
        assert!(!err.contains("task 'c'"), "{args:?}: {err}");
    }
    assert!(rig.names_in("queue").is_empty(), "nothing was submitted");
}

/// `rigmind run` on a machine with no GPU (none declared, none faked) accepts a
/// plan whose llm tasks an `[[endpoint]]` serves: its cpu workers run them.
#[test]
fn run_without_a_gpu_runs_llm_tasks_an_endpoint_serves() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = api(&rt, &["remote"]);
    let rig = Rig::new();
    rig.write(
        "root/rig.toml",
        &format!(
            "{SAFETY}[[endpoint]]\nname = \"far\"\napi = \"openai\"\nurl = \"{}\"\nmodels = [\"remote\"]\n",
            server.url()
        ),
    );
    let plan = rig.write(
        "plan.md",
        "# Plan: far\n\n## Task: ask\n- task_class: llm\n- model: remote\n- output: answer.md\n\
         - prompt: Say hello.\n",
    );
    let out = rig.rigmind(&["run", plan.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer = std::fs::read_to_string(rig.dir.path().join("answer.md")).unwrap();
    assert!(!answer.trim().is_empty());
    let done = llm_tasks(&rig, "complete");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["endpoint"], "far");
}

/// `requires_external: true` starts a task on the last `[escalation]` tier: here
/// an `anthropic` endpoint (the repo's Messages API test server, with a key from
/// the environment), on a machine with no GPU, although its written model is the
/// first tier's, which nothing here could run.
#[test]
fn a_task_that_requires_external_starts_on_the_last_tier_at_an_anthropic_endpoint() {
    const KEY: &str = "sk-ant-test-0123456789";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut opts = ApiFakeOptions::new(ApiFlavor::Anthropic, &["claude-top"]);
    opts.api_key = Some(KEY.into());
    let server = rt.block_on(start_api(opts)).unwrap();
    let mut rig = Rig::new();
    rig.env = vec![("RIGMIND_TEST_ANTHROPIC_KEY".into(), KEY.into())];
    rig.write(
        "root/rig.toml",
        &format!(
            "{SAFETY}[escalation]\ntiers = [\"small\", \"claude-top\"]\n\n\
             [[endpoint]]\nname = \"top\"\napi = \"anthropic\"\nurl = \"{}\"\n\
             models = [\"claude-top\"]\napi_key_env = \"RIGMIND_TEST_ANTHROPIC_KEY\"\n",
            server.url()
        ),
    );
    let plan = rig.write(
        "plan.md",
        "# Plan: hard\n\n## Task: hard\n- task_class: llm\n- model: small\n\
         - requires_external: true\n- output: hard.md\n- prompt: Say hello.\n",
    );
    let out = rig.rigmind(&["run", plan.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let done = llm_tasks(&rig, "complete");
    assert_eq!(done.len(), 1);
    let t = &done[0];
    assert_eq!(t["tier"], 2, "{t}");
    assert_eq!(t["model"], "claude-top", "{t}");
    assert_eq!(t["endpoint"], "top", "{t}");
    assert_eq!(t["attempts"], 1, "{t}");
    assert!(t["eval_count"].as_u64().unwrap() > 0, "{t}");
    assert!(rig.decisions_with(&["decision=escalate"]).is_empty());
    let answer = std::fs::read_to_string(rig.dir.path().join("hard.md")).unwrap();
    assert!(!answer.trim().is_empty());
    // One Messages call, with the key in its header and the API version.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path, "/v1/messages");
    assert_eq!(reqs[0].model.as_deref(), Some("claude-top"));
    assert!(
        reqs[0].key_valid && reqs[0].api_version.is_some(),
        "{reqs:?}"
    );
    // The key is in no file under the root.
    for f in common::walk(&rig.root()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "{}",
            f.display()
        );
    }
}

/// A first tier whose endpoint is dead (nothing listens on its port) fails with
/// a server error, and the task climbs to the next tier's endpoint and completes
/// there; the escalation line gives the failure as its reason.
#[test]
fn a_dead_first_tier_endpoint_escalates_to_the_next_tier() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = api(&rt, &["big"]);
    let mut rig = Rig::new();
    let toml = format!(
        "{SAFETY}[escalation]\ntiers = [\"small\", \"big\"]\nafter_failures = 1\n\n\
         [[endpoint]]\nname = \"dead\"\napi = \"openai\"\nurl = \"http://127.0.0.1:9\"\nmodels = [\"small\"]\n\n\
         [[endpoint]]\nname = \"live\"\napi = \"openai\"\nurl = \"{}\"\nmodels = [\"big\"]\n",
        server.url()
    );
    rig.start_with_config(&toml, &["cpu1"]);
    let plan = rig.write(
        "plan.md",
        "# Plan: dead\n\n## Task: ask\n- task_class: llm\n- model: small\n- prompt: Say hello.\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0, "{}", rig.decisions().join("\n"));
    let esc = rig.decisions_with(&["decision=escalate"]);
    assert_eq!(esc.len(), 1, "{}", rig.decisions().join("\n"));
    assert!(
        esc[0].contains("endpoint=live")
            && esc[0].contains("tier=2")
            && esc[0]
                .contains("reason=\"worker_failure; failed 1 times on tier 1 (small:latest)\""),
        "{}",
        esc[0]
    );
    let t = &llm_tasks(&rig, "complete")[0];
    assert_eq!(t["endpoint"], "live", "{t}");
    let first = &t["earlier_attempts"][0];
    assert_eq!(first["endpoint"], "dead", "{t}");
    assert!(!first["error"].as_str().unwrap().is_empty(), "{t}");
}

/// A GPU worker runs endpoint requests in its endpoint lane while its card runs
/// script work: the two overlap on the one worker (fake GPU, real processes).
#[test]
fn a_gpu_worker_runs_endpoint_requests_beside_its_card_work() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut opts = ApiFakeOptions::new(ApiFlavor::OpenAi, &["remote"]);
    // Slow enough that a reply is still streaming while the script task runs.
    opts.tokens_per_sec = 4.0;
    opts.listen = "127.0.0.2:0".parse().unwrap();
    let server = rt.block_on(start_api(opts)).unwrap();
    let (mut rig, _fake) = common::gpu::fake_rig(1);
    let toml = format!(
        "{SAFETY}[[gpu]]\nindex = 0\nworker = \"gpu0\"\nvram_mb = 6144\n\n\
         [[endpoint]]\nname = \"far\"\napi = \"openai\"\nurl = \"{}\"\nmodels = [\"remote\"]\n\
         max_concurrent = 0\n",
        server.url()
    );
    rig.write("root/rig.toml", &toml);
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    let plan = rig.write(
        "plan.md",
        "# Plan: beside\n\n## Task: card\n- task_class: script\n- command: `sleep 3`\n\n\
         ## Task: ask\n- task_class: llm\n- model: remote\n- for_each: [1, 2]\n\
         - prompt: Say hello in a few words please.\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0, "{}", rig.decisions().join("\n"));
    let done = rig.tasks_in("complete");
    let span = |t: &serde_json::Value| {
        let at = |k: &str| {
            t[k].as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
        };
        (at("started_at"), at("finished_at"))
    };
    let card = done.iter().find(|t| t["name"] == "card").unwrap();
    assert_eq!(card["worker_id"], "gpu0");
    let (c0, c1) = span(card);
    let asks: Vec<_> = done.iter().filter(|t| t["plan_task_id"] == "ask").collect();
    assert_eq!(asks.len(), 2);
    for t in &asks {
        assert_eq!(t["worker_id"], "gpu0", "{t}");
    }
    assert!(
        asks.iter().any(|t| {
            let (a0, a1) = span(t);
            a0 < c1 && c0 < a1
        }),
        "no endpoint request ran while the card's script task did: {card} {asks:?}"
    );
}

/// A loopback endpoint takes one request at a time by default; its waiting
/// tasks go by priority, then age (plan order): the endpoint lane claims in the
/// queue's claim order.
#[test]
fn waiting_endpoint_tasks_go_by_priority_then_age() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut opts = ApiFakeOptions::new(ApiFlavor::OpenAi, &["remote"]);
    opts.tokens_per_sec = 20.0;
    let server = rt.block_on(start_api(opts)).unwrap();
    let mut rig = Rig::new();
    let toml = format!(
        "{SAFETY}[[endpoint]]\nname = \"near\"\napi = \"openai\"\nurl = \"{}\"\nmodels = [\"remote\"]\n",
        server.url()
    );
    rig.start_with_config(&toml, &["cpu1"]);
    let task = |name: &str, prio: u8| {
        format!("## Task: {name}\n- task_class: llm\n- model: remote\n- priority: {prio}\n- prompt: Say hello.\n\n")
    };
    let plan = rig.write(
        "plan.md",
        &format!(
            "# Plan: order\n\n{}{}{}{}",
            task("a", 3),
            task("b", 8),
            task("c", 8),
            task("d", 5)
        ),
    );
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0, "{}", rig.decisions().join("\n"));
    let mut done = llm_tasks(&rig, "complete");
    done.sort_by_key(|t| t["started_at"].as_str().unwrap().to_string());
    let order: Vec<&str> = done.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["b", "c", "d", "a"]);
    assert_eq!(server.max_in_flight(), 1, "a loopback endpoint's default");
}
