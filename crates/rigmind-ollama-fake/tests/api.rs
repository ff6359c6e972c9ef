//! The OpenAI and Anthropic test servers on the wire: raw HTTP, checked against the
//! documented shapes (not through rigmind's clients, which tests/apis.rs of
//! rigmind-llm covers).

use rigmind_ollama_fake::{start_api, ApiFakeOptions, ApiFlavor};
use serde_json::{json, Value};

const KEY: &str = "sk-wire-test";

async fn server(flavor: ApiFlavor, rate_limit_first: u64) -> rigmind_ollama_fake::ApiFakeHandle {
    let mut o = ApiFakeOptions::new(flavor, &["m"]);
    o.api_key = Some(KEY.into());
    o.rate_limit_first = rate_limit_first;
    o.retry_after_secs = 7;
    start_api(o).await.unwrap()
}

async fn post(
    url: String,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = reqwest::Client::new().post(url).json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

#[tokio::test]
async fn openai_shapes() {
    let h = server(ApiFlavor::OpenAi, 1).await;
    let url = format!("{}/v1/chat/completions", h.url());
    let bearer = format!("Bearer {KEY}");
    let auth = [("authorization", bearer.as_str())];
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi there"}]});

    let (s, _, b) = post(url.clone(), &[], body.clone()).await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (401, Some("invalid_request_error"))
    );
    let (s, hd, b) = post(url.clone(), &auth, body.clone()).await;
    assert_eq!(s, 429);
    assert_eq!(hd["retry-after"], "7");
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["error"]["code"],
        "rate_limit_exceeded"
    );

    let (s, _, b) = post(url.clone(), &auth, body.clone()).await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let (s, hd, b) = post(url.clone(), &auth, sb).await;
    assert_eq!(s, 200);
    assert_eq!(hd["content-type"], "text/event-stream");
    let events: Vec<&str> = b.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let usage: Value =
        serde_json::from_str(events[events.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let (s, _, b) = post(
        url.clone(),
        &auth,
        json!({"model": "zz", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["error"]["code"],
        "model_not_found"
    );
    let r = reqwest::get(format!("{}/v1/models", h.url()))
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["data"][0]["id"], "m");
}

#[tokio::test]
async fn anthropic_shapes() {
    let h = server(ApiFlavor::Anthropic, 0).await;
    let url = format!("{}/v1/messages", h.url());
    let hdrs = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let body = json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi there"}]});

    let (s, _, b) = post(url.clone(), &[("x-api-key", "nope"), hdrs[1]], body.clone()).await;
    assert_eq!(s, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap(),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
    );
    let (s, _, _) = post(url.clone(), &hdrs[..1], body.clone()).await;
    assert_eq!(s, 400, "anthropic-version is required");
    let (s, _, b) = post(
        url.clone(),
        &hdrs,
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.contains("max_tokens"), "{b}");

    let (s, _, b) = post(url.clone(), &hdrs, body.clone()).await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["stop_reason"].as_str()),
        (Some("message"), Some("end_turn"))
    );
    assert_eq!(v["content"][0]["type"], "text");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let (_, _, b) = post(url.clone(), &hdrs, sb).await;
    let names: Vec<&str> = b
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        &names[..3],
        ["message_start", "content_block_start", "ping"]
    );
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(names[3..names.len() - 3]
        .iter()
        .all(|n| *n == "content_block_delta"));
}
