//! The worker's life, step by step as the queue protocol has it: [`Worker::start`]
//! (the life lock, the card, the state file), then over and over
//! [`Worker::claim_next`], [`Worker::run_task`] and [`Worker::file`], with
//! [`Worker::heartbeat`] while it waits, until a shutdown request, then
//! [`Worker::stop`].

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rigmind_config::RigConfig;
use rigmind_exec::{run_claimed, Filed, Finished, Runner};
use rigmind_queue::aging::Aging;
use rigmind_queue::claim::{Claimed, QueueIndex, QueueLock};
use rigmind_queue::task::TaskFile;
use rigmind_queue::watch::{watch_dirs, Change, DirWatcher};
use rigmind_queue::workers::WorkerStatus;
use rigmind_queue::LifeLock;
use rigmind_queue::{Layout, QueueError, TaskDir};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Interval;

use crate::card;
use crate::profile::{self, publish, Profile};
use crate::refuse::refuse_claimed;
use crate::{check_worker_id, WorkerError, WorkerOptions, WorkerSummary};

/// How long a worker waits with nothing to do before it publishes `idle`.
const IDLE_AFTER: Duration = Duration::from_millis(500);

/// What filing a result in the background comes to.
type Filing = Result<Result<Filed, QueueError>, JoinError>;

/// A started worker: its [`Profile`], its view of the queue, and the results it is
/// still filing.
pub(crate) struct Worker {
    profile: Profile,
    layout: Layout,
    runner: Runner,
    /// The queue's claimable tasks, kept up to date from `events`.
    index: QueueIndex,
    claim_lock: QueueLock,
    events: mpsc::UnboundedReceiver<Change>,
    watcher: DirWatcher,
    rescan: Interval,
    heartbeat: Interval,
    /// Set once a stopping worker's grace period is over: the running task stops.
    abort_tx: watch::Sender<bool>,
    abort_rx: watch::Receiver<bool>,
    /// Results being written in the background.
    filing: JoinSet<Result<Filed, QueueError>>,
    /// Set when the filing still going on at the end of the grace period is given up.
    giving_up: Arc<AtomicBool>,
    summary: WorkerSummary,
    last_publish: Instant,
    idle_since: Option<Instant>,
    stopping: bool,
    /// Memory reservations held a task back at the last claim.
    memory_held: bool,
    /// The endpoint lane ([`crate::lane`]), when rig.toml declares endpoints.
    lane: Option<tokio::task::JoinHandle<WorkerSummary>>,
    /// Tells the lane to stop claiming.
    lane_stop: watch::Sender<bool>,
    /// `workers/<id>.lock`, held for the worker's life.
    _alive: LifeLock,
}

impl Worker {
    /// Starts a worker: checks its options, finds its card and LLM server, takes its
    /// life lock (refused while another worker of the same id lives), publishes its
    /// state file and reads the queue.
    pub(crate) async fn start(opts: WorkerOptions) -> Result<Self, WorkerError> {
        check_worker_id(&opts.id)?;
        let layout = Layout::new(&opts.root);
        layout.ensure()?;
        let config = RigConfig::load(&layout.rig_toml())?;
        let (card, llm_url) = profile::set_up_card(&opts, &config)?;
        let classes = profile::claim_classes(&opts, card.is_some(), llm_url.as_deref())?;
        let alive = hold_life_lock(&layout, &opts)?;
        let (watcher, events) = watch_dirs(&[layout.dir(TaskDir::Queue)])?;
        let llm = profile::llm_runner(&opts, &config, &layout, card.as_ref(), llm_url.as_deref())?;
        let session = uuid::Uuid::new_v4().simple().to_string();
        let runner = Runner {
            worker_id: opts.id.clone(),
            session: session.clone(),
            gpu: card.as_ref().map(|c| c.index.to_string()),
            // By UUID: CUDA's own numbering may differ from NVML's.
            cuda_visible_devices: card.as_ref().map(|c| c.info.uuid.clone()),
            default_workdir: profile::default_workdir(),
            llm: llm.clone(),
            log_cap: config.logs.max_task_log_bytes(),
            safety: config.safety.clone(),
            scrub_env: config.scrubbed_env_now(),
        };
        let state = profile::first_state(&opts, session, &classes, card.as_ref(), llm_url);
        let mut profile = Profile {
            opts,
            classes,
            config,
            card,
            llm,
            state,
            gates_read: None,
        };
        announce(&mut profile, &layout).await;
        let mut index = QueueIndex::with_aging(Aging::new(
            profile.config.scheduling.aging_seconds_per_level,
        ));
        index.rescan(&layout)?;
        let claim_lock = QueueLock::open(&layout)?
            .with_matches(rigmind_queue::holders::compile_matches(
                &profile.config.group_match,
            ))
            .with_memory(
                profile.config.safety.min_free_ram_mb,
                rigmind_queue::memory::meminfo_path(),
            );
        let rescan = tokio::time::interval(profile.opts.rescan_every);
        let heartbeat = tokio::time::interval(profile.opts.heartbeat_every);
        let (abort_tx, abort_rx) = watch::channel(false);
        let (lane_stop, lane_stop_rx) = watch::channel(false);
        let giving_up = Arc::new(AtomicBool::new(false));
        let lane = (!profile.config.endpoints.is_empty() && runner.llm.is_some()).then(|| {
            let signals = crate::lane::LaneSignals {
                aging: index.aging(),
                abort: abort_rx.clone(),
                give_up: giving_up.clone(),
            };
            crate::lane::spawn(
                layout.clone(),
                runner.clone(),
                crate::lane::limits(&profile.config),
                crate::lane::rates(&profile.config),
                profile.opts.rescan_every,
                signals,
                lane_stop_rx,
            )
        });
        Ok(Self {
            lane,
            lane_stop,
            profile,
            layout,
            runner,
            index,
            claim_lock,
            events,
            watcher,
            rescan,
            heartbeat,
            abort_tx,
            abort_rx,
            filing: JoinSet::new(),
            giving_up,
            summary: WorkerSummary::default(),
            last_publish: Instant::now(),
            idle_since: None,
            stopping: false,
            memory_held: false,
            _alive: alive,
        })
    }

    /// Claims, runs and files tasks until `shutdown` resolves, then stops.
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) -> WorkerSummary {
        tokio::pin!(shutdown);
        while !self.stopping {
            self.take_events();
            let now = Utc::now();
            if self.drained() {
                self.wait(now, shutdown.as_mut()).await;
                continue;
            }
            let Some(claimed) = self.claim_next(now) else {
                self.wait(now, shutdown.as_mut()).await;
                continue;
            };
            self.idle_since = None;
            if refuse_claimed(&self.layout, &self.profile.opts.id, &claimed.path) {
                continue;
            }
            let task = match TaskFile::read(&claimed.path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(worker = %self.profile.opts.id, "{e}; left in processing/ for the brain");
                    continue;
                }
            };
            let finished = self.run_task(&claimed.path, task, shutdown.as_mut()).await;
            self.profile
                .after_run(&self.layout, &finished, self.stopping)
                .await;
            self.file(finished);
        }
        self.stop().await
    }

    /// Brings the queue index up to date with the events that came meanwhile.
    fn take_events(&mut self) {
        let mut pending = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            pending.push(ev);
        }
        note_events(&self.layout, &mut self.index, pending);
    }

    /// Whether the worker is drained (`rigmind drain`): it then claims nothing new
    /// until the marker is gone. A change is written to the state file at once.
    fn drained(&mut self) -> bool {
        if self.profile.note_drain(&self.layout) {
            let state = self.profile.state.state;
            self.profile.publish(&self.layout, state, None);
        }
        self.profile.state.draining
    }

    /// Claims the best task the claim rules allow now (reading the card and the
    /// host again when due), or `None`.
    fn claim_next(&mut self, now: chrono::DateTime<Utc>) -> Option<Claimed> {
        self.profile.read_gates(false);
        let claimed = {
            let ctx = self.profile.context(now);
            self.claim_lock.claim_within(
                &self.layout,
                &mut self.index,
                &self.profile.config.groups,
                now,
                |e| card::tier(&ctx, e),
            )
        };
        self.log_memory_hold();
        claimed.unwrap_or_else(|e| {
            // A full disk or a permission problem: say so, keep the task where
            // it is, and try again after the next rescan.
            tracing::warn!(worker = %self.profile.opts.id, "{e}");
            None
        })
    }

    /// Says when memory reservations begin and stop holding tasks back from
    /// this worker (not at every claim).
    fn log_memory_hold(&mut self) {
        let held = self.claim_lock.mem_held();
        if held.is_some() == self.memory_held {
            return;
        }
        self.memory_held = held.is_some();
        let id = &self.profile.opts.id;
        match held {
            Some(need) => tracing::info!(
                worker = %id,
                "memory: a task reserving mem_mb = {need} waits: {} MB free for reservations (MemAvailable less what running tasks reserved and have not touched, less min_free_ram_mb)",
                self.claim_lock.mem_room().unwrap_or(0)
            ),
            None => tracing::info!(worker = %id, "memory: no task waits for memory any more"),
        }
    }

    /// With nothing to claim: waits for the first of a queue event, a rescan, a
    /// heartbeat, a filed result, a held-back task coming due, or `shutdown`.
    async fn wait<S: Future<Output = ()>>(
        &mut self,
        now: chrono::DateTime<Utc>,
        shutdown: Pin<&mut S>,
    ) {
        // Going idle is published after a short quiet spell, so that a chain of
        // tasks arriving one by one does not rewrite the state file twice each.
        let idle_at = *self.idle_since.get_or_insert_with(Instant::now);
        let publish_idle =
            (self.profile.state.state != WorkerStatus::Idle).then(|| idle_at + IDLE_AFTER);
        let due = self.next_due(now);
        // With heavy work held back by a gate, look again soon.
        let gated = (!self.profile.state.gates.is_empty()).then_some(Duration::from_secs(1));
        tokio::select! {
            _ = sleep_until_opt(publish_idle) => self.profile.publish(&self.layout, WorkerStatus::Idle, None),
            Some(r) = self.filing.join_next(), if !self.filing.is_empty() => self.count(r),
            Some(ev) = self.events.recv() => note_events(&self.layout, &mut self.index, vec![ev]),
            _ = self.rescan.tick() => {
                if let Err(e) = self.index.rescan(&self.layout) {
                    tracing::warn!(worker = %self.profile.opts.id, "{e}");
                }
            }
            _ = self.heartbeat.tick() => self.heartbeat().await,
            _ = tokio::time::sleep(due.min(gated.unwrap_or(due))) => {}
            _ = shutdown => self.stopping = true,
        }
    }

    /// The heartbeat while idle: asks the LLM server what it holds, reads the
    /// gates, and writes the state file again.
    async fn heartbeat(&mut self) {
        self.profile.sync_model().await;
        self.profile.read_gates(true);
        let state = self.profile.state.state;
        self.profile.publish(&self.layout, state, None);
    }

    /// How long until a task held back by `not_before` becomes claimable (capped).
    fn next_due(&self, now: chrono::DateTime<Utc>) -> Duration {
        let cap = Duration::from_secs(3600);
        self.index
            .entries()
            .filter_map(|e| {
                let t = e.not_before?;
                let mut now_entry = e.clone();
                now_entry.not_before = None;
                card::tier(&self.profile.context(now), &now_entry)?;
                (t - now).to_std().ok()
            })
            .min()
            .map_or(cap, |d| d.min(cap) + Duration::from_millis(5))
    }

    /// Runs a claimed task to its end, beating the heartbeat meanwhile. A shutdown
    /// request lets it finish within the grace period, then stops it so that it
    /// goes back into the queue.
    async fn run_task<S: Future<Output = ()>>(
        &mut self,
        path: &Path,
        task: TaskFile,
        mut shutdown: Pin<&mut S>,
    ) -> Finished {
        self.publish_busy(&task);
        let task_name = task.name.clone();
        let run = run_claimed(
            &self.layout,
            path,
            task,
            &self.runner,
            self.abort_rx.clone(),
        );
        tokio::pin!(run);
        // The card's memory and utilisation while it runs (NVML only).
        let mut gpu = self.profile.card.as_ref().map(|c| c.sampler());
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                mut f = &mut run => {
                    if let Some(g) = gpu.as_ref().filter(|_| f.dir != TaskDir::Queue) {
                        g.apply(&mut f.task);
                    }
                    return f;
                }
                _ = every_second.tick(), if gpu.is_some() => {
                    if let Some(g) = gpu.as_mut() {
                        g.sample(path);
                    }
                }
                _ = self.heartbeat.tick() => self.profile.beat_while_running(&self.layout),
                _ = shutdown.as_mut(), if !self.stopping => {
                    self.stopping = true;
                    publish(&self.layout, &mut self.profile.state, WorkerStatus::Stopping, None);
                    let (id, grace) = (&self.profile.opts.id, self.profile.opts.grace);
                    tracing::info!(worker = %id, grace = ?grace, "stopping: finishing the running task");
                    abort_after(grace, self.abort_tx.clone(), id.clone(), task_name.clone());
                }
            }
        }
    }

    /// Publishes `busy` with the task, unless that would only rewrite the state
    /// file of a stream of short tasks.
    fn publish_busy(&mut self, task: &TaskFile) {
        // A stream of short tasks would rewrite the state file for each one; a
        // second-old current task is fine for people, and the processing/ file is
        // the exact record of who runs what. A card changing state is published at
        // once: the resource manager decides by it.
        let card_changes = self.profile.card.as_ref().is_some_and(|c| {
            c.state_for(task.task_class.map(|k| (k, task.name.as_str()))) != c.state
        });
        if self.profile.state.state != WorkerStatus::Busy
            || card_changes
            || self.last_publish.elapsed() >= Duration::from_secs(1)
        {
            self.profile
                .publish(&self.layout, WorkerStatus::Busy, Some(task));
            self.last_publish = Instant::now();
        } else {
            // Not written now, but the next heartbeat writes the task that runs,
            // not the one before it.
            let me = &mut self.profile.state;
            me.current_task = Some(task.task_id.clone());
            me.current_task_name = Some(task.name.clone());
            me.current_class = task.task_class;
        }
    }

    /// Files a finished run's result in the background: the next claim and the
    /// next command need not wait for the disk. Counts what has been filed so far.
    fn file(&mut self, finished: Finished) {
        let layout = self.layout.clone();
        let give_up = self.giving_up.clone();
        self.filing.spawn_blocking(move || {
            finished.file_until_done(&layout, Duration::from_secs(2), || {
                give_up.load(Ordering::SeqCst)
            })
        });
        while let Some(r) = self.filing.try_join_next() {
            self.count(r);
        }
    }

    /// Counts a filed result in the summary and the state file.
    fn count(&mut self, r: Filing) {
        let (summary, state) = (&mut self.summary, &mut self.profile.state);
        match r {
            Ok(Ok(Filed::Complete)) => {
                summary.completed += 1;
                state.tasks_done += 1;
            }
            Ok(Ok(Filed::Failed(_))) => {
                summary.failed += 1;
                state.tasks_failed += 1;
            }
            Ok(Ok(Filed::Returned)) => summary.returned += 1,
            Ok(Ok(Filed::Discarded)) => {}
            // The task stays in processing/ with its start record; the brain's
            // lost-task handling takes it from there.
            Ok(Err(e)) => tracing::error!(worker = %self.profile.opts.id, "filing a result: {e}"),
            Err(e) => tracing::error!(worker = %self.profile.opts.id, "filing a result: {e}"),
        }
    }

    /// Stops: results still being filed get the grace period, then are left in
    /// processing/ (the brain requeues them once this worker is gone); the state
    /// file says `stopped`.
    async fn stop(mut self) -> WorkerSummary {
        self.stop_lane().await;
        let deadline = tokio::time::Instant::now() + self.profile.opts.grace;
        while !self.filing.is_empty() {
            tokio::select! {
                Some(r) = self.filing.join_next() => self.count(r),
                _ = tokio::time::sleep_until(deadline), if !self.giving_up.load(Ordering::SeqCst) => {
                    self.giving_up.store(true, Ordering::SeqCst);
                }
            }
        }
        publish(
            &self.layout,
            &mut self.profile.state,
            WorkerStatus::Stopped,
            None,
        );
        drop(self.watcher);
        self.summary
    }
}

impl Worker {
    /// Stops the endpoint lane: no new claims; its runs get the grace period,
    /// then are stopped and put back. Their results count in the summary.
    async fn stop_lane(&mut self) {
        let Some(lane) = self.lane.take() else { return };
        let _ = self.lane_stop.send(true);
        let (id, grace) = (&self.profile.opts.id, self.profile.opts.grace);
        abort_after(
            grace,
            self.abort_tx.clone(),
            id.clone(),
            "endpoint tasks".into(),
        );
        if let Ok(s) = lane.await {
            self.summary.completed += s.completed;
            self.summary.failed += s.failed;
            self.summary.returned += s.returned;
        }
    }
}

/// Takes `workers/<id>.lock` for the worker's life, or says who holds it.
fn hold_life_lock(layout: &Layout, opts: &WorkerOptions) -> Result<LifeLock, WorkerError> {
    let lock_path = layout.worker_lock(&opts.id);
    LifeLock::try_acquire(&lock_path)?.ok_or_else(|| WorkerError::AlreadyRunning {
        id: opts.id.clone(),
        root: opts.root.clone(),
        lock: lock_path.clone(),
    })
}

/// Publishes the new worker's state, says what it is, and removes what dead
/// runners left.
async fn announce(profile: &mut Profile, layout: &Layout) {
    profile.sync_model().await;
    profile.read_gates(true);
    profile.publish(layout, WorkerStatus::Idle, None);
    let id = &profile.opts.id;
    tracing::info!(worker = %id, classes = ?profile.state.classes, gpu = ?profile.state.gpu, "worker started");
    tracing::info!(worker = %id, "task containment: {}", rigmind_exec::mechanism());
    tracing::info!(worker = %id, "{}", rigmind_exec::cap_mechanism());
    let stale = rigmind_exec::remove_stale_cgroups();
    if stale > 0 {
        tracing::info!(worker = %id, "removed {stale} empty task cgroups left by runners that died");
    }
}

/// After `grace`, stops the running task (it goes back into the queue).
fn abort_after(grace: Duration, abort_tx: watch::Sender<bool>, id: String, name: String) {
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        tracing::info!(worker = %id, task = %name, grace = ?grace, "stopping: the grace period is over; stopping the task to put it back into the queue");
        let _ = abort_tx.send(true);
    });
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
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
