//! What `rigmind status` and `rigmind top` show, gathered in one pass over the
//! root: the listings of the task directories (`dir_counts`: one file read per
//! plan task and directory, every file of `processing/`), the workers' state
//! files, the batch records and the brain's life lock. Never every task file:
//! it stays cheap on 100,000 tasks, so `top` may call it on every change.

use std::collections::BTreeMap;

use anyhow::Result;
use chrono::{DateTime, Utc};
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::brain_record::BrainRecord;
use rigmind_queue::rate::RateHold;
use rigmind_queue::workers::{self, WorkerState};
use rigmind_queue::{fsio, Layout, LifeLock, TaskDir};
use serde::Serialize;

pub use super::dir_counts::{LostTask, RunningTask};

/// The root at one moment (`rigmind status --json` prints it as it is).
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub root: String,
    pub brain: Option<BrainStatus>,
    /// The CPU's hottest sensor, read now; null: no sensor.
    pub cpu_temp: Option<rigmind_gpu::CpuTemp>,
    /// `[safety] max_cpu_temp_c` (null when rig.toml cannot be read).
    pub max_cpu_temp_c: Option<f64>,
    /// The live `rigmind gate`s (`gates/`).
    pub gates: Vec<rigmind_queue::gates::GateRecord>,
    /// directory -> class -> count (`invalid` for files that are not tasks).
    pub queues: BTreeMap<String, BTreeMap<String, usize>>,
    /// `queue/` only: class -> written priority -> count.
    pub queued_by_priority: BTreeMap<String, BTreeMap<u8, usize>>,
    /// Requests to the brain not yet done (in queue/ or processing/).
    pub requests: usize,
    pub rejected: usize,
    /// Running tasks whose worker is dead: the brain requeues them.
    pub lost: Vec<LostTask>,
    /// Every task in `processing/`.
    pub running: Vec<RunningTask>,
    pub workers: Vec<WorkerStatus>,
    /// Endpoints whose tasks wait for their `requests_per_minute`.
    pub rate_holds: Vec<RateHold>,
    pub batches: Vec<BatchRecord>,
}

/// Whether a brain holds the root's life lock.
#[derive(Debug, Clone, Serialize)]
pub struct BrainStatus {
    pub alive: bool,
    pub pid: Option<u64>,
}

/// One worker, from its state file and its life lock.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub worker_id: String,
    pub alive: bool,
    /// `idle`, `busy`, `drained`, `busy, draining`, `stopped`, `dead`.
    pub state: String,
    pub gpu: Option<String>,
    /// The running task's name.
    pub current_task: Option<String>,
    /// The running task's id.
    pub current_task_id: Option<String>,
    /// When the running task started (from its file in `processing/`).
    pub task_started_at: Option<DateTime<Utc>>,
    pub heartbeat_age_seconds: Option<f64>,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    /// The classes it claims, preferred first.
    pub classes: Vec<String>,
    pub draining: bool,
    pub gpu_state: Option<String>,
    pub model: Option<String>,
    pub vram_used_mb: Option<u64>,
    pub vram_total_mb: Option<u64>,
    pub utilization_percent: Option<u32>,
    pub temperature_c: Option<u32>,
    pub power_watts: Option<f64>,
    pub gates: Vec<String>,
}

/// Whether `layout` is a rigmind root (it has `tasks/`); when not, `command`
/// says so on stderr.
pub(super) fn is_root(layout: &Layout, command: &str) -> bool {
    let ok = layout.tasks_dir().is_dir();
    if !ok {
        eprintln!(
            "rigmind {command}: {} is not a rigmind root (no tasks/ directory)",
            layout.root().display()
        );
    }
    ok
}

/// Reads the root as it is now.
pub fn gather(layout: &Layout) -> Result<Overview> {
    let mut queues = BTreeMap::new();
    let mut queued_by_priority = BTreeMap::new();
    let (mut lost, mut running) = (Vec::new(), Vec::new());
    let mut requests = 0;
    for (d, c) in TaskDir::ALL
        .into_iter()
        .zip(super::dir_counts::count_all(layout)?)
    {
        if matches!(d, TaskDir::Queue | TaskDir::Processing) {
            requests += c.requests;
        }
        if d == TaskDir::Queue {
            queued_by_priority = c.by_class_priority;
        }
        lost.extend(c.lost);
        running.extend(c.running);
        queues.insert(d.as_str().to_string(), c.by_class);
    }
    let now = Utc::now();
    let workers = WorkerState::read_all(layout)?
        .into_iter()
        .flatten()
        .map(|w| worker_status(layout, w, &running, now))
        .collect();
    let brain = LifeLock::is_held(&layout.brain_lock()).map(|alive| BrainStatus {
        alive,
        pid: BrainRecord::read_pid(layout),
    });
    let max_cpu_temp_c = rigmind_config::RigConfig::load(&layout.rig_toml())
        .ok()
        .map(|c| c.safety.max_cpu_temp_c);
    Ok(Overview {
        root: layout.root().display().to_string(),
        brain,
        cpu_temp: rigmind_gpu::read_cpu_temp(),
        max_cpu_temp_c,
        gates: rigmind_queue::gates::live(layout)?,
        queues,
        queued_by_priority,
        requests,
        rejected: fsio::list_names(&layout.rejected_dir())?.len(),
        lost,
        running,
        workers,
        rate_holds: rigmind_queue::rate::holds_recorded(layout, now),
        batches: BatchRecord::read_all(layout)?
            .into_iter()
            .flatten()
            .collect(),
    })
}

/// The task of `processing/` that worker `w` runs: the one its state file
/// names, else one it claimed and started. `processing/` is the truth: a state
/// file is rewritten only at the worker's steps and may still name the task
/// before (seen after a failed task, when the next claim follows at once).
fn running_of<'a>(w: &WorkerState, running: &'a [RunningTask]) -> Option<&'a RunningTask> {
    let mine = || {
        running
            .iter()
            .filter(|r| r.worker.as_deref() == Some(w.worker_id.as_str()))
    };
    mine()
        .find(|r| w.current_task.as_ref() == Some(&r.task_id))
        .or_else(|| mine().find(|r| r.started_at.is_some()))
}

fn worker_status(
    layout: &Layout,
    w: WorkerState,
    running: &[RunningTask],
    now: DateTime<Utc>,
) -> WorkerStatus {
    let alive = LifeLock::is_held(&layout.worker_lock(&w.worker_id)) == Some(true);
    let age = Some((now - w.heartbeat_at).num_milliseconds() as f64 / 1000.0);
    let (current_task_id, current_task, task_started_at) = match running_of(&w, running) {
        Some(r) => (Some(r.task_id.clone()), Some(r.task.clone()), r.started_at),
        None => (w.current_task.clone(), w.current_task_name.clone(), None),
    };
    let t = w.telemetry.as_ref();
    WorkerStatus {
        alive,
        // Not alive: stopped if it said so on its way out, dead otherwise.
        // Drained (`rigmind drain`): "drained" once idle, "busy, draining" till then.
        state: match (alive, w.state) {
            (true, workers::WorkerStatus::Idle) if w.draining => "drained".into(),
            (true, s) if w.draining => format!("{s}, draining"),
            (true, s) | (false, s @ workers::WorkerStatus::Stopped) => s.to_string(),
            (false, _) => "dead".into(),
        },
        gpu: w.gpu,
        current_task,
        current_task_id,
        task_started_at,
        heartbeat_age_seconds: age,
        tasks_done: w.tasks_done,
        tasks_failed: w.tasks_failed,
        classes: w.classes.iter().map(|c| c.to_string()).collect(),
        draining: w.draining,
        gpu_state: w.gpu_state.map(|g| g.to_string()),
        model: w.model,
        vram_used_mb: t.map(|t| t.memory_used_mb),
        vram_total_mb: t.map(|t| t.memory_total_mb),
        utilization_percent: t.and_then(|t| t.utilization_percent),
        temperature_c: t.and_then(|t| t.temperature_c),
        power_watts: t.and_then(|t| t.power_watts),
        gates: w.gates,
        worker_id: w.worker_id,
    }
}
