//! [`OllamaClient`]: one Ollama server's HTTP API (health, `/api/ps`, load, unload,
//! generate, chat), with every failure mapped to an [`LlmError`].
//!
//! Wire facts (from Ollama's `docs/api.md`): a generate request with no prompt loads
//! the model, and with `keep_alive` 0 unloads it; the answer streams as NDJSON unless
//! `"stream": false`; the last object has `"done": true` and the statistics
//! (durations in nanoseconds); a failure after the stream has started arrives as an
//! `{"error": ...}` line with the status already 200.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::LlmError;
use crate::types::{ChatRequest, GenerateRequest, Generation, RunningModel};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Health and `/api/ps` calls are cheap; a server that takes longer is not well.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
const UNLOAD_POLL: Duration = Duration::from_millis(100);
/// How much of an unexpected body an error message quotes.
const SNIPPET: usize = 300;

/// A client for one Ollama server (cheap to clone; connections are pooled).
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base: String,
    http: reqwest::Client,
    request_timeout: Duration,
}

/// What a request is, for error messages and for choosing the timeout.
struct Call<'a> {
    what: &'static str,
    model: Option<&'a str>,
    timeout: Duration,
}

impl Call<'_> {
    fn context(&self) -> String {
        match self.model {
            Some(m) => format!("{} (model {m})", self.what),
            None => self.what.to_string(),
        }
    }
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

fn build_http(connect: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        // Rig-local servers: a proxy from the environment would only get in the way.
        .no_proxy()
        .build()
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

/// Every message of an error's source chain, joined: reqwest's own text alone
/// ("error sending request") hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.chars().count() > SNIPPET {
        format!("{}...", s.chars().take(SNIPPET).collect::<String>())
    } else {
        s.to_string()
    }
}

impl OllamaClient {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:11435`; a
    /// trailing slash is fine). Timeouts: connect 5 s, whole request 30 min.
    pub fn new(base_url: &str) -> Result<Self, LlmError> {
        let bad = |detail: String| LlmError::BadUrl {
            url: base_url.to_string(),
            detail,
        };
        let base = base_url.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(base).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad(format!(
                "scheme must be http or https, not {:?}",
                parsed.scheme()
            )));
        }
        if matches!(parsed.host_str(), None | Some("")) {
            return Err(bad("no host".into()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("a base URL takes no query or fragment".into()));
        }
        let http = build_http(DEFAULT_CONNECT_TIMEOUT)
            .map_err(|e| bad(format!("cannot build the HTTP client: {}", error_chain(&e))))?;
        Ok(OllamaClient {
            base: base.to_string(),
            http,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Sets the connect timeout and the whole-request timeout (which bounds load,
    /// unload, generate and chat, streaming included; health and `/api/ps` calls
    /// use at most 30 s).
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        match build_http(connect) {
            Ok(http) => self.http = http,
            // Building only fails if the TLS backend cannot start, which the first
            // client already proved it can; keep that one rather than fail here.
            Err(e) => tracing::warn!(
                "ollama {}: keeping the default connect timeout: {}",
                self.base,
                error_chain(&e)
            ),
        }
        self.request_timeout = request;
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn control_timeout(&self) -> Duration {
        CONTROL_TIMEOUT.min(self.request_timeout)
    }

    /// The server's version (`GET /api/version`): the health check.
    pub async fn version(&self) -> Result<String, LlmError> {
        let call = Call {
            what: "GET /api/version",
            model: None,
            timeout: self.control_timeout(),
        };
        let body = self.get_json(&call, "/api/version").await?;
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
            timeout: self.control_timeout(),
        };
        let body = self.get_json(&call, "/api/ps").await?;
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
            timeout: self.request_timeout,
        };
        let body = json!({
            "model": model,
            "keep_alive": keep_alive_json(keep_alive),
            "stream": false,
        });
        let g = self
            .post_reply(&call, "/api/generate", &body, &mut |_: &str| {})
            .await?;
        tracing::debug!(url = %self.base, model, took_ms = start.elapsed().as_millis() as u64, done_reason = ?g.done_reason, "ollama load");
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
            timeout: self.request_timeout,
        };
        let body = json!({ "model": model, "keep_alive": 0, "stream": false });
        self.post_reply(&call, "/api/generate", &body, &mut |_: &str| {})
            .await?;
        // Ollama answers the unload request at once and frees the memory afterwards.
        let poll_start = Instant::now();
        loop {
            if !self.is_loaded(model).await? {
                tracing::debug!(url = %self.base, model, took_ms = start.elapsed().as_millis() as u64, "ollama unload");
                return Ok(start.elapsed());
            }
            if poll_start.elapsed() >= wait {
                return Err(LlmError::StillLoaded {
                    url: self.base.clone(),
                    model: model.to_string(),
                    after: start.elapsed(),
                });
            }
            tokio::time::sleep(UNLOAD_POLL.min(wait.saturating_sub(poll_start.elapsed()))).await;
        }
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
            timeout: self.request_timeout,
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
            timeout: self.request_timeout,
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

    async fn get_json(&self, call: &Call<'_>, path: &str) -> Result<Vec<u8>, LlmError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(call.timeout)
            .send()
            .await
            .map_err(|e| self.transport(call, &e))?;
        let resp = self.check_status(call, resp).await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.transport(call, &e))
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
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(call.timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport(call, &e))?;
        let resp = self.check_status(call, resp).await?;
        let mut reply = Reply::default();
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport(call, &e))?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if self.feed(call, &mut reply, &line, on_token)? {
                    return Ok(reply.gen);
                }
            }
        }
        // A last object without a trailing newline.
        if self.feed(call, &mut reply, &buf, on_token)? {
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
                    url: self.base.clone(),
                    model: model.to_string(),
                    detail: msg,
                }
            }
            _ => self.protocol(call, format!("error in the answer: {msg}")),
        }
    }

    async fn check_status(
        &self,
        call: &Call<'_>,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, LlmError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // The error body is best effort: the status alone already classifies it.
        let body = resp.bytes().await.unwrap_or_default();
        let text = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(String::from))
            .unwrap_or_else(|| snippet(&body));
        let text = if text.is_empty() {
            status.canonical_reason().unwrap_or("no detail").to_string()
        } else {
            text
        };
        let url = self.base.clone();
        let code = status.as_u16();
        Err(match (code, call.model) {
            (404, Some(model)) => LlmError::UnknownModel {
                url,
                model: model.to_string(),
                detail: text,
            },
            (400, _) => LlmError::BadRequest {
                url,
                status: code,
                detail: format!("{}: {text}", call.context()),
            },
            _ => LlmError::Server {
                url,
                status: code,
                detail: format!("{}: {text}", call.context()),
            },
        })
    }

    fn protocol(&self, call: &Call<'_>, detail: String) -> LlmError {
        LlmError::Protocol {
            url: self.base.clone(),
            detail: format!("{}: {detail}", call.context()),
        }
    }

    /// Maps a reqwest failure: no connection is Unreachable, running out of time is
    /// Timeout, a broken body is Protocol.
    fn transport(&self, call: &Call<'_>, e: &reqwest::Error) -> LlmError {
        let detail = format!("{}: {}", call.context(), error_chain(e));
        let url = self.base.clone();
        if e.is_connect() {
            LlmError::Unreachable { url, detail }
        } else if e.is_timeout() {
            LlmError::Timeout {
                url,
                after: call.timeout,
            }
        } else if e.is_body() || e.is_decode() {
            LlmError::Protocol { url, detail }
        } else if e.is_request() {
            // Sent but no answer: the server went away (crashed, restarted).
            LlmError::Unreachable { url, detail }
        } else {
            LlmError::Protocol { url, detail }
        }
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
