//! Jobs whose task file vanished (someone ran `rm processing/<task>.json`): this
//! module owns telling a vanished file from one in flight, re-creating the task
//! from its plan, and filing it as lost so that the ordinary retry policy takes
//! over. A batch's total never shrinks: a job found in no directory is re-created
//! here, or its batch fails naming it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rigmind_config::RigConfig;
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::fsio::Sync;
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{FailureKind, TaskFile, TaskName, TaskStatus};
use rigmind_queue::{Layout, QueueError, TaskDir};
use serde_json::json;

use crate::observe::{failure_info, obj};
use crate::state::{BrainState, JobStatus};

/// How long a job's file must be missing from every directory, on two rescans,
/// before it is called lost: a file moved backwards (processing → queue) between
/// two listings is missed by one of them, never by two this far apart.
pub const VANISHED_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// The task files a batch's plan gives today, by task name. Their sequence numbers are today's numbering of the plan
/// (`rigmind_decide::tasks::claim_order`), which need not be the batch's: one
/// submitted by an earlier build, or whose plan's estimates were edited since, was
/// numbered otherwise; [`as_job`] gives a task the number its job has. `Err` names
/// why the plan cannot give them (gone, changed into something with errors).
pub fn plan_tasks(
    record: &BatchRecord,
    config: &RigConfig,
) -> Result<HashMap<String, TaskFile>, String> {
    let plan = crate::submit::load_plan(&record.plan_file, config).map_err(|e| {
        format!(
            "its plan {} cannot be read again: {}",
            record.plan_file.display(),
            e.to_string().lines().next().unwrap_or("")
        )
    })?;
    let now = rigmind_queue::time::now();
    Ok(
        crate::submit::task_files(&plan, &record.batch_id, record.seq_base, config, now)
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect(),
    )
}

/// `t` under the file name its job has (`file_name`): the written priority and
/// the sequence number the batch gave it, so that the re-created file is the job's.
pub fn as_job(mut t: TaskFile, file_name: &str) -> TaskFile {
    if let Some(tn) = TaskName::parse(file_name) {
        t.priority = 10 - tn.rank.min(9);
        t.seq = tn.seq;
    }
    t
}

/// A task re-created for a job whose file is gone: from its plan when the plan
/// still gives it, else a bare record that names it (no command: it cannot run
/// again, so it fails as lost without a retry).
fn recreated(
    from_plan: Option<&TaskFile>,
    batch: &str,
    file_name: &str,
    name: &str,
    task_id: &str,
) -> TaskFile {
    let mut t = match from_plan {
        Some(t) => t.clone(),
        None => {
            let tn = TaskName::parse(file_name);
            let mut t = TaskFile::new(batch, name, rigmind_types::TaskClass::Cpu);
            t.task_class = None;
            t.task_type = rigmind_types::TaskType::Unset;
            if let Some(tn) = tn {
                t.priority = 10 - tn.rank.min(9);
                t.seq = tn.seq;
            }
            t.retries = 0;
            t
        }
    };
    if !task_id.is_empty() {
        t.task_id = task_id.to_string();
    }
    t
}

/// Files a job whose file vanished as lost: `failed/` gets a record (from the
/// plan when it still gives the task), a `decision=lost` line is written, and
/// the job is failed in the state so the retry policy decides what follows (a
/// retry is spent as for a lost worker).
#[allow(clippy::too_many_arguments)]
pub fn file_lost(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    batch_id: &str,
    job: usize,
    from_plan: Option<&TaskFile>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    let Some(b) = state.batches.get_mut(batch_id) else {
        return Ok(());
    };
    let j = &b.jobs[job];
    let mut t = recreated(from_plan, batch_id, &j.file_name, &j.name, &j.task_id);
    t.retry_count = j.retry_count;
    // Whatever still runs of it dies first, so the retry never runs beside it.
    let killed = if j.task_id.is_empty() {
        0
    } else {
        rigmind_exec::kill_task_group(&j.task_id, None)
    };
    t.status = TaskStatus::Failed;
    t.failure_kind = Some(FailureKind::LostWorker);
    t.error = Some(reason.to_string());
    t.finished_at = Some(rigmind_queue::time::millis(now));
    let worker = j.holder.as_ref().and_then(|h| h.worker.clone());
    t.write_named(&layout.dir(TaskDir::Failed), &j.file_name, Sync::Dir)?;
    logs.decision(
        &Decision::new("lost")
            .kv("batch", batch_id)
            .kv("task", &t.name)
            .kv("plan_task_id", &t.plan_task_id)
            .opt("worker", worker.as_ref())
            .kv("killed_processes", killed)
            .kv("failure_kind", FailureKind::LostWorker)
            .kv(
                "recreated_from",
                if from_plan.is_some() { "plan" } else { "none" },
            )
            .kv("reason", reason),
    )?;
    logs.event(
        "lost",
        obj(
            json!({"batch": batch_id, "task": t.name, "task_id": t.task_id,
                   "worker": worker, "reason": reason}),
        ),
    )?;
    b.set_status(job, JobStatus::Failed(failure_info(&t)));
    Ok(())
}

/// Follows jobs that should have a file and have none anywhere (`seen` says what
/// the rescan listed): noted the first time, filed as lost once missing for
/// [`VANISHED_AFTER`] and still found nowhere.
pub fn follow_vanished(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    config: &RigConfig,
    seen: &dyn Fn(&str) -> bool,
) {
    let now = std::time::Instant::now();
    let mut due: Vec<(String, usize, &'static str)> = Vec::new();
    let mut missing_now = HashMap::new();
    for (id, b) in state.batches.iter().filter(|(_, b)| b.active()) {
        // Ready tasks of a submission still being written a chunk per turn are
        // `Queued` before their files exist: not missing, only not written yet.
        let unwritten: std::collections::HashSet<String> = state
            .queueing
            .get(id)
            .map(|q| q.iter().map(|t| t.file_name()).collect())
            .unwrap_or_default();
        for (i, j) in b.jobs.iter().enumerate() {
            if unwritten.contains(&j.file_name) {
                continue;
            }
            let from = match j.status {
                JobStatus::Pending => "private_tasks/",
                JobStatus::Queued => "queue/",
                JobStatus::Processing => "processing/",
                _ => continue,
            };
            if seen(&j.file_name) {
                continue;
            }
            let since = state.vanished.get(&j.file_name).copied().unwrap_or(now);
            missing_now.insert(j.file_name.clone(), since);
            if now.duration_since(since) >= VANISHED_AFTER
                && crate::observe::locate(layout, id, &j.file_name).is_none()
            {
                due.push((id.clone(), i, from));
            }
        }
    }
    state.vanished = missing_now;
    let mut plans: HashMap<String, Option<HashMap<String, TaskFile>>> = HashMap::new();
    for (id, i, from) in due {
        let Some(b) = state.batches.get(&id) else {
            continue;
        };
        let file_name = b.jobs[i].file_name.clone();
        let tasks = plans
            .entry(id.clone())
            .or_insert_with(|| plan_tasks(&b.record, config).ok());
        let from_plan = tasks
            .as_ref()
            .and_then(|m| m.get(&b.jobs[i].name))
            .map(|t| as_job(t.clone(), &file_name));
        let reason = format!("file removed from {from}");
        state.vanished.remove(&file_name);
        if let Err(e) = file_lost(
            layout,
            logs,
            state,
            &id,
            i,
            from_plan.as_ref(),
            &reason,
            Utc::now(),
        ) {
            tracing::warn!("{e}");
        }
    }
}
