//! [`OpenAiClient`]: the OpenAI chat API (`POST /v1/chat/completions`), as OpenAI,
//! vLLM, LM Studio and llama-server speak it.
//!
//! Wire facts (OpenAI's API reference; llama.cpp's `tools/server/README.md`): the
//! key goes as `Authorization: Bearer KEY`; a non-streamed answer is one object
//! with `choices[0].message.content`, `finish_reason` and `usage`
//! (`prompt_tokens`, `completion_tokens`); a streamed one is server-sent events,
//! each `data:` a chunk with `choices[0].delta.content`, the usage in a last chunk
//! when the request asks `stream_options.include_usage`, and the stream ends with
//! `data: [DONE]`. llama-server adds `timings` (`predicted_n`, `predicted_ms`,
//! `predicted_per_second`), which give the real generation speed; without them
//! the speed is measured here, from the first token to the end.

use rigmind_config::Api;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::chat::{chat_client_methods, ChatWire, Turn};
use crate::error::LlmError;
use crate::http::{Call, Site};
use crate::key::ApiKey;
use crate::types::{ChatRequest, GenClock, Generation};

/// A client for one OpenAI-compatible server (cheap to clone).
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    site: Site,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Wire {
    model: Option<String>,
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
    timings: Option<WireTimings>,
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireChoice {
    message: Option<WireMessage>,
    delta: Option<WireMessage>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireMessage {
    content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireTimings {
    predicted_n: Option<u64>,
    predicted_ms: Option<f64>,
}

/// The answer so far, and the clock for the speed when the server gives none.
struct Acc {
    gen: Generation,
    clock: GenClock,
}

impl Acc {
    fn new() -> Self {
        Acc {
            gen: Generation::default(),
            clock: GenClock::start(),
        }
    }

    /// Adds one object (a chunk, or the whole answer).
    fn absorb(&mut self, w: Wire, on_token: &mut (dyn FnMut(&str) + Send)) {
        if let Some(m) = w.model {
            self.gen.model = m;
        }
        for c in w.choices {
            let text = c.message.or(c.delta).and_then(|m| m.content);
            if let Some(t) = text.filter(|t| !t.is_empty()) {
                self.clock.token();
                on_token(&t);
                self.gen.response.push_str(&t);
            }
            if c.finish_reason.is_some() {
                self.gen.done_reason = c.finish_reason;
            }
        }
        if let Some(u) = w.usage {
            self.gen.prompt_eval_count = u.prompt_tokens.or(self.gen.prompt_eval_count);
            self.gen.eval_count = u.completion_tokens.or(self.gen.eval_count);
        }
        if let Some(t) = w.timings {
            self.gen.eval_count = self.gen.eval_count.or(t.predicted_n);
            self.gen.eval_duration_ns = t
                .predicted_ms
                .filter(|ms| ms.is_finite() && *ms > 0.0)
                .map(|ms| (ms * 1e6) as u64);
        }
    }
}

/// An answer or chunk in OpenAI's shape.
fn wire(site: &Site, call: &Call<'_>, v: Value) -> Result<Wire, LlmError> {
    serde_json::from_value(v).map_err(|e| site.protocol(call, format!("unexpected answer: {e}")))
}

impl ChatWire for Acc {
    const WHAT: &'static str = "chat: POST /v1/chat/completions";
    const END: &'static str = "data: [DONE]";

    fn start() -> Self {
        Acc::new()
    }

    fn request(site: &Site, req: &ChatRequest) -> reqwest::RequestBuilder {
        let http = site.http.post(chat_url(&site.base)).json(&body(req));
        match &site.key {
            Some(k) => http.bearer_auth(k.secret()),
            None => http,
        }
    }

    fn whole(&mut self, turn: &mut Turn<'_>, answer: Value) -> Result<(), LlmError> {
        self.absorb(wire(turn.site, turn.call, answer)?, turn.on_token);
        Ok(())
    }

    /// A chunk, or `[DONE]`.
    fn event(&mut self, turn: &mut Turn<'_>, data: &str) -> Result<bool, LlmError> {
        if data.trim() == "[DONE]" {
            return Ok(true);
        }
        let v = turn.site.parse_json(turn.call, data.as_bytes())?;
        self.absorb(wire(turn.site, turn.call, v)?, turn.on_token);
        Ok(false)
    }

    fn finish(mut self) -> Generation {
        self.clock.finish(&mut self.gen);
        self.gen
    }
}

/// The request body: Ollama-style `options` map to the OpenAI names
/// (`num_predict` is `max_tokens`).
fn body(req: &ChatRequest) -> Value {
    let mut b = json!({
        "model": req.model,
        "messages": req.messages,
        "stream": req.stream,
    });
    if req.stream {
        b["stream_options"] = json!({ "include_usage": true });
    }
    if let Some(o) = req.options.as_ref().and_then(Value::as_object) {
        for (from, to) in [
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("seed", "seed"),
            ("stop", "stop"),
            ("num_predict", "max_tokens"),
        ] {
            if let Some(v) = o.get(from) {
                b[to] = v.clone();
            }
        }
    }
    b
}

/// `/v1/chat/completions` under `base`, which may or may not end in `/v1`.
fn chat_url(base: &str) -> String {
    if base.ends_with("/v1") {
        format!("{base}/chat/completions")
    } else {
        format!("{base}/v1/chat/completions")
    }
}

impl OpenAiClient {
    /// A client for the server at `base_url` (`https://api.openai.com` or
    /// `.../v1`), sending `key` as a bearer token when given.
    pub fn new(base_url: &str, key: Option<ApiKey>) -> Result<Self, LlmError> {
        Ok(OpenAiClient {
            site: Site::new(Api::OpenAi, base_url, key)?,
        })
    }

    /// A client on an existing site (llama-server speaks this API for chat).
    pub(crate) fn on(site: Site) -> Self {
        OpenAiClient { site }
    }

    chat_client_methods!(Acc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChatMessage;

    #[test]
    fn ollama_options_map_to_openai_names() {
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new("user", "hi")],
            stream: true,
            keep_alive: Some("5m".into()),
            options: Some(json!({"num_predict": 7, "temperature": 0, "num_ctx": 9})),
        };
        let b = body(&req);
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["temperature"], 0);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(b.get("keep_alive").is_none() && b.get("num_ctx").is_none());
        assert_eq!(chat_url("http://h:1"), "http://h:1/v1/chat/completions");
        assert_eq!(chat_url("https://h/v1"), "https://h/v1/chat/completions");
    }

    #[test]
    fn usage_and_timings_fill_the_generation() {
        let mut acc = Acc::new();
        let mut seen = String::new();
        let w: Wire = serde_json::from_value(json!({
            "model": "m",
            "choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
            "timings": {"predicted_n": 2, "predicted_ms": 40.0}
        }))
        .unwrap();
        acc.absorb(w, &mut |t: &str| seen.push_str(t));
        let g = acc.finish();
        assert_eq!(seen, "hello");
        assert_eq!((g.prompt_eval_count, g.eval_count), (Some(5), Some(2)));
        assert_eq!(g.tokens_per_second(), Some(50.0));
        assert_eq!(g.done_reason.as_deref(), Some("stop"));
    }
}
