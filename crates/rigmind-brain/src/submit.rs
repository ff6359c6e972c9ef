//! A plan becomes a batch: validated, expanded, written into `private_tasks/`.

use std::path::{Path, PathBuf};

use rigmind_config::RigConfig;
use rigmind_plan::{ExpandDefaults, ExpandedPlan, PlanError};
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{TaskFile, TaskStatus};
use rigmind_queue::{Layout, QueueError, TaskDir};

use crate::state::{Batch, BrainState, Job, JobStatus};
// Pure, in the decision core; re-exported so callers keep this path.
use rigmind_decide::tasks::absolute;
pub use rigmind_decide::tasks::{job_of, task_files};

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The plan has errors (each `path:line: message`).
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("batch {0} already exists")]
    Exists(String),
}

/// A new batch id: six hex digits, not used under this root yet.
pub fn new_batch_id(layout: &Layout) -> String {
    loop {
        let id = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
        if !layout.batch_file(&id).exists() && !layout.private_dir(&id).exists() {
            return id;
        }
    }
}

/// Reads and expands a plan with the rig's defaults, and checks what it asks of
/// the rig's endpoints.
pub fn load_plan(path: &Path, config: &RigConfig) -> Result<ExpandedPlan, PlanError> {
    if path.to_str().is_none() {
        return Err(PlanError {
            diagnostics: vec![rigmind_plan::Diagnostic {
                path: path.to_path_buf(),
                line: 0,
                severity: rigmind_plan::Severity::Error,
                message: "the plan's path is not UTF-8".into(),
            }],
        });
    }
    let plan = rigmind_plan::parse_file(path)?;
    let plan = rigmind_plan::expand(
        &plan,
        &ExpandDefaults {
            timeout_secs: config.defaults.timeout_secs,
            retries: config.defaults.retries,
        },
    )?;
    let mut errors = rigmind_decide::tasks::endpoint_errors(&plan, config);
    errors.extend(rigmind_decide::resources::model_errors(&plan, config));
    if !errors.is_empty() {
        return Err(PlanError {
            diagnostics: errors.into_iter().chain(plan.warnings).collect(),
        });
    }
    Ok(plan)
}

/// Writes `plan` as batch `batch_id`: every task into `private_tasks/<batch>/`, then
/// the batch record (the commit point: a batch without a record is a submission
/// that did not finish, and is redone). Adds the batch to `state`.
pub fn submit_plan(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    plan: &ExpandedPlan,
    batch_id: &str,
    config: &RigConfig,
) -> Result<(), SubmitError> {
    if state.batches.contains_key(batch_id) || layout.batch_file(batch_id).exists() {
        return Err(SubmitError::Exists(batch_id.to_string()));
    }
    let dir = fresh_private_dir(layout, batch_id)?;
    let seq_base = state.next_seq.max(1);
    let now = rigmind_queue::time::now();
    let Pending {
        jobs,
        ready_now,
        mut written,
    } = write_pending(logs, plan, batch_id, seq_base, config, now, &dir)?;
    // Tasks with no dependencies go straight to the queue instead of passing through
    // private_tasks/. The manifest makes that step replayable: written (and flushed)
    // before the batch record commits the batch, removed once they are all queued.
    written.push(write_manifest(&dir, &ready_now)?);
    fsio::sync_group(&written)?;
    let record = BatchRecord::submitted(
        batch_id,
        &plan.name,
        absolute(&plan.path),
        absolute(&plan.dir),
        now,
        jobs.len(),
        seq_base,
    );
    record.write(layout)?;
    fsio::sync_dir(&layout.batches_dir())?;
    logs.decision(
        &Decision::new("submit")
            .kv("batch", batch_id)
            .kv("plan", &plan.name)
            .kv("file", plan.path.display())
            .kv("tasks", jobs.len())
            .kv("ready", ready_now.len())
            .kv("reason", "plan accepted"),
    )?;
    add_batch(logs, state, Batch::new(record, jobs), ready_now)?;
    Ok(())
}

/// An empty `private_tasks/<batch>/`: a half-written earlier attempt of this very
/// submission is redone from scratch.
fn fresh_private_dir(layout: &Layout, batch_id: &str) -> Result<PathBuf, QueueError> {
    let dir = layout.private_dir(batch_id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| QueueError::Io {
            op: "clear",
            path: dir.clone(),
            source: e,
        })?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| QueueError::Io {
        op: "create directory",
        path: dir.clone(),
        source: e,
    })?;
    Ok(dir)
}

/// What [`write_pending`] made of a plan.
struct Pending {
    /// Every job, in plan order.
    jobs: Vec<Job>,
    /// The tasks without dependencies, marked queued but not written yet.
    ready_now: Vec<TaskFile>,
    /// The files written (not flushed yet).
    written: Vec<PathBuf>,
}

/// Writes the plan's tasks that wait on others into `dir`, unflushed (the caller
/// flushes them as one group), logging each inferred class.
fn write_pending(
    logs: &Logs,
    plan: &ExpandedPlan,
    batch_id: &str,
    seq_base: u64,
    config: &RigConfig,
    now: chrono::DateTime<chrono::Utc>,
    dir: &Path,
) -> Result<Pending, SubmitError> {
    let mut jobs = Vec::with_capacity(plan.jobs.len());
    let mut ready_now = Vec::new();
    let mut written = Vec::new();
    for (mut t, j) in task_files(plan, batch_id, seq_base, config, now)
        .into_iter()
        .zip(&plan.jobs)
    {
        if j.class_inferred {
            let fix = format!("task_class inferred as {}", j.task_class);
            logs.decision(
                &Decision::new("fix")
                    .kv("batch", batch_id)
                    .kv("task", &j.name)
                    .kv("plan_task_id", &j.plan_task_id)
                    .kv("fix_applied", &fix)
                    .kv("reason", "the plan gives no task_class"),
            )?;
            t.fix_applied = Some(fix);
        }
        jobs.push(job_of(&t, j.depends_on.clone()));
        if j.depends_on.is_empty() {
            t.status = TaskStatus::Queued;
            ready_now.push(t);
        } else {
            written.push(t.write_to(dir, Sync::None)?);
        }
    }
    Ok(Pending {
        jobs,
        ready_now,
        written,
    })
}

/// Adds a committed batch to the state, its ready tasks queued (in claim order) a
/// bounded number per turn of the brain's loop (`queue_some`).
fn add_batch(
    logs: &Logs,
    state: &mut BrainState,
    mut batch: Batch,
    ready_now: Vec<TaskFile>,
) -> Result<(), QueueError> {
    let batch_id = batch.record.batch_id.clone();
    let mut ready_now: Vec<(String, TaskFile)> =
        ready_now.into_iter().map(|t| (t.file_name(), t)).collect();
    ready_now.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, _) in &ready_now {
        if let Some(&i) = batch.by_file.get(name) {
            batch.set_status(i, JobStatus::Queued);
        }
    }
    state.queueing.insert(
        batch_id.clone(),
        ready_now.into_iter().map(|(_, t)| t).collect(),
    );
    logs.event(
        "submit",
        serde_json::json!({"batch": batch_id, "plan": batch.record.name, "tasks": batch.jobs.len()})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )?;
    state.insert(batch);
    Ok(())
}

/// The manifest of the tasks a submission queues at once: `private_tasks/<batch>/.ready.json`.
pub fn manifest_path(layout: &Layout, batch: &str) -> PathBuf {
    layout.private_dir(batch).join(MANIFEST)
}

/// The same manifest once every task it lists has been written into the queue
/// (unflushed): `private_tasks/<batch>/.queued.json`, removed once they are
/// flushed ([`crate::flush`]).
pub fn written_manifest_path(layout: &Layout, batch: &str) -> PathBuf {
    layout.private_dir(batch).join(WRITTEN)
}

const MANIFEST: &str = ".ready.json";
const WRITTEN: &str = ".queued.json";

fn write_manifest(dir: &Path, tasks: &[TaskFile]) -> Result<PathBuf, QueueError> {
    let path = dir.join(MANIFEST);
    // Streamed: the manifest of 100,000 tasks is ~70 MB.
    fsio::write_atomic_with(&path, Sync::None, |f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        serde_json::to_writer(&mut w, tasks).map_err(std::io::Error::from)?;
        std::io::Write::flush(&mut w)
    })?;
    Ok(path)
}

/// A manifest left by a submission whose ready tasks were not all flushed, and
/// whether they had all been written at least (`.queued.json`).
pub fn read_manifest(layout: &Layout, batch: &str) -> Option<(Vec<TaskFile>, bool)> {
    let read = |p: PathBuf| {
        let bytes = fsio::read(&p).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    read(manifest_path(layout, batch))
        .map(|t| (t, false))
        .or_else(|| read(written_manifest_path(layout, batch)).map(|t| (t, true)))
}

/// Finishes what a submission's manifest lists, at the brain's start, in claim order
/// (a worker claiming meanwhile finds the best first). A file in `queue/` that is
/// not the valid task (torn by a power loss before its flush) is written again. When
/// not all were `written` yet, those that `present` says are nowhere are written too
/// (once all were, a task found nowhere was claimed and then lost, which the
/// rebuild handles as any lost task). Logs the releases; the manifest is left as
/// `.queued.json` for [`flush_leftovers`] to flush its files and remove it.
pub fn queue_manifest(
    layout: &Layout,
    logs: &Logs,
    batch: &str,
    (tasks, written): (&[TaskFile], bool),
    present: impl Fn(&str) -> bool,
) -> Result<(), QueueError> {
    let queue = layout.dir(TaskDir::Queue);
    let _held = logs.hold();
    let mut in_order: Vec<(String, &TaskFile)> = tasks.iter().map(|t| (t.file_name(), t)).collect();
    // File names sort in claim order (`pRR-SSSSSSSS-...`).
    in_order.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in in_order {
        let path = queue.join(&name);
        let torn = path.exists() && TaskFile::read(&path).is_err();
        if torn || (!written && !present(&name)) {
            t.write_to(&queue, Sync::None)?;
            crate::apply::log_release(logs, batch, (t, &name), "no dependencies")?;
        }
    }
    fsio::rename_if_exists(
        &manifest_path(layout, batch),
        &written_manifest_path(layout, batch),
    )
}

/// Hands the files of every `.queued.json` manifest left under the root (by a brain
/// stopped before their flush, or by [`queue_manifest`]) to `flusher`, which
/// removes each manifest once its files are flushed.
pub fn flush_leftovers(layout: &Layout, flusher: &crate::flush::Flusher) {
    let queue = layout.dir(TaskDir::Queue);
    for batch in fsio::list_names(&layout.private_root()).unwrap_or_default() {
        let manifest = written_manifest_path(layout, &batch);
        let Ok(bytes) = fsio::read(&manifest) else {
            continue;
        };
        let tasks: Vec<TaskFile> = serde_json::from_slice(&bytes).unwrap_or_default();
        flusher.files(tasks.iter().map(|t| queue.join(t.file_name())).collect());
        flusher.seal(manifest, vec![queue.clone(), layout.dir(TaskDir::Failed)]);
    }
}

/// Writes ready tasks of new submissions into the queue (in claim order) until
/// `budget` is spent, unflushed: `flusher` flushes them in the background. A
/// submission fully written has its manifest renamed to `.queued.json`, which the
/// flusher removes once its files are flushed. The rest of a submission cancelled
/// meanwhile goes straight to `failed/` as cancelled. The log lines of the turn
/// are written together; `queued` is told of each task written into the queue.
/// True when nothing is left to write.
pub fn queue_some(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    flusher: &crate::flush::Flusher,
    budget: std::time::Duration,
    mut queued: impl FnMut(&str, &TaskFile, Option<fsio::FileStamp>),
) -> Result<bool, QueueError> {
    if state.queueing.is_empty() {
        return Ok(true);
    }
    let _held = logs.hold();
    let deadline = std::time::Instant::now() + budget;
    let mut written = Vec::new();
    let mut finished = Vec::new();
    let mut result = Ok(());
    'batches: for (batch, tasks) in state.queueing.iter_mut() {
        let Some(b) = state.batches.get_mut(batch) else {
            finished.push(batch.clone());
            continue;
        };
        while let Some(t) = tasks.front() {
            if std::time::Instant::now() >= deadline {
                break 'batches;
            }
            let name = t.file_name();
            match queue_one(layout, logs, b, (t, &name)) {
                Ok((p, stamp)) => {
                    if !b.record.cancel_requested {
                        queued(&name, t, stamp);
                    }
                    written.push(p);
                }
                Err(e) => {
                    result = Err(e);
                    break 'batches;
                }
            }
            tasks.pop_front();
        }
        finished.push(batch.clone());
    }
    flusher.files(written);
    for batch in finished {
        let sealed = written_manifest_path(layout, &batch);
        fsio::rename_if_exists(&manifest_path(layout, &batch), &sealed)?;
        let dirs = vec![layout.dir(TaskDir::Queue), layout.dir(TaskDir::Failed)];
        flusher.seal(sealed, dirs);
        state.queueing.remove(&batch);
        give_back_freed_memory();
    }
    result.map(|()| state.queueing.is_empty())
}

/// A submission's task files (a gigabyte at a million tasks) are freed once they
/// are written, but the allocator keeps the pages: handed back to the system here,
/// so the brain's resident memory is what it holds, not what it once held.
pub(crate) fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Writes one ready task of a new submission into the queue (giving its path and
/// stamp), or, its batch being cancelled, into `failed/` as cancelled (recorded as
/// the policy's cancel would).
fn queue_one(
    layout: &Layout,
    logs: &Logs,
    b: &mut Batch,
    (t, name): (&TaskFile, &str),
) -> Result<(PathBuf, Option<fsio::FileStamp>), QueueError> {
    if !b.record.cancel_requested {
        // The temporary in the batch's private directory: queue/ sees one event.
        let private = layout.private_dir(&b.record.batch_id);
        let (p, stamp) =
            t.write_named_via(&layout.dir(TaskDir::Queue), name, &private, Sync::None)?;
        crate::apply::log_release(logs, &b.record.batch_id, (t, name), "no dependencies")?;
        return Ok((p, stamp));
    }
    let mut t = t.clone();
    t.status = TaskStatus::Failed;
    t.failure_kind = Some(rigmind_queue::FailureKind::Cancelled);
    t.error = Some("cancelled by the operator".into());
    t.finished_at = Some(rigmind_queue::time::now());
    let p = t.write_to(&layout.dir(TaskDir::Failed), Sync::None)?;
    logs.decision(
        &Decision::new("cancel")
            .kv("batch", &b.record.batch_id)
            .kv("task", &t.name)
            .kv("plan_task_id", &t.plan_task_id)
            .kv("failure_kind", rigmind_queue::FailureKind::Cancelled)
            .kv("reason", "batch cancelled before the task was queued"),
    )?;
    if let Some(&i) = b.by_file.get(&t.file_name()) {
        b.set_status(
            i,
            crate::apply::failed_status(rigmind_queue::FailureKind::Cancelled, &t),
        );
        b.unhandled_failures.remove(&i);
    }
    Ok((p, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigmind_types::TaskClass;

    /// Two ready tasks of batch `ab12cd`: `a` torn in the queue (a power loss
    /// before its flush), `b` found in no directory.
    fn torn_and_missing() -> (tempfile::TempDir, Layout, Vec<TaskFile>) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        std::fs::create_dir_all(layout.private_dir("ab12cd")).unwrap();
        let tasks: Vec<TaskFile> = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut t = TaskFile::new("ab12cd", n, TaskClass::Cpu);
                t.seq = i as u64 + 1;
                t.status = TaskStatus::Queued;
                t
            })
            .collect();
        let queue = layout.dir(TaskDir::Queue);
        std::fs::write(queue.join(tasks[0].file_name()), b"").unwrap();
        (dir, layout, tasks)
    }

    #[test]
    fn a_replayed_manifest_repairs_torn_files_and_writes_missing_ones_only_before_all_were_written()
    {
        for written in [false, true] {
            let (_dir, layout, tasks) = torn_and_missing();
            let manifest = if written {
                written_manifest_path(&layout, "ab12cd")
            } else {
                manifest_path(&layout, "ab12cd")
            };
            std::fs::write(&manifest, serde_json::to_vec(&tasks).unwrap()).unwrap();
            assert!(read_manifest(&layout, "ab12cd").is_some_and(|(_, w)| w == written));
            let logs = Logs::new(&layout);
            queue_manifest(&layout, &logs, "ab12cd", (&tasks, written), |_| false).unwrap();
            let queue = layout.dir(TaskDir::Queue);
            let a = TaskFile::read(&queue.join(tasks[0].file_name())).unwrap();
            assert_eq!(
                a.task_id, tasks[0].task_id,
                "the torn file is written again"
            );
            assert_eq!(queue.join(tasks[1].file_name()).exists(), !written);
            // Left for the flusher, as .queued.json.
            assert!(!manifest_path(&layout, "ab12cd").exists());
            assert!(written_manifest_path(&layout, "ab12cd").exists());
        }
    }

    #[test]
    fn the_flusher_removes_a_manifest_once_its_files_are_flushed() {
        let (_dir, layout, tasks) = torn_and_missing();
        let manifest = written_manifest_path(&layout, "ab12cd");
        std::fs::write(&manifest, serde_json::to_vec(&tasks).unwrap()).unwrap();
        let flusher = crate::flush::Flusher::start(&layout);
        flush_leftovers(&layout, &flusher);
        drop(flusher);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while manifest.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!manifest.exists());
    }
}
