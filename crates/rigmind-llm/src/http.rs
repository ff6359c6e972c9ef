//! [`Site`]: what every client shares about its server: the checked base URL, the
//! pooled HTTP client and its timeouts, the API key if any, and how a failure (no
//! connection, a timeout, a non-2xx status with the server's error body) becomes
//! an [`LlmError`] naming the server kind, URL, request and model.
//!
//! Error bodies come in three shapes, read alike: Ollama's `{"error": "text"}`,
//! OpenAI's (and llama-server's) `{"error": {"message", "type", "code"}}`, and
//! Anthropic's `{"type": "error", "error": {"type", "message"}}`. Whatever a server
//! echoes back goes through [`Site::redact`] first, so an API key never reaches a
//! message.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rigmind_config::Api;
use serde_json::Value;

use crate::error::LlmError;
use crate::key::ApiKey;
use crate::sse::SseParser;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Health and status calls are cheap; a server that takes longer is not well.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an unload is checked.
const UNLOAD_POLL: Duration = Duration::from_millis(100);
/// How much of an unexpected body an error message quotes.
const SNIPPET: usize = 300;

/// One server: its kind, base URL, HTTP client, timeouts and key.
#[derive(Clone)]
pub(crate) struct Site {
    pub(crate) api: Api,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) request_timeout: Duration,
    pub(crate) key: Option<ApiKey>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("api", &self.api)
            .field("base", &self.base)
            .field("request_timeout", &self.request_timeout)
            // ApiKey's own Debug shows the variable's name, never the key.
            .field("key", &self.key)
            .finish()
    }
}

/// What a request is, for error messages and for choosing the timeout.
pub(crate) struct Call<'a> {
    pub(crate) what: &'static str,
    pub(crate) model: Option<&'a str>,
    pub(crate) timeout: Duration,
}

impl Call<'_> {
    fn context(&self) -> String {
        match self.model {
            Some(m) => format!("{} (model {m})", self.what),
            None => self.what.to_string(),
        }
    }
}

fn build_http(connect: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        // Rig-local servers: a proxy from the environment would only get in the way.
        .no_proxy()
        .build()
}

/// Every message of an error's source chain, joined: reqwest's own text alone
/// ("error sending request") hides the cause.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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

pub(crate) fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.chars().count() > SNIPPET {
        format!("{}...", s.chars().take(SNIPPET).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The message of an error object in any of the three shapes (None: not one).
pub(crate) fn error_text(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    if let Some(s) = e.as_str() {
        return Some(s.to_string());
    }
    let msg = e.get("message")?.as_str()?;
    Some(match e.get("type").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => format!("{msg} ({t})"),
        _ => msg.to_string(),
    })
}

/// `retry-after` in seconds (the HTTP-date form is not used by LLM APIs).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

impl Site {
    /// A site for the server at `base_url` (e.g. `http://127.0.0.1:11435`; a
    /// trailing slash is fine). Timeouts: connect 5 s, whole request 30 min.
    pub(crate) fn new(api: Api, base_url: &str, key: Option<ApiKey>) -> Result<Self, LlmError> {
        let bad = |detail: String| LlmError::BadUrl {
            api,
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
        Ok(Site {
            api,
            base: base.to_string(),
            http,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            key,
        })
    }

    /// Sets the connect timeout and the whole-request timeout.
    pub(crate) fn set_timeouts(&mut self, connect: Duration, request: Duration) {
        match build_http(connect) {
            Ok(http) => self.http = http,
            // Building only fails if the TLS backend cannot start, which the first
            // client already proved it can; keep that one rather than fail here.
            Err(e) => tracing::warn!(
                "{} {}: keeping the default connect timeout: {}",
                self.api,
                self.base,
                error_chain(&e)
            ),
        }
        self.request_timeout = request;
    }

    pub(crate) fn control_timeout(&self) -> Duration {
        CONTROL_TIMEOUT.min(self.request_timeout)
    }

    /// A call whose timeout is the whole-request one.
    pub(crate) fn call<'a>(&self, what: &'static str, model: Option<&'a str>) -> Call<'a> {
        Call {
            what,
            model,
            timeout: self.request_timeout,
        }
    }

    /// `text` with the API key (if any) cut out.
    pub(crate) fn redact(&self, text: String) -> String {
        match &self.key {
            Some(k) => k.redact(text),
            None => text,
        }
    }

    /// GETs `path` and returns the body of a 2xx answer.
    pub(crate) async fn get_bytes(&self, call: &Call<'_>, path: &str) -> Result<Vec<u8>, LlmError> {
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

    /// Sends `req` (built on this site's client) and checks the status.
    pub(crate) async fn send(
        &self,
        call: &Call<'_>,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, LlmError> {
        let resp = req
            .timeout(call.timeout)
            .send()
            .await
            .map_err(|e| self.transport(call, &e))?;
        self.check_status(call, resp).await
    }

    /// Passes each line of the body to `f` as it arrives (the last one even without
    /// a newline) until `f` says done; returns whether it did.
    pub(crate) async fn for_each_line(
        &self,
        call: &Call<'_>,
        resp: reqwest::Response,
        f: &mut (dyn FnMut(&[u8]) -> Result<bool, LlmError> + Send),
    ) -> Result<bool, LlmError> {
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport(call, &e))?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if f(&line)? {
                    return Ok(true);
                }
            }
        }
        f(&buf)
    }

    /// The whole body of a 2xx answer, parsed as JSON; an error object in it (some
    /// servers answer 200 with one) is a protocol error quoting its message.
    pub(crate) async fn json_body(
        &self,
        call: &Call<'_>,
        resp: reqwest::Response,
    ) -> Result<Value, LlmError> {
        let bytes = resp.bytes().await.map_err(|e| self.transport(call, &e))?;
        self.parse_json(call, &bytes)
    }

    /// `data` parsed as JSON, as [`Site::json_body`] takes it.
    pub(crate) fn parse_json(&self, call: &Call<'_>, data: &[u8]) -> Result<Value, LlmError> {
        let v: Value = serde_json::from_slice(data).map_err(|e| {
            self.protocol(call, format!("unparseable answer ({e}): {}", snippet(data)))
        })?;
        match error_text(&v) {
            Some(msg) => Err(self.protocol(call, format!("error in the answer: {msg}"))),
            None => Ok(v),
        }
    }

    /// Passes the data of each server-sent event to `f` until `f` says done;
    /// a stream that ends first is a protocol error saying it lacked `end`.
    pub(crate) async fn for_each_event(
        &self,
        call: &Call<'_>,
        resp: reqwest::Response,
        end: &str,
        f: &mut (dyn FnMut(&str) -> Result<bool, LlmError> + Send),
    ) -> Result<(), LlmError> {
        let mut sse = SseParser::default();
        let mut take = |data: Option<String>| data.map_or(Ok(false), |d| f(&d));
        let done = self
            .for_each_line(call, resp, &mut |line| take(sse.line(line)))
            .await?;
        if done || take(sse.finish())? {
            return Ok(());
        }
        Err(self.protocol(call, format!("the stream ended before {end}")))
    }

    /// Polls `gone` every 100 ms until it says the model is unloaded, giving up
    /// `wait` after `poll_start` with [`LlmError::StillLoaded`] (timed from `start`).
    pub(crate) async fn wait_unloaded<F, Fut>(
        &self,
        model: &str,
        start: Instant,
        poll_start: Instant,
        wait: Duration,
        mut gone: F,
    ) -> Result<Duration, LlmError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, LlmError>>,
    {
        loop {
            if gone().await? {
                return Ok(start.elapsed());
            }
            if poll_start.elapsed() >= wait {
                return Err(LlmError::StillLoaded {
                    api: self.api,
                    url: self.base.clone(),
                    model: model.to_string(),
                    after: start.elapsed(),
                });
            }
            tokio::time::sleep(UNLOAD_POLL.min(wait.saturating_sub(poll_start.elapsed()))).await;
        }
    }

    pub(crate) async fn check_status(
        &self,
        call: &Call<'_>,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, LlmError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let wait = retry_after(resp.headers());
        // The error body is best effort: the status alone already classifies it.
        let body = resp.bytes().await.unwrap_or_default();
        let text = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| error_text(&v))
            .unwrap_or_else(|| snippet(&body));
        let text = if text.is_empty() {
            status.canonical_reason().unwrap_or("no detail").to_string()
        } else {
            self.redact(text)
        };
        Err(self.status_error(call, status.as_u16(), wait, text))
    }

    /// Classifies a non-2xx answer.
    fn status_error(
        &self,
        call: &Call<'_>,
        code: u16,
        retry_after: Option<Duration>,
        text: String,
    ) -> LlmError {
        let (api, url) = (self.api, self.base.clone());
        let context = || format!("{}: {text}", call.context());
        // llama-server answers 400 both for a model it lacks and for one not loaded.
        let llama = api == Api::LlamaServer;
        let lower = text.to_ascii_lowercase();
        match (code, call.model) {
            (404, Some(model)) => LlmError::UnknownModel {
                api,
                url,
                model: model.to_string(),
                detail: text,
            },
            (400, Some(model)) if llama && lower.contains("not loaded") => LlmError::NotLoaded {
                api,
                url,
                model: model.to_string(),
                detail: context(),
            },
            (400, Some(model)) if llama && lower.contains("not found") => LlmError::UnknownModel {
                api,
                url,
                model: model.to_string(),
                detail: text,
            },
            (400, _) => LlmError::BadRequest {
                api,
                url,
                status: code,
                detail: context(),
            },
            (401 | 403, _) => LlmError::Unauthorized {
                api,
                url,
                status: code,
                detail: context(),
            },
            (429, _) => LlmError::RateLimited {
                api,
                url,
                retry_after,
                detail: context(),
            },
            _ => LlmError::Server {
                api,
                url,
                status: code,
                detail: context(),
            },
        }
    }

    pub(crate) fn protocol(&self, call: &Call<'_>, detail: String) -> LlmError {
        LlmError::Protocol {
            api: self.api,
            url: self.base.clone(),
            detail: self.redact(format!("{}: {detail}", call.context())),
        }
    }

    /// Maps a reqwest failure: no connection is Unreachable, running out of time is
    /// Timeout, a broken body is Protocol.
    pub(crate) fn transport(&self, call: &Call<'_>, e: &reqwest::Error) -> LlmError {
        let detail = format!("{}: {}", call.context(), error_chain(e));
        let (api, url) = (self.api, self.base.clone());
        if e.is_connect() {
            LlmError::Unreachable { api, url, detail }
        } else if e.is_timeout() {
            LlmError::Timeout {
                api,
                url,
                after: call.timeout,
            }
        } else if e.is_body() || e.is_decode() {
            LlmError::Protocol { api, url, detail }
        } else if e.is_request() {
            // Sent but no answer: the server went away (crashed, restarted).
            LlmError::Unreachable { api, url, detail }
        } else {
            LlmError::Protocol { api, url, detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_of_every_shape_read() {
        assert_eq!(
            error_text(&json!({"error": "model \"x\" not found"})).unwrap(),
            "model \"x\" not found"
        );
        assert_eq!(
            error_text(&json!({"error": {"code": 400, "message": "model is not loaded", "type": "invalid_request_error"}}))
                .unwrap(),
            "model is not loaded (invalid_request_error)"
        );
        assert_eq!(
            error_text(
                &json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
            )
            .unwrap(),
            "slow (rate_limit_error)"
        );
        assert_eq!(error_text(&json!({"choices": []})), None);
    }

    #[test]
    fn llama_server_400s_are_told_apart() {
        let site = Site::new(Api::LlamaServer, "http://127.0.0.1:1", None).unwrap();
        let call = site.call("chat", Some("m"));
        let e = site.status_error(&call, 400, None, "model is not loaded".into());
        assert!(matches!(e, LlmError::NotLoaded { .. }), "{e:?}");
        let e = site.status_error(&call, 400, None, "model 'm' not found".into());
        assert!(matches!(e, LlmError::UnknownModel { .. }), "{e:?}");
        let e = site.status_error(&call, 400, None, "bad temperature".into());
        assert!(matches!(e, LlmError::BadRequest { .. }), "{e:?}");
        // Ollama keeps its 400s as they were.
        let site = Site::new(Api::Ollama, "http://127.0.0.1:1", None).unwrap();
        let e = site.status_error(&call, 400, None, "model is not loaded".into());
        assert!(matches!(e, LlmError::BadRequest { .. }), "{e:?}");
    }
}
