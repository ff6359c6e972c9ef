//! The OpenAI chat API's wire format: answers, chunks, errors.
//!
//! Shapes from OpenAI's API reference ("Chat Completions", "Streaming", "Error
//! codes"): errors are `{"error": {"message", "type", "param", "code"}}`, 401
//! `invalid_api_key`, 429 `rate_limit_exceeded`, 404 `model_not_found`; a stream
//! is `chat.completion.chunk` objects as `data:` events, the usage in a last chunk
//! with no choices when `stream_options.include_usage` is set, then `data: [DONE]`.

use std::time::Instant;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{id, json_answer, sse, ApiShared, Busy, Failure, Job};
use crate::http::Body;
use crate::text::pace;

/// The status and body of a failure.
pub(crate) fn error(f: &Failure) -> (StatusCode, Value) {
    let (status, message, kind, code) = match f {
        Failure::NotFoundPath => (
            StatusCode::NOT_FOUND,
            "Invalid URL".to_string(),
            "invalid_request_error",
            Value::Null,
        ),
        Failure::Key(false) => (
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                .to_string(),
            "invalid_request_error",
            Value::Null,
        ),
        Failure::Key(true) => (
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.".to_string(),
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        Failure::Invalid(m) => (
            StatusCode::BAD_REQUEST,
            m.clone(),
            "invalid_request_error",
            Value::Null,
        ),
        Failure::UnknownModel(m) => (
            StatusCode::NOT_FOUND,
            format!("The model `{m}` does not exist or you do not have access to it."),
            "invalid_request_error",
            json!("model_not_found"),
        ),
        Failure::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests. Please try again later.".to_string(),
            "requests",
            json!("rate_limit_exceeded"),
        ),
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, body)
}

/// The body of a 500, also sent as a `data:` event when a stream fails.
pub(crate) fn server_error() -> Value {
    json!({"error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error", "param": null, "code": null,
    }})
}

/// `GET /v1/models`.
pub(crate) fn models(shared: &ApiShared) -> Response<Body> {
    let data: Vec<Value> = shared
        .opts
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "rigmind-fake"}))
        .collect();
    json_answer(&json!({"object": "list", "data": data}))
}

fn usage(job: &Job) -> Value {
    let completion = job.tokens.len() as u64;
    json!({
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
    })
}

fn finish_reason(job: &Job) -> &'static str {
    if job.truncated {
        "length"
    } else {
        "stop"
    }
}

/// The whole answer.
pub(crate) fn whole(job: &Job) -> Value {
    json!({
        "id": id("chatcmpl-"),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": job.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": job.tokens.concat()},
            "logprobs": null,
            "finish_reason": finish_reason(job),
        }],
        "usage": usage(job),
    })
}

/// Sends the answer as chunks, paced; `_busy` counts it in flight until the end.
pub(crate) async fn stream(job: Job, tx: mpsc::Sender<Bytes>, _busy: Busy) {
    let chat_id = id("chatcmpl-");
    let created = chrono::Utc::now().timestamp();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": chat_id, "object": "chat.completion.chunk", "created": created,
            "model": job.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if job.include_usage {
            c["usage"] = Value::Null;
        }
        sse(None, &c)
    };
    if tx
        .send(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ))
        .await
        .is_err()
    {
        return;
    }
    let start = Instant::now();
    for (i, tok) in job.tokens.iter().enumerate() {
        pace(start, i, job.tokens_per_sec).await;
        if job.fail_mid_stream && i == 3 {
            let _ = tx.send(sse(None, &server_error())).await;
            return;
        }
        if tx
            .send(chunk(json!({"content": tok}), Value::Null))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = tx.send(chunk(json!({}), json!(finish_reason(&job)))).await;
    if job.include_usage {
        let last = json!({
            "id": chat_id, "object": "chat.completion.chunk", "created": created,
            "model": job.model, "choices": [], "usage": usage(&job),
        });
        let _ = tx.send(sse(None, &last)).await;
    }
    let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
}
