//! Carrying decisions out on the files, and keeping the state in step.
//!
//! Each action reads the task where it is, writes it where it goes (whole file,
//! atomically), removes the old copy, then updates the state exactly as a later
//! observation of the files would. One decision line per action.

use chrono::{DateTime, Utc};
use rigmind_queue::batch::BatchState;
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{FailureKind, TaskFile, TaskStatus};
use rigmind_queue::{Layout, QueueError, TaskDir};
use serde_json::json;

use crate::observe::obj;
use crate::policy::Action;
use crate::state::{BrainState, FailureInfo, JobStatus};

/// Applies one action. An error leaves the files as they were (the task stays where
/// it is) and the action is decided again on the next round.
pub fn apply(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    match action {
        Action::Release { batch, job, reason } => {
            let b = state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch");
            let j = &b.jobs[*job];
            let from = layout.private_dir(batch).join(&j.file_name);
            let mut t = TaskFile::read(&from)?;
            t.status = TaskStatus::Queued;
            t.let_in();
            t.write_named(&layout.dir(TaskDir::Queue), &j.file_name, Sync::Data)?;
            fsio::remove_if_exists(&from)?;
            log_release(logs, batch, &t, reason)?;
            b.set_status(*job, JobStatus::Queued);
        }
        Action::Retry {
            batch,
            job,
            not_before,
            reason,
        } => {
            let b = state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch");
            let from = layout.dir(TaskDir::Failed).join(&b.jobs[*job].file_name);
            let mut t = TaskFile::read(&from)?;
            let previous = t.error.clone();
            let error = previous.clone();
            t.clear_run_results();
            t.retry_count += 1;
            t.status = TaskStatus::Queued;
            t.let_in();
            t.not_before = Some(rigmind_queue::time::to_rfc3339(*not_before));
            if let Some(p) = previous {
                t.extra.insert("last_error".into(), json!(p));
            }
            fsio::rewrite_and_move(&from, &layout.dir(TaskDir::Queue), &t.to_bytes())?;
            logs.decision(
                &Decision::new("retry")
                    .kv("batch", batch)
                    .kv("task", &t.name)
                    .kv("plan_task_id", &t.plan_task_id)
                    .kv("task_id", &t.task_id)
                    .kv("retry", t.retry_count)
                    .kv("not_before", t.not_before.as_deref().unwrap_or(""))
                    .opt("error", error.as_ref())
                    .kv("reason", reason),
            )?;
            logs.event(
                "retry",
                obj(json!({"batch": batch, "task": t.name, "task_id": t.task_id,
                           "retry": t.retry_count, "not_before": t.not_before})),
            )?;
            b.set_status(*job, JobStatus::Queued);
            b.retry_at.insert(*job, *not_before);
        }
        Action::Fail { batch, job, reason } => {
            let b = state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch");
            let j = &b.jobs[*job];
            let t = TaskFile::read(&layout.dir(TaskDir::Failed).join(&j.file_name)).ok();
            let kind = match j.status {
                JobStatus::Failed(f) => f.kind,
                _ => FailureKind::WorkerFailure,
            };
            let why = t
                .as_ref()
                .and_then(|t| t.error.clone())
                .map_or(reason.clone(), |e| format!("{e}; {reason}"));
            logs.decision(
                &Decision::new("fail")
                    .kv("batch", batch)
                    .kv("task", &j.name)
                    .kv("plan_task_id", &j.plan_task_id)
                    .opt("worker", t.as_ref().and_then(|t| t.worker_id.clone()))
                    .opt(
                        "elapsed_seconds",
                        t.as_ref().and_then(|t| t.elapsed_seconds),
                    )
                    .kv("failure_kind", kind)
                    .kv("reason", why),
            )?;
            logs.event(
                "fail",
                obj(json!({"batch": batch, "task": j.name, "task_id": j.task_id,
                           "failure_kind": kind.as_str()})),
            )?;
            b.unhandled_failures.remove(job);
        }
        Action::Cascade { batch, job, cause } => {
            let b = state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch");
            let cause_name = b.jobs[*cause].name.clone();
            let from = layout.private_dir(batch).join(&b.jobs[*job].file_name);
            let mut t = TaskFile::read(&from)?;
            t.status = TaskStatus::Failed;
            t.failure_kind = Some(FailureKind::DependencyFailed);
            t.error = Some(format!("dependency '{cause_name}' failed"));
            t.finished_at = Some(rigmind_queue::time::to_rfc3339(now));
            t.write_named(
                &layout.dir(TaskDir::Failed),
                &b.jobs[*job].file_name,
                Sync::Data,
            )?;
            fsio::remove_if_exists(&from)?;
            logs.decision(
                &Decision::new("cascade")
                    .kv("batch", batch)
                    .kv("task", &t.name)
                    .kv("plan_task_id", &t.plan_task_id)
                    .kv("failure_kind", FailureKind::DependencyFailed)
                    .kv("reason", format!("dependency '{cause_name}' failed")),
            )?;
            logs.event(
                "cascade",
                obj(json!({"batch": batch, "task": t.name, "task_id": t.task_id,
                           "cause": cause_name})),
            )?;
            b.set_status(
                *job,
                JobStatus::Failed(FailureInfo {
                    kind: FailureKind::DependencyFailed,
                    retry_count: t.retry_count,
                    retries: t.retries,
                }),
            );
            b.unhandled_failures.remove(job);
        }
        Action::Revive { batch, job, cause } => {
            let b = state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch");
            let cause_name = b.jobs[*cause].name.clone();
            let from = layout.dir(TaskDir::Failed).join(&b.jobs[*job].file_name);
            let mut t = TaskFile::read(&from)?;
            t.clear_run_results();
            t.status = TaskStatus::Pending;
            fsio::rewrite_and_move(&from, &layout.private_dir(batch), &t.to_bytes())?;
            logs.decision(
                &Decision::new("revive")
                    .kv("batch", batch)
                    .kv("task", &t.name)
                    .kv("plan_task_id", &t.plan_task_id)
                    .kv(
                        "reason",
                        format!("dependency '{cause_name}' is running again"),
                    ),
            )?;
            b.set_status(*job, JobStatus::Pending);
        }
        Action::Lost { batch, job, reason } => {
            let b = state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch");
            let from = layout
                .dir(TaskDir::Processing)
                .join(&b.jobs[*job].file_name);
            let mut t = TaskFile::read(&from)?;
            // Its commands die first, so the retry can never run beside them.
            let killed = rigmind_exec::kill_task_group(&t.task_id);
            if let (Some(log), true) = (&t.log_path, killed > 0) {
                let why = format!("{reason} (SIGKILL to all its processes, by the brain)");
                let at = rigmind_queue::time::to_rfc3339(now);
                rigmind_exec::append_note(log, &rigmind_exec::kill_line(&at, &why));
            }
            t.status = TaskStatus::Failed;
            t.failure_kind = Some(FailureKind::LostWorker);
            t.error = Some(reason.clone());
            t.finished_at = Some(rigmind_queue::time::to_rfc3339(now));
            t.write_named(
                &layout.dir(TaskDir::Failed),
                &b.jobs[*job].file_name,
                Sync::Dir,
            )?;
            fsio::remove_if_exists(&from)?;
            logs.decision(
                &Decision::new("lost")
                    .kv("batch", batch)
                    .kv("task", &t.name)
                    .kv("plan_task_id", &t.plan_task_id)
                    .opt("worker", t.worker_id.as_ref())
                    .kv("killed_processes", killed)
                    .kv("failure_kind", FailureKind::LostWorker)
                    .kv("reason", reason),
            )?;
            logs.event(
                "lost",
                obj(json!({"batch": batch, "task": t.name, "task_id": t.task_id,
                           "worker": t.worker_id, "killed_processes": killed})),
            )?;
            b.set_status(
                *job,
                JobStatus::Failed(FailureInfo {
                    kind: FailureKind::LostWorker,
                    retry_count: t.retry_count,
                    retries: t.retries,
                }),
            );
        }
        Action::Cancel { batch, job } => {
            // Not flushed: the marker in tasks/cancel/ is the durable truth. A file
            // lost or emptied by a power cut is found again as queued (and not
            // started: the marker) or as ruined, and cancelled once more.
            let Some((t, was)) =
                fail_unstarted(layout, state, batch, *job, now, Sync::None, |t| {
                    t.failure_kind = Some(FailureKind::Cancelled);
                    t.error = Some(match t.error.take() {
                        Some(e) => format!("cancelled by the operator (it had failed: {e})"),
                        None => "cancelled by the operator".to_string(),
                    });
                })?
            else {
                return Ok(());
            };
            logs.decision(
                &Decision::new("cancel")
                    .kv("batch", batch)
                    .kv("task", &t.name)
                    .kv("plan_task_id", &t.plan_task_id)
                    .kv("failure_kind", FailureKind::Cancelled)
                    .kv(
                        "reason",
                        format!("batch cancelled while the task was {}", was.as_str()),
                    ),
            )?;
            state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch")
                .unhandled_failures
                .remove(job);
        }
        Action::Unrunnable { batch, job, reason } => {
            // Left among the unhandled failures: the usual path fails it for good
            // and its dependents with it.
            fail_unstarted(layout, state, batch, *job, now, Sync::Data, |t| {
                t.failure_kind = Some(FailureKind::DefinitionError);
                t.error = Some(reason.clone());
            })?;
        }
        Action::Kill { batch, job } => {
            let b = state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch");
            let path = layout
                .dir(TaskDir::Processing)
                .join(&b.jobs[*job].file_name);
            let t = TaskFile::read(&path)?;
            let killed = rigmind_exec::kill_task_group(&t.task_id);
            if let Some(log) = &t.log_path {
                let why = "its batch was cancelled (SIGKILL to all its processes, by the brain)";
                let at = rigmind_queue::time::to_rfc3339(now);
                rigmind_exec::append_note(log, &rigmind_exec::kill_line(&at, why));
            }
            b.jobs[*job].kill_sent = true;
            logs.decision(
                &Decision::new("kill")
                    .kv("batch", batch)
                    .kv("task", &t.name)
                    .kv("plan_task_id", &t.plan_task_id)
                    .opt("worker", t.worker_id.as_ref())
                    .kv("killed_processes", killed)
                    .kv("reason", "batch cancelled while the task ran"),
            )?;
        }
        Action::HoldBack { batch, job } => {
            let b = state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch");
            let name = b.jobs[*job].file_name.clone();
            let from = layout.dir(TaskDir::Queue).join(&name);
            let to = layout.private_dir(batch).join(&name);
            // Under the claim lock, so no worker takes it while it moves.
            {
                let mut lock = rigmind_queue::claim::QueueLock::open(layout)?;
                lock.with(|| {
                    std::fs::rename(&from, &to).map_err(|e| QueueError::Io {
                        op: "hold back",
                        path: from.clone(),
                        source: e,
                    })
                })??;
            }
            let mut t = TaskFile::read(&to)?;
            t.status = TaskStatus::Pending;
            t.write_named(&layout.private_dir(batch), &name, Sync::Data)?;
            let waiting = b.jobs[*job].unmet;
            logs.decision(
                &Decision::new("hold_back")
                    .kv("batch", batch)
                    .kv("task", &t.name)
                    .kv("plan_task_id", &t.plan_task_id)
                    .kv(
                        "reason",
                        format!("put in the queue with {waiting} dependencies not complete"),
                    ),
            )?;
            b.set_status(*job, JobStatus::Pending);
        }
        Action::Settle { batch, state: to } => {
            let b = state
                .batches
                .get_mut(batch)
                .expect("decided on a known batch");
            b.record.state = *to;
            if to.is_done() {
                let submitted = rigmind_queue::time::parse_rfc3339(&b.record.submitted_at);
                b.record.finished_at = Some(rigmind_queue::time::to_rfc3339(now));
                b.record.elapsed_seconds =
                    submitted.map(|s| ((now - s).num_milliseconds() as f64 / 1000.0).max(0.0));
            } else {
                b.record.finished_at = None;
                b.record.elapsed_seconds = None;
            }
            b.refresh_live_counts(now);
            b.record.write(layout)?;
            b.dirty = false;
            let c = b.record.counts;
            let kind = if to.is_done() {
                "batch_done"
            } else {
                "batch_reopened"
            };
            logs.decision(
                &Decision::new(kind)
                    .kv("batch", batch)
                    .kv("plan", &b.record.name)
                    .kv("state", to.as_str())
                    .kv("complete", c.complete)
                    .kv("failed", c.failed)
                    .kv("total", c.total)
                    .opt("elapsed_seconds", b.record.elapsed_seconds)
                    .kv(
                        "reason",
                        match to {
                            BatchState::Complete => "every task completed",
                            BatchState::Failed => "nothing left to run; some tasks failed",
                            BatchState::Cancelled => "cancelled by the operator",
                            BatchState::Running => "a task was sent back to run",
                        },
                    ),
            )?;
            logs.event(
                kind,
                obj(
                    json!({"batch": batch, "state": to.as_str(), "complete": c.complete,
                           "failed": c.failed, "total": c.total}),
                ),
            )?;
        }
    }
    Ok(())
}

/// Moves a job that has not started (pending or queued; or already failed) into
/// `failed/`, edited by `edit`, and records it as failed. A queued one is moved under the claim lock so that no
/// worker starts it meanwhile; `None` when a worker claimed it first.
fn fail_unstarted(
    layout: &Layout,
    state: &mut BrainState,
    batch: &str,
    job: usize,
    now: DateTime<Utc>,
    sync: Sync,
    edit: impl FnOnce(&mut TaskFile),
) -> Result<Option<(TaskFile, JobStatus)>, QueueError> {
    let b = state.batches.get(batch).expect("decided on a known batch");
    let j = &b.jobs[job];
    let from = match j.status {
        JobStatus::Pending => layout.private_dir(batch).join(&j.file_name),
        JobStatus::Queued => layout.dir(TaskDir::Queue).join(&j.file_name),
        _ => layout.dir(TaskDir::Failed).join(&j.file_name),
    };
    let mut t = TaskFile::read(&from)?;
    let was = j.status;
    t.status = TaskStatus::Failed;
    edit(&mut t);
    t.finished_at
        .get_or_insert_with(|| rigmind_queue::time::to_rfc3339(now));
    let name = j.file_name.clone();
    let write = || -> Result<(), QueueError> {
        t.write_named(&layout.dir(TaskDir::Failed), &name, sync)?;
        if !from.starts_with(layout.dir(TaskDir::Failed)) {
            fsio::remove_if_exists(&from)?;
        }
        Ok(())
    };
    if was == JobStatus::Queued {
        let done = rigmind_queue::claim::QueueLock::open(layout)?.with(|| {
            if from.exists() {
                write().map(|()| true)
            } else {
                Ok(false)
            }
        })??;
        if !done {
            return Ok(None);
        }
    } else {
        write()?;
    }
    let b = state
        .batches
        .get_mut(batch)
        .expect("decided on a known batch");
    b.set_status(
        job,
        JobStatus::Failed(FailureInfo {
            kind: t.failure_kind.unwrap_or(FailureKind::DefinitionError),
            retry_count: t.retry_count,
            retries: t.retries,
        }),
    );
    Ok(Some((t, was)))
}

/// The decision line and event of a release.
pub(crate) fn log_release(
    logs: &Logs,
    batch: &str,
    t: &TaskFile,
    reason: &str,
) -> Result<(), QueueError> {
    logs.decision(
        &Decision::new("release")
            .kv("batch", batch)
            .kv("task", &t.name)
            .kv("plan_task_id", &t.plan_task_id)
            .kv("task_id", &t.task_id)
            .kv("class", t.task_class.map_or("none", |c| c.as_str()))
            .kv("reason", reason),
    )?;
    logs.event(
        "release",
        obj(json!({"batch": batch, "task": t.name, "task_id": t.task_id,
                   "file": t.file_name()})),
    )
}

/// Writes the records of batches whose counts changed since the last write.
pub fn flush_records(layout: &Layout, state: &mut BrainState) -> Result<(), QueueError> {
    let now = chrono::Utc::now();
    for b in state.batches.values_mut() {
        b.refresh_live_counts(now);
        if b.dirty {
            b.record.write(layout)?;
            b.dirty = false;
        }
    }
    Ok(())
}
