//! Requests to the brain itself: `execute_plan` (a plan submission) and the
//! `cancel_batch` requests of older versions, found in the queue as tasks with
//! `executor: brain`; how they are written, run, and requeued after a crash.

use std::path::{Path, PathBuf};

use rigmind_config::RigConfig;
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{FailureKind, TaskFile, TaskStatus};
use rigmind_queue::{Layout, TaskDir};
use rigmind_types::Executor;
use serde_json::json;

use crate::state::BrainState;
use crate::submit::{load_plan, new_batch_id, submit_plan};
use crate::BrainError;

/// The task-file `action` of a plan submission.
pub const EXECUTE_PLAN: &str = "execute_plan";
/// The task-file `action` of a cancel request of older versions (now a marker in
/// `tasks/cancel/`); one found in the queue is turned into a marker.
pub const CANCEL_BATCH: &str = "cancel_batch";
/// Requests to the brain are named `@execute_plan`, `@cancel_batch.<id>`: no plan
/// task can have a name with `@`, so they are never taken for a batch's tasks.
pub const REQUEST_MARK: char = '@';

/// Whether a task's name (as read from its file name) is a request to the brain.
pub fn is_request(name: &str) -> bool {
    name.starts_with(REQUEST_MARK)
}

/// Requests that only a brain runs (`execute_plan`, `cancel_batch`) and that a
/// previous brain had claimed when it stopped go back to the queue: both are
/// safe to run again (a batch whose record exists is not submitted twice).
pub(crate) fn requeue_orphaned_requests(layout: &Layout, logs: &Logs) -> Result<(), BrainError> {
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
        rigmind_exec::file_into(layout, &path, &t, TaskDir::Queue, Sync::Data)?;
        logs.decision(
            &Decision::new("requeue")
                .kv("batch", &t.batch_id)
                .kv("task", &t.name)
                .kv("reason", "a brain stopped before finishing it"),
        )?;
    }
    Ok(())
}

/// Turns an `execute_plan` task into a batch, or files it as failed with the plan's
/// errors. A batch whose record exists was submitted before a crash: not again.
pub(crate) fn execute_plan(
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
    if let Err(e) = rigmind_exec::file_into(layout, path, &task, dir, Sync::Data) {
        tracing::warn!("{e}");
    }
}

/// A cancel request of older versions (a `cancel_batch` task in the queue): turned
/// into the marker that `rigmind cancel` writes now, then filed as complete. The
/// marker is acted on at the top of the next turn, as any other.
pub(crate) fn cancel_request(layout: &Layout, path: &Path, mut task: TaskFile) {
    task.worker_id = Some("brain".into());
    task.started_at = Some(rigmind_queue::time::now_rfc3339());
    let target = task.batch_id.clone();
    let dir = if rigmind_queue::cancel::is_cancelled(layout, &target) {
        TaskDir::Complete
    } else {
        match rigmind_queue::cancel::write_marker(layout, &target, "a cancel_batch request file") {
            Ok(_) => TaskDir::Complete,
            Err(e) => {
                task.error = Some(e.to_string());
                TaskDir::Failed
            }
        }
    };
    task.status = if dir == TaskDir::Complete {
        TaskStatus::Complete
    } else {
        TaskStatus::Failed
    };
    task.finished_at = Some(rigmind_queue::time::now_rfc3339());
    if let Err(e) = rigmind_exec::file_into(layout, path, &task, dir, Sync::Data) {
        tracing::warn!("{e}");
    }
}

/// Writes the task that asks the brain to submit `plan_file` as batch `batch_id`.
pub fn write_execute_plan(
    layout: &Layout,
    plan_file: &Path,
    batch_id: &str,
) -> Result<PathBuf, rigmind_queue::QueueError> {
    let mut t = TaskFile::new(batch_id, EXECUTE_PLAN, rigmind_types::TaskClass::Cpu);
    t.name = format!("{REQUEST_MARK}{EXECUTE_PLAN}");
    t.plan_task_id = String::new();
    t.executor = Executor::Brain;
    t.action = Some(EXECUTE_PLAN.into());
    t.status = TaskStatus::Queued;
    t.plan_file = Some(std::path::absolute(plan_file).unwrap_or_else(|_| plan_file.to_path_buf()));
    t.write_to(&layout.dir(TaskDir::Queue), Sync::Data)
}
