//! The worker: one per GPU (or a few for CPU work), claiming tasks from
//! `tasks/queue/` in claim order and running them one at a time.
//!
//! It wakes on file events in the queue (inotify through notify), with a periodic
//! rescan for events the kernel may drop, publishes its state in
//! `workers/<id>.json`, and holds `workers/<id>.lock` for its whole life so that
//! anyone can tell whether it is alive.
//!
//! A worker pinned to a GPU (`--gpu`) runs its commands with `CUDA_VISIBLE_DEVICES`
//! set to the card's UUID, tracks the card's state and its LLM server's model
//! ([`card`]), and claims by the card's rules ([`card::tier`]).
//!
//! The loop itself is in `worker` (start, claim, run, file, heartbeat, stop); what
//! the worker is and holds, and its state file, in `profile`.

pub mod card;
mod gpusample;
mod lane;
mod profile;
mod refuse;
mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use rigmind_gpu::GpuSelector;
use rigmind_queue::watch::WatchError;
use rigmind_queue::QueueError;
use rigmind_types::TaskClass;

use worker::Worker;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub id: String,
    pub root: PathBuf,
    /// The GPU it is pinned to (an index or a UUID).
    pub gpu: Option<GpuSelector>,
    /// Its LLM server; else rig.toml's `[[gpu]]` entry for its card names it.
    pub llm_url: Option<String>,
    /// The classes it claims; the first is its preferred class. Empty: `cpu` for
    /// a CPU worker, `script, llm, cpu` for a GPU worker.
    pub classes: Vec<TaskClass>,
    pub rescan_every: Duration,
    pub heartbeat_every: Duration,
    /// How long a running task may go on after a shutdown request before it is
    /// stopped and put back into the queue.
    pub grace: Duration,
}

impl WorkerOptions {
    pub fn new(id: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        Self {
            id: id.into(),
            root: root.into(),
            gpu: None,
            llm_url: None,
            classes: Vec::new(),
            rescan_every: Duration::from_secs(2),
            heartbeat_every: Duration::from_secs(5),
            grace: Duration::from_secs(30),
        }
    }
}

/// A failure that stops the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("worker '{id}' is already running on {root} (lock {lock} is held)")]
    AlreadyRunning {
        id: String,
        root: PathBuf,
        lock: PathBuf,
    },
    #[error("worker id '{id}': {why}")]
    BadId { id: String, why: String },
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("worker '{id}': {source}")]
    Gpu {
        id: String,
        source: rigmind_gpu::GpuError,
    },
    #[error(transparent)]
    Config(#[from] rigmind_config::ConfigError),
    #[error("worker '{id}': LLM server {url}: {source}")]
    Llm {
        id: String,
        url: String,
        source: Box<rigmind_llm::LlmError>,
    },
    #[error("worker '{id}': {why}")]
    BadOptions { id: String, why: String },
}

/// What a worker did in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub completed: u64,
    pub failed: u64,
    pub returned: u64,
}

/// The longest worker id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Checks a worker id where it enters (`worker --id`, rig.toml for `run`). The id
/// names `workers/<id>.json` and `.lock`: ids that are empty, too long, hold a
/// `/`, or start with `.` (a dot-name every reader skips, so the worker would never
/// be shown) are refused with the reason.
pub fn check_worker_id(id: &str) -> Result<(), WorkerError> {
    let why = if id.is_empty() {
        Some("an id may not be empty".to_string())
    } else if id.len() > MAX_ID_LEN {
        Some(format!(
            "an id is at most {MAX_ID_LEN} bytes (this one has {})",
            id.len()
        ))
    } else if id.starts_with('.') {
        Some("an id may not start with '.' (dot-names are hidden from every listing)".into())
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        Some("an id may hold only letters A-Z a-z, digits, '_', '-' and '.'".into())
    } else {
        None
    };
    match why {
        Some(why) => Err(WorkerError::BadId {
            id: id.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// Runs the worker until `shutdown` resolves.
pub async fn run_worker(
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerSummary, WorkerError> {
    let worker = Worker::start(opts).await?;
    Ok(worker.run(shutdown).await)
}
