//! The llama-server client against a REAL llama.cpp `llama-server` in router mode
//! with a real model (SmolLM2-135M-Instruct), both set up by `scripts/setup-llm.sh`
//! into `RIGMIND_LLM_DIR` (default `<workspace>/.cache/llm`). Without them each test
//! records a skip and returns.
//!
//! The router runs as the facts of this machine ask: `-t 1 -c 2048` (two cores
//! shared), `--no-models-autoload` (loads only when rigmind asks).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rigmind_llm::{Backend, ChatMessage, ChatRequest, LlamaServerClient, LlmError, ModelStatus};
use rigmind_testkit::llama::{llm_dir, Router, MODEL};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts a router on a free port and waits until `/models` answers.
async fn router(test: &str) -> Option<(Router, LlamaServerClient)> {
    let dir = llm_dir(test)?;
    let port = free_port();
    let child = Command::new(dir.join("bin/llama-server"))
        .args(["--models-dir"])
        .arg(dir.join("models"))
        .args(["--no-models-autoload", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["-t", "1", "-c", "2048"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llama-server");
    let r = Router {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let c = LlamaServerClient::new(&r.url).unwrap();
    let start = Instant::now();
    while c.models().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "router never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some((r, c))
}

/// The processes whose parent is `pid` (the router's model processes).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // Fields after the command name: state, ppid, ...
        let ppid = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1);
        if ppid == Some(pid.to_string().as_str()) && rigmind_testkit::running(p) {
            out.push(p);
        }
    }
    out
}

fn chat(stream: bool) -> ChatRequest {
    ChatRequest {
        model: MODEL.into(),
        messages: vec![
            ChatMessage::new("system", "You are a helpful assistant."),
            ChatMessage::new("user", "Name three colours."),
        ],
        stream,
        keep_alive: None,
        options: Some(serde_json::json!({"num_predict": 24, "temperature": 0, "seed": 1})),
    }
}

#[tokio::test]
async fn load_chat_unload_on_a_real_router() {
    let Some((r, c)) = router("llama_server::load_chat_unload_on_a_real_router").await else {
        return;
    };
    let router_pid = r.child.id();
    let b = Backend::LlamaServer(c.clone());
    assert_eq!(b.status(MODEL).await.unwrap(), ModelStatus::Unloaded);
    assert!(
        children(router_pid).is_empty(),
        "no model process before the load"
    );

    let took = b.load(MODEL).await.unwrap();
    assert_eq!(b.status(MODEL).await.unwrap(), ModelStatus::Loaded);
    assert_eq!(
        children(router_pid).len(),
        1,
        "the model runs in one child process"
    );
    eprintln!("load took {took:?}");
    // Loading what is loaded returns at once.
    assert!(b.load(MODEL).await.unwrap() < Duration::from_secs(1));

    let mut chunks = Vec::new();
    let s = b
        .chat(&chat(true), &mut |t: &str| chunks.push(t.to_string()))
        .await
        .unwrap();
    assert!(!s.response.trim().is_empty(), "real text: {s:?}");
    assert_eq!(chunks.concat(), s.response);
    assert!(s.prompt_eval_count.is_some_and(|n| n > 5), "{s:?}");
    assert!(s.eval_count.is_some_and(|n| n > 0 && n <= 24), "{s:?}");
    let tps = s
        .tokens_per_second()
        .expect("llama-server timings give the speed");
    assert!(tps > 0.0);
    let w = b.chat(&chat(false), &mut |_: &str| {}).await.unwrap();
    assert!(!w.response.trim().is_empty());
    assert!(w.eval_count.is_some() && w.prompt_eval_count.is_some());
    eprintln!("streamed {tps:.1} tok/s: {:?}", s.response);

    let took = b.unload(MODEL, Duration::from_secs(20)).await.unwrap();
    assert_eq!(b.status(MODEL).await.unwrap(), ModelStatus::Unloaded);
    assert!(
        children(router_pid).is_empty(),
        "the model's process is gone after {took:?}"
    );
    // Unloading what is unloaded is fine too.
    b.unload(MODEL, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn unloaded_and_unknown_models_are_clear_errors() {
    let Some((_r, c)) = router("llama_server::unloaded_and_unknown_models_are_clear_errors").await
    else {
        return;
    };
    let e = c.chat(&chat(false), &mut |_: &str| {}).await.unwrap_err();
    assert!(
        matches!(&e, LlmError::NotLoaded { model, .. } if model == MODEL),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(c.base_url()) && e.to_string().contains(MODEL),
        "{e}"
    );
    assert!(!e.is_definition_error());

    let nope = ChatRequest {
        model: "no-such-model".into(),
        ..chat(true)
    };
    let e = c.chat(&nope, &mut |_: &str| {}).await.unwrap_err();
    assert!(matches!(e, LlmError::UnknownModel { .. }), "{e:?}");
    assert!(e.is_definition_error());
    let e = c.load("no-such-model").await.unwrap_err();
    assert!(matches!(e, LlmError::UnknownModel { .. }), "{e:?}");
    assert!(e.to_string().starts_with("the llama-server at"), "{e}");
    let e = c.status("no-such-model").await.unwrap_err();
    assert!(matches!(e, LlmError::UnknownModel { .. }), "{e:?}");
}
