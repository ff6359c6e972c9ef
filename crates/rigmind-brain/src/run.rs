//! The brain's loop: wake on file events (or a periodic rescan, for events the kernel
//! dropped), bring the state up to date, decide, apply, repeat.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rigmind_config::RigConfig;
use rigmind_exec::{run_claimed, Runner};
use rigmind_queue::brain_record::BrainRecord;
use rigmind_queue::claim::{QueueIndex, QueueLock};
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::requests::{CANCEL_BATCH, EXECUTE_PLAN};
use rigmind_queue::task::{FailureKind, TaskFile, TaskStatus};
use rigmind_queue::watch::{watch_dirs, Change};
use rigmind_queue::{Layout, LifeLock, TaskDir};
use rigmind_types::Executor;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::apply::{apply, flush_records};
use crate::observe::refresh;
use crate::policy::decide;
use crate::state::{BrainState, JobStatus};
use crate::submit::{load_plan, new_batch_id, submit_plan};
use crate::BrainError;

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

/// How the brain runs.
#[derive(Debug, Clone)]
pub struct BrainOptions {
    pub root: PathBuf,
    /// How often the directories are re-listed in full, in case events were lost.
    pub rescan_every: Duration,
    /// How often `brain/brain.json` is rewritten.
    pub heartbeat_every: Duration,
}

impl BrainOptions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            rescan_every: Duration::from_secs(2),
            heartbeat_every: Duration::from_secs(5),
        }
    }
}

/// Runs the brain until `shutdown` resolves; brain-executed tasks still running then
/// are stopped and put back into the queue.
pub async fn run_brain(
    opts: BrainOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrainError> {
    let layout = Layout::new(&opts.root);
    layout.ensure()?;
    let _held =
        LifeLock::try_acquire(&layout.brain_lock())?.ok_or_else(|| BrainError::AlreadyRunning {
            pid: BrainRecord::read_pid(&layout).map_or("unknown".into(), |p| p.to_string()),
            root: opts.root.clone(),
        })?;
    let config = RigConfig::load(&layout.rig_toml())?;
    let logs = Logs::new(&layout);
    requeue_orphaned_requests(&layout, &logs)?;
    let mut state = crate::rebuild::rebuild(&layout, &logs, &config)?;
    state.brain_session = uuid::Uuid::new_v4().simple().to_string();
    state.stale_after_secs = config.defaults.stale_after_secs;
    probe_workers(&layout, &mut state);
    let started_at = rigmind_queue::time::now_rfc3339();
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

    let mut dirs: Vec<PathBuf> = TaskDir::ALL.iter().map(|d| layout.dir(*d)).collect();
    dirs.push(layout.cancel_dir());
    let (watcher, mut rx) = watch_dirs(&dirs)?;
    // What changed between the rebuild and the watch (a start record written in
    // place, say) raised no event: read every running task once more.
    let running_now: Vec<String> = state
        .batches
        .values()
        .flat_map(|b| b.jobs.iter())
        .filter(|j| j.status == JobStatus::Processing)
        .map(|j| j.file_name.clone())
        .collect();
    for name in running_now {
        refresh(&layout, &logs, &mut state, &name);
    }

    let mut resources = crate::rig::ResourceManager::new(&layout, config);
    let mut rm_tick = tokio::time::interval(Duration::from_secs(1));
    let mut queue_lock = QueueLock::open(&layout)?;
    let mut brain_queue = QueueIndex::default();
    brain_queue.rescan(&layout)?;
    let runner = Runner {
        worker_id: "brain".into(),
        session: state.brain_session.clone(),
        gpu: None,
        cuda_visible_devices: None,
        default_workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        llm: None,
        log_cap: resources.config().logs.max_task_log_bytes(),
    };
    let (abort_tx, abort_rx) = watch::channel(false);
    let mut running: JoinSet<String> = JoinSet::new();
    let mut rescan = tokio::time::interval(opts.rescan_every);
    let mut heartbeat = tokio::time::interval(opts.heartbeat_every);
    tokio::pin!(shutdown);
    let mut stopping = false;
    let mut last_flush = std::time::Instant::now() - RECORD_EVERY;
    let mut cancellations = crate::cancel::Cancellations::new(&layout);

    loop {
        // Cancellations first: nothing below may keep one waiting.
        cancellations.take(&layout, &logs, &mut state, &mut brain_queue);
        let queued_all = crate::submit::queue_some(&layout, &logs, &mut state, TURN_BUDGET)
            .unwrap_or_else(|e| {
                tracing::warn!("{e}; queueing goes on next turn");
                false
            });
        let mut more = !queued_all | !converge(&layout, &logs, &mut state, TURN_BUDGET);
        if !stopping && !more && resources.round(&layout, &logs, &mut state) {
            more = !converge(&layout, &logs, &mut state, TURN_BUDGET);
        }
        // Counts are derived from the files, so the records are rewritten at most
        // twice a second (a settled batch writes its record at once, in apply).
        if last_flush.elapsed() >= RECORD_EVERY {
            if let Err(e) = flush_records(&layout, &mut state) {
                tracing::warn!("{e}");
            }
            last_flush = std::time::Instant::now();
        }
        // Brain-executed tasks: plan submissions and `executor: brain` commands.
        loop {
            if stopping {
                break;
            }
            let Some(claimed) = claim_brain_task(&layout, &mut queue_lock, &mut brain_queue) else {
                break;
            };
            let task = match TaskFile::read(&claimed.path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            if task.action.as_deref() == Some(EXECUTE_PLAN) {
                execute_plan(
                    &layout,
                    &logs,
                    &mut state,
                    resources.config(),
                    &claimed.path,
                    task,
                );
                continue;
            }
            if task.action.as_deref() == Some(CANCEL_BATCH) {
                rigmind_queue::requests::convert_cancel_request(&layout, &claimed.path, task);
                continue;
            }
            let (layout2, runner2, abort) = (layout.clone(), runner.clone(), abort_rx.clone());
            let path = claimed.path.clone();
            let name = claimed.file_name.clone();
            running.spawn(async move {
                let finished = run_claimed(&layout2, &path, task, &runner2, abort).await;
                // Retried while the disk is full, as a worker does.
                let l = layout2.clone();
                let filed = tokio::task::spawn_blocking(move || {
                    finished.file_until_done(&l, Duration::from_secs(2), || false)
                })
                .await;
                if let Ok(Err(e)) = filed {
                    tracing::warn!("{e}");
                }
                name
            });
        }
        if stopping && running.is_empty() {
            break;
        }
        tokio::select! {
            Some(first) = rx.recv() => {
                let mut names = BTreeSet::new();
                let mut overflow = false;
                let mut take = |c: Change| match c {
                    Change::Paths(paths) => names.extend(paths),
                    Change::Rescan => overflow = true,
                };
                take(first);
                while let Ok(c) = rx.try_recv() {
                    take(c);
                }
                if overflow {
                    full_rescan(&layout, &logs, &mut state, &mut brain_queue, resources.config());
                }
                for p in names {
                    let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
                    // Markers are read at the top of the loop.
                    if p.parent() == Some(layout.cancel_dir().as_path()) {
                        continue;
                    }
                    if p.parent() == Some(layout.dir(TaskDir::Queue).as_path()) {
                        brain_queue.note(&layout, name);
                        if unclassified(&brain_queue, name) {
                            crate::observe::fix_unclassified(&layout, &logs, &mut state, name);
                        } else if !is_known_job(&state, name) {
                            accept_stray(&layout, &logs, &state, &mut brain_queue, name);
                        }
                    }
                    if !is_known_job(&state, name) {
                        judge_stray(&layout, &logs, &mut state, &p);
                    }
                    refresh(&layout, &logs, &mut state, name);
                }
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(name) = done {
                    refresh(&layout, &logs, &mut state, &name);
                }
            }
            _ = rescan.tick() => {
                probe_workers(&layout, &mut state);
                full_rescan(&layout, &logs, &mut state, &mut brain_queue, resources.config());
            }
            _ = heartbeat.tick() => write_heartbeat(&layout, &started_at, &state),
            // A record behind the state is written when its half second is up,
            // even if no file moves meanwhile.
            _ = tokio::time::sleep_until((last_flush + RECORD_EVERY).into()), if records_live(&state) => {}
            // Decisions left over from a turn that ran out of its budget.
            _ = std::future::ready(()), if more => {}
            // Workers' cards change without task files moving (a load finishes,
            // a model goes idle): the resource manager looks again each second.
            _ = rm_tick.tick() => {}
            _ = &mut shutdown, if !stopping => {
                stopping = true;
                let _ = abort_tx.send(true);
            }
        }
    }
    let _ = flush_records(&layout, &mut state);
    logs.decision(
        &Decision::new("stop")
            .kv("pid", std::process::id())
            .kv("reason", "shutdown requested"),
    )?;
    let _ = BrainRecord::remove(&layout);
    drop(watcher);
    Ok(())
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

/// Decides and applies until nothing is left to do or `budget` is spent; false
/// when it stopped for the budget (the rest is decided again next turn). A failed
/// action is logged and left for the next round: its task stays where it is.
fn converge(layout: &Layout, logs: &Logs, state: &mut BrainState, budget: Duration) -> bool {
    let deadline = std::time::Instant::now() + budget;
    for _round in 0..1000 {
        let now = chrono::Utc::now();
        let actions = decide(state, now);
        if actions.is_empty() {
            return true;
        }
        let mut progressed = false;
        for a in &actions {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            match apply(layout, logs, state, a, now) {
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

/// Re-lists every directory and brings each job whose place changed into the state;
/// jobs whose file is in no directory any more are followed as lost.
fn full_rescan(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    brain_queue: &mut QueueIndex,
    config: &RigConfig,
) {
    if let Err(e) = brain_queue.rescan(layout) {
        tracing::warn!("{e}");
    }
    state.judged.retain(|p, _| p.exists());
    let mut seen: HashMap<String, JobStatus> = HashMap::new();
    let mut twice = Vec::new();
    for d in TaskDir::ALL {
        let status = match d {
            TaskDir::Queue => JobStatus::Queued,
            TaskDir::Processing => JobStatus::Processing,
            TaskDir::Complete => JobStatus::Complete,
            // Any failure: only "failed or not" is compared here.
            TaskDir::Failed => JobStatus::Failed(crate::state::FailureInfo {
                kind: FailureKind::WorkerFailure,
                retry_count: 0,
                retries: 0,
            }),
        };
        let dir = layout.dir(d);
        for name in fsio::list_names(&dir).unwrap_or_default() {
            if !is_known_job(state, &name) {
                judge_stray(layout, logs, state, &dir.join(&name));
            }
            // In two places: refreshed below, which removes the stale copy.
            if seen.insert(name.clone(), status).is_some() && is_known_job(state, &name) {
                twice.push(name);
            }
        }
        for odd in rigmind_queue::quarantine::odd_entries(&dir) {
            judge_stray(layout, logs, state, &odd);
        }
    }
    let unclassified_names: Vec<String> = brain_queue
        .entries()
        .filter(|e| e.task_class.is_none() && e.executor == Executor::Worker)
        .map(|e| e.file_name.clone())
        .collect();
    for name in unclassified_names {
        crate::observe::fix_unclassified(layout, logs, state, &name);
    }
    let strays: Vec<String> = brain_queue
        .entries()
        .filter(|e| !is_known_job(state, &e.file_name))
        .map(|e| e.file_name.clone())
        .collect();
    for name in strays {
        accept_stray(layout, logs, state, brain_queue, &name);
    }
    // Queue files no worker can read (truncated, garbage with a task's name).
    for name in brain_queue.unreadable() {
        let path = layout.dir(TaskDir::Queue).join(&name);
        if let Some(reason) = rigmind_queue::quarantine::judge(&path, std::time::SystemTime::now())
        {
            brain_queue.forget(&name);
            crate::observe::reject(layout, logs, state, &path, &reason);
        }
    }
    let mut changed = Vec::new();
    // Finished batches without failures have nothing left to move; events still
    // cover them. The rest are compared in full.
    let watched = |b: &crate::state::Batch| b.active() || b.record.counts.failed > 0;
    // Every private directory is listed (a finished batch's is empty, and cheap)
    // so that junk dropped there is found.
    let ids: Vec<String> = state.batches.keys().cloned().collect();
    for id in &ids {
        for name in fsio::list_names(&layout.private_dir(id)).unwrap_or_default() {
            if rigmind_queue::task::TaskName::parse(&name).is_none() {
                judge_stray(layout, logs, state, &layout.private_dir(id).join(&name));
            }
            seen.entry(name).or_insert(JobStatus::Pending);
        }
    }
    crate::lost::follow_vanished(layout, logs, state, config, &|n| seen.contains_key(n));
    for b in state.batches.values().filter(|b| watched(b)) {
        for j in &b.jobs {
            let differs = match (seen.get(&j.file_name), j.status) {
                (None, _) => false,
                (Some(JobStatus::Failed(_)), JobStatus::Failed(_)) => false,
                (Some(s), now) => *s != now,
            };
            if differs {
                changed.push(j.file_name.clone());
            }
        }
    }
    for name in changed.into_iter().chain(twice) {
        refresh(layout, logs, state, &name);
    }
}

/// Requests that only a brain runs (`execute_plan`, `cancel_batch`) and that a
/// previous brain had claimed when it stopped go back to the queue: both are
/// safe to run again (a batch whose record exists is not submitted twice).
fn requeue_orphaned_requests(layout: &Layout, logs: &Logs) -> Result<(), BrainError> {
    let dir = layout.dir(TaskDir::Processing);
    for name in fsio::list_names(&dir)? {
        let path = dir.join(&name);
        let Ok(mut t) = TaskFile::read(&path) else {
            continue;
        };
        if t.executor != Executor::Brain || t.action.is_none() {
            continue;
        }
        t.status = TaskStatus::Queued;
        t.clear_run_results();
        rigmind_queue::file_into(layout, &path, &t, TaskDir::Queue, Sync::Data)?;
        logs.decision(
            &Decision::new("requeue")
                .kv("batch", &t.batch_id)
                .kv("task", &t.name)
                .kv("reason", "a brain stopped before finishing it"),
        )?;
    }
    Ok(())
}

/// Whether `name` is the file of a task of a known batch.
fn is_known_job(state: &BrainState, name: &str) -> bool {
    rigmind_queue::task::TaskName::parse(name).is_some_and(|tn| {
        state
            .batches
            .get(&tn.batch)
            .is_some_and(|b| b.by_file.contains_key(name))
    })
}

/// A file in a task directory that is not a known task's: a hand-written task
/// (left for the workers) or something that is not a task at all (moved aside).
///
/// What was judged and left is remembered by (size, mtime, inode) and not read
/// again until it changes: a large file sitting in `complete/` would otherwise be
/// read in full on every rescan. A file past the size limit is never read: in
/// `queue/` it is moved aside (no worker may take it), elsewhere it is skipped
/// with one warning.
fn judge_stray(layout: &Layout, logs: &Logs, state: &mut BrainState, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        state.judged.remove(path);
        return;
    };
    let stamp = (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino());
    if state.judged.get(path) == Some(&stamp) {
        return;
    }
    let in_queue = path.parent() == Some(layout.dir(TaskDir::Queue).as_path());
    if meta.is_file() && meta.len() > fsio::MAX_READ_BYTES && !in_queue {
        tracing::warn!(
            "{}: {}; skipped (not read)",
            path.display(),
            fsio::too_big(meta.len())
        );
        state.judged.insert(path.to_path_buf(), stamp);
        return;
    }
    let now = std::time::SystemTime::now();
    match rigmind_queue::quarantine::judge(path, now) {
        Some(reason) => {
            state.judged.remove(path);
            crate::observe::reject(layout, logs, state, path, &reason);
        }
        // Judged good, unless still too fresh to judge.
        None => {
            let settled = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                >= Some(rigmind_queue::quarantine::SETTLE);
            if settled {
                state.judged.insert(path.to_path_buf(), stamp);
            }
        }
    }
}

/// A hand-placed queue file that is no known task's. A copy of a task that has
/// completed (same `task_id`) is moved aside, never run again. Any other is logged
/// with its owner (`decision=hand_task`) when the brain did not let it in, and only
/// then let in (`released_by`), so that no worker runs it unlogged; one that does
/// not say `queued` has no dependencies the brain knows of, so it is accepted as it
/// is.
fn accept_stray(
    layout: &Layout,
    logs: &Logs,
    state: &BrainState,
    index: &mut QueueIndex,
    name: &str,
) {
    let Some(e) = index.get(name) else { return };
    // A queued one let in is the workers' already (and is not read again here on
    // every rescan); a copy of a completed task still says `complete`.
    if (e.status == TaskStatus::Queued && e.released) || e.executor != Executor::Worker {
        return;
    }
    let path = layout.dir(TaskDir::Queue).join(name);
    let Ok(mut t) = TaskFile::read(&path) else {
        return;
    };
    if let Some(done) = completed_file(state, &t) {
        let reason = format!(
            "a copy of task {} ({}), which is complete as complete/{done}; not run again",
            t.task_id, t.name
        );
        if crate::observe::quarantine(layout, logs, &path, &reason).is_some() {
            index.forget(name);
        }
        return;
    }
    if t.task_class.is_none() {
        return; // fix_unclassified's, which logs it as a hand task too
    }
    crate::observe::note_hand_task(logs, &path, &mut t);
    if t.status != TaskStatus::Queued {
        crate::observe::accept(logs, &path, &t);
    } else if let Err(e) = fsio::write_atomic(&path, &t.to_bytes(), fsio::Sync::Data) {
        tracing::warn!("{e}");
    }
}

/// The `complete/` file of the known task that `t` copies (same task id, or the
/// same name in the same batch: names are unique in a batch, and a completed
/// task read back at a start is known by its name alone), if it has completed.
fn completed_file(state: &BrainState, t: &TaskFile) -> Option<String> {
    state
        .batches
        .get(&t.batch_id)?
        .jobs
        .iter()
        .find(|j| {
            j.status == JobStatus::Complete
                && (j.name == t.name || (!j.task_id.is_empty() && j.task_id == t.task_id))
        })
        .map(|j| j.file_name.clone())
}

fn unclassified(index: &QueueIndex, name: &str) -> bool {
    index
        .get(name)
        .is_some_and(|e| e.task_class.is_none() && e.executor == Executor::Worker)
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

/// Turns an `execute_plan` task into a batch, or files it as failed with the plan's
/// errors. A batch whose record exists was submitted before a crash: not again.
fn execute_plan(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    config: &RigConfig,
    path: &Path,
    mut task: TaskFile,
) {
    let started = std::time::Instant::now();
    task.worker_id = Some("brain".into());
    task.started_at = Some(rigmind_queue::time::now_rfc3339());
    if task.batch_id.trim().is_empty() {
        task.batch_id = new_batch_id(layout);
    }
    let plan_file = task.plan_file.clone().unwrap_or_default();
    let result = if layout.batch_file(&task.batch_id).exists() {
        Ok(())
    } else {
        load_plan(&plan_file, config)
            .map_err(crate::submit::SubmitError::from)
            .and_then(|plan| submit_plan(layout, logs, state, &plan, &task.batch_id, config))
    };
    task.finished_at = Some(rigmind_queue::time::now_rfc3339());
    task.elapsed_seconds = Some(started.elapsed().as_secs_f64());
    let dir = match result {
        Ok(()) => {
            task.status = TaskStatus::Complete;
            task.return_code = Some(0);
            TaskDir::Complete
        }
        Err(e) => {
            let _ = logs.decision(
                &Decision::new("reject")
                    .kv("batch", &task.batch_id)
                    .kv("file", plan_file.display())
                    .kv("reason", e.to_string().lines().next().unwrap_or("")),
            );
            let _ = logs.event(
                "reject",
                crate::observe::obj(
                    json!({"batch": task.batch_id, "file": plan_file.display().to_string(),
                                           "errors": e.to_string()}),
                ),
            );
            task.status = TaskStatus::Failed;
            task.failure_kind = Some(FailureKind::DefinitionError);
            task.error = Some(e.to_string());
            TaskDir::Failed
        }
    };
    if let Err(e) = rigmind_queue::file_into(layout, path, &task, dir, Sync::Data) {
        tracing::warn!("{e}");
    }
}

fn write_heartbeat(layout: &Layout, started_at: &str, state: &BrainState) {
    let running = state
        .batches
        .values()
        .filter(|b| !b.record.state.is_done())
        .count();
    let record = BrainRecord {
        pid: u64::from(std::process::id()),
        started_at: started_at.to_string(),
        heartbeat_at: rigmind_queue::time::now_rfc3339(),
        batches: state.batches.len(),
        running_batches: running,
    };
    if let Err(e) = record.write(layout) {
        tracing::warn!("{e}");
    }
}
