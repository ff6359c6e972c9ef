//! `rigmind retry`: failed tasks back to the queue, as a user's `mv` would.

use anyhow::{bail, Result};
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::fsio;
use rigmind_queue::task::{TaskFile, TaskName, TaskStatus};
use rigmind_queue::{FailureKind, Layout, TaskDir};

use super::find::{tasks_named, the_one, Asked, Found};
use crate::args::RetryArgs;

/// `rigmind retry TASK` or `rigmind retry --batch BATCH`
pub fn retry(a: RetryArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    match (&a.task, &a.batch) {
        (Some(task), _) => retry_one(&layout, task),
        (None, Some(batch)) => retry_batch(&layout, batch),
        (None, None) => bail!("give a task, or --batch BATCH"),
    }
}

fn retry_one(layout: &Layout, wanted: &str) -> Result<i32> {
    println!("{}", retry_task(layout, wanted)?);
    Ok(0)
}

/// Requeues the one failed task `wanted` names (id, name or file name); the
/// line saying so. `rigmind retry TASK` and `rigmind top`'s `r` both call it.
pub(super) fn retry_task(layout: &Layout, wanted: &str) -> Result<String> {
    let matches = tasks_named(layout, &[TaskDir::Failed], wanted)?;
    let asked = Asked {
        kind: "failed ",
        where_: layout.dir(TaskDir::Failed).display().to_string(),
        verb: "retry",
    };
    let Found { path, task: t } = the_one(matches, wanted, &asked)?;
    if t.failure_kind == Some(FailureKind::DependencyFailed) {
        bail!(
            "{} failed because a dependency failed ({}); retry that task and this one follows",
            t.name,
            t.error.as_deref().unwrap_or("dependency failed")
        );
    }
    if cancelled(layout, &t.batch_id) {
        bail!(
            "batch {} was cancelled; submit its plan again to rerun it",
            t.batch_id
        );
    }
    let (name, batch, id) = (t.name.clone(), t.batch_id.clone(), t.task_id.clone());
    requeue(layout, &path, t)?;
    Ok(format!("requeued {name} (batch {batch}, id {id})"))
}

/// Every failed task of a batch, but those that failed only because a dependency
/// did: they come back by themselves once their dependency runs again.
fn retry_batch(layout: &Layout, batch: &str) -> Result<i32> {
    if cancelled(layout, batch) {
        bail!("batch {batch} was cancelled; submit its plan again to rerun it");
    }
    let dir = layout.dir(TaskDir::Failed);
    let mut n = 0;
    for name in fsio::list_names(&dir)? {
        if TaskName::parse(&name).is_none_or(|t| t.batch != batch) {
            continue;
        }
        let path = dir.join(&name);
        let Ok(t) = TaskFile::read(&path) else {
            continue;
        };
        // A file the brain is moving right now no longer says failed: not ours.
        if t.status != TaskStatus::Failed
            || t.failure_kind == Some(FailureKind::DependencyFailed)
            || t.action.is_some()
        {
            continue;
        }
        requeue(layout, &path, t)?;
        n += 1;
    }
    if n == 0 {
        println!("batch {batch}: no failed task to retry");
        return Ok(1);
    }
    println!("batch {batch}: requeued {n} failed task(s)");
    Ok(0)
}

fn cancelled(layout: &Layout, batch: &str) -> bool {
    BatchRecord::read(&layout.batch_file(batch)).is_ok_and(|r| r.cancel_requested)
}

/// A failed task back into the queue, afresh: results cleared, automatic retries
/// allowed again. The batch record is the brain's to rewrite (writing it here could
/// undo the brain's own later write); `wait` sees the move meanwhile.
fn requeue(layout: &Layout, path: &std::path::Path, mut t: TaskFile) -> Result<()> {
    t.clear_run_results();
    t.status = TaskStatus::Queued;
    t.retry_count = 0;
    t.not_before = None;
    // A task failed by an older rigmind has no `released_by`: without it no
    // worker would claim it, and nothing else would stamp a known task's file.
    t.let_in();
    fsio::rewrite_and_move(path, &layout.dir(TaskDir::Queue), &t.to_bytes())?;
    Ok(())
}
