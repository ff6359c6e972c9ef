//! The HTTP side: routing, request decoding, and the replies in Ollama's wire format
//! (single JSON objects, or NDJSON streams with `Content-Type: application/x-ndjson`
//! sent chunked, one object per line).
//!
//! Status codes and error texts follow Ollama's `server/routes.go`: 400 for a bad body
//! or a missing model, 404 `model "x" not found, try pulling it first` for an unknown
//! one, 500 when loading fails, and an `{"error": ...}` line when a stream fails after
//! it has started.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::FakeOptions;
use tokio::sync::{mpsc, oneshot};

use crate::http::{channel_response, json_status, text, Body};
use crate::keep_alive::KeepAlive;
use crate::state::{next_generate, InFlight, ModelEntry, RequestKind, RequestRecord, Shared};
use crate::text::{reply_text, token_ids, tokenize};

/// The version `/api/version` reports.
pub const FAKE_VERSION: &str = "0.0.0-rigmind-fake";

/// The error line a stream ends with under `error_mid_stream` (the text of
/// Ollama's documented example).
const MID_STREAM_ERROR: &str = "an error was encountered while running the model";

/// Serves the Ollama protocol on `listener` until `shutdown` fires.
pub async fn run(shared: Arc<Shared>, listener: TcpListener, shutdown: oneshot::Receiver<()>) {
    crate::http::run("fake-ollama", listener, shutdown, move |req| {
        handle(Arc::clone(&shared), req)
    })
    .await;
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let t = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let (resp, model, kind) = route(&shared, req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ?kind, "request");
    shared.log_request(RequestRecord {
        t,
        method,
        path,
        model,
        kind,
        status: resp.status().as_u16(),
    });
    resp
}

type Routed = (Response<Body>, Option<String>, RequestKind);

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Routed {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = *req.method() == Method::POST;
    match req.uri().path() {
        "/" if get => (
            text(StatusCode::OK, "Ollama is running"),
            None,
            RequestKind::Other,
        ),
        "/api/version" if get => (
            json_ok(&json!({ "version": FAKE_VERSION })),
            None,
            RequestKind::Version,
        ),
        "/api/tags" if get => (tags(shared), None, RequestKind::Tags),
        "/api/ps" if get => (ps(shared), None, RequestKind::Ps),
        "/api/generate" if post => inference(shared, req, Endpoint::Generate).await,
        "/api/chat" if post => inference(shared, req, Endpoint::Chat).await,
        "/" | "/api/version" | "/api/tags" | "/api/ps" | "/api/generate" | "/api/chat" => (
            text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed"),
            None,
            RequestKind::Other,
        ),
        _ => (
            text(StatusCode::NOT_FOUND, "404 page not found"),
            None,
            RequestKind::Other,
        ),
    }
}

fn json_ok(body: &impl Serialize) -> Response<Body> {
    json_status(StatusCode::OK, body)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    json_status(status, &json!({ "error": msg.into() }))
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn tags(shared: &Shared) -> Response<Body> {
    let models: Vec<Value> = shared
        .catalog()
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "model": e.name,
                "modified_at": e.modified_at,
                "size": e.size,
                "digest": e.digest,
                "details": e.details(),
            })
        })
        .collect();
    json_ok(&json!({ "models": models }))
}

fn ps(shared: &Shared) -> Response<Body> {
    let models: Vec<Value> = shared
        .loaded_view()
        .into_iter()
        .map(|v| {
            json!({
                "name": v.entry.name,
                "model": v.entry.name,
                "size": v.size,
                "digest": v.entry.digest,
                "details": v.entry.details(),
                "expires_at": v.expires_at,
                "size_vram": v.size,
            })
        })
        .collect();
    json_ok(&json!({ "models": models }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Generate,
    Chat,
}

/// The body of `POST /api/generate`; absent and `null` fields read as empty, as
/// Go's decoder leaves them at their zero value.
#[derive(Deserialize)]
struct GenerateBody {
    model: Option<String>,
    prompt: Option<String>,
    system: Option<String>,
    stream: Option<bool>,
    #[serde(default)]
    keep_alive: Value,
    options: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct ChatBody {
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    stream: Option<bool>,
    #[serde(default)]
    keep_alive: Value,
    options: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: Option<String>,
    content: Option<String>,
}

/// A generate or chat request reduced to what the fake needs.
struct Inference {
    model: String,
    /// Everything the model would read (system and all messages).
    input: String,
    /// The user's own text, quoted in the reply.
    focus: String,
    /// No prompt / no messages: a load (or unload) request.
    empty: bool,
    stream: bool,
    keep_alive: Option<KeepAlive>,
    num_predict: Option<usize>,
}

fn decode(endpoint: Endpoint, body: &[u8]) -> Result<Inference, String> {
    let num_predict = |o: &Option<Map<String, Value>>| {
        o.as_ref()
            .and_then(|o| o.get("num_predict"))
            .and_then(Value::as_i64)
            .filter(|n| *n >= 0)
            .map(|n| n as usize)
    };
    match endpoint {
        Endpoint::Generate => {
            let b: GenerateBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            let prompt = b.prompt.unwrap_or_default();
            let system = b.system.unwrap_or_default();
            let input = if system.is_empty() {
                prompt.clone()
            } else {
                format!("{system}\n{prompt}")
            };
            Ok(Inference {
                model: b.model.unwrap_or_default(),
                input,
                empty: prompt.is_empty(),
                focus: prompt,
                stream: b.stream.unwrap_or(true),
                keep_alive: KeepAlive::from_json(&b.keep_alive)?,
                num_predict: num_predict(&b.options),
            })
        }
        Endpoint::Chat => {
            let b: ChatBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            let messages = b.messages.unwrap_or_default();
            let input = messages
                .iter()
                .map(|m| {
                    format!(
                        "{}: {}",
                        m.role.as_deref().unwrap_or(""),
                        m.content.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            let focus = messages
                .iter()
                .rev()
                .find(|m| m.role.as_deref() == Some("user"))
                .or(messages.last())
                .and_then(|m| m.content.clone())
                .unwrap_or_default();
            Ok(Inference {
                model: b.model.unwrap_or_default(),
                input,
                focus,
                empty: messages.is_empty(),
                stream: b.stream.unwrap_or(true),
                keep_alive: KeepAlive::from_json(&b.keep_alive)?,
                num_predict: num_predict(&b.options),
            })
        }
    }
}

/// A generate or chat request: decoded, its model resolved, then an unload, a load
/// or a generation (with failure injection) as the body asks.
async fn inference(shared: &Arc<Shared>, req: Request<Incoming>, endpoint: Endpoint) -> Routed {
    let started = Instant::now();
    let work_kind = match endpoint {
        Endpoint::Generate => RequestKind::Generate,
        Endpoint::Chat => RequestKind::Chat,
    };
    let inf = match read_inference(req, endpoint).await {
        Ok(i) => i,
        Err((resp, model)) => return (resp, model, work_kind),
    };
    let model = Some(inf.model.clone()).filter(|m| !m.is_empty());
    let kind = match (inf.empty, inf.keep_alive) {
        (true, Some(KeepAlive::Zero)) => RequestKind::Unload,
        (true, _) => RequestKind::Load,
        (false, _) => work_kind,
    };
    let (model_name, entry) = match resolve_model(shared, model.as_deref()) {
        Ok(found) => found,
        Err((status, msg)) => return (error(status, msg), model, kind),
    };

    if kind == RequestKind::Unload {
        shared.schedule_unload(&entry.name, None);
        let resp = done_object(
            endpoint,
            &model_name,
            "",
            "unload",
            None,
            Metrics::default(),
        );
        return (json_ok(&resp), model, kind);
    }

    if kind != RequestKind::Load {
        if let Some(status) = injected_failure(shared) {
            let msg = format!(
                "fake-ollama: injected failure (HTTP {}) for model {model_name}",
                status.as_u16()
            );
            return (error(status, msg), model, kind);
        }
    }

    let keep = inf.keep_alive.unwrap_or(shared.opts.default_keep_alive);
    let hold = match shared.acquire(&entry, keep).await {
        Ok(h) => h,
        Err(e) => {
            return (
                error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                model,
                kind,
            )
        }
    };

    if kind == RequestKind::Load {
        let resp = done_object(endpoint, &model_name, "", "load", None, Metrics::default());
        drop(hold);
        return (json_ok(&resp), model, kind);
    }

    let job = Job::new(shared, endpoint, &entry, &model_name, &inf, hold, started);
    (respond(job, inf.stream).await, model, kind)
}

/// The decoded body of an inference request, or the 400 to answer with the model
/// to log (named when the body had one, however bad the rest).
async fn read_inference(
    req: Request<Incoming>,
    endpoint: Endpoint,
) -> Result<Inference, (Response<Body>, Option<String>)> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err((error(StatusCode::BAD_REQUEST, e.to_string()), None)),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err((error(StatusCode::BAD_REQUEST, "missing request body"), None));
    }
    decode(endpoint, &body).map_err(|e| {
        // Still name the model in the log when the body had one.
        let model = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("model")?.as_str().map(String::from));
        (error(StatusCode::BAD_REQUEST, e), model)
    })
}

/// The requested model and its catalogue entry, or the error status and message to
/// answer: 400 when the request names none, 404 when the catalogue lacks it
/// (Ollama's wording).
fn resolve_model(
    shared: &Shared,
    model: Option<&str>,
) -> Result<(String, ModelEntry), (StatusCode, String)> {
    let Some(model_name) = model else {
        return Err((StatusCode::BAD_REQUEST, "model is required".into()));
    };
    let Some(entry) = shared.resolve(model_name).cloned() else {
        let quoted = serde_json::to_string(&model_name).unwrap_or_default();
        return Err((
            StatusCode::NOT_FOUND,
            format!("model {quoted} not found, try pulling it first"),
        ));
    };
    Ok((model_name.to_string(), entry))
}

/// Runs a generation: streamed as NDJSON while it is produced, or whole as one object.
async fn respond(job: Job, stream: bool) -> Response<Body> {
    if stream {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(job.stream(tx));
        channel_response(rx, "application/x-ndjson")
    } else {
        match job.whole().await {
            Ok(v) => json_ok(&v),
            Err(msg) => error(StatusCode::INTERNAL_SERVER_ERROR, msg),
        }
    }
}

/// The status to fail this generate with, if failure injection says so.
fn injected_failure(shared: &Shared) -> Option<StatusCode> {
    let n = next_generate(shared);
    let o = &shared.opts;
    if let Some(every) = o.status_500_every.filter(|e| *e > 0) {
        if n.checked_rem(every) == Some(0) {
            return Some(StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    let status = o.fail_generate_status?;
    if o.fail_generate_first.is_some_and(|first| n > first) {
        return None;
    }
    StatusCode::from_u16(status).ok()
}

/// Ollama's `Metrics`: zero values are left out (`omitempty`).
#[derive(Debug, Default, Serialize)]
struct Metrics {
    #[serde(skip_serializing_if = "is_zero")]
    total_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    load_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_eval_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    eval_duration: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct GenerateOut<'a> {
    model: &'a str,
    created_at: String,
    response: &'a str,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a [u32]>,
    #[serde(flatten)]
    metrics: Metrics,
}

#[derive(Serialize)]
struct ChatOut<'a> {
    model: &'a str,
    created_at: String,
    message: MessageOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    done: bool,
    #[serde(flatten)]
    metrics: Metrics,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: &'a str,
}

/// One object of a reply: a token chunk (`done_reason` None) or a final one.
fn object(
    endpoint: Endpoint,
    model: &str,
    text: &str,
    done_reason: Option<&str>,
    context: Option<&[u32]>,
    metrics: Metrics,
) -> Value {
    let v = match endpoint {
        Endpoint::Generate => serde_json::to_value(GenerateOut {
            model,
            created_at: now(),
            response: text,
            done: done_reason.is_some(),
            done_reason,
            context,
            metrics,
        }),
        Endpoint::Chat => serde_json::to_value(ChatOut {
            model,
            created_at: now(),
            message: MessageOut {
                role: "assistant",
                content: text,
            },
            done_reason,
            done: done_reason.is_some(),
            metrics,
        }),
    };
    v.unwrap_or(Value::Null)
}

fn done_object(
    endpoint: Endpoint,
    model: &str,
    text: &str,
    reason: &str,
    context: Option<&[u32]>,
    metrics: Metrics,
) -> Value {
    object(endpoint, model, text, Some(reason), context, metrics)
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// The token rate of a reply of `n` tokens to `input`: one that lasts the time of
/// the first `reply_secs` key the input contains, else `tokens_per_sec`.
fn reply_rate(opts: &FakeOptions, input: &str, n: usize) -> f64 {
    opts.reply_secs
        .iter()
        .find(|(key, _)| input.contains(key.as_str()))
        .map_or(opts.tokens_per_sec, |(_, secs)| n.max(1) as f64 / secs)
}

/// One generation in progress; holds its model until dropped.
struct Job {
    endpoint: Endpoint,
    model: String,
    tokens: Vec<String>,
    done_reason: &'static str,
    prompt_tokens: u64,
    context: Option<Vec<u32>>,
    tokens_per_sec: f64,
    fail_mid_stream: bool,
    started: Instant,
    load: Duration,
    _hold: InFlight,
}

impl Job {
    fn new(
        shared: &Shared,
        endpoint: Endpoint,
        entry: &ModelEntry,
        model: &str,
        inf: &Inference,
        hold: InFlight,
        started: Instant,
    ) -> Job {
        let reply = reply_text(&entry.name, &inf.input, &inf.focus);
        let mut tokens = tokenize(&reply);
        let mut done_reason = "stop";
        if let Some(n) = inf.num_predict.filter(|n| *n > 0 && *n < tokens.len()) {
            tokens.truncate(n);
            done_reason = "length";
        }
        let prompt = tokenize(&inf.input);
        let context = (endpoint == Endpoint::Generate).then(|| {
            let mut all = prompt.clone();
            all.extend(tokens.iter().cloned());
            token_ids(&all)
        });
        let tokens_per_sec = reply_rate(&shared.opts, &inf.input, tokens.len());
        Job {
            endpoint,
            model: model.to_string(),
            done_reason,
            prompt_tokens: prompt.len().max(1) as u64,
            context,
            tokens,
            tokens_per_sec,
            fail_mid_stream: shared.opts.error_mid_stream,
            started,
            load: hold.load_duration,
            _hold: hold,
        }
    }

    /// Waits until token `i` (0-based) is due at the configured rate.
    async fn pace(&self, gen_start: Instant, i: usize) {
        crate::text::pace(gen_start, i, self.tokens_per_sec).await;
    }

    fn metrics(&self, eval: Duration) -> Metrics {
        // Prompt evaluation is reported (not slept) at ten times the token rate.
        let per_prompt_token = if self.tokens_per_sec > 0.0 {
            1e9 / (self.tokens_per_sec * 10.0)
        } else {
            0.0
        };
        Metrics {
            total_duration: self.started.elapsed().as_nanos().max(1) as u64,
            load_duration: self.load.as_nanos().max(1) as u64,
            prompt_eval_count: self.prompt_tokens,
            prompt_eval_duration: ((self.prompt_tokens as f64 * per_prompt_token) as u64).max(1),
            eval_count: self.tokens.len() as u64,
            eval_duration: eval.as_nanos().max(1) as u64,
        }
    }

    fn finish(&self, text: &str, eval: Duration) -> Value {
        done_object(
            self.endpoint,
            &self.model,
            text,
            self.done_reason,
            self.context.as_deref(),
            self.metrics(eval),
        )
    }

    /// Streams one line per token, then the final line; stops early if the client
    /// goes away.
    async fn stream(self, tx: mpsc::Sender<Bytes>) {
        let gen_start = Instant::now();
        for (i, tok) in self.tokens.iter().enumerate() {
            self.pace(gen_start, i).await;
            if self.fail_mid_stream && i == 3 {
                let _ = tx.send(line(&json!({ "error": MID_STREAM_ERROR }))).await;
                return;
            }
            let chunk = object(
                self.endpoint,
                &self.model,
                tok,
                None,
                None,
                Metrics::default(),
            );
            if tx.send(line(&chunk)).await.is_err() {
                return;
            }
        }
        let last = self.finish("", gen_start.elapsed());
        let _ = tx.send(line(&last)).await;
    }

    /// Generates the whole reply (taking the same time) and returns one object.
    async fn whole(self) -> Result<Value, String> {
        let gen_start = Instant::now();
        if let Some(last) = self.tokens.len().checked_sub(1) {
            self.pace(gen_start, last).await;
        }
        if self.fail_mid_stream {
            return Err(MID_STREAM_ERROR.to_string());
        }
        Ok(self.finish(&self.tokens.concat(), gen_start.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_defaults_stream_to_true_and_reads_keep_alive() {
        let i = decode(Endpoint::Generate, br#"{"model":"m","prompt":"hi"}"#).unwrap();
        assert!(i.stream && !i.empty && i.keep_alive.is_none());
        let i = decode(
            Endpoint::Generate,
            br#"{"model":"m","keep_alive":0,"prompt":null}"#,
        )
        .unwrap();
        assert!(i.empty);
        assert_eq!(i.keep_alive, Some(KeepAlive::Zero));
        let i = decode(
            Endpoint::Chat,
            br#"{"model":"m","messages":[],"stream":false}"#,
        )
        .unwrap();
        assert!(i.empty && !i.stream);
        assert!(decode(Endpoint::Generate, b"{nope").is_err());
        assert!(decode(Endpoint::Generate, br#"{"model":"m","keep_alive":"-1"}"#).is_err());
    }

    #[test]
    fn objects_have_ollamas_shape() {
        let v = object(
            Endpoint::Generate,
            "m",
            "tok",
            None,
            None,
            Metrics::default(),
        );
        assert_eq!(v["response"], "tok");
        assert_eq!(v["done"], false);
        assert!(v.get("done_reason").is_none());
        assert!(v.get("eval_count").is_none());
        let v = object(
            Endpoint::Chat,
            "m",
            "",
            Some("stop"),
            None,
            Metrics {
                eval_count: 3,
                ..Metrics::default()
            },
        );
        assert_eq!(v["message"]["role"], "assistant");
        assert_eq!(v["done"], true);
        assert_eq!(v["done_reason"], "stop");
        assert_eq!(v["eval_count"], 3);
        assert!(v.get("response").is_none());
    }
}
