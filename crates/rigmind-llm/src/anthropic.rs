//! [`AnthropicClient`]: Anthropic's Messages API (`POST /v1/messages`).
//!
//! Wire facts (Anthropic's API reference, "Messages" and "Streaming Messages"):
//! the key goes in `x-api-key`, with `anthropic-version: 2023-06-01`; system text
//! is a top-level `system` field, not a message; `max_tokens` is required. A
//! non-streamed answer is a `message` object whose `content` is a list of blocks
//! (`{"type": "text", "text": ...}`), with `stop_reason` and `usage`
//! (`input_tokens`, `output_tokens`). A streamed one is server-sent events:
//! `message_start` (the message, with the input token count), then per block
//! `content_block_start`, `content_block_delta`s (`text_delta`),
//! `content_block_stop`, then `message_delta` (`stop_reason` and the output token
//! count) and `message_stop`; `ping`s may come anywhere, and an `error` event
//! (`{"type": "error", "error": {"type", "message"}}`) ends a failed stream.

use rigmind_config::Api;
use serde_json::{json, Value};

use crate::chat::{chat_client_methods, ChatWire, Turn};
use crate::error::LlmError;
use crate::http::Site;
use crate::key::ApiKey;
use crate::types::{ChatRequest, GenClock, Generation};

/// The API version this client speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` when the request's options set no `num_predict`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A client for the Anthropic API (or a server speaking it); cheap to clone.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    site: Site,
}

/// The answer so far.
struct Acc {
    gen: Generation,
    clock: GenClock,
    stopped: bool,
}

impl Acc {
    fn text(&mut self, t: &str, on_token: &mut (dyn FnMut(&str) + Send)) {
        if !t.is_empty() {
            self.clock.token();
            on_token(t);
            self.gen.response.push_str(t);
        }
    }

    /// Reads a `usage` object (whole, or the running counts of a stream).
    fn usage(&mut self, u: Option<&Value>) {
        let count = |k: &str| u.and_then(|u| u.get(k)).and_then(Value::as_u64);
        if let Some(n) = count("input_tokens") {
            self.gen.prompt_eval_count = Some(n);
        }
        if let Some(n) = count("output_tokens") {
            self.gen.eval_count = Some(n);
        }
    }

    /// Reads a whole `message` object (or the skeleton of `message_start`).
    fn message(&mut self, m: &Value, on_token: &mut (dyn FnMut(&str) + Send)) {
        if let Some(model) = m.get("model").and_then(Value::as_str) {
            self.gen.model = model.to_string();
        }
        for block in m
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if block.get("type").and_then(Value::as_str) == Some("text") {
                let t = block.get("text").and_then(Value::as_str).unwrap_or("");
                self.text(t, on_token);
            }
        }
        self.stop_reason(m);
        self.usage(m.get("usage"));
    }

    fn stop_reason(&mut self, v: &Value) {
        if let Some(r) = v.get("stop_reason").and_then(Value::as_str) {
            self.gen.done_reason = Some(r.to_string());
        }
    }
}

impl ChatWire for Acc {
    const WHAT: &'static str = "chat: POST /v1/messages";
    const END: &'static str = "message_stop";

    fn start() -> Self {
        Acc {
            gen: Generation::default(),
            clock: GenClock::start(),
            stopped: false,
        }
    }

    fn request(site: &Site, req: &ChatRequest) -> reqwest::RequestBuilder {
        let http = site
            .http
            .post(format!("{}/v1/messages", site.base))
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&body(req));
        match &site.key {
            Some(k) => http.header("x-api-key", k.secret()),
            None => http,
        }
    }

    fn whole(&mut self, turn: &mut Turn<'_>, answer: Value) -> Result<(), LlmError> {
        self.message(&answer, turn.on_token);
        Ok(())
    }

    /// Takes one event's data; the stream is over at `message_stop`.
    fn event(&mut self, turn: &mut Turn<'_>, data: &str) -> Result<bool, LlmError> {
        let v = turn.site.parse_json(turn.call, data.as_bytes())?;
        let on_token = &mut *turn.on_token;
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => self.message(&v["message"], on_token),
            Some("content_block_start") => {
                self.message(&json!({ "content": [v["content_block"]] }), on_token)
            }
            Some("content_block_delta") if v["delta"]["type"] == "text_delta" => {
                self.text(v["delta"]["text"].as_str().unwrap_or(""), on_token)
            }
            Some("message_delta") => {
                self.stop_reason(&v["delta"]);
                self.usage(v.get("usage"));
            }
            Some("message_stop") => self.stopped = true,
            // ping, content_block_stop, and event kinds added later.
            _ => {}
        }
        Ok(self.stopped)
    }

    fn finish(mut self) -> Generation {
        self.clock.finish(&mut self.gen);
        self.gen
    }
}

/// The request body: system messages go to `system`, the rest stay in order.
fn body(req: &ChatRequest) -> Value {
    let system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let messages: Vec<Value> = req
        .messages
        .iter()
        .filter(|m| m.role != "system")
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect();
    let opt = |k: &str| req.options.as_ref().and_then(|o| o.get(k)).cloned();
    let mut b = json!({
        "model": req.model,
        "messages": messages,
        "max_tokens": opt("num_predict").unwrap_or(json!(DEFAULT_MAX_TOKENS)),
        "stream": req.stream,
    });
    if !system.is_empty() {
        b["system"] = json!(system.join("\n\n"));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("stop", "stop_sequences"),
    ] {
        if let Some(v) = opt(from) {
            b[to] = v;
        }
    }
    b
}

impl AnthropicClient {
    /// A client for `base_url` (`https://api.anthropic.com`) with `key`.
    pub fn new(base_url: &str, key: ApiKey) -> Result<Self, LlmError> {
        Ok(AnthropicClient {
            site: Site::new(Api::Anthropic, base_url, Some(key))?,
        })
    }

    chat_client_methods!(Acc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChatMessage;

    #[test]
    fn system_messages_move_to_the_system_field() {
        let req = ChatRequest {
            model: "claude".into(),
            messages: vec![
                ChatMessage::new("system", "Be terse."),
                ChatMessage::new("user", "hi"),
            ],
            stream: false,
            keep_alive: None,
            options: Some(json!({"temperature": 0.5, "num_predict": 64})),
        };
        let b = body(&req);
        assert_eq!(b["system"], "Be terse.");
        assert_eq!(b["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(b["max_tokens"], 64);
        assert_eq!(b["temperature"], 0.5);
        let b = body(&ChatRequest {
            options: None,
            ..req
        });
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
    }
}
