//! The client against the fake Ollama server, in-process, over real loopback HTTP.

use std::time::{Duration, Instant};

use rigmind_llm::{ChatMessage, ChatRequest, GenerateRequest, LlmError, OllamaClient};
use rigmind_ollama_fake::{FakeHandle, FakeOptions, RequestKind};

const MODEL: &str = "qwen2.5:7b";
const LOAD: Duration = Duration::from_millis(60);

fn opts() -> FakeOptions {
    FakeOptions {
        load_latency: LOAD,
        unload_latency: Duration::from_millis(10),
        models: vec![MODEL.into(), "llama3.2".into()],
        ..FakeOptions::default()
    }
}

async fn fake(o: FakeOptions) -> (FakeHandle, OllamaClient) {
    let h = rigmind_ollama_fake::start(o).await.unwrap();
    let c = OllamaClient::new(&format!("{}/", h.url())).unwrap();
    (h, c)
}

fn no_tokens() -> impl FnMut(&str) + Send {
    |_: &str| {}
}

#[tokio::test]
async fn version_is_the_health_check() {
    let (h, c) = fake(opts()).await;
    assert_eq!(c.base_url(), h.url());
    assert_eq!(
        c.version().await.unwrap(),
        rigmind_ollama_fake::FAKE_VERSION
    );
}

#[tokio::test]
async fn load_ps_generate_unload() {
    let (h, c) = fake(opts()).await;
    assert!(c.ps().await.unwrap().is_empty());

    let took = c.load(MODEL, "-1").await.unwrap();
    assert!(took >= LOAD, "load took {took:?}");
    let ps = c.ps().await.unwrap();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].name, MODEL);
    assert_eq!(ps[0].size_vram, 4500 * 1024 * 1024);
    assert!(ps[0]
        .expires_at
        .as_deref()
        .is_some_and(|e| e.starts_with("23")));
    assert!(c.is_loaded(MODEL).await.unwrap());
    // Loading what is loaded is quick.
    assert!(c.load(MODEL, "-1").await.unwrap() < LOAD);

    // Streamed and not: the same text, with the statistics.
    let mut req = GenerateRequest {
        model: MODEL.into(),
        prompt: "Why is the sky blue? Answer briefly.".into(),
        system: Some("You are terse.".into()),
        stream: true,
        keep_alive: Some("-1".into()),
        options: Some(serde_json::json!({"temperature": 0})),
    };
    let mut chunks: Vec<String> = Vec::new();
    let streamed = c
        .generate(&req, &mut |t: &str| chunks.push(t.to_string()))
        .await
        .unwrap();
    assert!(chunks.len() > 3);
    assert_eq!(chunks.concat(), streamed.response);
    assert_eq!(streamed.eval_count, Some(chunks.len() as u64));
    assert_eq!(streamed.done_reason.as_deref(), Some("stop"));
    assert_eq!(streamed.model, MODEL);
    assert!(streamed.tokens_per_second().is_some_and(|t| t > 0.0));
    assert!(streamed.prompt_eval_count.is_some_and(|n| n > 0));
    assert!(streamed.total_duration_ns.is_some());
    assert!(streamed.response.contains("Why is the sky blue?"));

    req.stream = false;
    let mut calls = 0;
    let whole = c.generate(&req, &mut |_: &str| calls += 1).await.unwrap();
    assert_eq!(calls, 1);
    assert_eq!(whole.response, streamed.response);
    assert_eq!(whole.eval_count, streamed.eval_count);
    assert!(whole.tokens_per_second().is_some());

    let took = c.unload(MODEL, Duration::from_secs(5)).await.unwrap();
    assert!(took < Duration::from_secs(5));
    assert!(c.ps().await.unwrap().is_empty());
    assert!(!c.is_loaded(MODEL).await.unwrap());

    let kinds: Vec<RequestKind> = h
        .requests()
        .into_iter()
        .map(|r| r.kind)
        .filter(|k| *k != RequestKind::Ps)
        .collect();
    assert_eq!(
        kinds,
        [
            RequestKind::Load,
            RequestKind::Load,
            RequestKind::Generate,
            RequestKind::Generate,
            RequestKind::Unload
        ]
    );
}

#[tokio::test]
async fn chat_streams_the_assistant_message() {
    let (_h, c) = fake(opts()).await;
    let req = ChatRequest {
        model: "llama3.2".into(),
        messages: vec![
            ChatMessage::new("system", "Be kind."),
            ChatMessage::new("user", "hello there, friend"),
        ],
        stream: true,
        keep_alive: Some("5m".into()),
        options: None,
    };
    let mut text = String::new();
    let g = c.chat(&req, &mut |t: &str| text.push_str(t)).await.unwrap();
    assert_eq!(text, g.response);
    assert!(g.response.contains("hello there, friend"));
    assert!(g.eval_count.is_some_and(|n| n > 0));
    // A tagless name is `:latest` on the server.
    assert!(c.is_loaded("llama3.2").await.unwrap());
    assert!(c.is_loaded("llama3.2:latest").await.unwrap());

    let whole = c
        .chat(
            &ChatRequest {
                stream: false,
                ..req
            },
            &mut no_tokens(),
        )
        .await
        .unwrap();
    assert_eq!(whole.response, g.response);
}

#[tokio::test]
async fn keep_alive_expiry_unloads_by_itself() {
    let (_h, c) = fake(opts()).await;
    c.load(MODEL, "1s").await.unwrap();
    assert!(c.is_loaded(MODEL).await.unwrap());
    let start = Instant::now();
    while c.is_loaded(MODEL).await.unwrap() {
        assert!(start.elapsed() < Duration::from_secs(5), "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(700));
}

#[tokio::test]
async fn unknown_model_is_a_definition_error() {
    let (_h, c) = fake(opts()).await;
    let e = c
        .generate(&GenerateRequest::new("nope:1b", "hi"), &mut no_tokens())
        .await
        .unwrap_err();
    match &e {
        LlmError::UnknownModel {
            model, detail, url, ..
        } => {
            assert_eq!(model, "nope:1b");
            assert!(detail.contains("not found"));
            assert_eq!(url, c.base_url());
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_definition_error());
    assert!(e.to_string().contains(c.base_url()));
    assert!(matches!(
        c.load("nope:1b", "5m").await,
        Err(LlmError::UnknownModel { .. })
    ));
}

#[tokio::test]
async fn bad_keep_alive_is_a_bad_request() {
    let (_h, c) = fake(opts()).await;
    let e = c.load(MODEL, "soon").await.unwrap_err();
    assert!(
        matches!(e, LlmError::BadRequest { status: 400, .. }),
        "{e:?}"
    );
    assert!(e.is_definition_error());
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = OllamaClient::new(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(5));
    let e = c.version().await.unwrap_err();
    assert!(matches!(e, LlmError::Unreachable { .. }), "{e:?}");
    assert!(!e.is_definition_error());
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    let e = c
        .generate(&GenerateRequest::new(MODEL, "hi"), &mut no_tokens())
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(MODEL), "names the model: {e}");
}

#[tokio::test]
async fn server_error_is_a_worker_failure() {
    let (_h, c) = fake(FakeOptions {
        fail_generate_status: Some(500),
        ..opts()
    })
    .await;
    c.load(MODEL, "5m").await.expect("loads are not failed");
    let e = c
        .generate(&GenerateRequest::new(MODEL, "hi"), &mut no_tokens())
        .await
        .unwrap_err();
    match &e {
        LlmError::Server { status, detail, .. } => {
            assert_eq!(*status, 500);
            assert!(detail.contains("injected failure"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_definition_error());
}

#[tokio::test]
async fn error_line_mid_stream_is_a_protocol_error() {
    let (_h, c) = fake(FakeOptions {
        error_mid_stream: true,
        ..opts()
    })
    .await;
    let mut seen = 0;
    let req = GenerateRequest {
        stream: true,
        ..GenerateRequest::new(MODEL, "tell me a story")
    };
    let e = c
        .generate(&req, &mut |_: &str| seen += 1)
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("error was encountered"), "{e}");
    assert_eq!(seen, 3, "tokens before the error still reach on_token");
    assert!(!e.is_definition_error());
}

#[tokio::test]
async fn slow_generation_times_out() {
    let (_h, c) = fake(FakeOptions {
        tokens_per_sec: 10.0,
        load_latency: Duration::from_millis(1),
        ..opts()
    })
    .await;
    let c = c.with_timeouts(Duration::from_secs(2), Duration::from_millis(400));
    let req = GenerateRequest {
        stream: true,
        ..GenerateRequest::new(MODEL, "long answer please")
    };
    let start = Instant::now();
    let e = c.generate(&req, &mut no_tokens()).await.unwrap_err();
    assert!(
        matches!(e, LlmError::Timeout { after, .. } if after == Duration::from_millis(400)),
        "{e:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(!e.is_definition_error());
}

#[tokio::test]
async fn unload_reports_a_model_that_stays() {
    // A server that keeps the model for longer than we wait.
    let (_h, c) = fake(FakeOptions {
        unload_latency: Duration::from_millis(800),
        ..opts()
    })
    .await;
    c.load(MODEL, "-1").await.unwrap();
    let e = c
        .unload(MODEL, Duration::from_millis(200))
        .await
        .unwrap_err();
    match e {
        LlmError::StillLoaded { model, after, .. } => {
            assert_eq!(model, MODEL);
            assert!(after >= Duration::from_millis(200));
        }
        other => panic!("{other:?}"),
    }
}
