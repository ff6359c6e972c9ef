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
