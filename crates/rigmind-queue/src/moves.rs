//! Moves of a task file that change its content: the new state is written into the
//! target directory first, the old file removed second (the queue protocol's rule
//! for such moves, docs/architecture.md "Writes").

use std::path::{Path, PathBuf};

use crate::fsio::{self, Sync};
use crate::{Layout, QueueError, TaskDir, TaskFile};

/// Writes `task` into `dir` (under the name it has now), then removes it from
/// where it was. A crash between the
/// two leaves it in both places, which the brain resolves (the later state wins).
pub fn file_into(
    layout: &Layout,
    from: &Path,
    task: &TaskFile,
    dir: TaskDir,
    sync: Sync,
) -> Result<PathBuf, QueueError> {
    let name = from
        .file_name()
        .and_then(|n| n.to_str())
        .map_or_else(|| task.file_name(), str::to_string);
    let to = task.write_named(&layout.dir(dir), &name, sync)?;
    if to != from {
        fsio::remove_if_exists(from)?;
    }
    Ok(to)
}

/// Moves the queued task `name` back to `brain/private_tasks/<batch>/` under the
/// claim lock (so no worker takes it while it moves), and marks it pending there;
/// returns the task as it now is.
pub fn hold_back(layout: &Layout, batch: &str, name: &str) -> Result<TaskFile, QueueError> {
    let from = layout.dir(TaskDir::Queue).join(name);
    let to = layout.private_dir(batch).join(name);
    let mut lock = crate::claim::QueueLock::open(layout)?;
    lock.with(|| {
        std::fs::rename(&from, &to).map_err(|source| QueueError::Io {
            op: "hold back",
            path: from.clone(),
            source,
        })
    })??;
    let mut t = TaskFile::read(&to)?;
    t.status = crate::task::TaskStatus::Pending;
    t.write_named(&layout.private_dir(batch), name, Sync::Data)?;
    Ok(t)
}
