//! Following the files while running: where is a job now, what does its file say,
//! and what to do with files that are not tasks at all.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rigmind_queue::fsio::Sync;
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{FailureKind, TaskFile, TaskName, TaskStatus};
use rigmind_queue::{Layout, QueueError, TaskDir};
use serde_json::json;

use crate::state::{BrainState, FailureInfo, Holder, JobStatus};

/// Where a task file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Private,
    Public(TaskDir),
}

impl Place {
    /// The directory of this place for a batch.
    pub fn dir(self, layout: &Layout, batch: &str) -> PathBuf {
        match self {
            Place::Private => layout.private_dir(batch),
            Place::Public(d) => layout.dir(d),
        }
    }

    /// The name people see for it.
    pub fn name(self) -> &'static str {
        match self {
            Place::Private => "private_tasks",
            Place::Public(d) => d.as_str(),
        }
    }
}

/// The order in which a task's places follow each other: a copy in an earlier
/// place than another is stale.
pub fn rank(p: Place) -> u8 {
    match p {
        Place::Private => 0,
        Place::Public(TaskDir::Queue) => 1,
        Place::Public(TaskDir::Processing) => 2,
        Place::Public(TaskDir::Failed) => 3,
        Place::Public(TaskDir::Complete) => 4,
    }
}

/// How long a stale copy may sit beside the newer one before it is removed.
const MOVE_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Removes copies of a task left in earlier places than `latest` (a runner killed
/// between writing its result and removing its claim), as a restart would: the
/// later state wins.
fn drop_stale_copies(
    layout: &Layout,
    logs: &Logs,
    batch: &str,
    task: &str,
    file_name: &str,
    latest: Place,
) {
    // A runner files a result first and removes its claim next: a copy left
    // behind for less than this is a move in progress, not a crash.
    let settled = std::fs::metadata(latest.dir(layout, batch).join(file_name))
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= MOVE_SETTLE));
    if rank(latest) >= rank(Place::Public(TaskDir::Failed)) {
        // A released task's private copy, kept until its queue copy is flushed
        // (crate::flush): its result is flushed by its runner, so the copy goes
        // now, as the loop would have removed it; routine, not logged.
        let _ = rigmind_queue::fsio::remove_if_exists(&layout.private_dir(batch).join(file_name));
    }
    if !settled {
        return;
    }
    // A private copy beside a queue or processing copy is a release whose flush
    // may still be due: the loop removes it once it is done.
    let all = [
        Place::Public(TaskDir::Queue),
        Place::Public(TaskDir::Processing),
        Place::Public(TaskDir::Failed),
    ];
    for p in all.into_iter().filter(|p| rank(*p) < rank(latest)) {
        let path = p.dir(layout, batch).join(file_name);
        if path.exists() && rigmind_queue::fsio::remove_if_exists(&path).is_ok() {
            let _ = logs.decision(
                &Decision::new("resolve_duplicate")
                    .kv("batch", batch)
                    .kv("task", task)
                    .kv("kept", latest.name())
                    .kv("removed", p.name())
                    .kv("reason", "found in two places; the later state wins"),
            );
        }
    }
}

/// Finds the latest place of a task file: complete > failed > processing > queue >
/// private (the later state wins, as after a crash between two moves).
pub fn locate(layout: &Layout, batch: &str, file_name: &str) -> Option<Place> {
    for d in [
        TaskDir::Complete,
        TaskDir::Failed,
        TaskDir::Processing,
        TaskDir::Queue,
    ] {
        if layout.dir(d).join(file_name).exists() {
            return Some(Place::Public(d));
        }
    }
    layout
        .private_dir(batch)
        .join(file_name)
        .exists()
        .then_some(Place::Private)
}

/// What a failed task file says about its failure.
pub fn failure_info(t: &TaskFile) -> FailureInfo {
    FailureInfo {
        kind: t.failure_kind.unwrap_or(FailureKind::WorkerFailure),
        retry_count: t.retry_count,
        retries: t.retries,
        tier: t.tier,
        tier_failures: t.tier_failures,
    }
}

/// Who holds a task in `processing/`: its start record, or, before there is one,
/// the moment of the claim (the rename sets the file's change time).
pub fn holder_of(t: &TaskFile, path: &Path) -> Holder {
    let claimed = std::fs::metadata(path)
        .ok()
        .and_then(|m| DateTime::<Utc>::from_timestamp(m.ctime(), m.ctime_nsec() as u32))
        .unwrap_or_else(Utc::now);
    Holder {
        worker: t.worker_id.clone(),
        session: t.worker_session.clone(),
        pgid: t.pgid,
        since: t.started_at.unwrap_or(claimed),
    }
}

/// The status a job has when its file, read at `place`, says `t`.
pub fn status_at(place: Place, t: &TaskFile) -> JobStatus {
    match place {
        Place::Private => JobStatus::Pending,
        Place::Public(TaskDir::Queue) => JobStatus::Queued,
        Place::Public(TaskDir::Processing) => JobStatus::Processing,
        Place::Public(TaskDir::Complete) => JobStatus::Complete,
        Place::Public(TaskDir::Failed) => JobStatus::Failed(failure_info(t)),
    }
}

/// Brings one task file named by an event (or a rescan) into the state: where it
/// is, what it says, who holds it. Completions are logged here. A file that is not
/// a valid task is moved aside ([`reject`]). Files of unknown batches are not the
/// brain's business.
pub fn refresh(layout: &Layout, logs: &Logs, state: &mut BrainState, file_name: &str) {
    let Some(tn) = TaskName::parse(file_name) else {
        return;
    };
    let Some(batch) = state.batches.get_mut(&tn.batch) else {
        return;
    };
    let Some(&i) = batch.by_file.get(file_name) else {
        return;
    };
    // In flight between two places: the next event tells. A job past pending
    // found only in private_tasks/ is in flight too: its private copy is the one a
    // release keeps until its flush (crate::flush), not a way back (the brain's
    // own moves back there, hold-back and revive, set the job pending first).
    let past_pending = batch.jobs[i].status != JobStatus::Pending;
    let Some(place) =
        locate(layout, &tn.batch, file_name).filter(|p| !(past_pending && *p == Place::Private))
    else {
        return;
    };
    drop_stale_copies(
        layout,
        logs,
        &tn.batch,
        &batch.jobs[i].name.clone(),
        file_name,
        place,
    );
    let Some(batch) = state.batches.get_mut(&tn.batch) else {
        return;
    };
    let path = place.dir(layout, &tn.batch).join(file_name);
    let t = match TaskFile::read(&path) {
        Ok(t) => t,
        Err(e @ QueueError::Invalid { .. }) => {
            reject(layout, logs, state, &path, &invalid_reason(&e));
            return;
        }
        Err(_) => return, // moved on since it was located
    };
    let new = status_at(place, &t);
    let job = &mut batch.jobs[i];
    job.retry_count = t.retry_count;
    job.holder = (new == JobStatus::Processing).then(|| holder_of(&t, &path));
    // Probe the holder now: a probe older than its start record could take a
    // worker restarted under the same id for the one that died.
    if let Some(w) = job.holder.as_ref().and_then(|h| h.worker.clone()) {
        if w != "brain" {
            let live = rigmind_queue::workers::probe(layout, &w);
            state.workers.insert(w, live);
        }
    }
    let Some(batch) = state.batches.get_mut(&tn.batch) else {
        return;
    };
    let job = &mut batch.jobs[i];
    if place == Place::Public(TaskDir::Queue) && t.status != TaskStatus::Queued && job.unmet == 0 {
        accept(logs, &path, &t);
    }
    let old = job.status;
    if same_kind(old, new) {
        return;
    }
    if new == JobStatus::Complete {
        let _ = logs.decision(
            &Decision::new("complete")
                .kv("batch", &tn.batch)
                .kv("task", &job.name)
                .kv("plan_task_id", &job.plan_task_id)
                .opt("worker", t.worker_id.as_ref())
                .opt("elapsed_seconds", t.elapsed_seconds)
                .kv("reason", "exit code 0"),
        );
    }
    let _ = logs.event(
        new.as_str(),
        obj(
            // The run's resource use rides along, so that memory needs can be
            // learned from the history as durations are (docs/safety.md).
            json!({"batch": tn.batch, "task": job.name, "task_id": t.task_id,
                   "plan_task_id": job.plan_task_id, "worker": t.worker_id,
                   "elapsed_seconds": t.elapsed_seconds, "peak_rss_mb": t.peak_rss_mb,
                   "peak_vram_mb": t.peak_vram_mb, "gpu_util_mean": t.gpu_util_mean}),
        ),
    );
    let plan_task_id = job.plan_task_id.clone();
    // Each attempt's result arrives once (a retry passes through the queue
    // first), so its cost is added once.
    if let (JobStatus::Complete | JobStatus::Failed(_), Some(e), Some(usd)) =
        (new, t.endpoint.as_deref(), t.cost_usd)
    {
        batch.add_cost(e, usd);
    }
    let class = batch.jobs[i].work.class;
    batch.set_status(i, new);
    note_arrived(state, class, new, t.elapsed_seconds);
    if let (JobStatus::Complete, Some(secs)) = (new, t.elapsed_seconds) {
        state.learned.entry(plan_task_id).or_default().add(secs);
    }
}

/// Notes a result that arrived, for the metrics (`crate::metrics`).
fn note_arrived(
    state: &mut BrainState,
    class: Option<rigmind_types::TaskClass>,
    new: JobStatus,
    elapsed_secs: Option<f64>,
) {
    let outcome = match new {
        JobStatus::Complete => "complete",
        JobStatus::Failed(f) => f.kind.as_str(),
        _ => return,
    };
    if state.arrived.len() < rigmind_decide::state::ARRIVED_MAX {
        state.arrived.push(rigmind_decide::state::Arrived {
            class,
            outcome,
            elapsed_secs,
        });
    }
}

/// A task moved into the queue by hand (it still says `failed`, say) runs afresh:
/// rewritten in place as queued, results and automatic retries reset. Workers
/// claim only queued files, so none takes it before this. (One whose
/// dependencies are not complete is held back by the policy instead.)
pub fn accept(logs: &Logs, path: &Path, t: &TaskFile) {
    let mut t = t.clone();
    t.let_in();
    let was = t.status;
    t.clear_run_results();
    t.status = TaskStatus::Queued;
    t.retry_count = 0;
    t.not_before = None;
    if let Err(e) = rigmind_queue::fsio::write_atomic(path, &t.to_bytes(), Sync::Data) {
        tracing::warn!("{e}");
        return;
    }
    let _ = logs.decision(
        &Decision::new("accept")
            .kv("batch", &t.batch_id)
            .kv("task", &t.name)
            .kv("plan_task_id", &t.plan_task_id)
            .kv(
                "reason",
                format!(
                    "put into the queue by hand (it said {}); runs afresh",
                    was.as_str()
                ),
            ),
    );
}

fn same_kind(a: JobStatus, b: JobStatus) -> bool {
    matches!((a, b), (JobStatus::Failed(_), JobStatus::Failed(_))) || a == b
}

fn invalid_reason(e: &QueueError) -> String {
    match e {
        QueueError::Invalid { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Moves a file that is not a valid task into `tasks/rejected/` and says so. If it
/// was the file of a known task, that task fails as a definition error, with a
/// record in `failed/` that points at the rejected bytes, so that it is neither
/// lost nor waited for forever.
pub fn reject(layout: &Layout, logs: &Logs, state: &mut BrainState, path: &Path, reason: &str) {
    let Some(moved) = quarantine(layout, logs, path, reason) else {
        return;
    };
    let Some(tn) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(TaskName::parse)
    else {
        return;
    };
    let Some(batch) = state.batches.get_mut(&tn.batch) else {
        return;
    };
    let Some(&i) = batch
        .by_file
        .get(path.file_name().and_then(|n| n.to_str()).unwrap_or(""))
    else {
        return;
    };
    let job = &batch.jobs[i];
    let mut t = TaskFile::new(&tn.batch, &job.name, rigmind_types::TaskClass::Cpu);
    t.task_class = None;
    t.task_type = rigmind_types::TaskType::Unset;
    t.task_id = job.task_id.clone();
    t.plan_task_id = job.plan_task_id.clone();
    t.priority = 10 - tn.rank.min(9);
    t.seq = tn.seq;
    t.status = TaskStatus::Failed;
    t.failure_kind = Some(FailureKind::DefinitionError);
    t.error = Some(format!(
        "its task file was not valid ({reason}); the bytes are in {}",
        moved.display()
    ));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if let Err(e) = t.write_named(&layout.dir(TaskDir::Failed), name, Sync::Data) {
        tracing::warn!("{e}");
        return;
    }
    batch.set_status(i, JobStatus::Failed(failure_info(&t)));
}

/// Moves a file that is not a valid task into `tasks/rejected/` and logs it, and
/// nothing more (for a bad stale copy of a task whose good copy was kept).
pub fn quarantine(layout: &Layout, logs: &Logs, path: &Path, reason: &str) -> Option<PathBuf> {
    let moved = match rigmind_queue::quarantine::quarantine(layout, path) {
        Ok(to) => to,
        Err(e) => {
            tracing::warn!("{e}");
            return None;
        }
    };
    let _ = logs.decision(
        &Decision::new("quarantine")
            .kv("file", path.display())
            .kv("moved_to", moved.display())
            .kv("reason", reason),
    );
    let _ = logs.event(
        "quarantine",
        obj(json!({"file": path.display().to_string(),
                   "moved_to": moved.display().to_string(), "reason": reason})),
    );
    Some(moved)
}

/// A `json!` object as the map that [`Logs::event`] takes.
pub fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// A task in the queue without a `task_class` (written by hand, or by an older
/// tool) is a definition error that the brain fixes when it can: it goes to
/// `failed/` as such, and is sent back with the class inferred by the keyword rules
/// of plan-format.md and `fix_applied` recorded. One with nothing to infer from (no
/// command, no prompt) stays in `failed/` with the reason.
pub fn fix_unclassified(layout: &Layout, logs: &Logs, state: &mut BrainState, file_name: &str) {
    let queued = layout.dir(TaskDir::Queue).join(file_name);
    // No worker claims a task without a class, so it cannot move under us.
    let mut t = match TaskFile::read(&queued) {
        Ok(t) if t.task_class.is_none() && t.executor == rigmind_types::Executor::Worker => t,
        _ => return,
    };
    note_hand_task(logs, &queued, &mut t);
    t.status = TaskStatus::Failed;
    t.failure_kind = Some(FailureKind::DefinitionError);
    t.error = Some("the task file has no task_class".into());
    let failed_path =
        match rigmind_queue::file_into(layout, &queued, &t, TaskDir::Failed, Sync::Data) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
    let can_run = t.command.is_some() || t.prompt.is_some();
    let _ = logs.decision(
        &Decision::new("fail")
            .kv("batch", &t.batch_id)
            .kv("task", &t.name)
            .kv("plan_task_id", &t.plan_task_id)
            .kv("failure_kind", FailureKind::DefinitionError)
            .kv(
                "reason",
                if can_run {
                    "the task file has no task_class"
                } else {
                    "the task file has no task_class, and no command or prompt to infer it from"
                },
            ),
    );
    if !can_run {
        t.error = Some("no task_class, and no command or prompt to infer it from".into());
        let _ = t.write_to(&layout.dir(TaskDir::Failed), Sync::Data);
        refresh(layout, logs, state, file_name);
        return;
    }
    let class = rigmind_types::infer_class(t.command.as_deref(), t.prompt.is_some());
    let fix = format!("task_class inferred as {class}");
    t.task_class = Some(class);
    t.task_type = class.task_type();
    t.fix_applied = Some(fix.clone());
    t.status = TaskStatus::Queued;
    t.failure_kind = None;
    t.error = None;
    match rigmind_queue::file_into(layout, &failed_path, &t, TaskDir::Queue, Sync::Data) {
        Ok(_) => {
            let _ = logs.decision(
                &Decision::new("fix")
                    .kv("batch", &t.batch_id)
                    .kv("task", &t.name)
                    .kv("plan_task_id", &t.plan_task_id)
                    .kv("fix_applied", &fix)
                    .kv("reason", "keyword rules of plan-format.md; requeued"),
            );
        }
        Err(e) => tracing::warn!("{e}"),
    }
    refresh(layout, logs, state, file_name);
}

/// A task file in the queue that the brain did not let in (no `released_by`):
/// written there by hand or by another program. It is logged with its owner
/// (`decision=hand_task`) and marked as let in; workers claim nothing unmarked, so
/// the line always comes before the run.
pub fn note_hand_task(logs: &Logs, path: &Path, t: &mut TaskFile) {
    if t.released_by.is_some() {
        return;
    }
    let owner = owner_of(path);
    let _ = logs.decision(
        &Decision::new("hand_task")
            .kv("batch", &t.batch_id)
            .kv("task", &t.name)
            .kv(
                "file",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
            )
            .kv("owner", &owner)
            .kv(
                "reason",
                "written into tasks/queue/ by hand or by another program, not by a submission; \
                 runs with the rights of the worker that claims it",
            ),
    );
    t.released_by = Some(format!("hand ({owner})"));
}

/// `name (uid N)` of a file's owner, the name from /etc/passwd where it is listed.
fn owner_of(path: &Path) -> String {
    match std::fs::symlink_metadata(path) {
        Ok(m) => rigmind_queue::access::owner_name(m.uid()),
        Err(_) => "unknown (the file is gone)".into(),
    }
}
