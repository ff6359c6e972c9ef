//! [`OllamaClient`]: one Ollama server's HTTP API (health, `/api/ps`, load, unload,
//! generate, chat), with every failure mapped to an [`LlmError`].
//!
//! Wire facts (from Ollama's `docs/api.md`): a generate request with no prompt loads
//! the model, and with `keep_alive` 0 unloads it; the answer streams as NDJSON unless
//! `"stream": false`; the last object has `"done": true` and the statistics
//! (durations in nanoseconds); a failure after the stream has started arrives as an
//! `{"error": ...}` line with the status already 200.

use std::time::{Duration, Instant};

use rigmind_config::Api;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::LlmError;
use crate::http::{snippet, Call, Site};
use crate::types::{ChatRequest, GenerateRequest, Generation, RunningModel};

/// A client for one Ollama server (cheap to clone; connections are pooled).
#[derive(Debug, Clone)]
pub struct OllamaClient {
    site: Site,
}

/// One object of an answer (generate or chat, chunk or whole), leniently decoded.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireReply {
    model: Option<String>,
    response: Option<String>,
    message: Option<WireMessage>,
    done: bool,
    done_reason: Option<String>,
    eval_count: Option<u64>,
    eval_duration: Option<u64>,
    prompt_eval_count: Option<u64>,
    load_duration: Option<u64>,
    total_duration: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireMessage {
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WirePs {
    #[serde(default)]
    models: Option<Vec<RunningModel>>,
}

#[derive(Debug, Deserialize)]
struct WireVersion {
    version: String,
}

/// `keep_alive` as Ollama wants it: a bare number (`"-1"`, `"300"`) goes as a JSON
/// number of seconds, since Ollama parses strings as Go durations and refuses a
/// number without a unit; anything else (`"5m"`) goes as a string.
pub(crate) fn keep_alive_json(s: &str) -> Value {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return json!(i);
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => json!(t),
    }
}

impl OllamaClient {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:11435`; a
    /// trailing slash is fine). Timeouts: connect 5 s, whole request 30 min.
    pub fn new(base_url: &str) -> Result<Self, LlmError> {
        Ok(OllamaClient {
            site: Site::new(Api::Ollama, base_url, None)?,
        })
    }

    /// Sets the connect timeout and the whole-request timeout (which bounds load,
    /// unload, generate and chat, streaming included; health and `/api/ps` calls
    /// use at most 30 s).
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.site.set_timeouts(connect, request);
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.site.base
    }

    /// The server's version (`GET /api/version`): the health check.
    pub async fn version(&self) -> Result<String, LlmError> {
        let call = Call {
            what: "GET /api/version",
            model: None,
            timeout: self.site.control_timeout(),
        };
        let body = self.site.get_bytes(&call, "/api/version").await?;
        let v: WireVersion = serde_json::from_slice(&body).map_err(|e| {
            self.protocol(
                &call,
                format!("unparseable answer ({e}): {}", snippet(&body)),
            )
        })?;
        Ok(v.version)
    }

    /// The models loaded now (`GET /api/ps`).
    pub async fn ps(&self) -> Result<Vec<RunningModel>, LlmError> {
        let call = Call {
            what: "GET /api/ps",
            model: None,
            timeout: self.site.control_timeout(),
        };
        let body = self.site.get_bytes(&call, "/api/ps").await?;
        let ps: WirePs = serde_json::from_slice(&body).map_err(|e| {
            self.protocol(
                &call,
                format!("unparseable answer ({e}): {}", snippet(&body)),
            )
        })?;
        Ok(ps.models.unwrap_or_default())
    }

    /// Whether `/api/ps` lists `model` (no tag means `:latest`).
    pub async fn is_loaded(&self, model: &str) -> Result<bool, LlmError> {
        Ok(self.ps().await?.iter().any(|m| m.is(model)))
    }

    /// Loads `model` (generate request with no prompt) and keeps it per keep_alive.
    ///
    /// Returns how long the request took (about the load time when the model was
    /// not loaded, near zero when it was).
    pub async fn load(&self, model: &str, keep_alive: &str) -> Result<Duration, LlmError> {
        let start = Instant::now();
        let call = Call {
            what: "load: POST /api/generate",
            model: Some(model),
            timeout: self.site.request_timeout,
        };
        let body = json!({
            "model": model,
            "keep_alive": keep_alive_json(keep_alive),
            "stream": false,
        });
        let g = self
            .post_reply(&call, "/api/generate", &body, &mut |_: &str| {})
            .await?;
        tracing::debug!(url = %self.site.base, model, took_ms = start.elapsed().as_millis() as u64, done_reason = ?g.done_reason, "ollama load");
        Ok(start.elapsed())
    }

    /// Unloads (keep_alive 0, no prompt), then polls /api/ps every 100 ms until the
    /// model is no longer listed, up to `wait`; Err(LlmError::StillLoaded{..}) if it
    /// still is.
    pub async fn unload(&self, model: &str, wait: Duration) -> Result<Duration, LlmError> {
        let start = Instant::now();
        let call = Call {
            what: "unload: POST /api/generate",
            model: Some(model),
            timeout: self.site.request_timeout,
        };
        let body = json!({ "model": model, "keep_alive": 0, "stream": false });
        self.post_reply(&call, "/api/generate", &body, &mut |_: &str| {})
            .await?;
        // Ollama answers the unload request at once and frees the memory afterwards.
        let poll_start = Instant::now();
        let took = self
            .site
            .wait_unloaded(model, start, poll_start, wait, || async {
                Ok(!self.is_loaded(model).await?)
            })
            .await?;
        tracing::debug!(url = %self.site.base, model, took_ms = took.as_millis() as u64, "ollama unload");
        Ok(took)
    }

    /// One generation: streamed (NDJSON, chunks passed to `on_token`) when
    /// req.stream, else one response (passed to `on_token` whole).
    pub async fn generate(
        &self,
        req: &GenerateRequest,
        on_token: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Generation, LlmError> {
        let call = Call {
            what: "generate: POST /api/generate",
            model: Some(&req.model),
            timeout: self.site.request_timeout,
        };
        let mut body = json!({
            "model": req.model,
            "prompt": req.prompt,
            "stream": req.stream,
        });
        if let Some(s) = &req.system {
            body["system"] = json!(s);
        }
        if let Some(k) = &req.keep_alive {
            body["keep_alive"] = keep_alive_json(k);
        }
        if let Some(o) = &req.options {
            body["options"] = o.clone();
        }
        self.post_reply(&call, "/api/generate", &body, on_token)
            .await
    }

    /// One chat turn: streamed when req.stream (chunks passed to `on_token`), else
    /// one response (passed to `on_token` whole). The reply text is in
    /// [`Generation::response`].
    pub async fn chat(
        &self,
        req: &ChatRequest,
        on_token: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Generation, LlmError> {
        let call = Call {
            what: "chat: POST /api/chat",
            model: Some(&req.model),
            timeout: self.site.request_timeout,
        };
        let mut body = json!({
            "model": req.model,
            "messages": req.messages,
            "stream": req.stream,
        });
        if let Some(k) = &req.keep_alive {
            body["keep_alive"] = keep_alive_json(k);
        }
        if let Some(o) = &req.options {
            body["options"] = o.clone();
        }
        self.post_reply(&call, "/api/chat", &body, on_token).await
    }

    /// Posts `body` and reads the answer as NDJSON (a non-streamed answer is one
    /// line), up to and including the object with `done: true`.
    async fn post_reply(
        &self,
        call: &Call<'_>,
        path: &str,
        body: &Value,
        on_token: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Generation, LlmError> {
        let req = self
            .site
            .http
            .post(format!("{}{path}", self.site.base))
            .json(body);
        let resp = self.site.send(call, req).await?;
        let mut reply = Reply::default();
        let done = self
            .site
            .for_each_line(call, resp, &mut |line| {
                self.feed(call, &mut reply, line, on_token)
            })
            .await?;
        if done {
            return Ok(reply.gen);
        }
        Err(self.protocol(
            call,
            "the answer ended before an object with \"done\": true".into(),
        ))
    }

    /// Takes one NDJSON line; true once the final object has been seen.
    fn feed(
        &self,
        call: &Call<'_>,
        reply: &mut Reply,
        line: &[u8],
        on_token: &mut (dyn FnMut(&str) + Send),
    ) -> Result<bool, LlmError> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(false);
        }
        let r: WireReply = serde_json::from_slice(line).map_err(|e| {
            self.protocol(call, format!("unparseable line ({e}): {}", snippet(line)))
        })?;
        if let Some(msg) = r.error {
            return Err(self.error_in_body(call, msg));
        }
        let text = r
            .response
            .or_else(|| r.message.and_then(|m| m.content))
            .unwrap_or_default();
        if !text.is_empty() {
            on_token(&text);
            reply.gen.response.push_str(&text);
        }
        if let Some(m) = r.model {
            reply.gen.model = m;
        }
        if !r.done {
            return Ok(false);
        }
        let g = &mut reply.gen;
        g.done_reason = r.done_reason;
        g.eval_count = r.eval_count;
        g.eval_duration_ns = r.eval_duration;
        g.prompt_eval_count = r.prompt_eval_count;
        g.load_duration_ns = r.load_duration;
        g.total_duration_ns = r.total_duration;
        Ok(true)
    }

    /// An `{"error": ...}` object in a 200 answer: the model is missing, or the run
    /// failed part-way (a worker failure).
    fn error_in_body(&self, call: &Call<'_>, msg: String) -> LlmError {
        match call.model {
            Some(model) if msg.to_ascii_lowercase().contains("not found") => {
                LlmError::UnknownModel {
                    api: Api::Ollama,
                    url: self.site.base.clone(),
                    model: model.to_string(),
                    detail: msg,
                }
            }
            _ => self.protocol(call, format!("error in the answer: {msg}")),
        }
    }

    fn protocol(&self, call: &Call<'_>, detail: String) -> LlmError {
        self.site.protocol(call, detail)
    }
}

#[derive(Default)]
struct Reply {
    gen: Generation,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_numbers_go_as_numbers() {
        assert_eq!(keep_alive_json("-1"), json!(-1));
        assert_eq!(keep_alive_json("0"), json!(0));
        assert_eq!(keep_alive_json(" 300 "), json!(300));
        assert_eq!(keep_alive_json("1.5"), json!(1.5));
        assert_eq!(keep_alive_json("5m"), json!("5m"));
        assert_eq!(keep_alive_json("-1m"), json!("-1m"));
    }

    #[test]
    fn base_urls_are_checked() {
        let c = OllamaClient::new("http://127.0.0.1:11435/").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:11435");
        for bad in [
            "127.0.0.1:11435",
            "ftp://host",
            "http://",
            "http://h/?q=1",
            "",
        ] {
            match OllamaClient::new(bad) {
                Err(LlmError::BadUrl { url, .. }) => assert_eq!(url, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
