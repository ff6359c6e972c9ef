//! An Ollama-protocol test server: it stands in for Ollama where no weights exist.
//!
//! It speaks the parts of Ollama's HTTP API that rigmind uses, with the same paths,
//! JSON field names, status codes and streaming format (NDJSON, one object per line,
//! `Content-Type: application/x-ndjson`, chunked):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /` | `Ollama is running` |
//! | `GET /api/version` | `{"version": "0.0.0-rigmind-fake"}` |
//! | `GET /api/tags` | the known models (`--models`) |
//! | `GET /api/ps` | the loaded models, with `expires_at` and `size_vram` |
//! | `POST /api/generate`, `POST /api/chat` | load (no prompt / no messages), unload (that, plus `keep_alive` 0), or a deterministic reply paced at `--tokens-per-sec` |
//!
//! A model that is not loaded is loaded first (taking `--load-ms`); after each request
//! its expiry is set per `keep_alive` (default 5 minutes, negative = forever, 0 = unload
//! now) and a timer unloads it when it expires, as Ollama's scheduler does.
//!
//! Two hooks make it useful beyond CI:
//! - `--fake-vram-file PATH`: while any model is loaded the file holds the MB held
//!   (`--model-mb` per loaded model); it is removed when none is. rigmind's fake GPU
//!   telemetry sums `RIGMIND_FAKE_GPU_DIR/<gpu>/*.mb`, so point it there.
//! - `--hold-vram-cmd CMD`: on a real GPU box, each load starts `bash -c CMD` (with
//!   `{mb}` replaced by `--model-mb`) in its own process group and completes only once
//!   the child prints a line `ready` (and the load latency has passed); unloading
//!   SIGTERMs the group and waits until it is gone, so the memory really is back. The
//!   crate ships `hold_vram.py` for this:
//!
//!   ```text
//!   fake-ollama --listen 127.0.0.1:11435 --model-mb 4500 \
//!     --hold-vram-cmd 'exec python3 crates/rigmind-ollama-fake/hold_vram.py {mb}'
//!   ```
//!
//!   `hold_vram.py MB` allocates MB MiB with PyTorch on the visible CUDA device
//!   (`CUDA_VISIBLE_DEVICES` picks the card), prints `ready`, and sleeps until killed.
//!
//! For tests of error handling: `--fail-generate-status 500` makes generate/chat
//! requests with a prompt answer that status (only the first N with
//! `--fail-generate-first N`), `--status-500-every N` fails every Nth, and
//! `--error-mid-stream` ends streams with an `{"error": ...}` line after three tokens.
//!
//! Use it in-process with [`start`], which returns a [`FakeHandle`], or as the
//! `fake-ollama` binary.
//!
//! The crate also holds test servers for the two APIs that cannot run here, the
//! OpenAI chat API and Anthropic's Messages API: [`start_api`] in-process, or the
//! `fake-llm-api` binary (see the `api` module's docs).

mod api;
mod http;
mod keep_alive;
mod server;
mod state;
mod text;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use api::{start_api, ApiFakeHandle, ApiFakeOptions, ApiFlavor, ApiRequestRecord};
pub use keep_alive::{parse_go_duration, KeepAlive};
pub use server::FAKE_VERSION;
pub use state::{RequestKind, RequestRecord};

use state::{write_atomic, Shared};

/// How the fake behaves; [`Default`] suits tests (port 0, fast).
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Once listening, write the bound address (`127.0.0.1:PORT`) here atomically.
    pub port_file: Option<PathBuf>,
    /// The models the fake "has" (`/api/tags`); a name without a tag means `:latest`.
    pub models: Vec<String>,
    /// How long loading a model takes.
    pub load_latency: Duration,
    /// How long unloading a model takes before it leaves `/api/ps`.
    pub unload_latency: Duration,
    /// Generation speed.
    pub tokens_per_sec: f64,
    /// Size of each model in MiB (`/api/ps` `size`/`size_vram`, the VRAM file, `{mb}`).
    pub model_mb: u64,
    /// Append one JSON line per request here.
    pub request_log: Option<PathBuf>,
    /// Answer generate/chat requests that have a prompt with this status.
    pub fail_generate_status: Option<u16>,
    /// With `fail_generate_status`: only the first N such requests fail.
    pub fail_generate_first: Option<u64>,
    /// Every Nth generate/chat request with a prompt answers 500.
    pub status_500_every: Option<u64>,
    /// Streams end with an `{"error": ...}` line after three tokens (non-streamed
    /// requests answer 500).
    pub error_mid_stream: bool,
    /// Holds the loaded models' MB while any is loaded; removed otherwise.
    pub fake_vram_file: Option<PathBuf>,
    /// `bash -c` command kept running while a model is loaded (`{mb}` replaced).
    pub hold_vram_cmd: Option<String>,
    /// `keep_alive` for requests that carry none (Ollama's `OLLAMA_KEEP_ALIVE`).
    pub default_keep_alive: KeepAlive,
    /// Replies that take a given time: a request whose input contains the key
    /// streams its reply over that many seconds (the first key that matches),
    /// whatever `tokens_per_sec` says. For benchmarks whose llm tasks each run for
    /// their own time (a noisy workload live).
    pub reply_secs: Vec<(String, f64)>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            port_file: None,
            models: vec!["qwen2.5:7b".to_string()],
            load_latency: Duration::from_millis(200),
            unload_latency: Duration::from_millis(20),
            tokens_per_sec: 2000.0,
            model_mb: 4500,
            request_log: None,
            fail_generate_status: None,
            fail_generate_first: None,
            status_500_every: None,
            error_mid_stream: false,
            fake_vram_file: None,
            hold_vram_cmd: None,
            default_keep_alive: KeepAlive::DEFAULT,
            reply_secs: Vec::new(),
        }
    }
}

/// A running fake server. Dropping it stops the server and kills any hold-vram
/// children at once; [`FakeHandle::shutdown`] does it cleanly (waits for them).
pub struct FakeHandle {
    /// The address the server listens on.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeHandle {
    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The canonical names of the models loaded now.
    pub fn loaded_models(&self) -> Vec<String> {
        self.shared.loaded_names()
    }

    /// Every request answered so far, in the order their status was decided.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests()
    }

    /// The options the server runs with.
    pub fn options(&self) -> &FakeOptions {
        &self.shared.opts
    }

    /// Stops accepting connections, unloads every model (stopping hold-vram children
    /// and waiting for them) and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.shared.unload_all().await;
    }

    /// Waits until the server task ends (it only ends on shutdown or drop).
    async fn wait(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let _ = task.await;
        }
        self.task = None;
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.shared.kill_holders_now();
    }
}

/// Logs to stderr for the binaries, at the level `RUST_LOG` or `RIGMIND_LOG` sets
/// (default info).
pub fn init_tracing() {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("RIGMIND_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colour codes only help a terminal; logs captured to files stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Installs the SIGTERM and SIGINT handlers now (so that a signal during start-up
/// is not missed) and returns a future that ends with the name of the first one
/// that arrives: the binaries stop on either.
pub fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// The binaries' run after parsing: installs the signal handlers, awaits `start`
/// (a server binding `listen`; a failure names `name` and the address), then on
/// SIGTERM or SIGINT logs "SIGNAL: `exiting`" and hands the handle to `stop`.
pub async fn run_until_signal<H, S>(
    name: &str,
    listen: SocketAddr,
    start: impl std::future::Future<Output = io::Result<H>>,
    exiting: &str,
    stop: impl FnOnce(H) -> S,
) -> anyhow::Result<()>
where
    S: std::future::Future<Output = ()>,
{
    use anyhow::Context;
    let signal = stop_signal()?;
    let handle = start
        .await
        .with_context(|| format!("{name}: cannot serve on {listen}"))?;
    tracing::info!("{}: {exiting}", signal.await);
    stop(handle).await;
    Ok(())
}

/// Binds `opts.listen` and starts serving in the background.
pub async fn start(opts: FakeOptions) -> io::Result<FakeHandle> {
    let listener = TcpListener::bind(opts.listen).await?;
    start_on(opts, listener).await
}

/// Starts serving on an already bound listener in the background; writes
/// `opts.port_file` once listening.
pub async fn start_on(opts: FakeOptions, listener: TcpListener) -> io::Result<FakeHandle> {
    if opts.tokens_per_sec.is_nan() || opts.tokens_per_sec <= 0.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tokens_per_sec must be > 0, not {}", opts.tokens_per_sec),
        ));
    }
    let addr = listener.local_addr()?;
    let port_file = opts.port_file.clone();
    let shared = Shared::new(opts)?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server::run(Arc::clone(&shared), listener, stopped));
    if let Some(p) = port_file {
        write_atomic(&p, addr.to_string().as_bytes())?;
    }
    tracing::info!(%addr, models = ?shared.catalog().iter().map(|m| &m.name).collect::<Vec<_>>(), "fake-ollama listening");
    Ok(FakeHandle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Serves on `listener` until the server stops (it runs until the process ends).
pub async fn serve(opts: FakeOptions, listener: TcpListener) -> io::Result<()> {
    let mut handle = start_on(opts, listener).await?;
    handle.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::time::Instant;

    fn fast() -> FakeOptions {
        FakeOptions {
            load_latency: Duration::from_millis(30),
            unload_latency: Duration::from_millis(5),
            models: vec!["qwen2.5:7b".into(), "llama3.2:1b".into()],
            ..FakeOptions::default()
        }
    }

    async fn post(url: &str, body: Value) -> (u16, String, String) {
        let r = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, r.text().await.unwrap())
    }

    async fn ps(h: &FakeHandle) -> Value {
        reqwest::get(format!("{}/api/ps", h.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn load_generate_unload_cycle() {
        let h = start(fast()).await.unwrap();
        let gen = format!("{}/api/generate", h.url());

        let t = Instant::now();
        let (s, _, body) = post(&gen, json!({"model": "qwen2.5:7b"})).await;
        assert_eq!(s, 200);
        assert!(t.elapsed() >= Duration::from_millis(30));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["done_reason"], "load");
        assert_eq!(v["done"], true);
        assert_eq!(h.loaded_models(), vec!["qwen2.5:7b".to_string()]);

        let p = ps(&h).await;
        let m = &p["models"][0];
        assert_eq!(m["name"], "qwen2.5:7b");
        assert_eq!(m["size_vram"], 4500u64 * 1024 * 1024);
        assert!(m["expires_at"].as_str().unwrap().len() > 20);

        let (s, ct, body) = post(&gen, json!({"model": "qwen2.5:7b", "prompt": "why?"})).await;
        assert_eq!(s, 200);
        assert_eq!(ct, "application/x-ndjson");
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(lines.len() > 3);
        assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
        let last = lines.last().unwrap();
        assert_eq!(last["done_reason"], "stop");
        assert_eq!(last["eval_count"], (lines.len() - 1) as u64);
        assert!(last["context"].is_array());

        let (s, _, body) = post(&gen, json!({"model": "qwen2.5:7b", "keep_alive": 0})).await;
        assert_eq!(s, 200);
        assert!(body.contains("\"unload\""));
        for _ in 0..100 {
            if h.loaded_models().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(h.loaded_models().is_empty());
        assert_eq!(ps(&h).await["models"], json!([]));

        let kinds: Vec<RequestKind> = h.requests().iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            vec![
                RequestKind::Load,
                RequestKind::Ps,
                RequestKind::Generate,
                RequestKind::Unload,
                RequestKind::Ps
            ]
        );
        h.shutdown().await;
    }

    #[tokio::test]
    async fn errors_match_ollama() {
        let h = start(fast()).await.unwrap();
        let gen = format!("{}/api/generate", h.url());
        let (s, _, body) = post(&gen, json!({"model": "nope", "prompt": "x"})).await;
        assert_eq!(s, 404);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "model \"nope\" not found, try pulling it first");

        let (s, _, body) = post(&gen, json!({"prompt": "x"})).await;
        assert_eq!((s, body.contains("model is required")), (400, true));

        let r = reqwest::Client::new()
            .post(&gen)
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string());

        let (s, _, _) = post(&gen, json!({"model": "qwen2.5:7b", "keep_alive": "-1"})).await;
        assert_eq!(s, 400);

        let r = reqwest::get(format!("{}/api/nothing", h.url()))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let r = reqwest::get(&gen).await.unwrap();
        assert_eq!(r.status().as_u16(), 405);
        let r = reqwest::get(h.url()).await.unwrap();
        assert_eq!(r.text().await.unwrap(), "Ollama is running");
    }

    #[tokio::test]
    async fn chat_non_streaming_and_keep_alive_forever() {
        let h = start(fast()).await.unwrap();
        let chat = format!("{}/api/chat", h.url());
        let (s, ct, body) = post(
            &chat,
            json!({"model": "llama3.2:1b", "stream": false, "keep_alive": -1,
                   "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .await;
        assert_eq!(s, 200);
        assert!(ct.starts_with("application/json"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["message"]["role"], "assistant");
        assert!(v["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hello there"));
        assert!(v["eval_count"].as_u64().unwrap() > 0);
        let p = ps(&h).await;
        let exp = p["models"][0]["expires_at"].as_str().unwrap();
        assert!(exp.starts_with("23"), "far-future expiry, got {exp}");
    }

    #[tokio::test]
    async fn keep_alive_expiry_unloads() {
        let h = start(fast()).await.unwrap();
        let gen = format!("{}/api/generate", h.url());
        let (s, _, _) = post(&gen, json!({"model": "qwen2.5:7b", "keep_alive": "150ms"})).await;
        assert_eq!(s, 200);
        assert_eq!(h.loaded_models().len(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(h.loaded_models().is_empty());
    }

    #[tokio::test]
    async fn a_reply_secs_key_sets_how_long_its_reply_streams() {
        let h = start(FakeOptions {
            reply_secs: vec![("item-7".into(), 0.6)],
            ..fast()
        })
        .await
        .unwrap();
        let gen = format!("{}/api/generate", h.url());
        post(&gen, json!({"model": "qwen2.5:7b"})).await;
        let t = Instant::now();
        let (s, _, body) = post(
            &gen,
            json!({"model": "qwen2.5:7b", "prompt": "label item-7"}),
        )
        .await;
        assert_eq!(s, 200);
        assert!(body.lines().count() > 3);
        // Paced to last the key's time (a lower bound only: a busy machine is slower).
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn failure_injection() {
        let h = start(FakeOptions {
            fail_generate_status: Some(503),
            fail_generate_first: Some(1),
            ..fast()
        })
        .await
        .unwrap();
        let gen = format!("{}/api/generate", h.url());
        let body = json!({"model": "qwen2.5:7b", "prompt": "x", "stream": false});
        assert_eq!(post(&gen, body.clone()).await.0, 503);
        assert_eq!(post(&gen, body).await.0, 200);

        let h = start(FakeOptions {
            error_mid_stream: true,
            ..fast()
        })
        .await
        .unwrap();
        let gen = format!("{}/api/generate", h.url());
        let (s, _, body) = post(&gen, json!({"model": "qwen2.5:7b", "prompt": "x"})).await;
        assert_eq!(s, 200);
        let last: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
        assert!(last["error"].is_string());
    }

    #[tokio::test]
    async fn hold_vram_child_lives_exactly_while_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let vram = dir.path().join("gpu0/ollama.mb");
        let h = start(FakeOptions {
            hold_vram_cmd: Some(format!(
                "echo $$ > {}; echo {{mb}} > {}.arg; sleep 0.1; echo ready; exec sleep 600",
                pid_file.display(),
                pid_file.display()
            )),
            fake_vram_file: Some(vram.clone()),
            model_mb: 123,
            ..fast()
        })
        .await
        .unwrap();
        let gen = format!("{}/api/generate", h.url());
        let t = Instant::now();
        assert_eq!(post(&gen, json!({"model": "qwen2.5:7b"})).await.0, 200);
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "waited for ready"
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let arg = std::fs::read_to_string(dir.path().join("pid.arg")).unwrap();
        assert_eq!(arg.trim(), "123");
        assert_eq!(std::fs::read_to_string(&vram).unwrap().trim(), "123");
        // SAFETY: signal 0 only checks for existence.
        assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "holder runs while loaded");

        post(&gen, json!({"model": "qwen2.5:7b", "keep_alive": 0})).await;
        for _ in 0..200 {
            if h.loaded_models().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(h.loaded_models().is_empty());
        // The holder is stopped (SIGTERM, then reaped) after the model leaves the
        // list: on a loaded machine that takes a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only checks for existence.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "holder gone after unload");
        assert!(!vram.exists());
    }

    #[tokio::test]
    async fn holder_that_dies_fails_the_load() {
        let h = start(FakeOptions {
            hold_vram_cmd: Some("echo no GPU >&2; exit 3".into()),
            ..fast()
        })
        .await
        .unwrap();
        let gen = format!("{}/api/generate", h.url());
        let (s, _, body) = post(&gen, json!({"model": "qwen2.5:7b"})).await;
        assert_eq!(s, 500);
        assert!(body.contains("exit status 3"), "{body}");
        assert!(h.loaded_models().is_empty());
    }
}
