//! Carrying decisions out on the files, and keeping the state in step.
//!
//! Each action reads the task where it is, writes it where it goes (whole file,
//! atomically), removes the old copy, then updates the state exactly as a later
//! observation of the files would: through [`effect::apply`] of the decision core,
//! the one place that says what an action does to the state (the simulator calls
//! it too), or, where the effect depends on the file (a failure's retries), here.
//! One decision line per action. [`apply`] only dispatches: each [`Action`]
//! variant has its own function below.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rigmind_decide::effect;
use rigmind_queue::batch::BatchState;
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{FailureKind, TaskFile, TaskStatus};
use rigmind_queue::{Layout, QueueError, TaskDir};
use serde_json::json;

use crate::observe::obj;
use crate::policy::Action;
use crate::state::{Batch, BrainState, FailureInfo, JobStatus};

/// One action being carried out: where the files are, where the decisions go, the
/// action and the moment it was decided at, and the state it keeps in step.
struct Apply<'a> {
    layout: &'a Layout,
    logs: &'a Logs,
    action: &'a Action,
    now: DateTime<Utc>,
    state: &'a mut BrainState,
    released: &'a mut Vec<Released>,
}

/// A task a release wrote into `queue/` unflushed, its private copy still in
/// place: the loop hands it to the flusher, which flushes it before the private
/// copy goes (see [`crate::flush`], "Releases"), and puts it into its own queue
/// index without reading it back.
#[derive(Debug)]
pub struct Released {
    pub batch: String,
    pub file_name: String,
    pub task: TaskFile,
    /// The queue file as written: its event is an echo while it still is
    /// (`None`: unknown, its event is read back).
    pub stamp: Option<rigmind_queue::fsio::FileStamp>,
}

/// What carrying out one action gives.
type Done = Result<(), QueueError>;

/// Applies one action. An error leaves the files as they were (the task stays where
/// it is) and the action is decided again on the next round. A release adds its
/// task to `released`, for the caller to hand on.
pub fn apply(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    (action, now): (&Action, DateTime<Utc>),
    released: &mut Vec<Released>,
) -> Result<(), QueueError> {
    let mut cx = Apply {
        layout,
        logs,
        action,
        now,
        state,
        released,
    };
    match action {
        Action::Release { batch, job, reason } => cx.release(batch, *job, reason),
        Action::Retry {
            batch,
            job,
            not_before,
            reason,
        } => cx.retry(batch, *job, *not_before, reason),
        Action::Escalate { batch, job, step } => cx.escalate(batch, *job, step),
        Action::Fail { batch, job, reason } => cx.fail(batch, *job, reason),
        Action::Cascade { batch, job, cause } => cx.cascade(batch, *job, *cause),
        Action::Revive { batch, job, cause } => cx.revive(batch, *job, *cause),
        Action::Lost { batch, job, reason } => cx.lost(batch, *job, reason),
        Action::Cancel { batch, job } => cx.cancel(batch, *job),
        Action::Unrunnable { batch, job, reason } => cx.unrunnable(batch, *job, reason),
        Action::Kill { batch, job } => cx.kill(batch, *job),
        Action::HoldBack { batch, job } => cx.hold_back(batch, *job),
        Action::Settle { batch, state: to } => cx.settle(batch, *to),
    }
}

/// The batch an action was decided on (the policy decides only on known batches).
fn batch_mut<'s>(state: &'s mut BrainState, batch: &str) -> &'s mut Batch {
    state
        .batches
        .get_mut(batch)
        .expect("decided on a known batch")
}

/// A decision line about one task, with the keys every such line starts with.
fn task_decision(kind: &'static str, batch: &str, name: &str, plan_task_id: &str) -> Decision {
    Decision::new(kind)
        .kv("batch", batch)
        .kv("task", name)
        .kv("plan_task_id", plan_task_id)
}

/// The job status of `t` once filed in `failed/` with `kind`.
pub(crate) fn failed_status(kind: FailureKind, t: &TaskFile) -> JobStatus {
    JobStatus::Failed(FailureInfo {
        kind,
        retry_count: t.retry_count,
        retries: t.retries,
        tier: t.tier,
        tier_failures: t.tier_failures,
    })
}

/// Appends the brain's kill line (`why`) to the task's log, if it has one.
fn note_kill(t: &TaskFile, why: &str, now: DateTime<Utc>) {
    if let Some(log) = &t.log_path {
        let at = rigmind_queue::time::to_rfc3339(now);
        rigmind_exec::append_note(log, &rigmind_exec::kill_line(&at, why));
    }
}

impl Apply<'_> {
    /// A pending job whose dependencies completed goes into the queue.
    /// Written unflushed, its temporary in the (unwatched) private directory so
    /// that `queue/` sees one event; the private copy stays until the flusher has
    /// flushed the queue copy (one flush per task on the loop made a fan-out of
    /// 100,000 behind one task cost minutes).
    fn release(&mut self, batch: &str, job: usize, reason: &str) -> Done {
        let name = batch_mut(self.state, batch).jobs[job].file_name.clone();
        let private = self.layout.private_dir(batch);
        let mut t = TaskFile::read(&private.join(&name))?;
        t.status = TaskStatus::Queued;
        t.let_in();
        let (_, stamp) = t.write_named_via(
            &self.layout.dir(TaskDir::Queue),
            &name,
            &private,
            Sync::None,
        )?;
        log_release(self.logs, batch, (&t, &name), reason)?;
        self.effect();
        self.released.push(Released {
            batch: batch.to_string(),
            file_name: name,
            task: t,
            stamp,
        });
        Ok(())
    }

    /// Reads job `job`'s task file from `dir`; gives its path there too.
    fn read_job(
        &self,
        batch: &str,
        job: usize,
        dir: TaskDir,
    ) -> Result<(PathBuf, TaskFile), QueueError> {
        let b = self
            .state
            .batches
            .get(batch)
            .expect("decided on a known batch");
        let from = self.layout.dir(dir).join(&b.jobs[job].file_name);
        let t = TaskFile::read(&from)?;
        Ok((from, t))
    }

    /// Sends `t`, read from `from` in `failed/` and set up for its next run, back
    /// into the queue.
    fn requeue(&self, from: &Path, t: &mut TaskFile) -> Done {
        t.status = TaskStatus::Queued;
        t.let_in();
        fsio::rewrite_and_move(from, &self.layout.dir(TaskDir::Queue), &t.to_bytes())?;
        Ok(())
    }

    /// The state follows the action, as the decision core says it does.
    fn effect(&mut self) {
        let pure = effect::apply(self.state, self.action, self.now);
        debug_assert!(pure, "{:?} has a state effect of its own", self.action);
    }

    /// A failed job with retries left goes back into the queue, not before `not_before`.
    fn retry(&mut self, batch: &str, job: usize, not_before: DateTime<Utc>, reason: &str) -> Done {
        let (from, mut t) = self.read_job(batch, job, TaskDir::Failed)?;
        let previous = t.error.clone();
        let error = previous.clone();
        t.clear_run_results();
        t.retry_count += 1;
        t.not_before = Some(rigmind_queue::time::millis(not_before));
        if let Some(p) = previous {
            t.extra.insert("last_error".into(), json!(p));
        }
        self.requeue(&from, &mut t)?;
        self.logs.decision(
            &task_decision("retry", batch, &t.name, &t.plan_task_id)
                .kv("task_id", &t.task_id)
                .kv("retry", t.retry_count)
                .kv(
                    "not_before",
                    t.not_before
                        .map(rigmind_queue::time::to_rfc3339)
                        .unwrap_or_default(),
                )
                .opt("error", error.as_ref())
                .kv("reason", reason),
        )?;
        self.logs.event(
            "retry",
            obj(json!({"batch": batch, "task": t.name, "task_id": t.task_id,
                   "retry": t.retry_count, "not_before": t.not_before})),
        )?;
        self.effect();
        Ok(())
    }

    /// A failed llm task moves up a tier: its attempt is kept as an earlier one
    /// (model, endpoint, error, answer), and it goes back into the queue at once
    /// with the next tier's model and the endpoint that serves it.
    fn escalate(&mut self, batch: &str, job: usize, step: &rigmind_decide::policy::Climb) -> Done {
        let (from_model, to, tier) = (step.from.as_str(), step.to.as_str(), step.tier);
        let (endpoint, reason) = (step.endpoint.as_deref(), step.reason.as_str());
        let (from, mut t) = self.read_job(batch, job, TaskDir::Failed)?;
        t.earlier_attempts
            .push(rigmind_queue::task::EarlierAttempt {
                tier: t.tier.unwrap_or(tier.saturating_sub(1)),
                model: t.model.clone().unwrap_or_else(|| from_model.to_string()),
                endpoint: t.endpoint.clone(),
                error: t.error.clone().unwrap_or_default(),
                output: t.failed_output.clone(),
            });
        t.clear_run_results();
        t.model = Some(to.to_string());
        t.tier = Some(tier);
        t.tier_failures = 0;
        t.endpoint = endpoint.map(str::to_string);
        t.not_before = None;
        self.requeue(&from, &mut t)?;
        self.logs.decision(
            &task_decision("escalate", batch, &t.name, &t.plan_task_id)
                .kv("task_id", &t.task_id)
                .kv("from", from_model)
                .kv("to", to)
                .kv("tier", tier)
                .opt("endpoint", endpoint)
                .kv("reason", reason),
        )?;
        self.logs.event(
            "escalate",
            obj(json!({"batch": batch, "task": t.name, "task_id": t.task_id,
                   "from": from_model, "to": to, "tier": tier, "endpoint": endpoint})),
        )?;
        let b = batch_mut(self.state, batch);
        b.jobs[job].work = rigmind_decide::state::JobWork::of(&t);
        b.set_status(job, JobStatus::Queued);
        Ok(())
    }

    /// A failure is final: logged, and no longer among the unhandled ones.
    fn fail(&mut self, batch: &str, job: usize, reason: &str) -> Done {
        let b = batch_mut(self.state, batch);
        let j = &b.jobs[job];
        let t = TaskFile::read(&self.layout.dir(TaskDir::Failed).join(&j.file_name)).ok();
        let kind = match j.status {
            JobStatus::Failed(f) => f.kind,
            _ => FailureKind::WorkerFailure,
        };
        let why = t
            .as_ref()
            .and_then(|t| t.error.clone())
            .map_or(reason.to_string(), |e| format!("{e}; {reason}"));
        self.logs.decision(
            &task_decision("fail", batch, &j.name, &j.plan_task_id)
                .opt("worker", t.as_ref().and_then(|t| t.worker_id.clone()))
                .opt(
                    "elapsed_seconds",
                    t.as_ref().and_then(|t| t.elapsed_seconds),
                )
                .kv("failure_kind", kind)
                .kv("reason", why),
        )?;
        self.logs.event(
            "fail",
            obj(json!({"batch": batch, "task": j.name, "task_id": j.task_id,
                   "failure_kind": kind.as_str()})),
        )?;
        self.effect();
        Ok(())
    }

    /// A pending job whose dependency `cause` failed for good fails with it.
    fn cascade(&mut self, batch: &str, job: usize, cause: usize) -> Done {
        let b = batch_mut(self.state, batch);
        let cause_name = b.jobs[cause].name.clone();
        let from = self.layout.private_dir(batch).join(&b.jobs[job].file_name);
        let mut t = TaskFile::read(&from)?;
        let error = format!("dependency '{cause_name}' failed");
        let kind = FailureKind::DependencyFailed;
        file_failed(
            self.layout,
            self.now,
            &mut t,
            &from,
            (kind, error),
            Sync::Data,
        )?;
        self.logs.decision(
            &task_decision("cascade", batch, &t.name, &t.plan_task_id)
                .kv("failure_kind", FailureKind::DependencyFailed)
                .kv("reason", format!("dependency '{cause_name}' failed")),
        )?;
        self.logs.event(
            "cascade",
            obj(json!({"batch": batch, "task": t.name, "task_id": t.task_id,
                   "cause": cause_name})),
        )?;
        b.set_status(job, failed_status(FailureKind::DependencyFailed, &t));
        b.unhandled_failures.remove(&job);
        Ok(())
    }

    /// A job that failed only because `cause` failed goes back to pending: `cause`
    /// runs again.
    fn revive(&mut self, batch: &str, job: usize, cause: usize) -> Done {
        let cause_name = batch_mut(self.state, batch).jobs[cause].name.clone();
        let (from, mut t) = self.read_job(batch, job, TaskDir::Failed)?;
        t.clear_run_results();
        t.status = TaskStatus::Pending;
        fsio::rewrite_and_move(&from, &self.layout.private_dir(batch), &t.to_bytes())?;
        let reason = format!("dependency '{cause_name}' is running again");
        let decision = task_decision("revive", batch, &t.name, &t.plan_task_id);
        self.logs.decision(&decision.kv("reason", reason))?;
        self.effect();
        Ok(())
    }

    /// A running job whose worker is gone: its processes are killed and it is filed
    /// as `lost_worker`.
    fn lost(&mut self, batch: &str, job: usize, reason: &str) -> Done {
        let (from, mut t) = self.read_job(batch, job, TaskDir::Processing)?;
        // Its commands die first, so the retry can never run beside them.
        let killed = rigmind_exec::kill_task_group(&t.task_id, t.cgroup.as_deref());
        if killed > 0 {
            let why = format!("{reason} (SIGKILL to all its processes, by the brain)");
            note_kill(&t, &why, self.now);
        }
        let failure = (FailureKind::LostWorker, reason.to_string());
        file_failed(self.layout, self.now, &mut t, &from, failure, Sync::Dir)?;
        self.logs.decision(
            &task_decision("lost", batch, &t.name, &t.plan_task_id)
                .opt("worker", t.worker_id.as_ref())
                .kv("killed_processes", killed)
                .kv("failure_kind", FailureKind::LostWorker)
                .kv("reason", reason),
        )?;
        self.logs.event(
            "lost",
            obj(json!({"batch": batch, "task": t.name, "task_id": t.task_id,
                   "worker": t.worker_id, "killed_processes": killed})),
        )?;
        let b = batch_mut(self.state, batch);
        b.set_status(job, failed_status(FailureKind::LostWorker, &t));
        Ok(())
    }

    /// A job of a cancelled batch that has not started is filed as cancelled.
    fn cancel(&mut self, batch: &str, job: usize) -> Done {
        // Not flushed: the marker in tasks/cancel/ is the durable truth. A file
        // lost or emptied by a power cut is found again as queued (and not
        // started: the marker) or as ruined, and cancelled once more.
        let Some((t, was)) = self.fail_unstarted(batch, job, Sync::None, |t| {
            t.failure_kind = Some(FailureKind::Cancelled);
            t.error = Some(match t.error.take() {
                Some(e) => format!("cancelled by the operator (it had failed: {e})"),
                None => "cancelled by the operator".to_string(),
            });
        })?
        else {
            return Ok(());
        };
        self.logs.decision(
            &task_decision("cancel", batch, &t.name, &t.plan_task_id)
                .kv("failure_kind", FailureKind::Cancelled)
                .kv(
                    "reason",
                    format!("batch cancelled while the task was {}", was.as_str()),
                ),
        )?;
        batch_mut(self.state, batch).unhandled_failures.remove(&job);
        Ok(())
    }

    /// A job that can never run fails as a definition error.
    fn unrunnable(&mut self, batch: &str, job: usize, reason: &str) -> Done {
        // Left among the unhandled failures: the usual path fails it for good
        // and its dependents with it.
        self.fail_unstarted(batch, job, Sync::Data, |t| {
            t.failure_kind = Some(FailureKind::DefinitionError);
            t.error = Some(reason.to_string());
        })?;
        Ok(())
    }

    /// A running job of a cancelled batch: its processes are killed (its runner files
    /// the failure).
    fn kill(&mut self, batch: &str, job: usize) -> Done {
        let (_, t) = self.read_job(batch, job, TaskDir::Processing)?;
        let killed = rigmind_exec::kill_task_group(&t.task_id, t.cgroup.as_deref());
        note_kill(
            &t,
            "its batch was cancelled (SIGKILL to all its processes, by the brain)",
            self.now,
        );
        self.effect();
        self.logs.decision(
            &task_decision("kill", batch, &t.name, &t.plan_task_id)
                .opt("worker", t.worker_id.as_ref())
                .kv("killed_processes", killed)
                .kv("reason", "batch cancelled while the task ran"),
        )?;
        Ok(())
    }

    /// A job put into the queue by hand before its dependencies completed goes back
    /// to `private_tasks/`.
    fn hold_back(&mut self, batch: &str, job: usize) -> Done {
        let b = batch_mut(self.state, batch);
        let name = b.jobs[job].file_name.clone();
        let t = rigmind_queue::moves::hold_back(self.layout, batch, &name)?;
        let reason = format!(
            "put in the queue with {} dependencies not complete",
            b.jobs[job].unmet
        );
        let decision = task_decision("hold_back", batch, &t.name, &t.plan_task_id);
        self.logs.decision(&decision.kv("reason", reason))?;
        self.effect();
        Ok(())
    }

    /// A batch reaches state `to` (done, or running again): its record is written at
    /// once.
    fn settle(&mut self, batch: &str, to: BatchState) -> Done {
        self.effect();
        let b = batch_mut(self.state, batch);
        // Due until written: a log that cannot be written must not leave the
        // settled record unwritten (the policy will not settle it again).
        b.dirty = true;
        let c = b.record.counts;
        let kind = if to.is_done() {
            "batch_done"
        } else {
            "batch_reopened"
        };
        self.logs.decision(
            &Decision::new(kind)
                .kv("batch", batch)
                .kv("plan", &b.record.name)
                .kv("state", to.as_str())
                .kv("complete", c.complete)
                .kv("failed", c.failed)
                .kv("total", c.total)
                .opt("elapsed_seconds", b.record.elapsed_seconds)
                .kv("reason", settle_reason(to)),
        )?;
        self.logs.event(
            kind,
            obj(
                json!({"batch": batch, "state": to.as_str(), "complete": c.complete,
                   "failed": c.failed, "total": c.total}),
            ),
        )?;
        // The lines go out before the record that `wait` and `cancel` return on,
        // so that whoever sees the record settled finds its line in the log (lines
        // of a bulk release are otherwise gathered until the end of the turn). A
        // record that then fails to be written stays due for the next flush of
        // records.
        self.logs.flush()?;
        let b = batch_mut(self.state, batch);
        b.record.write(self.layout)?;
        b.dirty = false;
        Ok(())
    }

    /// Moves a job that has not started (pending or queued; or already failed) into
    /// `failed/`, edited by `edit`, and records it as failed. A queued one is moved under the claim lock so that no
    /// worker starts it meanwhile; `None` when a worker claimed it first.
    fn fail_unstarted(
        &mut self,
        batch: &str,
        job: usize,
        sync: Sync,
        edit: impl FnOnce(&mut TaskFile),
    ) -> Result<Option<(TaskFile, JobStatus)>, QueueError> {
        let (layout, now, state) = (self.layout, self.now, &mut *self.state);
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
            .get_or_insert_with(|| rigmind_queue::time::millis(now));
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
        let kind = t.failure_kind.unwrap_or(FailureKind::DefinitionError);
        batch_mut(self.state, batch).set_status(job, failed_status(kind, &t));
        Ok(Some((t, was)))
    }
}

/// Files `t`, read from `from`, in `failed/` under the same file name as failed
/// with `(kind, error)` at `now`, then removes `from`.
fn file_failed(
    layout: &Layout,
    now: DateTime<Utc>,
    t: &mut TaskFile,
    from: &Path,
    (kind, error): (FailureKind, String),
    sync: Sync,
) -> Done {
    t.status = TaskStatus::Failed;
    t.failure_kind = Some(kind);
    t.error = Some(error);
    t.finished_at = Some(rigmind_queue::time::millis(now));
    let name = from
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    t.write_named(&layout.dir(TaskDir::Failed), name, sync)?;
    fsio::remove_if_exists(from)
}

/// Why a batch reached state `to`, for its decision line.
fn settle_reason(to: BatchState) -> &'static str {
    match to {
        BatchState::Complete => "every task completed",
        BatchState::Failed => "nothing left to run; some tasks failed",
        BatchState::Cancelled => "cancelled by the operator",
        BatchState::Running => "a task was sent back to run",
    }
}

/// The decision line and event of a release.
pub(crate) fn log_release(
    logs: &Logs,
    batch: &str,
    (t, file): (&TaskFile, &str),
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
    logs.event_record(&ReleaseEvent {
        batch,
        event: "release",
        file,
        task: &t.name,
        task_id: &t.task_id,
        ts: rigmind_queue::time::now_rfc3339(),
    })
}

/// The events log's line of a release, written for each task of a bulk release
/// (fields in the alphabetical order of every event line).
#[derive(serde::Serialize)]
struct ReleaseEvent<'a> {
    batch: &'a str,
    event: &'static str,
    file: &'a str,
    task: &'a str,
    task_id: &'a str,
    ts: String,
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
