//! The worker: one per GPU (or a few for CPU work), claiming tasks from
//! `tasks/queue/` in claim order and running them one at a time.
//!
//! It wakes on file events in the queue (inotify through notify), with a periodic
//! rescan for events the kernel may drop, publishes its state in
//! `workers/<id>.json`, and holds `workers/<id>.lock` for its whole life so that
//! anyone can tell whether it is alive.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use rigmind_exec::{run_claimed, Filed, Runner};
use rigmind_queue::claim::{QueueEntry, QueueIndex, QueueLock};
use rigmind_queue::task::{TaskFile, TaskStatus};
use rigmind_queue::watch::{watch_dirs, Change, WatchError};
use rigmind_queue::workers::WorkerState;
use rigmind_queue::{Layout, QueueError, TaskDir};
use rigmind_types::{Executor, TaskClass};
use tokio::sync::watch;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub id: String,
    pub root: PathBuf,
    /// The GPU it is pinned to (an index).
    pub gpu: Option<String>,
    /// The classes it claims; the first is its preferred class.
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
            classes: vec![TaskClass::Cpu],
            rescan_every: Duration::from_secs(2),
            heartbeat_every: Duration::from_secs(5),
            grace: Duration::from_secs(30),
        }
    }
}

/// How long a worker waits with nothing to do before it publishes `idle`.
const IDLE_AFTER: Duration = Duration::from_millis(500);

async fn sleep_until_opt(at: Option<std::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
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
    #[error("worker '{0}': an id may hold only letters, digits, '_', '-' and '.'")]
    BadId(String),
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// What a worker did in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub completed: u64,
    pub failed: u64,
    pub returned: u64,
}

/// The claim tier of a queued task for this worker: `None` when it may not claim it
/// now; 1 for its preferred class, 2 for the others (queue-layout.md, claim order).
pub fn tier(opts: &WorkerOptions, e: &QueueEntry, now: chrono::DateTime<Utc>) -> Option<u8> {
    if e.executor != Executor::Worker || e.status != TaskStatus::Queued {
        return None;
    }
    if e.not_before.is_some_and(|t| t > now) {
        return None;
    }
    if e.target_worker.as_ref().is_some_and(|t| *t != opts.id) {
        return None;
    }
    let class = e.task_class?;
    let pos = opts.classes.iter().position(|c| *c == class)?;
    Some(if pos == 0 { 1 } else { 2 })
}

/// Runs the worker until `shutdown` resolves.
pub async fn run_worker(
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerSummary, WorkerError> {
    if opts.id.is_empty()
        || !opts
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(WorkerError::BadId(opts.id.clone()));
    }
    let layout = Layout::new(&opts.root);
    layout.ensure()?;
    let lock_path = layout.worker_lock(&opts.id);
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| QueueError::Io {
            op: "open lock",
            path: lock_path.clone(),
            source: e,
        })?;
    let mut life_lock = fd_lock::RwLock::new(lock_file);
    let _alive = life_lock
        .try_write()
        .map_err(|_| WorkerError::AlreadyRunning {
            id: opts.id.clone(),
            root: opts.root.clone(),
            lock: lock_path.clone(),
        })?;

    let (watcher, mut rx) = watch_dirs(&[layout.dir(TaskDir::Queue)])?;

    let session = uuid::Uuid::new_v4().simple().to_string();
    let runner = Runner {
        worker_id: opts.id.clone(),
        session: session.clone(),
        gpu: opts.gpu.clone(),
        cuda_visible_devices: opts.gpu.clone(),
        default_workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    let now = rigmind_queue::time::now_rfc3339();
    let mut me = WorkerState {
        worker_id: opts.id.clone(),
        session,
        pid: std::process::id(),
        hostname: hostname(),
        gpu: opts.gpu.clone(),
        classes: opts.classes.iter().map(|c| c.to_string()).collect(),
        state: "idle".into(),
        current_task: None,
        current_task_name: None,
        started_at: now.clone(),
        heartbeat_at: now,
        tasks_done: 0,
        tasks_failed: 0,
    };
    publish(&layout, &mut me, "idle", None);
    tracing::info!(worker = %opts.id, classes = ?me.classes, gpu = ?opts.gpu, "worker started");

    let mut index = QueueIndex::default();
    index.rescan(&layout)?;
    let mut claim_lock = QueueLock::open(&layout)?;
    let mut rescan = tokio::time::interval(opts.rescan_every);
    let mut heartbeat = tokio::time::interval(opts.heartbeat_every);
    let (abort_tx, abort_rx) = watch::channel(false);
    let mut summary = WorkerSummary::default();
    let mut last_publish = std::time::Instant::now();
    let mut idle_since: Option<std::time::Instant> = None;
    let mut filing: tokio::task::JoinSet<Result<Filed, QueueError>> = tokio::task::JoinSet::new();
    let giving_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::pin!(shutdown);
    let mut stopping = false;

    while !stopping {
        let mut pending = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            pending.push(ev);
        }
        note_events(&layout, &mut index, pending);
        let now = Utc::now();
        let claimed = claim_lock.claim(&layout, &mut index, |e| tier(&opts, e, now));
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                // A full disk or a permission problem: say so, keep the task where
                // it is, and try again after the next rescan.
                tracing::warn!(worker = %opts.id, "{e}");
                None
            }
        };
        let Some(claimed) = claimed else {
            // Going idle is published after a short quiet spell, so that a chain of
            // tasks arriving one by one does not rewrite the state file twice each.
            let idle_at = *idle_since.get_or_insert_with(std::time::Instant::now);
            let publish_idle = (me.state != "idle").then(|| idle_at + IDLE_AFTER);
            let due = next_due(&opts, &index, now);
            tokio::select! {
                _ = sleep_until_opt(publish_idle) => publish(&layout, &mut me, "idle", None),
                Some(r) = filing.join_next(), if !filing.is_empty() => {
                    count(&opts.id, &mut summary, &mut me, r);
                }
                Some(ev) = rx.recv() => note_events(&layout, &mut index, vec![ev]),
                _ = rescan.tick() => {
                    if let Err(e) = index.rescan(&layout) {
                        tracing::warn!(worker = %opts.id, "{e}");
                    }
                }
                _ = heartbeat.tick() => {
                    let state = me.state.clone();
                    publish(&layout, &mut me, &state, None);
                }
                _ = tokio::time::sleep(due) => {}
                _ = &mut shutdown => stopping = true,
            }
            continue;
        };
        idle_since = None;
        let task = match TaskFile::read(&claimed.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(worker = %opts.id, "{e}; left in processing/ for the brain");
                continue;
            }
        };
        // A stream of short tasks would rewrite the state file for each one; a
        // second-old current task is fine for people, and the processing/ file is
        // the exact record of who runs what.
        if me.state != "busy" || last_publish.elapsed() >= Duration::from_secs(1) {
            publish(&layout, &mut me, "busy", Some(&task));
            last_publish = std::time::Instant::now();
        }
        let run = run_claimed(&layout, &claimed.path, task, &runner, abort_rx.clone());
        tokio::pin!(run);
        let finished = loop {
            tokio::select! {
                f = &mut run => break f,
                _ = heartbeat.tick() => {
                    me.heartbeat_at = rigmind_queue::time::now_rfc3339();
                    let _ = me.write(&layout);
                }
                _ = &mut shutdown, if !stopping => {
                    stopping = true;
                    publish(&layout, &mut me, "stopping", None);
                    tracing::info!(worker = %opts.id, grace = ?opts.grace, "stopping: finishing the running task");
                    let abort_tx = abort_tx.clone();
                    let grace = opts.grace;
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        let _ = abort_tx.send(true);
                    });
                }
            }
        };
        // The result is written in the background: the next claim and the next
        // command need not wait for the disk.
        let layout2 = layout.clone();
        let stop = giving_up.clone();
        filing.spawn_blocking(move || {
            finished.file_until_done(&layout2, Duration::from_secs(2), || {
                stop.load(std::sync::atomic::Ordering::SeqCst)
            })
        });
        while let Some(r) = filing.try_join_next() {
            count(&opts.id, &mut summary, &mut me, r);
        }
    }
    // Results still being filed get the grace period, then are left in
    // processing/ (the brain requeues them once this worker is gone).
    let deadline = tokio::time::Instant::now() + opts.grace;
    while !filing.is_empty() {
        tokio::select! {
            Some(r) = filing.join_next() => count(&opts.id, &mut summary, &mut me, r),
            _ = tokio::time::sleep_until(deadline), if !giving_up.load(std::sync::atomic::Ordering::SeqCst) => {
                giving_up.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    publish(&layout, &mut me, "stopped", None);
    drop(watcher);
    Ok(summary)
}

/// Brings the index up to date with a burst of changes, reading each file once
/// however many events named it (a rename alone raises two).
fn note_events(layout: &Layout, index: &mut QueueIndex, changes: Vec<Change>) {
    let mut names = std::collections::BTreeSet::new();
    for change in changes {
        match change {
            Change::Paths(paths) => names.extend(
                paths
                    .iter()
                    .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from)),
            ),
            Change::Rescan => {
                if let Err(e) = index.rescan(layout) {
                    tracing::warn!("{e}");
                }
                return;
            }
        }
    }
    for name in names {
        index.note(layout, &name);
    }
}

/// How long until a task held back by `not_before` becomes claimable (capped).
fn next_due(opts: &WorkerOptions, index: &QueueIndex, now: chrono::DateTime<Utc>) -> Duration {
    let cap = Duration::from_secs(3600);
    index
        .entries()
        .filter_map(|e| {
            let t = e.not_before?;
            let mut now_entry = e.clone();
            now_entry.not_before = None;
            tier(opts, &now_entry, now)?;
            (t - now).to_std().ok()
        })
        .min()
        .map_or(cap, |d| d.min(cap) + Duration::from_millis(5))
}

fn count(
    id: &str,
    summary: &mut WorkerSummary,
    me: &mut WorkerState,
    r: Result<Result<Filed, QueueError>, tokio::task::JoinError>,
) {
    match r {
        Ok(Ok(Filed::Complete)) => {
            summary.completed += 1;
            me.tasks_done += 1;
        }
        Ok(Ok(Filed::Failed(_))) => {
            summary.failed += 1;
            me.tasks_failed += 1;
        }
        Ok(Ok(Filed::Returned)) => summary.returned += 1,
        Ok(Ok(Filed::Discarded)) => {}
        // The task stays in processing/ with its start record; the brain's
        // lost-task handling takes it from there.
        Ok(Err(e)) => tracing::error!(worker = %id, "filing a result: {e}"),
        Err(e) => tracing::error!(worker = %id, "filing a result: {e}"),
    }
}

fn publish(layout: &Layout, me: &mut WorkerState, state: &str, task: Option<&TaskFile>) {
    me.state = state.to_string();
    me.current_task = task.map(|t| t.task_id.clone());
    me.current_task_name = task.map(|t| t.name.clone());
    me.heartbeat_at = rigmind_queue::time::now_rfc3339();
    if let Err(e) = me.write(layout) {
        tracing::warn!(worker = %me.worker_id, "{e}");
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
