//! Anthropic's Messages API wire format: messages, stream events, errors.
//!
//! Shapes from Anthropic's API reference ("Messages", "Streaming Messages",
//! "Errors"): errors are `{"type": "error", "error": {"type", "message"}}` with
//! `authentication_error` (401), `invalid_request_error` (400), `not_found_error`
//! (404), `rate_limit_error` (429), `api_error` (500); a stream is `message_start`,
//! `content_block_start`, `ping`, `content_block_delta` (`text_delta`) ...,
//! `content_block_stop`, `message_delta` (`stop_reason`, usage `output_tokens`),
//! `message_stop`, each an SSE event named by its type.

use std::time::Instant;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{id, sse, Busy, Failure, Job};
use crate::text::pace;

/// The status and body of a failure.
pub(crate) fn error(f: &Failure) -> (StatusCode, Value) {
    let (status, kind, message) = match f {
        Failure::NotFoundPath => (
            StatusCode::NOT_FOUND,
            "not_found_error",
            "Not found".to_string(),
        ),
        Failure::Key(false) => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required".to_string(),
        ),
        Failure::Key(true) => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key".to_string(),
        ),
        Failure::Invalid(m) => (StatusCode::BAD_REQUEST, "invalid_request_error", m.clone()),
        Failure::UnknownModel(m) => (
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("model: {m}"),
        ),
        Failure::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit".to_string(),
        ),
    };
    (status, body(kind, &message))
}

fn body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn stop_reason(job: &Job) -> &'static str {
    if job.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// The message object, with `content` and the final usage or a stream's start.
fn message(job: &Job, msg_id: &str, content: Value, stop: Value, output_tokens: u64) -> Value {
    json!({
        "id": msg_id, "type": "message", "role": "assistant", "model": job.model,
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": job.prompt_tokens, "output_tokens": output_tokens},
    })
}

/// The body of a 500 (also the reply to a non-streamed request under
/// `error_mid_stream`).
pub(crate) fn server_error() -> Value {
    body("api_error", "Internal server error")
}

/// The whole answer.
pub(crate) fn whole(job: &Job) -> Value {
    let content = json!([{"type": "text", "text": job.tokens.concat()}]);
    let n = job.tokens.len() as u64;
    message(job, &id("msg_"), content, json!(stop_reason(job)), n)
}

/// Sends the answer as events, paced; `_busy` counts it in flight until the end.
pub(crate) async fn stream(job: Job, tx: mpsc::Sender<Bytes>, _busy: Busy) {
    let start_msg = message(&job, &id("msg_"), json!([]), Value::Null, 1);
    let head = [
        (
            "message_start",
            json!({"type": "message_start", "message": start_msg}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    for (name, data) in head {
        if tx.send(sse(Some(name), &data)).await.is_err() {
            return;
        }
    }
    let start = Instant::now();
    for (i, tok) in job.tokens.iter().enumerate() {
        pace(start, i, job.tokens_per_sec).await;
        if job.fail_mid_stream && i == 3 {
            let _ = tx
                .send(sse(Some("error"), &body("overloaded_error", "Overloaded")))
                .await;
            return;
        }
        let delta = json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": tok}});
        if tx
            .send(sse(Some("content_block_delta"), &delta))
            .await
            .is_err()
        {
            return;
        }
    }
    let tail = [
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(&job), "stop_sequence": null},
                   "usage": {"output_tokens": job.tokens.len()}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    for (name, data) in tail {
        if tx.send(sse(Some(name), &data)).await.is_err() {
            return;
        }
    }
}
