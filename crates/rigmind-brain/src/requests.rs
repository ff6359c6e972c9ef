//! Requests to the brain itself, found in the queue as tasks with `executor:
//! brain`: how a plan submission (`execute_plan`) is run, and how requests a
//! previous brain had claimed are requeued after a crash. Their names and how they
//! are written belong to the protocol (`rigmind_queue::requests`).

use std::path::Path;

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
    task.started_at = Some(rigmind_queue::time::now());
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
    task.finished_at = Some(rigmind_queue::time::now());
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
