//! Following the files while running: where is a job now, and what does that mean.

use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{FailureKind, TaskFile, TaskName};
use rigmind_queue::{Layout, TaskDir};
use serde_json::json;

use crate::state::{BrainState, FailureInfo, JobStatus};

/// Where a task file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Private,
    Public(TaskDir),
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

/// Reads what a failed task file says about its failure. An unreadable file counts as
/// a definition error (it cannot be run as it is).
pub fn failure_info(task: Option<&TaskFile>) -> FailureInfo {
    match task {
        Some(t) => FailureInfo {
            kind: t.failure_kind.unwrap_or(FailureKind::WorkerFailure),
            retry_count: t.retry_count,
            retries: t.retries,
        },
        None => FailureInfo {
            kind: FailureKind::DefinitionError,
            retry_count: 0,
            retries: 0,
        },
    }
}

/// Brings one task file named by an event (or a rescan) into the state, logging
/// completions. Files of unknown batches are not the brain's business here.
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
    let old = batch.jobs[i].status;
    let new = match locate(layout, &tn.batch, file_name) {
        None => return, // in flight between two places; the next event tells
        Some(Place::Private) => JobStatus::Pending,
        Some(Place::Public(TaskDir::Queue)) => JobStatus::Queued,
        Some(Place::Public(TaskDir::Processing)) => JobStatus::Processing,
        Some(Place::Public(TaskDir::Complete)) => JobStatus::Complete,
        Some(Place::Public(TaskDir::Failed)) => {
            let task = TaskFile::read(&layout.dir(TaskDir::Failed).join(file_name)).ok();
            JobStatus::Failed(failure_info(task.as_ref()))
        }
    };
    if same_kind(old, new) {
        return;
    }
    let job = &batch.jobs[i];
    match new {
        JobStatus::Complete => {
            let t = TaskFile::read(&layout.dir(TaskDir::Complete).join(file_name)).ok();
            let elapsed = t.as_ref().and_then(|t| t.elapsed_seconds);
            let worker = t.as_ref().and_then(|t| t.worker_id.clone());
            let _ = logs.decision(
                &Decision::new("complete")
                    .kv("batch", &tn.batch)
                    .kv("task", &job.name)
                    .kv("plan_task_id", &job.plan_task_id)
                    .opt("worker", worker.as_ref())
                    .opt("elapsed_seconds", elapsed)
                    .kv("reason", "exit code 0"),
            );
            let _ = logs.event(
                "complete",
                obj(
                    json!({"batch": tn.batch, "task": job.name, "task_id": job.task_id,
                           "worker": worker, "elapsed_seconds": elapsed}),
                ),
            );
        }
        other => {
            let to = match other {
                JobStatus::Pending => "pending",
                JobStatus::Queued => "queued",
                JobStatus::Processing => "processing",
                JobStatus::Failed(_) => "failed",
                JobStatus::Complete => "complete",
            };
            let _ = logs.event(
                to,
                obj(json!({"batch": tn.batch, "task": job.name, "task_id": job.task_id})),
            );
        }
    }
    batch.set_status(i, new);
}

fn same_kind(a: JobStatus, b: JobStatus) -> bool {
    matches!((a, b), (JobStatus::Failed(_), JobStatus::Failed(_))) || a == b
}

/// A `json!` object as the map that [`Logs::event`] takes.
pub fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}
