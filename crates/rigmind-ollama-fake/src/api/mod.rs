//! A test server for the LLM APIs that cannot run here: the OpenAI chat API
//! (`POST /v1/chat/completions`) or Anthropic's Messages API (`POST /v1/messages`),
//! one per server as the real ones are ([`ApiFlavor`]).
//!
//! It follows each API's documented wire format: request fields, the key's header
//! (`Authorization: Bearer` / `x-api-key` with `anthropic-version`), the answer
//! objects with their usage counts, streaming as server-sent events (OpenAI's
//! chunks ending in `data: [DONE]`; Anthropic's `message_start` ...
//! `message_stop` events), and the error shapes with their statuses: 401 for a
//! missing or wrong key, 400 for an invalid request, 404 for an unknown model, 429
//! with `retry-after` while rate limiting (`rate_limit_first`). The reply text is
//! the Ollama fake's deterministic one, paced at `tokens_per_sec`.
//!
//! Every request is recorded ([`ApiRequestRecord`]): which header carried a key
//! and whether it was the right one (never the key itself), the model, whether it
//! streamed, the status; and the most requests ever in flight at once
//! ([`ApiFakeHandle::max_in_flight`]), for concurrency limits.

mod anthropic;
mod openai;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::http::{channel_response, json_status, Body};
use crate::state::write_atomic;
use crate::text::{pace, reply_text, tokenize};

/// Which API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFlavor {
    /// `POST /v1/chat/completions`, `GET /v1/models`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

/// How the API fake behaves; [`ApiFakeOptions::new`] suits tests.
#[derive(Debug, Clone)]
pub struct ApiFakeOptions {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Once listening, write the bound address here atomically.
    pub port_file: Option<PathBuf>,
    pub flavor: ApiFlavor,
    /// The models it serves.
    pub models: Vec<String>,
    /// The key requests must carry; None: no key checked.
    pub api_key: Option<String>,
    /// Generation speed.
    pub tokens_per_sec: f64,
    /// The first N requests (after the key check) are answered 429.
    pub rate_limit_first: u64,
    /// The `retry-after` seconds of a 429.
    pub retry_after_secs: u64,
    /// Streams end with the API's error event after three tokens.
    pub error_mid_stream: bool,
    /// Append one JSON line per request here.
    pub request_log: Option<PathBuf>,
}

impl ApiFakeOptions {
    /// A server of `flavor` on a free loopback port serving `models`, no key, fast.
    pub fn new(flavor: ApiFlavor, models: &[&str]) -> Self {
        ApiFakeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            port_file: None,
            flavor,
            models: models.iter().map(|m| m.to_string()).collect(),
            api_key: None,
            tokens_per_sec: 2000.0,
            rate_limit_first: 0,
            retry_after_secs: 1,
            error_mid_stream: false,
            request_log: None,
        }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiRequestRecord {
    /// When its status was decided (RFC 3339).
    pub t: String,
    pub method: String,
    pub path: String,
    pub model: Option<String>,
    pub stream: bool,
    pub status: u16,
    /// The header that carried a key (`authorization`, `x-api-key`), if any.
    pub key_header: Option<String>,
    /// Whether that key was the configured one.
    pub key_valid: bool,
    /// `anthropic-version`, when sent.
    pub api_version: Option<String>,
    /// The chat as the model read it: the system text, then each message as
    /// `role: text` on its own line (so a test can see what a task was sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

pub(crate) struct ApiShared {
    pub(crate) opts: ApiFakeOptions,
    requests: Mutex<Vec<ApiRequestRecord>>,
    log: Mutex<Option<std::fs::File>>,
    counted: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts a request in flight until dropped (kept by a stream until its end).
pub(crate) struct Busy(Arc<ApiShared>);

impl Busy {
    fn new(shared: &Arc<ApiShared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Busy(Arc::clone(shared))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running API fake; dropping it stops the server.
pub struct ApiFakeHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    shared: Arc<ApiShared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ApiFakeHandle {
    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request answered so far, in the order their status was decided.
    pub fn requests(&self) -> Vec<ApiRequestRecord> {
        lock(&self.shared.requests).clone()
    }

    /// The most requests that were ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until the server task ends (only on drop or process end).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ApiFakeHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Binds `opts.listen` and serves in the background.
pub async fn start_api(opts: ApiFakeOptions) -> io::Result<ApiFakeHandle> {
    if opts.tokens_per_sec.is_nan() || opts.tokens_per_sec <= 0.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tokens_per_sec must be > 0, not {}", opts.tokens_per_sec),
        ));
    }
    let listener = TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let log = match &opts.request_log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        None => None,
    };
    let port_file = opts.port_file.clone();
    let shared = Arc::new(ApiShared {
        opts,
        requests: Mutex::new(Vec::new()),
        log: Mutex::new(log),
        counted: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
    });
    let (stop, stopped) = oneshot::channel();
    let s = Arc::clone(&shared);
    let task = tokio::spawn(crate::http::run(
        "fake-llm-api",
        listener,
        stopped,
        move |req| handle(Arc::clone(&s), req),
    ));
    if let Some(p) = port_file {
        write_atomic(&p, addr.to_string().as_bytes())?;
    }
    tracing::info!(%addr, flavor = ?shared.opts.flavor, "fake LLM API listening");
    Ok(ApiFakeHandle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// What a route handler found out about a request, for its record.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) model: Option<String>,
    pub(crate) stream: bool,
    pub(crate) prompt: Option<String>,
}

/// The key check's outcome.
struct Auth {
    header: Option<String>,
    valid: bool,
}

fn auth(flavor: ApiFlavor, headers: &HeaderMap, want: Option<&str>) -> Auth {
    let sent = match flavor {
        ApiFlavor::OpenAi => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(|v| ("authorization", v.strip_prefix("Bearer ").unwrap_or(""))),
        ApiFlavor::Anthropic => headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|v| ("x-api-key", v)),
    };
    Auth {
        header: sent.map(|(h, _)| h.to_string()),
        valid: match want {
            None => true,
            Some(k) => sent.is_some_and(|(_, v)| v == k),
        },
    }
}

async fn handle(shared: Arc<ApiShared>, req: Request<Incoming>) -> Response<Body> {
    let busy = Busy::new(&shared);
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let flavor = shared.opts.flavor;
    let a = auth(flavor, req.headers(), shared.opts.api_key.as_deref());
    let api_version = req
        .headers()
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut seen = Seen::default();
    let resp = route(&shared, req, &a, api_version.is_some(), &mut seen, busy).await;
    let rec = ApiRequestRecord {
        t: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        method,
        path,
        model: seen.model,
        stream: seen.stream,
        status: resp.status().as_u16(),
        key_header: a.header,
        key_valid: a.valid,
        api_version,
        prompt: seen.prompt,
    };
    if let Some(f) = lock(&shared.log).as_mut() {
        if let Ok(mut line) = serde_json::to_vec(&rec) {
            line.push(b'\n');
            let _ = f.write_all(&line);
        }
    }
    lock(&shared.requests).push(rec);
    resp
}

async fn route(
    shared: &Arc<ApiShared>,
    req: Request<Incoming>,
    a: &Auth,
    has_version: bool,
    seen: &mut Seen,
    busy: Busy,
) -> Response<Body> {
    let flavor = shared.opts.flavor;
    let post = *req.method() == Method::POST;
    let known = match (flavor, req.uri().path()) {
        (ApiFlavor::OpenAi, "/v1/chat/completions") if post => true,
        (ApiFlavor::OpenAi, "/v1/models") if *req.method() == Method::GET => {
            return openai::models(shared)
        }
        (ApiFlavor::Anthropic, "/v1/messages") if post => true,
        _ => false,
    };
    if !known {
        return api_error(flavor, Failure::NotFoundPath);
    }
    if !a.valid {
        return api_error(flavor, Failure::Key(a.header.is_some()));
    }
    if flavor == ApiFlavor::Anthropic && !has_version {
        return api_error(
            flavor,
            Failure::Invalid("anthropic-version: header is required".into()),
        );
    }
    let n = shared.counted.fetch_add(1, Ordering::SeqCst) + 1;
    if n <= shared.opts.rate_limit_first {
        let mut r = api_error(flavor, Failure::RateLimited);
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(shared.opts.retry_after_secs));
        return r;
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return api_error(flavor, Failure::Invalid(e.to_string())),
    };
    let job = match decode(shared, &body, seen) {
        Ok(j) => j,
        Err(f) => return api_error(flavor, f),
    };
    answer(flavor, job, busy).await
}

/// Answers a decoded request: streamed from a task that keeps `busy` until the
/// stream ends, or whole once the generation time has passed.
async fn answer(flavor: ApiFlavor, job: Job, busy: Busy) -> Response<Body> {
    if job.stream {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        match flavor {
            ApiFlavor::OpenAi => tokio::spawn(openai::stream(job, tx, busy)),
            ApiFlavor::Anthropic => tokio::spawn(anthropic::stream(job, tx, busy)),
        };
        return channel_response(rx, "text/event-stream");
    }
    let start = std::time::Instant::now();
    if let Some(last) = job.tokens.len().checked_sub(1) {
        pace(start, last, job.tokens_per_sec).await;
    }
    if job.fail_mid_stream {
        let body = match flavor {
            ApiFlavor::OpenAi => openai::server_error(),
            ApiFlavor::Anthropic => anthropic::server_error(),
        };
        return json_status(StatusCode::INTERNAL_SERVER_ERROR, &body);
    }
    json_answer(&match flavor {
        ApiFlavor::OpenAi => openai::whole(&job),
        ApiFlavor::Anthropic => anthropic::whole(&job),
    })
}

/// Why a request fails, answered in the flavor's error shape.
pub(crate) enum Failure {
    NotFoundPath,
    /// A missing (false) or wrong (true) key.
    Key(bool),
    Invalid(String),
    UnknownModel(String),
    RateLimited,
}

fn api_error(flavor: ApiFlavor, f: Failure) -> Response<Body> {
    let (status, body) = match flavor {
        ApiFlavor::OpenAi => openai::error(&f),
        ApiFlavor::Anthropic => anthropic::error(&f),
    };
    json_status(status, &body)
}

/// A decoded request: what to answer and how.
pub(crate) struct Job {
    pub(crate) model: String,
    pub(crate) tokens: Vec<String>,
    /// The limit cut the reply short.
    pub(crate) truncated: bool,
    pub(crate) prompt_tokens: u64,
    pub(crate) stream: bool,
    /// OpenAI: `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    pub(crate) tokens_per_sec: f64,
    pub(crate) fail_mid_stream: bool,
}

/// The text of a message's `content`: a string, or a list of text blocks.
fn content_text(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn decode(shared: &ApiShared, body: &Bytes, seen: &mut Seen) -> Result<Job, Failure> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::Invalid(format!("the body is not valid JSON: {e}")))?;
    let model = v.get("model").and_then(Value::as_str).map(String::from);
    seen.model = model.clone();
    seen.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let Some(model) = model else {
        return Err(Failure::Invalid("model: field required".into()));
    };
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::Invalid("messages: a non-empty list is required".into()))?;
    // OpenAI's newer name first; Anthropic has only `max_tokens`.
    let limit = v
        .get("max_completion_tokens")
        .or_else(|| v.get("max_tokens"))
        .and_then(Value::as_u64);
    if shared.opts.flavor == ApiFlavor::Anthropic && limit.is_none() {
        return Err(Failure::Invalid("max_tokens: Field required".into()));
    }
    if !shared.opts.models.contains(&model) {
        return Err(Failure::UnknownModel(model));
    }
    let system = v.get("system").map(content_text).unwrap_or_default();
    let mut input = system.clone();
    let mut focus = String::new();
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let text = m.get("content").map(content_text).unwrap_or_default();
        input.push_str(&format!("\n{role}: {text}"));
        if role == "user" {
            focus = text;
        }
    }
    seen.prompt = Some(input.trim().to_string());
    // A model whose name says `json` answers a JSON object (the escalation
    // tests' bigger model that keeps an `expect: json`).
    let reply = if model.contains("json") {
        serde_json::json!({"model": model, "words": input.split_whitespace().count()}).to_string()
    } else {
        reply_text(&model, input.trim(), &focus)
    };
    let mut tokens = tokenize(&reply);
    let truncated = limit.is_some_and(|n| (n as usize) < tokens.len());
    if let Some(n) = limit.filter(|_| truncated) {
        tokens.truncate(n as usize);
    }
    Ok(Job {
        model,
        tokens,
        truncated,
        prompt_tokens: tokenize(input.trim()).len().max(1) as u64,
        stream: seen.stream,
        include_usage: v["stream_options"]["include_usage"].as_bool() == Some(true),
        tokens_per_sec: shared.opts.tokens_per_sec,
        fail_mid_stream: shared.opts.error_mid_stream,
    })
}

/// A 200 answer with a JSON body.
pub(crate) fn json_answer(body: &Value) -> Response<Body> {
    json_status(StatusCode::OK, body)
}

/// The SSE lines of one event (`event:` only when named).
pub(crate) fn sse(event: Option<&str>, data: &Value) -> Bytes {
    let mut s = String::new();
    if let Some(e) = event {
        s.push_str(&format!("event: {e}\n"));
    }
    s.push_str(&format!("data: {data}\n\n"));
    Bytes::from(s)
}

/// A unique-enough id with `prefix`.
pub(crate) fn id(prefix: &str) -> String {
    format!(
        "{prefix}{:016x}",
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}
