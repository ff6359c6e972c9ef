//! `rigmind retry TASK`: a failed task back to the queue, as a user's `mv` would.

use anyhow::{bail, Result};
use rigmind_queue::batch::{BatchRecord, BatchState};
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::task::{TaskFile, TaskStatus};
use rigmind_queue::{Layout, TaskDir};

use crate::args::RetryArgs;

/// `rigmind retry TASK`
pub fn retry(a: RetryArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    let dir = layout.dir(TaskDir::Failed);
    let mut matches = Vec::new();
    for name in fsio::list_names(&dir)? {
        let path = dir.join(&name);
        let Ok(t) = TaskFile::read(&path) else {
            continue;
        };
        if t.task_id == a.task || t.name == a.task || name == a.task {
            matches.push((path, t));
        }
    }
    let (path, mut t) = match matches.len() {
        0 => bail!(
            "no failed task '{}' in {} (give a task id, a name or a file name)",
            a.task,
            dir.display()
        ),
        1 => matches.remove(0),
        _ => {
            let list: Vec<String> = matches
                .iter()
                .map(|(_, t)| format!("  {} (batch {}, id {})", t.name, t.batch_id, t.task_id))
                .collect();
            bail!(
                "'{}' names {} failed tasks; retry one by its id:\n{}",
                a.task,
                matches.len(),
                list.join("\n")
            )
        }
    };
    if t.failure_kind == Some(rigmind_queue::FailureKind::DependencyFailed) {
        bail!(
            "{} failed because a dependency failed ({}); retry that task and this one follows",
            t.name,
            t.error.as_deref().unwrap_or("dependency failed")
        );
    }
    // A hand retry starts afresh: results cleared, automatic retries allowed again.
    t.clear_run_results();
    t.status = TaskStatus::Queued;
    t.retry_count = 0;
    t.not_before = None;
    t.write_to(&layout.dir(TaskDir::Queue), Sync::Data)?;
    fsio::remove_if_exists(&path)?;
    // The batch runs again; the brain confirms this when it sees the task.
    if let Ok(mut record) = BatchRecord::read(&layout.batch_file(&t.batch_id)) {
        record.state = BatchState::Running;
        record.finished_at = None;
        record.elapsed_seconds = None;
        let _ = record.write(&layout);
    }
    println!(
        "requeued {} (batch {}, id {})",
        t.name, t.batch_id, t.task_id
    );
    Ok(0)
}
