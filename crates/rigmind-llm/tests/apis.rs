//! The OpenAI and Anthropic clients, through [`Backend`], against the repo's test
//! server for those APIs, over real loopback HTTP: answers streamed and not, usage,
//! each error shape mapped to its LlmError, and the key sent in the right header
//! but never shown in an error or a Debug.

use std::time::Duration;

use rigmind_config::{Api, Endpoint};
use rigmind_llm::{ApiKey, Backend, ChatMessage, ChatRequest, LlmError, ModelStatus};
use rigmind_ollama_fake::{start_api, ApiFakeHandle, ApiFakeOptions, ApiFlavor};

const KEY: &str = "sk-test-0123456789abcdef";
const GPT: &str = "gpt-test";
const CLAUDE: &str = "claude-test";

async fn fake(
    flavor: ApiFlavor,
    model: &str,
    tweak: impl FnOnce(&mut ApiFakeOptions),
) -> ApiFakeHandle {
    let mut o = ApiFakeOptions::new(flavor, &[model]);
    o.api_key = Some(KEY.into());
    tweak(&mut o);
    start_api(o).await.unwrap()
}

fn backend(api: Api, h: &ApiFakeHandle, key: &str) -> Backend {
    Backend::with_key(api, &h.url(), Some(ApiKey::new("TEST_KEY", key))).unwrap()
}

fn req(model: &str, stream: bool) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![
            ChatMessage::new("system", "Be terse."),
            ChatMessage::new("user", "Why is the sky blue?"),
        ],
        stream,
        keep_alive: None,
        options: None,
    }
}

/// Streamed and not give the same text and usage; chunks reach on_token.
async fn chat_both_ways(b: &Backend, model: &str) {
    let mut chunks = Vec::new();
    let s = b
        .chat(&req(model, true), &mut |t: &str| chunks.push(t.to_string()))
        .await
        .unwrap();
    assert!(chunks.len() > 3, "{chunks:?}");
    assert_eq!(chunks.concat(), s.response);
    assert!(
        s.response.contains("Why is the sky blue?"),
        "{}",
        s.response
    );
    assert_eq!(s.model, model);
    assert!(s.prompt_eval_count.is_some_and(|n| n > 0), "{s:?}");
    assert_eq!(s.eval_count, Some(chunks.len() as u64));
    assert!(s.tokens_per_second().is_some_and(|t| t > 0.0), "{s:?}");
    let mut calls = 0;
    let w = b
        .chat(&req(model, false), &mut |_: &str| calls += 1)
        .await
        .unwrap();
    assert_eq!(calls, 1);
    assert_eq!(w.response, s.response);
    assert_eq!(
        (w.prompt_eval_count, w.eval_count),
        (s.prompt_eval_count, s.eval_count)
    );
    assert!(w.done_reason.is_some() && w.total_duration_ns.is_some());
}

#[tokio::test]
async fn openai_chats_streamed_and_not_with_a_bearer_key() {
    let h = fake(ApiFlavor::OpenAi, GPT, |_| {}).await;
    let b = backend(Api::OpenAi, &h, KEY);
    chat_both_ways(&b, GPT).await;
    // An endpoint: load and unload do nothing, the model is always there.
    assert_eq!(b.load(GPT).await.unwrap(), Duration::ZERO);
    assert_eq!(b.status(GPT).await.unwrap(), ModelStatus::Loaded);
    assert_eq!(b.unload(GPT, Duration::ZERO).await.unwrap(), Duration::ZERO);
    let r = h.requests();
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|r| r.key_header.as_deref() == Some("authorization") && r.key_valid));
    assert!(r[0].stream && !r[1].stream);
    assert!(r
        .iter()
        .all(|r| r.path == "/v1/chat/completions" && r.status == 200));
}

#[tokio::test]
async fn anthropic_chats_streamed_and_not_with_its_headers() {
    let h = fake(ApiFlavor::Anthropic, CLAUDE, |_| {}).await;
    let b = backend(Api::Anthropic, &h, KEY);
    chat_both_ways(&b, CLAUDE).await;
    let r = h.requests();
    assert!(r
        .iter()
        .all(|r| r.key_header.as_deref() == Some("x-api-key") && r.key_valid));
    assert!(r
        .iter()
        .all(|r| r.api_version.as_deref() == Some(rigmind_llm::ANTHROPIC_VERSION)));
    let g = b
        .chat(
            &ChatRequest {
                options: Some(serde_json::json!({"num_predict": 3})),
                ..req(CLAUDE, true)
            },
            &mut |_: &str| {},
        )
        .await
        .unwrap();
    assert_eq!(g.eval_count, Some(3));
    assert_eq!(g.done_reason.as_deref(), Some("max_tokens"));
}

/// The key must not appear in an error's Display or Debug, nor in the backend's Debug.
fn no_key(e: &LlmError, b: &Backend) {
    for text in [e.to_string(), format!("{e:?}"), format!("{b:?}")] {
        assert!(!text.contains(KEY), "key shown: {text}");
        assert!(!text.contains("sk-wrong-key-value"), "key shown: {text}");
    }
}

#[tokio::test]
async fn error_shapes_map_to_clear_errors() {
    for (flavor, api, model) in [
        (ApiFlavor::OpenAi, Api::OpenAi, GPT),
        (ApiFlavor::Anthropic, Api::Anthropic, CLAUDE),
    ] {
        let h = fake(flavor, model, |o| o.rate_limit_first = 1).await;
        let wrong = backend(api, &h, "sk-wrong-key-value");
        let e = wrong
            .chat(&req(model, false), &mut |_: &str| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e, LlmError::Unauthorized { status: 401, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains(&h.url()), "{e}");
        assert!(!e.is_definition_error());
        no_key(&e, &wrong);

        let b = backend(api, &h, KEY);
        let e = b
            .chat(&req(model, true), &mut |_: &str| {})
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::RateLimited { .. }), "{e:?}");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert!(e.to_string().contains("rate"), "{e}");
        no_key(&e, &b);

        let e = b
            .chat(&req("no-such-model", false), &mut |_: &str| {})
            .await
            .unwrap_err();
        assert!(
            matches!(&e, LlmError::UnknownModel { model, .. } if model == "no-such-model"),
            "{e:?}"
        );
        assert!(e.is_definition_error());

        let empty = ChatRequest {
            messages: vec![],
            ..req(model, false)
        };
        let e = b.chat(&empty, &mut |_: &str| {}).await.unwrap_err();
        assert!(
            matches!(e, LlmError::BadRequest { status: 400, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("messages"), "{e}");
        no_key(&e, &b);
    }
}

#[tokio::test]
async fn an_error_mid_stream_is_a_protocol_error() {
    for (flavor, api, model) in [
        (ApiFlavor::OpenAi, Api::OpenAi, GPT),
        (ApiFlavor::Anthropic, Api::Anthropic, CLAUDE),
    ] {
        let h = fake(flavor, model, |o| o.error_mid_stream = true).await;
        let b = backend(api, &h, KEY);
        let mut seen = 0;
        let e = b
            .chat(&req(model, true), &mut |_: &str| seen += 1)
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::Protocol { .. }), "{e:?}");
        assert_eq!(seen, 3, "tokens before the error still arrive");
        let e = b
            .chat(&req(model, false), &mut |_: &str| {})
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::Server { status: 500, .. }), "{e:?}");
    }
}

#[tokio::test]
async fn endpoints_read_their_key_from_the_named_variable() {
    let h = fake(ApiFlavor::Anthropic, CLAUDE, |_| {}).await;
    let var = "RIGMIND_LLM_TEST_ANTHROPIC_KEY";
    let endpoint = Endpoint {
        name: "claude".into(),
        api: Api::Anthropic,
        url: h.url(),
        models: vec![CLAUDE.into()],
        max_concurrent: None,
        api_key_env: Some(var.into()),
        price_in_per_mtok: None,
        price_out_per_mtok: None,
        requests_per_minute: None,
    };
    let e = Backend::for_endpoint(&endpoint).unwrap_err();
    assert!(matches!(e, LlmError::NoApiKey { .. }), "{e:?}");
    assert!(e.to_string().contains(var), "{e}");
    // This test alone uses this variable.
    std::env::set_var(var, KEY);
    let b = Backend::for_endpoint(&endpoint).unwrap();
    assert!(!format!("{b:?}").contains(KEY));
    let g = b
        .chat(&req(CLAUDE, false), &mut |_: &str| {})
        .await
        .unwrap();
    assert!(!g.response.is_empty());
    assert!(h.requests()[0].key_valid);
}

#[tokio::test]
async fn the_test_server_counts_requests_in_flight() {
    let h = fake(ApiFlavor::OpenAi, GPT, |o| o.tokens_per_sec = 200.0).await;
    let b = backend(Api::OpenAi, &h, KEY);
    let runs = (0..4).map(|_| {
        let b = b.clone();
        async move { b.chat(&req(GPT, true), &mut |_: &str| {}).await }
    });
    for r in futures_util::future::join_all(runs).await {
        r.unwrap();
    }
    assert_eq!(h.max_in_flight(), 4);
}
