//! The brain's loop: wake on file events (or a periodic rescan, for events the kernel
//! dropped), bring the state up to date, decide, apply, repeat.
//!
//! [`run_brain`] reads like the protocol: [`Brain::start`] (lock, rebuild, watch),
//! then one [`Brain::turn`] after each wake-up, and between turns one handler per
//! kind of wake-up ([`Brain::on_files`], [`Brain::on_rescan`], ...); last,
//! [`Brain::stop`].

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rigmind_config::RigConfig;
use rigmind_exec::{run_claimed, Runner};
use rigmind_queue::brain_record::BrainRecord;
use rigmind_queue::claim::{Claimed, QueueIndex, QueueLock};
use rigmind_queue::fsio;
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::TaskFile;
use rigmind_queue::watch::{watch_dirs, Change, DirWatcher};
use rigmind_queue::{Layout, TaskDir};
use rigmind_types::Executor;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Interval;

use crate::apply::{apply, flush_records, Released};
use crate::observe::refresh;
use crate::policy::decide;
use crate::record::Recorder;
use crate::requests::{execute_plan, requeue_orphaned_requests};
use crate::rescan::full_rescan;
use crate::rig::ResourceManager;
use crate::state::{BrainState, JobStatus};
use crate::strays::{accept_stray, is_known_job, judge_stray, unclassified};
use crate::BrainError;
use rigmind_queue::requests::BrainAction;

/// Whether some batch record may be behind: unwritten changes, or counts that move
/// without a file moving (start records, back-offs running out).
fn records_live(state: &BrainState) -> bool {
    state
        .batches
        .values()
        .any(|b| b.dirty || !b.running.is_empty() || !b.retry_at.is_empty())
}

/// How often the batch records' counts are brought up to date while tasks run.
const RECORD_EVERY: Duration = Duration::from_millis(500);

/// How long one turn of the loop may spend carrying out decisions before it looks
/// at cancellations and events again (the rest is done in the next turns): a
/// 100,000-task release or cancellation must not keep a new cancellation waiting.
const TURN_BUDGET: Duration = Duration::from_millis(200);

/// The room kept for echoes between bursts (a release round's worth).
const ECHOES_KEPT: usize = 1024;

/// How the brain runs.
#[derive(Debug, Clone)]
pub struct BrainOptions {
    pub root: PathBuf,
    /// How often the directories are re-listed in full, in case events were lost.
    pub rescan_every: Duration,
    /// How often `brain/brain.json` is rewritten.
    pub heartbeat_every: Duration,
    /// Where to serve `/metrics` and `/health` (`--metrics-addr`), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl BrainOptions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            rescan_every: Duration::from_secs(2),
            heartbeat_every: Duration::from_secs(5),
            metrics_addr: None,
        }
    }
}

/// Runs the brain until `shutdown` resolves; brain-executed tasks still running then
/// are stopped and put back into the queue.
pub async fn run_brain(
    opts: BrainOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrainError> {
    // Absolute, as the watcher names the paths of its events: a relative root
    // (the default `shared`) made every queue event look foreign, so the brain
    // saw submissions and hand-dropped tasks only at its next full rescan.
    let layout = Layout::new(std::path::absolute(&opts.root).unwrap_or(opts.root.clone()));
    layout.ensure()?;
    let _held = rigmind_queue::LifeLock::try_acquire(&layout.brain_lock())?
        .ok_or_else(|| already_running(&layout, &opts.root))?;
    let mut brain = Brain::start(&opts, layout)?;
    tokio::pin!(shutdown);
    loop {
        let more = brain.turn();
        if brain.stopping && brain.running.is_empty() {
            break;
        }
        tokio::select! {
            Some(first) = brain.events.recv() => brain.on_files(first),
            Some(done) = brain.running.join_next(), if !brain.running.is_empty() => {
                if let Ok(name) = done {
                    brain.on_task_done(&name);
                }
            }
            _ = brain.timers.rescan.tick() => brain.on_rescan(),
            _ = brain.timers.heartbeat.tick() => brain.on_heartbeat(),
            _ = brain.timers.ops.tick() => brain.on_ops(),
            // A record behind the state is written when its half second is up,
            // even if no file moves meanwhile.
            _ = tokio::time::sleep_until((brain.last_flush + RECORD_EVERY).into()), if records_live(&brain.state) => {}
            // Decisions left over from a turn that ran out of its budget.
            _ = std::future::ready(()), if more => {}
            // Workers' cards change without task files moving (a load finishes,
            // a model goes idle): the resource manager looks again each second.
            _ = brain.timers.resources.tick() => {}
            _ = &mut shutdown, if !brain.stopping => brain.on_shutdown(),
        }
    }
    brain.stop()
}

/// The refusal to start beside a live brain, naming its pid (from its heartbeat
/// file) and the root.
fn already_running(layout: &Layout, root: &Path) -> BrainError {
    BrainError::AlreadyRunning {
        pid: BrainRecord::read_pid(layout).map_or("unknown".into(), |p| p.to_string()),
        root: root.to_path_buf(),
    }
}

/// The brain's clocks besides file events.
struct Timers {
    /// The resource manager's look at the cards, each second.
    resources: Interval,
    /// The full rescan (`--rescan`).
    rescan: Interval,
    /// The heartbeat file.
    heartbeat: Interval,
    /// Alerts, notifications and metrics ([`crate::ops`]), each second.
    ops: Interval,
}

/// A running brain: what it has read, what it watches and what it runs itself.
struct Brain {
    layout: Layout,
    logs: Logs,
    state: BrainState,
    /// The watcher of the task directories (kept alive) and its events.
    _watcher: DirWatcher,
    events: mpsc::UnboundedReceiver<Change>,
    /// The resource manager (which also holds the rig's config).
    resources: ResourceManager,
    /// Where decision rounds are recorded (`RIGMIND_RECORD_ROUNDS`), if anywhere.
    recorder: Recorder,
    /// The claim lock and the brain's own index of the queue: brain-executed
    /// tasks, and the queue files that are no known task's.
    queue_lock: QueueLock,
    queue: QueueIndex,
    cancellations: crate::cancel::Cancellations,
    /// Flushes submissions' ready tasks and released tasks in the background.
    flusher: crate::flush::Flusher,
    /// Released tasks whose private copy waits for their flush, by file name: how
    /// many of their releases are not flushed yet (a task held back and released
    /// again within a flush has two).
    unflushed: std::collections::HashMap<String, u32>,
    /// Queue files the brain wrote itself (a submission's ready tasks) whose event
    /// has not come back yet: known without reading them again.
    echoes: std::collections::HashMap<String, fsio::FileStamp>,
    /// How brain-executed tasks run, the tasks running, and how they are told to stop.
    runner: Runner,
    running: JoinSet<String>,
    abort_tx: watch::Sender<bool>,
    abort_rx: watch::Receiver<bool>,
    timers: Timers,
    started_at: DateTime<Utc>,
    /// When the batch records were last brought up to date.
    last_flush: Instant,
    /// Shutdown was asked for: no new work is taken.
    stopping: bool,
    /// Alerts, notifications, metrics.
    ops: crate::ops::Ops,
    /// When the next periodic rescan is due.
    pace: crate::rescan::Pace,
}

impl Brain {
    /// Rebuilds the state from the files, logs the start, watches the task
    /// directories, and reads what changed before the watch began.
    fn start(opts: &BrainOptions, layout: Layout) -> Result<Brain, BrainError> {
        let config = RigConfig::load(&layout.rig_toml())?;
        let logs = Logs::new(&layout);
        requeue_orphaned_requests(&layout, &logs)?;
        let mut state = crate::rebuild::rebuild(&layout, &logs, &config)?;
        state.brain_session = uuid::Uuid::new_v4().simple().to_string();
        state.stale_after_secs = config.defaults.stale_after_secs;
        state.ladder = rigmind_decide::ladder::Ladder::of(&config);
        probe_workers(&layout, &mut state);
        let started_at = rigmind_queue::time::now();
        log_start(&layout, &logs, &state)?;
        let mut dirs: Vec<PathBuf> = TaskDir::ALL.iter().map(|d| layout.dir(*d)).collect();
        dirs.push(layout.cancel_dir());
        let (watcher, events) = watch_dirs(&dirs)?;
        refresh_running(&layout, &logs, &mut state);
        let recorder = Recorder::from_env();
        let aging = rigmind_queue::aging::Aging::new(config.scheduling.aging_seconds_per_level);
        let resources = ResourceManager::new(&layout, config, recorder.clone());
        let resources_tick = tokio::time::interval(Duration::from_secs(1));
        let queue_lock = QueueLock::open(&layout)?;
        let mut queue = QueueIndex::with_aging(aging);
        queue.rescan(&layout)?;
        let runner = brain_runner(&state, &resources);
        let (abort_tx, abort_rx) = watch::channel(false);
        let timers = Timers {
            resources: resources_tick,
            rescan: tokio::time::interval(opts.rescan_every),
            heartbeat: tokio::time::interval(opts.heartbeat_every),
            ops: tokio::time::interval(Duration::from_secs(1)),
        };
        let ops = crate::ops::Ops::new(&layout, &state, serve_metrics(opts.metrics_addr)?);
        let cancellations = crate::cancel::Cancellations::new(&layout);
        let flusher = crate::flush::Flusher::start(&layout);
        crate::submit::flush_leftovers(&layout, &flusher);
        Ok(Brain {
            layout,
            logs,
            state,
            _watcher: watcher,
            events,
            resources,
            recorder,
            queue_lock,
            queue,
            cancellations,
            flusher,
            unflushed: Default::default(),
            echoes: Default::default(),
            runner,
            running: JoinSet::new(),
            abort_tx,
            abort_rx,
            timers,
            started_at,
            last_flush: Instant::now() - RECORD_EVERY,
            stopping: false,
            ops,
            pace: crate::rescan::Pace::new(opts.rescan_every),
        })
    }

    /// One turn: cancellations, new submissions' ready tasks, decisions, the cards,
    /// the records, brain-executed tasks. True when decisions are left for the
    /// next turn (the budget ran out).
    fn turn(&mut self) -> bool {
        self.drop_flushed_copies();
        // Cancellations first: nothing below may keep one waiting.
        self.cancellations
            .take(&self.layout, &self.logs, &mut self.state, &mut self.queue);
        let (queue, echoes) = (&mut self.queue, &mut self.echoes);
        let queued_all = crate::submit::queue_some(
            &self.layout,
            &self.logs,
            &mut self.state,
            &self.flusher,
            TURN_BUDGET,
            |name, t, stamp| {
                queue.insert(name, t);
                if let Some(stamp) = stamp {
                    echoes.insert(name.to_string(), stamp);
                }
            },
        )
        .unwrap_or_else(|e| {
            tracing::warn!("{e}; queueing goes on next turn");
            false
        });
        // `|`, not `||`: the decisions are carried out whatever the queueing did.
        let mut more = !queued_all | !self.converge(TURN_BUDGET);
        if !self.stopping
            && !more
            && self
                .resources
                .round(&self.layout, &self.logs, &mut self.state)
        {
            more = !self.converge(TURN_BUDGET);
        }
        self.flush_when_due();
        self.take_brain_tasks();
        more
    }

    /// Decides and applies until nothing is left to do or `budget` is spent; false
    /// when it stopped for the budget (the rest is decided again next turn). A failed
    /// action is logged and left for the next round: its task stays where it is.
    fn converge(&mut self, budget: Duration) -> bool {
        let mut released = Vec::new();
        let done = self.converge_into(budget, &mut released);
        self.hand_on(released);
        done
    }

    /// [`Brain::converge`], the tasks it released left in `released`.
    fn converge_into(&mut self, budget: Duration, released: &mut Vec<Released>) -> bool {
        let (layout, logs, state) = (&self.layout, &self.logs, &mut self.state);
        let deadline = Instant::now() + budget;
        self.recorder.begin_converge();
        for round in 0..1000 {
            let now = chrono::Utc::now();
            let actions = decide(state, now);
            self.recorder.brain(round, now, state, &actions);
            if actions.is_empty() {
                return true;
            }
            let mut progressed = false;
            for a in &actions {
                if Instant::now() >= deadline {
                    return false;
                }
                match apply(layout, logs, state, (a, now), released) {
                    Ok(()) => progressed = true,
                    // A task file ruined by hand (in private_tasks/, which no event
                    // covers): moved aside, and its task fails as a definition error.
                    Err(rigmind_queue::QueueError::Invalid { path, reason, .. }) => {
                        crate::observe::reject(layout, logs, state, &path, &reason);
                        progressed = true;
                    }
                    Err(e) => tracing::warn!(action = ?a, "{e}"),
                }
            }
            if !progressed {
                return true;
            }
        }
        true
    }

    /// Released tasks go into the brain's own queue index as written (their
    /// events are echoes) and to the flusher, which flushes them before their
    /// private copies go ([`Brain::drop_flushed_copies`]).
    fn hand_on(&mut self, released: Vec<Released>) {
        let mut files = Vec::with_capacity(released.len());
        for r in released {
            self.queue.insert(&r.file_name, &r.task);
            if let Some(stamp) = r.stamp {
                self.echoes.insert(r.file_name.clone(), stamp);
            }
            *self.unflushed.entry(r.file_name.clone()).or_default() += 1;
            files.push((r.batch, r.file_name));
        }
        self.flusher.released(files);
    }

    /// Removes the private copies of released tasks whose queue copies are
    /// flushed, unless their job is pending again (held back, revived: the private
    /// copy is then its only one).
    fn drop_flushed_copies(&mut self) {
        for (batch, name) in self.flusher.flushed() {
            let Some(left) = self.unflushed.get_mut(&name) else {
                continue;
            };
            *left -= 1;
            if *left > 0 {
                continue;
            }
            self.unflushed.remove(&name);
            let pending = self.state.batches.get(&batch).is_some_and(|b| {
                b.by_file
                    .get(&name)
                    .is_some_and(|&i| b.jobs[i].status == JobStatus::Pending)
            });
            if !pending {
                let copy = self.layout.private_dir(&batch).join(&name);
                if let Err(e) = rigmind_queue::fsio::remove_if_exists(&copy) {
                    tracing::warn!("{e}");
                }
            }
        }
    }

    /// Counts are derived from the files, so the records are rewritten at most
    /// twice a second (a settled batch writes its record at once, in apply).
    fn flush_when_due(&mut self) {
        if self.last_flush.elapsed() >= RECORD_EVERY {
            if let Err(e) = flush_records(&self.layout, &mut self.state) {
                tracing::warn!("{e}");
            }
            self.last_flush = Instant::now();
        }
    }

    /// Brain-executed tasks: plan submissions, old cancel requests, and
    /// `executor: brain` commands (run in the background). None once stopping.
    fn take_brain_tasks(&mut self) {
        while !self.stopping {
            let Some(claimed) =
                claim_brain_task(&self.layout, &mut self.queue_lock, &mut self.queue)
            else {
                break;
            };
            let task = match TaskFile::read(&claimed.path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            match task.action {
                Some(BrainAction::ExecutePlan) => execute_plan(
                    &self.layout,
                    &self.logs,
                    &mut self.state,
                    self.resources.config(),
                    &claimed.path,
                    task,
                ),
                Some(BrainAction::CancelBatch) => rigmind_queue::requests::convert_cancel_request(
                    &self.layout,
                    &claimed.path,
                    task,
                ),
                _ => self.spawn_task(claimed, task),
            }
        }
    }

    /// Runs a claimed `executor: brain` command in the background, as a worker
    /// would; it yields the task's file name when its result is filed.
    fn spawn_task(&mut self, claimed: Claimed, task: TaskFile) {
        let task_layout = self.layout.clone();
        let runner = self.runner.clone();
        let abort = self.abort_rx.clone();
        let Claimed { file_name, path } = claimed;
        self.running.spawn(async move {
            let finished = run_claimed(&task_layout, &path, task, &runner, abort).await;
            // Retried while the disk is full, as a worker does.
            let filing_layout = task_layout.clone();
            let filed = tokio::task::spawn_blocking(move || {
                finished.file_until_done(&filing_layout, Duration::from_secs(2), || false)
            })
            .await;
            if let Ok(Err(e)) = filed {
                tracing::warn!("{e}");
            }
            file_name
        });
    }

    /// File events: every change waiting is taken at once; an overflow (events the
    /// kernel dropped) rescans everything first.
    fn on_files(&mut self, first: Change) {
        let mut names = BTreeSet::new();
        let mut overflow = false;
        let mut take = |c: Change| match c {
            Change::Paths(paths) => names.extend(paths),
            Change::Rescan => overflow = true,
        };
        take(first);
        while let Ok(c) = self.events.try_recv() {
            take(c);
        }
        if overflow {
            self.full_rescan();
        }
        // A move raises events in two directories (a claim: queue/ and
        // processing/; a result: complete/ and processing/): each task's file is
        // located and read once for the burst, after every path was looked at.
        let mut tasks = BTreeSet::new();
        let dirs = (self.layout.dir(TaskDir::Queue), self.layout.cancel_dir());
        for p in names {
            if let Some(name) = self.on_path(&p, (&dirs.0, &dirs.1)) {
                tasks.insert(name);
            }
        }
        for name in tasks {
            refresh(&self.layout, &self.logs, &mut self.state, &name);
        }
        // A 100,000-task submission's echoes once filled the map; its room is
        // given back once they have all come home.
        // (A shrunk map keeps some room over what it is asked for: only a shrink
        // that gave room back calls for handing pages back.)
        let room = self.echoes.capacity();
        if self.echoes.is_empty() && room > 4 * ECHOES_KEPT {
            self.echoes.shrink_to(ECHOES_KEPT);
            if self.echoes.capacity() < room {
                crate::submit::give_back_freed_memory();
            }
        }
    }

    /// One changed path: a queue file is noted (and fixed or accepted when no known
    /// task's), a file no known task's is judged; returns the file name whose job
    /// is to be brought up to date.
    fn on_path(&mut self, p: &Path, (queue, cancel): (&Path, &Path)) -> Option<String> {
        let (layout, logs, state) = (&self.layout, &self.logs, &mut self.state);
        let name = p.file_name().and_then(|n| n.to_str())?;
        // The watcher names each path as its directory joined with the file name:
        // the bytes compare (a component-wise compare cost a 100,000-task
        // submission 4 % of its time).
        let parent = p.parent().map(Path::as_os_str);
        // Markers are read at the top of the loop.
        if parent == Some(cancel.as_os_str()) {
            return None;
        }
        if parent == Some(queue.as_os_str()) {
            // The echo of a file this brain just wrote, still as written: its job and
            // the index already say what it holds (a release costs no read back).
            if self
                .echoes
                .remove(name)
                .is_some_and(|written| fsio::stamp(p) == Some(written))
            {
                return None;
            }
            self.queue.note(layout, name);
            if unclassified(&self.queue, name) {
                crate::observe::fix_unclassified(layout, logs, state, name);
            } else if !is_known_job(state, name) {
                accept_stray(layout, logs, state, &mut self.queue, name);
            }
        }
        if !is_known_job(state, name) {
            judge_stray(layout, logs, state, p);
        }
        Some(name.to_string())
    }

    /// A brain-executed task's result is filed: its job is brought up to date.
    fn on_task_done(&mut self, name: &str) {
        refresh(&self.layout, &self.logs, &mut self.state, name);
    }

    /// The periodic rescan: the workers that hold running tasks are asked, and
    /// every directory is re-listed when that is due ([`crate::rescan::Pace`]).
    fn on_rescan(&mut self) {
        probe_workers(&self.layout, &mut self.state);
        if self
            .pace
            .due(Instant::now(), !self.state.queueing.is_empty())
        {
            self.full_rescan();
        }
    }

    fn full_rescan(&mut self) {
        let start = Instant::now();
        // Whatever echo is still due (or was dropped with an overflow) is read anew.
        self.echoes.clear();
        full_rescan(
            &self.layout,
            &self.logs,
            &mut self.state,
            &mut self.queue,
            self.resources.config(),
        );
        self.pace.ran(start, Instant::now());
    }

    /// Alerts, notifications and metrics.
    fn on_ops(&mut self) {
        let config = self.resources.config();
        self.ops
            .tick(&self.layout, &self.logs, &mut self.state, config);
    }

    fn on_heartbeat(&self) {
        write_heartbeat(&self.layout, self.started_at, &self.state);
    }

    /// Shutdown asked for: no new work is taken, and brain-executed tasks are told
    /// to stop (their runners put them back into the queue).
    fn on_shutdown(&mut self) {
        self.stopping = true;
        let _ = self.abort_tx.send(true);
    }

    /// Writes the records, logs the stop and removes the heartbeat file.
    fn stop(mut self) -> Result<(), BrainError> {
        // A clean stop leaves no released task with two copies, unless the disk
        // is too slow to flush them in STOP_FLUSH: a restart resolves the rest.
        if !self.flusher.wait_idle(STOP_FLUSH) {
            tracing::warn!(
                "flushes still due after {STOP_FLUSH:?}; a restart finishes them from the files"
            );
        }
        self.drop_flushed_copies();
        let _ = flush_records(&self.layout, &mut self.state);
        self.logs.decision(
            &Decision::new("stop")
                .kv("pid", std::process::id())
                .kv("reason", "shutdown requested"),
        )?;
        let _ = BrainRecord::remove(&self.layout);
        Ok(())
    }
}

/// How long a stopping brain waits for its background flushes.
const STOP_FLUSH: Duration = Duration::from_secs(10);

/// Starts the `/metrics` and `/health` server when an address is given.
fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<crate::serve::Shared>, BrainError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let shared = crate::serve::Shared::default();
    let bound = crate::serve::start(addr, shared.clone())
        .map_err(|source| BrainError::MetricsAddr { addr, source })?;
    tracing::info!("metrics: http://{bound}/metrics and http://{bound}/health");
    Ok(Some(shared))
}

/// The decision line and log lines of a start.
fn log_start(layout: &Layout, logs: &Logs, state: &BrainState) -> Result<(), BrainError> {
    logs.decision(
        &Decision::new("start")
            .kv("pid", std::process::id())
            .kv("batches", state.batches.len())
            .kv("root", layout.root().display())
            .kv("reason", "brain started; state rebuilt from the files"),
    )?;
    tracing::info!(root = %layout.root().display(), batches = state.batches.len(), "brain started");
    tracing::info!(
        "task containment (executor: brain): {}",
        rigmind_exec::mechanism()
    );
    Ok(())
}

/// What changed between the rebuild and the watch (a start record written in
/// place, say) raised no event: every running task is read once more.
fn refresh_running(layout: &Layout, logs: &Logs, state: &mut BrainState) {
    let running_now: Vec<String> = state
        .batches
        .values()
        .flat_map(|b| b.jobs.iter())
        .filter(|j| j.status == JobStatus::Processing)
        .map(|j| j.file_name.clone())
        .collect();
    for name in running_now {
        refresh(layout, logs, state, &name);
    }
}

/// How the brain runs `executor: brain` commands: as worker `brain`, under its
/// session, on no GPU.
fn brain_runner(state: &BrainState, resources: &ResourceManager) -> Runner {
    Runner {
        worker_id: "brain".into(),
        session: state.brain_session.clone(),
        gpu: None,
        cuda_visible_devices: None,
        default_workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        llm: None,
        log_cap: resources.config().logs.max_task_log_bytes(),
        safety: resources.config().safety.clone(),
        scrub_env: resources.config().scrubbed_env_now(),
    }
}

/// Claims the next task that the brain itself runs (`executor: brain`).
fn claim_brain_task(
    layout: &Layout,
    lock: &mut QueueLock,
    index: &mut QueueIndex,
) -> Option<rigmind_queue::claim::Claimed> {
    lock.claim(layout, index, |e| {
        (e.executor == Executor::Brain).then_some(1)
    })
    .unwrap_or_else(|e| {
        tracing::warn!("{e}");
        None
    })
}

/// Asks the lock and state file of every worker that holds a running task.
fn probe_workers(layout: &Layout, state: &mut BrainState) {
    let holders: BTreeSet<String> = state
        .batches
        .values()
        .flat_map(|b| b.jobs.iter())
        .filter_map(|j| j.holder.as_ref()?.worker.clone())
        .filter(|w| w != "brain")
        .collect();
    state.workers = holders
        .into_iter()
        .map(|w| {
            let live = rigmind_queue::workers::probe(layout, &w);
            (w, live)
        })
        .collect();
}

fn write_heartbeat(layout: &Layout, started_at: DateTime<Utc>, state: &BrainState) {
    let running = state
        .batches
        .values()
        .filter(|b| !b.record.state.is_done())
        .count();
    let record = BrainRecord {
        pid: u64::from(std::process::id()),
        started_at: Some(started_at),
        heartbeat_at: Some(rigmind_queue::time::now()),
        batches: state.batches.len(),
        running_batches: running,
    };
    if let Err(e) = record.write(layout) {
        tracing::warn!("{e}");
    }
}
