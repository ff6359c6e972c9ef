//! Requests to the brain: task files in the queue that the brain runs itself
//! (`executor: brain`), named so that no plan task can be taken for one. The CLI
//! writes them ([`write_execute_plan`]); the brain, the CLI and the claim tell them
//! from a batch's tasks by name ([`is_request`]).

use std::path::{Path, PathBuf};

use rigmind_types::{Executor, TaskClass};

use crate::fsio::Sync;
use crate::task::{TaskFile, TaskStatus};
use crate::{Layout, QueueError, TaskDir};

// What names a request and its `action` lives one level down (task files carry
// an `action`, the claim skips requests by name); its paths here keep working.
pub use crate::action::{is_request, BrainAction, CANCEL_BATCH, EXECUTE_PLAN, REQUEST_MARK};

/// Writes the task that asks the brain to submit `plan_file` as batch `batch_id`.
pub fn write_execute_plan(
    layout: &Layout,
    plan_file: &Path,
    batch_id: &str,
) -> Result<PathBuf, QueueError> {
    let mut t = TaskFile::new(batch_id, EXECUTE_PLAN, TaskClass::Cpu);
    t.name = format!("{REQUEST_MARK}{EXECUTE_PLAN}");
    t.plan_task_id = String::new();
    t.executor = Executor::Brain;
    t.action = Some(BrainAction::ExecutePlan);
    t.status = TaskStatus::Queued;
    t.plan_file = Some(std::path::absolute(plan_file).unwrap_or_else(|_| plan_file.to_path_buf()));
    t.write_to(&layout.dir(TaskDir::Queue), Sync::Data)
}

/// A cancel request of older versions (a `cancel_batch` task in the queue): turned
/// into the marker that `rigmind cancel` writes now, then filed as complete. The
/// marker is acted on at the top of the next turn, as any other.
pub fn convert_cancel_request(layout: &Layout, path: &Path, mut task: TaskFile) {
    task.worker_id = Some("brain".into());
    task.started_at = Some(crate::time::now());
    let target = task.batch_id.clone();
    let dir = if crate::cancel::is_cancelled(layout, &target) {
        TaskDir::Complete
    } else {
        match crate::cancel::write_marker(layout, &target, "a cancel_batch request file") {
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
    task.finished_at = Some(crate::time::now());
    if let Err(e) = crate::file_into(layout, path, &task, dir, Sync::Data) {
        tracing::warn!("{e}");
    }
}
