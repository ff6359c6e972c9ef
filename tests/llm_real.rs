//! End to end with REAL llama.cpp `llama-server` routers and a real model
//! (SmolLM2-135M-Instruct, set up by `scripts/setup-llm.sh` into
//! `RIGMIND_LLM_DIR`, default `<repo>/.cache/llm`), the real binaries, fake GPUs
//! (`RIGMIND_FAKE_GPUS=2x6144`) and, for the tiers no real server can play here,
//! the repo's OpenAI test server. Without the setup each test records a skip.
//!
//! Routers run as the facts of this machine ask: `-t 1 -c 2048`.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::gpu::fake_rig;
use common::{walk, Rig};
use rigmind_ollama_fake::{start_api, ApiFakeHandle, ApiFakeOptions, ApiFlavor};
use rigmind_testkit::llama::{llm_dir, Router, MODEL};

const KEY: &str = "sk-rigmind-test-0123456789abcdef";

/// Starts a router on a free loopback port (`autoload`: loads a model on its
/// first chat, as an endpoint's server does) and waits until `/models` answers.
fn router(dir: &Path, autoload: bool, log: &Path) -> Router {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(dir.join("bin/llama-server"));
    cmd.arg("--models-dir").arg(dir.join("models"));
    if !autoload {
        cmd.arg("--no-models-autoload");
    }
    let child = cmd
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-t", "1", "-c", "2048"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start llama-server");
    let r = Router {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    while !get_ok(port, "/models") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "router never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    r
}

fn get_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200")
}

fn wait_long(rig: &Rig, batch: &str) -> i32 {
    let out = rig.rigmind(&["wait", batch, "--timeout", "400"]);
    out.status.code().unwrap_or(-1)
}

fn base_toml(extra: &str) -> String {
    format!(
        "[llm]\nmodel = \"{MODEL}\"\nload_seconds = 3\nunload_seconds = 0.5\n\n\
         [resource_manager]\npolicy = \"adaptive\"\nidle_unload = \"2s\"\n\n\
         [safety]\nmin_free_ram_mb = 0\nmax_swap_percent = 100\nmax_gpu_temp_c = 83\n\n{extra}\n"
    )
}

fn time(v: &serde_json::Value, key: &str) -> chrono::DateTime<chrono::Utc> {
    v[key].as_str().unwrap().parse().unwrap()
}

/// a. Script and llm work on two cards, each with its own real router: real
/// text lands in the outputs; every chat came after an explicit load (the
/// routers refuse a chat for an unloaded model, and no llm task failed), and a
/// card ran a script task after llm work only once it had been unloaded.
#[test]
fn a_mixed_plan_runs_on_two_cards_with_real_llama_servers() {
    let Some(dir) = llm_dir("a_mixed_plan_runs_on_two_cards_with_real_llama_servers") else {
        return;
    };
    let (mut rig, _fake) = fake_rig(2);
    let routers: Vec<Router> = (0..2)
        .map(|i| router(&dir, false, &rig.dir.path().join(format!("router{i}.log"))))
        .collect();
    let mut toml = base_toml("");
    for (i, r) in routers.iter().enumerate() {
        toml.push_str(&format!(
            "[[gpu]]\nindex = {i}\nworker = \"gpu{i}\"\nllama_server = \"{}\"\nvram_mb = 6144\n\n",
            r.url
        ));
    }
    rig.write("root/rig.toml", &toml);
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    rig.start_worker("gpu1", &["--gpu", "1"]);
    let plan = rig.write(
        "plan.md",
        "# Plan: real\n\n## Task: prep\n- task_class: script\n- for_each: [a, b]\n\
         - command: `mkdir -p out && echo 'The sea is blue and wide.' > out/{item}.txt`\n\n\
         ## Task: say\n- task_class: llm\n- depends_on: prep\n- for_each: [a, b]\n\
         - prompt_file: out/{item}.txt\n- output: out/{item}.answer.md\n\
         - prompt: Repeat the text in other words, in one short sentence.\n\n\
         ## Task: after\n- task_class: script\n- depends_on: say\n- for_each: [a, b]\n\
         - command: `cat out/{item}.answer.md > out/{item}.copy.md`\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(wait_long(&rig, &batch), 0, "{}", rig.decisions().join("\n"));

    for item in ["a", "b"] {
        let answer =
            std::fs::read_to_string(rig.dir.path().join(format!("out/{item}.answer.md"))).unwrap();
        assert!(
            answer.split_whitespace().count() >= 2,
            "real text: {answer:?}"
        );
        assert!(!answer.contains("fake"), "{answer}");
    }
    let done = rig.tasks_in("complete");
    let says: Vec<_> = done.iter().filter(|t| t["plan_task_id"] == "say").collect();
    assert_eq!(says.len(), 2);
    for t in &says {
        assert_eq!(
            t["attempts"], 1,
            "a chat before a load would have failed: {t}"
        );
        assert!(t["eval_count"].as_u64().unwrap() > 0, "{t}");
        assert!(t["prompt_tokens"].as_u64().unwrap() > 0, "{t}");
        // From the router's own timings.
        assert!(t["tokens_per_second"].as_f64().unwrap() > 0.0, "{t}");
    }
    assert!(rig.tasks_in("failed").is_empty());
    // A card that ran llm work ran a script task only after an unload.
    let resource: Vec<_> = done.iter().filter(|t| t["batch_id"] == "rm").collect();
    for s in done.iter().filter(|t| t["plan_task_id"] == "after") {
        let w = s["worker_id"].as_str().unwrap();
        let start = time(s, "started_at");
        let last = resource
            .iter()
            .filter(|r| r["worker_id"] == w && time(r, "finished_at") <= start)
            .max_by_key(|r| time(r, "finished_at"));
        if let Some(r) = last {
            assert_eq!(r["name"], "unload_llm", "{w} ran {s} after {r}");
        }
    }
    // Each llm task ran on a card that had loaded its model first.
    for t in &says {
        let w = t["worker_id"].as_str().unwrap();
        let start = time(t, "started_at");
        let loaded = resource.iter().any(|r| {
            r["worker_id"] == w && r["name"] == "load_llm" && time(r, "finished_at") <= start
        });
        assert!(loaded, "{t}");
    }
    // Each load records how long it took, for the resource manager to learn.
    for r in resource.iter().filter(|r| r["name"] == "load_llm") {
        assert!(r["load_seconds"].as_f64().unwrap() > 0.0, "{r}");
    }
    drop(routers);
}

/// b. `expect: json` that the small model breaks is escalated to the second
/// tier (the OpenAI test server's `big-json`, which answers JSON) and
/// completes there.
#[test]
fn an_expect_json_task_the_small_model_fails_escalates_and_completes() {
    let test = "an_expect_json_task_the_small_model_fails_escalates_and_completes";
    let Some(dir) = llm_dir(test) else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api: ApiFakeHandle = rt
        .block_on(start_api(ApiFakeOptions::new(
            ApiFlavor::OpenAi,
            &["big-json"],
        )))
        .unwrap();
    let (mut rig, _fake) = fake_rig(1);
    let r = router(&dir, false, &rig.dir.path().join("router.log"));
    let toml = base_toml(&format!(
        "[escalation]\ntiers = [\"{MODEL}\", \"big-json\"]\nafter_failures = 1\n\n\
         [[endpoint]]\nname = \"big\"\napi = \"openai\"\nurl = \"{0}\"\nmodels = [\"big-json\"]\n\n\
         [[endpoint]]\nname = \"pinned\"\napi = \"openai\"\nurl = \"{0}\"\nmodels = [\"big-json\"]\n\n\
         [[gpu]]\nindex = 0\nworker = \"gpu0\"\nllama_server = \"{1}\"\nvram_mb = 6144\n",
        api.url(),
        r.url
    ));
    rig.write("root/rig.toml", &toml);
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    let plan = rig.write(
        "plan.md",
        "# Plan: tiers\n\n## Task: facts\n- task_class: llm\n- expect: json\n\
         - endpoint: pinned\n- output: facts.json\n\
         - prompt: Write one short sentence about the sea.\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(wait_long(&rig, &batch), 0, "{}", rig.decisions().join("\n"));
    let esc = rig.decisions_with(&["decision=escalate"]);
    assert_eq!(esc.len(), 1, "{}", rig.decisions().join("\n"));
    // The line says why: the failure and how often on which tier.
    assert!(
        esc[0].contains("to=big-json")
            && esc[0].contains("tier=2")
            && esc[0].contains("endpoint=pinned")
            && esc[0].contains("failed 1 times on tier 1"),
        "{}",
        esc[0]
    );
    let t = rig.task("complete", "facts");
    assert_eq!(t["tier"], 2);
    // The plan's pin holds on the tier it serves (the first endpoint serving
    // big-json is "big").
    assert_eq!(t["endpoint"], "pinned");
    assert_eq!(t["pinned_endpoint"], "pinned");
    assert_eq!(t["earlier_attempts"].as_array().unwrap().len(), 1, "{t}");
    let out = std::fs::read_to_string(rig.dir.path().join("facts.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["model"], "big-json");
    // The second tier was told about the first: its error and its answer.
    let chats: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|q| q.path == "/v1/chat/completions")
        .collect();
    assert_eq!(chats.len(), 1);
    let sent = chats[0].prompt.clone().unwrap_or_default();
    let first = &t["earlier_attempts"][0];
    assert!(
        sent.contains("## Earlier attempts")
            && sent.contains(&format!(
                "Tier 1: model {}",
                first["model"].as_str().unwrap()
            ))
            && sent.contains("Write one short sentence about the sea."),
        "{sent}"
    );
    drop(r);
}

/// c, d. A loopback endpoint (a real router) never has two requests in flight;
/// a second one declared `max_concurrent = 0` (the test server on 127.0.0.2)
/// runs many at once, more than there are workers; cpu workers run both. No API
/// key reaches any file under the root, nor a task's environment.
#[test]
fn endpoint_limits_hold_across_workers_and_no_key_is_written() {
    let test = "endpoint_limits_hold_across_workers_and_no_key_is_written";
    let Some(dir) = llm_dir(test) else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut opts = ApiFakeOptions::new(ApiFlavor::OpenAi, &["remote-big"]);
    opts.listen = "127.0.0.2:0".parse().unwrap();
    opts.api_key = Some(KEY.into());
    opts.tokens_per_sec = 15.0;
    let api = rt.block_on(start_api(opts)).unwrap();
    let mut rig = Rig::new();
    rig.env = vec![("RIGMIND_TEST_API_KEY".into(), KEY.into())];
    let r = router(&dir, true, &rig.dir.path().join("router.log"));
    let toml = base_toml(&format!(
        "[[endpoint]]\nname = \"local\"\napi = \"llama-server\"\nurl = \"{}\"\nmodels = [\"{MODEL}\"]\n\n\
         [[endpoint]]\nname = \"remote\"\napi = \"openai\"\nurl = \"{}\"\nmodels = [\"remote-big\"]\n\
         max_concurrent = 0\napi_key_env = \"RIGMIND_TEST_API_KEY\"\n\
         price_in_per_mtok = 3.0\nprice_out_per_mtok = 15.0\n",
        r.url,
        api.url()
    ));
    rig.start_with_config(&toml, &["cpu1", "cpu2"]);
    let plan = rig.write(
        "plan.md",
        &format!(
            "# Plan: endpoints\n\n## Task: env\n- task_class: cpu\n- command: `env > env.txt`\n\n\
             ## Task: local\n- task_class: llm\n- model: {MODEL}\n- for_each: [1, 2, 3]\n\
             - prompt: Say hello in three words.\n\n\
             ## Task: remote\n- task_class: llm\n- model: remote-big\n\
             - for_each: [1, 2, 3, 4, 5, 6, 7, 8]\n- prompt: Say hello.\n"
        ),
    );
    let batch = rig.submit(&plan);
    assert_eq!(wait_long(&rig, &batch), 0, "{}", rig.decisions().join("\n"));

    let done = rig.tasks_in("complete");
    let mut local: Vec<_> = done
        .iter()
        .filter(|t| t["plan_task_id"] == "local")
        .map(|t| (time(t, "started_at"), time(t, "finished_at")))
        .collect();
    assert_eq!(local.len(), 3);
    local.sort();
    for w in local.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "two requests in flight at the loopback endpoint: {w:?}"
        );
    }
    assert!(
        api.max_in_flight() > 2,
        "the unlimited endpoint ran {} at once with 2 workers",
        api.max_in_flight()
    );
    for t in done.iter().filter(|t| t["plan_task_id"] == "remote") {
        assert_eq!(t["endpoint"], "remote");
        assert!(t["cost_usd"].as_f64().unwrap() > 0.0, "{t}");
    }
    let env = std::fs::read_to_string(rig.dir.path().join("env.txt")).unwrap();
    assert!(!env.contains(KEY), "the task's environment holds the key");
    for f in walk(rig.dir.path()) {
        let body = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&body).contains(KEY),
            "{} holds the API key",
            f.display()
        );
    }
    drop(r);
}
