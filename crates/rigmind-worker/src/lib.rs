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

pub mod card;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use card::{Card, ClaimContext};
use chrono::Utc;
use rigmind_config::RigConfig;
use rigmind_exec::llm::LlmRunner;
use rigmind_exec::{run_claimed, Filed, Runner};
use rigmind_gpu::GpuSelector;
use rigmind_llm::OllamaClient;
use rigmind_queue::claim::{QueueIndex, QueueLock};
use rigmind_queue::task::{TaskFile, LOAD_LLM};
use rigmind_queue::watch::{watch_dirs, Change, WatchError};
use rigmind_queue::workers::WorkerState;
use rigmind_queue::{Layout, QueueError, TaskDir};
use rigmind_types::TaskClass;
use tokio::sync::watch;

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
        source: rigmind_llm::LlmError,
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

/// Everything a worker knows of itself that decides what it may claim.
struct Me {
    opts: WorkerOptions,
    classes: Vec<TaskClass>,
    config: RigConfig,
    card: Option<Card>,
    llm: Option<LlmRunner>,
    /// Its published state; `state.gates` are the safety gates violated at the
    /// last reading.
    state: WorkerState,
    gates_read: Option<std::time::Instant>,
}

/// How often the card and the host are read while claiming.
const READ_EVERY: Duration = Duration::from_millis(250);

impl Me {
    fn context(&self, now: chrono::DateTime<Utc>) -> ClaimContext<'_> {
        ClaimContext {
            worker: &self.opts.id,
            classes: &self.classes,
            gpu: self.card.is_some(),
            model: self.card.as_ref().and_then(|c| c.model.as_deref()),
            llm: self.llm.is_some(),
            vram_free_mb: self.card.as_ref().map(|c| c.info.memory_free_mb),
            gates_clear: self.state.gates.is_empty(),
            now,
        }
    }

    /// Reads the card and the host again (at most every [`READ_EVERY`]) and says
    /// so, once, when the gates change.
    fn read_gates(&mut self, force: bool) {
        if !force && self.gates_read.is_some_and(|t| t.elapsed() < READ_EVERY) {
            return;
        }
        self.gates_read = Some(std::time::Instant::now());
        let info = self.card.as_mut().map(|c| c.refresh().clone());
        let (host, gates) = card::gates(&self.config.safety, info.as_ref());
        if gates != self.state.gates {
            if gates.is_empty() {
                tracing::info!(worker = %self.opts.id, "safety gates clear again: claiming script and llm work");
            } else {
                tracing::warn!(worker = %self.opts.id, gates = ?gates, "safety gate violated: no script or llm work is claimed until it clears");
            }
        }
        self.state.host = host;
        self.state.telemetry = info;
        self.state.gates = gates;
    }

    /// Sets the card's state from what runs now, then writes the state file.
    fn publish(&mut self, layout: &Layout, state: &str, task: Option<&TaskFile>) {
        if let Some(card) = self.card.as_mut() {
            let running = task.and_then(|t| Some((t.task_class?, t.name.as_str())));
            let s = card.state_for(running);
            card.set_state(s);
            self.state.gpu_state = Some(card.state);
            self.state.gpu_state_since = Some(card.state_since.clone());
            self.state.model = card.model.clone();
            self.state.llm_idle_since = card.llm_idle_since.clone();
        }
        self.state.current_class = task.and_then(|t| t.task_class);
        publish(layout, &mut self.state, state, task);
    }

    /// After a run: a load or unload changes what the card holds; an llm task
    /// resets its idle clock.
    fn note_finished(&mut self, task: &TaskFile, ok: bool) {
        let Some(card) = self.card.as_mut() else {
            return;
        };
        let now = rigmind_queue::time::now_rfc3339();
        match (task.task_class, task.name.as_str()) {
            (Some(TaskClass::Resource), LOAD_LLM) if ok => {
                card.model = task.model.clone();
                card.llm_idle_since = Some(now);
            }
            (Some(TaskClass::Resource), _) if ok => card.model = None,
            (Some(TaskClass::Llm), _) => card.llm_idle_since = Some(now),
            _ => {}
        }
    }

    /// Asks the LLM server what it holds, so that a model unloaded behind the
    /// worker's back (keep_alive ran out, the server restarted) is noticed.
    async fn sync_model(&mut self) {
        let (Some(card), Some(llm)) = (self.card.as_mut(), self.llm.as_ref()) else {
            return;
        };
        let url = llm.client.base_url().to_string();
        let ps = tokio::time::timeout(Duration::from_secs(2), llm.client.ps()).await;
        let Ok(Ok(models)) = ps else { return };
        let listed = |m: &str| models.iter().any(|r| r.is(m));
        match card.model.clone() {
            Some(m) if !listed(&m) => {
                tracing::warn!(worker = %self.opts.id, model = %m, url = %url, "the model is no longer loaded (keep_alive ran out or the server restarted)");
                card.model = None;
            }
            None => {
                if let Some(r) = models.first() {
                    tracing::info!(worker = %self.opts.id, model = %r.name, url = %url, "the LLM server holds a model: the card is in its LLM state");
                    card.model = Some(rigmind_types::canonical_model(&r.name));
                    card.llm_idle_since = Some(rigmind_queue::time::now_rfc3339());
                }
            }
            _ => {}
        }
    }
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

/// Finds the worker's card and LLM server (rig.toml's `[[gpu]]` entry, or
/// `--llm-url`). A GPU that cannot be found stops the worker at once.
fn set_up_card(
    opts: &WorkerOptions,
    config: &RigConfig,
) -> Result<(Option<Card>, Option<String>), WorkerError> {
    let gpu_err = |source| WorkerError::Gpu {
        id: opts.id.clone(),
        source,
    };
    let Some(sel) = &opts.gpu else {
        return Ok((None, opts.llm_url.clone()));
    };
    let telemetry = rigmind_gpu::open().map_err(gpu_err)?;
    let info = telemetry.find(sel).map_err(gpu_err)?;
    let entry = config
        .gpus
        .iter()
        .find(|g| g.index == info.index)
        .or_else(|| config.gpus.iter().find(|g| g.worker == opts.id));
    let url = opts
        .llm_url
        .clone()
        .or_else(|| entry.and_then(|g| g.ollama.clone()));
    tracing::info!(
        worker = %opts.id,
        gpu = info.index,
        uuid = %info.uuid,
        name = %info.name,
        telemetry = telemetry.kind(),
        memory_total_mb = info.memory_total_mb,
        llm = ?url,
        "pinned to GPU"
    );
    Ok((Some(Card::new(telemetry, info)), url))
}

/// Runs the worker until `shutdown` resolves.
pub async fn run_worker(
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerSummary, WorkerError> {
    check_worker_id(&opts.id)?;
    let layout = Layout::new(&opts.root);
    layout.ensure()?;
    let config = RigConfig::load(&layout.rig_toml())?;
    let (card, llm_url) = set_up_card(&opts, &config)?;
    let classes = if !opts.classes.is_empty() {
        opts.classes.clone()
    } else if card.is_some() && llm_url.is_some() {
        vec![TaskClass::Script, TaskClass::Llm, TaskClass::Cpu]
    } else if card.is_some() {
        vec![TaskClass::Script, TaskClass::Cpu]
    } else {
        vec![TaskClass::Cpu]
    };
    if classes.contains(&TaskClass::Llm) && llm_url.is_none() {
        return Err(WorkerError::BadOptions {
            id: opts.id.clone(),
            why: "llm work needs an LLM server: give --llm-url, or an `ollama` URL in rig.toml's [[gpu]] entry for this card".into(),
        });
    }
    let lock_path = layout.worker_lock(&opts.id);
    let _alive = rigmind_queue::LifeLock::try_acquire(&lock_path)?.ok_or_else(|| {
        WorkerError::AlreadyRunning {
            id: opts.id.clone(),
            root: opts.root.clone(),
            lock: lock_path.clone(),
        }
    })?;

    let (watcher, mut rx) = watch_dirs(&[layout.dir(TaskDir::Queue)])?;

    let llm = match &llm_url {
        None => None,
        Some(url) => {
            // The task's own timeout bounds each request (rigmind-exec), so the
            // client's whole-request limit must not cut a long generation short.
            let client = OllamaClient::new(url)
                .map_err(|source| WorkerError::Llm {
                    id: opts.id.clone(),
                    url: url.clone(),
                    source,
                })?
                .with_timeouts(Duration::from_secs(5), Duration::from_secs(365 * 86400));
            Some(LlmRunner {
                client,
                keep_alive: config.llm.keep_alive.clone(),
                samples: layout.logs_dir().join("training_samples.jsonl"),
                vram_used_mb: card.as_ref().map(|c| {
                    let p = c.probe();
                    std::sync::Arc::new(p) as rigmind_exec::llm::VramProbe
                }),
            })
        }
    };
    let session = uuid::Uuid::new_v4().simple().to_string();
    let runner = Runner {
        worker_id: opts.id.clone(),
        session: session.clone(),
        gpu: card.as_ref().map(|c| c.index.to_string()),
        // By UUID: CUDA's own numbering may differ from NVML's.
        cuda_visible_devices: card.as_ref().map(|c| c.info.uuid.clone()),
        default_workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        llm: llm.clone(),
        log_cap: config.logs.max_task_log_bytes(),
    };
    let now = rigmind_queue::time::now_rfc3339();
    let state = WorkerState {
        worker_id: opts.id.clone(),
        session,
        pid: std::process::id(),
        hostname: hostname(),
        gpu: card.as_ref().map(|c| c.index.to_string()),
        classes: classes.iter().map(|c| c.to_string()).collect(),
        state: "idle".into(),
        current_task: None,
        current_task_name: None,
        started_at: now.clone(),
        heartbeat_at: now,
        tasks_done: 0,
        tasks_failed: 0,
        gpu_uuid: card.as_ref().map(|c| c.info.uuid.clone()),
        gpu_state: card.as_ref().map(|c| c.state),
        gpu_state_since: None,
        model: None,
        llm_url: llm_url.clone(),
        llm_idle_since: None,
        current_class: None,
        telemetry: None,
        telemetry_source: card.as_ref().map(|c| c.source().to_string()),
        host: None,
        gates: Vec::new(),
    };
    let mut me = Me {
        opts: opts.clone(),
        classes,
        config,
        card,
        llm,
        state,
        gates_read: None,
    };
    me.sync_model().await;
    me.read_gates(true);
    me.publish(&layout, "idle", None);
    tracing::info!(worker = %opts.id, classes = ?me.state.classes, gpu = ?me.state.gpu, "worker started");
    tracing::info!(worker = %opts.id, "task containment: {}", rigmind_exec::mechanism());
    let stale = rigmind_exec::remove_stale_cgroups();
    if stale > 0 {
        tracing::info!(worker = %opts.id, "removed {stale} empty task cgroups left by runners that died");
    }

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
        me.read_gates(false);
        let claimed = {
            let ctx = me.context(now);
            claim_lock.claim_within(&layout, &mut index, &me.config.groups, |e| {
                card::tier(&ctx, e)
            })
        };
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
            let publish_idle = (me.state.state != "idle").then(|| idle_at + IDLE_AFTER);
            let due = next_due(&me, &index, now);
            // With heavy work held back by a gate, look again soon.
            let gated = (!me.state.gates.is_empty()).then_some(Duration::from_secs(1));
            tokio::select! {
                _ = sleep_until_opt(publish_idle) => me.publish(&layout, "idle", None),
                Some(r) = filing.join_next(), if !filing.is_empty() => {
                    count(&opts.id, &mut summary, &mut me.state, r);
                }
                Some(ev) = rx.recv() => note_events(&layout, &mut index, vec![ev]),
                _ = rescan.tick() => {
                    if let Err(e) = index.rescan(&layout) {
                        tracing::warn!(worker = %opts.id, "{e}");
                    }
                }
                _ = heartbeat.tick() => {
                    me.sync_model().await;
                    me.read_gates(true);
                    let state = me.state.state.clone();
                    me.publish(&layout, &state, None);
                }
                _ = tokio::time::sleep(due.min(gated.unwrap_or(due))) => {}
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
        // the exact record of who runs what. A card changing state is published at
        // once: the resource manager decides by it.
        let card_changes = me.card.as_ref().is_some_and(|c| {
            c.state_for(task.task_class.map(|k| (k, task.name.as_str()))) != c.state
        });
        if me.state.state != "busy"
            || card_changes
            || last_publish.elapsed() >= Duration::from_secs(1)
        {
            me.publish(&layout, "busy", Some(&task));
            last_publish = std::time::Instant::now();
        }
        let task_name = task.name.clone();
        let run = run_claimed(&layout, &claimed.path, task, &runner, abort_rx.clone());
        tokio::pin!(run);
        let finished = loop {
            tokio::select! {
                f = &mut run => break f,
                _ = heartbeat.tick() => {
                    me.read_gates(true);
                    me.state.heartbeat_at = rigmind_queue::time::now_rfc3339();
                    let _ = me.state.write(&layout);
                }
                _ = &mut shutdown, if !stopping => {
                    stopping = true;
                    publish(&layout, &mut me.state, "stopping", None);
                    tracing::info!(worker = %opts.id, grace = ?opts.grace, "stopping: finishing the running task");
                    let abort_tx = abort_tx.clone();
                    let grace = opts.grace;
                    let (id, name) = (opts.id.clone(), task_name.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        tracing::info!(worker = %id, task = %name, grace = ?grace, "stopping: the grace period is over; stopping the task to put it back into the queue");
                        let _ = abort_tx.send(true);
                    });
                }
            }
        };
        if me.card.is_some() {
            me.note_finished(&finished.task, finished.filed == Filed::Complete);
            if finished.task.task_class == Some(TaskClass::Resource) {
                // What the card holds now is published before the task is filed:
                // the resource manager must never see the task done and the card
                // in its old state.
                if finished.filed != Filed::Complete {
                    me.sync_model().await;
                }
                me.read_gates(true);
                let state = if stopping { "stopping" } else { "busy" };
                me.publish(&layout, state, None);
            }
        }
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
            count(&opts.id, &mut summary, &mut me.state, r);
        }
    }
    // Results still being filed get the grace period, then are left in
    // processing/ (the brain requeues them once this worker is gone).
    let deadline = tokio::time::Instant::now() + opts.grace;
    while !filing.is_empty() {
        tokio::select! {
            Some(r) = filing.join_next() => count(&opts.id, &mut summary, &mut me.state, r),
            _ = tokio::time::sleep_until(deadline), if !giving_up.load(std::sync::atomic::Ordering::SeqCst) => {
                giving_up.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    publish(&layout, &mut me.state, "stopped", None);
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
fn next_due(me: &Me, index: &QueueIndex, now: chrono::DateTime<Utc>) -> Duration {
    let cap = Duration::from_secs(3600);
    index
        .entries()
        .filter_map(|e| {
            let t = e.not_before?;
            let mut now_entry = e.clone();
            now_entry.not_before = None;
            card::tier(&me.context(now), &now_entry)?;
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
