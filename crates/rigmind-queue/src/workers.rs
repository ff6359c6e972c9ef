//! `workers/<id>.json`: each worker's heartbeat and what it is doing.

use std::path::Path;

use chrono::{DateTime, Utc};
use rigmind_types::{GpuState, TaskClass};
use serde::{Deserialize, Serialize};

use crate::error::QueueError;
use crate::fsio;
use crate::layout::Layout;
use crate::lifelock::LifeLock;
use crate::time::{rfc3339, rfc3339_opt};

/// What a worker is doing, as its state file says (`state`).
///
/// Only workers write this file, so a word outside the set is refused (the file
/// reads as invalid), as any other damage to it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Waiting for work.
    Idle,
    /// Running a task (or filing its result).
    Busy,
    /// Asked to stop: finishing what it runs.
    Stopping,
    /// Stopped cleanly.
    Stopped,
}

impl WorkerStatus {
    /// The word in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker's published state, rewritten with each heartbeat and each change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    pub worker_id: String,
    /// A new id for each start of the worker.
    #[serde(default)]
    pub session: String,
    pub pid: u32,
    pub hostname: String,
    /// The GPU it is pinned to (`--gpu`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    pub classes: Vec<TaskClass>,
    /// What it does; the card's own state is `gpu_state`.
    pub state: WorkerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task_name: Option<String>,
    #[serde(with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub heartbeat_at: DateTime<Utc>,
    pub tasks_done: u64,
    pub tasks_failed: u64,

    // --- a GPU worker's card (absent on CPU workers) ---
    /// The UUID it is pinned to (`CUDA_VISIBLE_DEVICES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_state: Option<GpuState>,
    /// When the card last moved between its LLM and script states.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub gpu_state_since: Option<DateTime<Utc>>,
    /// The model its LLM server holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Its LLM server; none: it takes no llm or resource work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_url: Option<String>,
    /// When it last finished an llm task or a load (for `idle_unload`).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub llm_idle_since: Option<DateTime<Utc>>,
    /// The class of the task it runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_class: Option<TaskClass>,
    /// The card's last reading (memory, utilisation, temperature, power).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<rigmind_types::GpuInfo>,
    /// `nvml`, or `fake` under RIGMIND_FAKE_GPUS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_source: Option<String>,
    /// Host memory at the last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<rigmind_types::HostMemory>,
    /// The CPU's hottest sensor at the last heartbeat; absent: no sensor (or a
    /// worker older than the reading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_temp: Option<rigmind_types::CpuTemp>,
    /// Safety gates violated now: while any is, it claims no script or llm work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<String>,
    /// Drained (`workers/<id>.drain`, [`crate::drain`]): it finishes what it runs
    /// and claims nothing new.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

impl WorkerState {
    pub fn write(&self, layout: &Layout) -> Result<(), QueueError> {
        fsio::write_atomic(
            &layout.worker_file(&self.worker_id),
            &self.to_bytes(),
            fsio::Sync::None,
        )
    }

    /// The state's bytes as written to disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }

    pub fn read(path: &Path) -> Result<Self, QueueError> {
        let bytes = fsio::read_regular(path, "worker state")?;
        crate::json::from_slice(path, "worker state", &bytes)
    }

    /// Every worker state file under the root, by worker id.
    pub fn read_all(layout: &Layout) -> Result<Vec<Result<Self, QueueError>>, QueueError> {
        let dir = layout.workers_dir();
        Ok(fsio::list_names(&dir)?
            .into_iter()
            .filter(|n| n.ends_with(".json"))
            .map(|n| Self::read(&dir.join(n)))
            .collect())
    }
}

/// What can be known from outside about whether a worker is alive.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Liveness {
    /// Whether its life lock is held: `None` when there is no lock file to ask.
    pub lock_held: Option<bool>,
    /// The session in its state file, if readable.
    pub session: Option<String>,
    /// Its last heartbeat, if readable.
    pub heartbeat_at: Option<DateTime<Utc>>,
}

/// Probes a worker's lock and state file.
pub fn probe(layout: &Layout, worker: &str) -> Liveness {
    let state = WorkerState::read(&layout.worker_file(worker)).ok();
    Liveness {
        lock_held: LifeLock::is_held(&layout.worker_lock(worker)),
        session: state.as_ref().map(|s| s.session.clone()),
        heartbeat_at: state.as_ref().map(|s| s.heartbeat_at),
    }
}
