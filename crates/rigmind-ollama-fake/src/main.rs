//! `fake-ollama`: the Ollama-protocol test server as a process (see the library docs
//! for what it answers). Logs go to stderr (`RUST_LOG` or `RIGMIND_LOG` set the
//! level); SIGTERM or SIGINT unloads every model (stopping hold-vram children) and
//! exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rigmind_ollama_fake::{FakeOptions, KeepAlive};

/// An Ollama-protocol test server: real HTTP, real load latency and keep_alive, no
/// weights.
#[derive(Debug, Parser)]
#[command(name = "fake-ollama", version)]
struct Args {
    /// Address to listen on (port 0: any free port; see --port-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the bound address (127.0.0.1:PORT) here, atomically, once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// The models this server has, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "qwen2.5:7b")]
    models: Vec<String>,
    /// Milliseconds a model load takes.
    #[arg(long, default_value_t = 200)]
    load_ms: u64,
    /// Milliseconds a model unload takes.
    #[arg(long, default_value_t = 20)]
    unload_ms: u64,
    /// Generation speed.
    #[arg(long, default_value_t = 2000.0)]
    tokens_per_sec: f64,
    /// Model size in MiB (reported by /api/ps, written to --fake-vram-file, {mb}).
    #[arg(long, default_value_t = 4500)]
    model_mb: u64,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    request_log: Option<PathBuf>,
    /// Answer generate/chat requests that have a prompt with this HTTP status.
    #[arg(long)]
    fail_generate_status: Option<u16>,
    /// With --fail-generate-status: only the first N such requests fail.
    #[arg(long)]
    fail_generate_first: Option<u64>,
    /// Every Nth generate/chat request with a prompt answers 500.
    #[arg(long)]
    status_500_every: Option<u64>,
    /// End streams with an {"error": ...} line after three tokens.
    #[arg(long)]
    error_mid_stream: bool,
    /// While any model is loaded this file holds the MB held; removed otherwise.
    #[arg(long)]
    fake_vram_file: Option<PathBuf>,
    /// Keep `bash -c CMD` running while a model is loaded ({mb} = --model-mb); the
    /// load completes once it prints "ready".
    #[arg(long)]
    hold_vram_cmd: Option<String>,
    /// keep_alive for requests without one (a Go duration, or seconds; -1 = forever).
    #[arg(long, default_value = "5m", allow_hyphen_values = true)]
    default_keep_alive: String,
    /// Lines `SECONDS<TAB>TEXT`: a request whose input contains TEXT streams its
    /// reply over SECONDS (the first line that matches), whatever --tokens-per-sec
    /// says.
    #[arg(long)]
    reply_secs_file: Option<PathBuf>,
}

impl Args {
    fn options(self) -> anyhow::Result<FakeOptions> {
        let default_keep_alive = KeepAlive::parse_cli(&self.default_keep_alive)
            .map_err(|e| anyhow::anyhow!("--default-keep-alive: {e}"))?;
        Ok(FakeOptions {
            listen: self.listen,
            port_file: self.port_file,
            models: self.models,
            load_latency: Duration::from_millis(self.load_ms),
            unload_latency: Duration::from_millis(self.unload_ms),
            tokens_per_sec: self.tokens_per_sec,
            model_mb: self.model_mb,
            request_log: self.request_log,
            fail_generate_status: self.fail_generate_status,
            fail_generate_first: self.fail_generate_first,
            status_500_every: self.status_500_every,
            error_mid_stream: self.error_mid_stream,
            fake_vram_file: self.fake_vram_file,
            hold_vram_cmd: self.hold_vram_cmd,
            default_keep_alive,
            reply_secs: match &self.reply_secs_file {
                Some(f) => reply_secs(f)?,
                None => Vec::new(),
            },
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rigmind_ollama_fake::init_tracing();
    let opts = Args::parse().options()?;
    let listen = opts.listen;
    let start = rigmind_ollama_fake::start(opts);
    rigmind_ollama_fake::run_until_signal(
        "fake-ollama",
        listen,
        start,
        "unloading and exiting",
        |h| h.shutdown(),
    )
    .await
}

/// `--reply-secs-file`: `SECONDS<TAB>TEXT` per line.
fn reply_secs(path: &std::path::Path) -> anyhow::Result<Vec<(String, f64)>> {
    let body = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--reply-secs-file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in body
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parsed = line
            .split_once('\t')
            .and_then(|(secs, text)| Some((text.to_string(), secs.trim().parse::<f64>().ok()?)))
            .filter(|(text, secs)| !text.is_empty() && secs.is_finite() && *secs > 0.0);
        match parsed {
            Some(entry) => out.push(entry),
            None => anyhow::bail!(
                "--reply-secs-file {} line {}: want SECONDS<TAB>TEXT with SECONDS > 0: {line:?}",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(out)
}
