//! `fake-llm-api`: the OpenAI chat or Anthropic Messages test server as a process
//! (see `rigmind_ollama_fake::start_api`). The key it wants is read from the
//! environment variable `--api-key-env` names, so it never shows in a process
//! list; the request log records which header carried a key and whether it was
//! right, never the key. SIGTERM or SIGINT stops it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use rigmind_ollama_fake::{ApiFakeOptions, ApiFlavor};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Flavor {
    Openai,
    Anthropic,
}

/// A test server for the OpenAI chat API or Anthropic's Messages API.
#[derive(Debug, Parser)]
#[command(name = "fake-llm-api", version)]
struct Args {
    /// Which API to speak.
    #[arg(long, value_enum)]
    api: Flavor,
    /// Address to listen on (port 0: any free port; see --port-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the bound address here, atomically, once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// The models served, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    models: Vec<String>,
    /// The environment variable holding the key requests must carry (none: no check).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Generation speed.
    #[arg(long, default_value_t = 2000.0)]
    tokens_per_sec: f64,
    /// Answer the first N requests 429.
    #[arg(long, default_value_t = 0)]
    rate_limit_first: u64,
    /// The retry-after seconds of a 429.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// End streams with the API's error event after three tokens.
    #[arg(long)]
    error_mid_stream: bool,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    request_log: Option<PathBuf>,
}

impl Args {
    fn options(self) -> anyhow::Result<ApiFakeOptions> {
        let api_key = match &self.api_key_env {
            Some(var) => Some(
                std::env::var(var).with_context(|| format!("--api-key-env: {var} is not set"))?,
            ),
            None => None,
        };
        let flavor = match self.api {
            Flavor::Openai => ApiFlavor::OpenAi,
            Flavor::Anthropic => ApiFlavor::Anthropic,
        };
        Ok(ApiFakeOptions {
            listen: self.listen,
            port_file: self.port_file,
            flavor,
            models: self.models,
            api_key,
            tokens_per_sec: self.tokens_per_sec,
            rate_limit_first: self.rate_limit_first,
            retry_after_secs: self.retry_after_secs,
            error_mid_stream: self.error_mid_stream,
            request_log: self.request_log,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rigmind_ollama_fake::init_tracing();
    let opts = Args::parse().options()?;
    let listen = opts.listen;
    let start = rigmind_ollama_fake::start_api(opts);
    // Dropping the handle stops the server.
    rigmind_ollama_fake::run_until_signal(
        "fake-llm-api",
        listen,
        start,
        "exiting",
        |h| async move { drop(h) },
    )
    .await
}
