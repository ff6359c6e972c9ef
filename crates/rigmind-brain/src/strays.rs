//! Files in the task directories that are no known task's: hand-written tasks
//! (logged, then left for the workers), copies of completed tasks and anything
//! that is not a task at all (moved aside).

use std::path::Path;

use rigmind_queue::claim::QueueIndex;
use rigmind_queue::fsio;
use rigmind_queue::logs::Logs;
use rigmind_queue::task::{TaskFile, TaskStatus};
use rigmind_queue::{Layout, TaskDir};
use rigmind_types::Executor;

use crate::state::{BrainState, JobStatus};

/// Whether `name` is the file of a task of a known batch.
pub(crate) fn is_known_job(state: &BrainState, name: &str) -> bool {
    rigmind_queue::task::TaskName::parse(name).is_some_and(|tn| {
        state
            .batches
            .get(&tn.batch)
            .is_some_and(|b| b.by_file.contains_key(name))
    })
}

/// A file in a task directory that is not a known task's: a hand-written task
/// (left for the workers) or something that is not a task at all (moved aside).
///
/// What was judged and left is remembered by (size, mtime, inode) and not read
/// again until it changes: a large file sitting in `complete/` would otherwise be
/// read in full on every rescan. A file past the size limit is never read: in
/// `queue/` it is moved aside (no worker may take it), elsewhere it is skipped
/// with one warning.
pub(crate) fn judge_stray(layout: &Layout, logs: &Logs, state: &mut BrainState, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        state.judged.remove(path);
        return;
    };
    let stamp = (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino());
    if state.judged.get(path) == Some(&stamp) {
        return;
    }
    let in_queue = path.parent() == Some(layout.dir(TaskDir::Queue).as_path());
    if meta.is_file() && meta.len() > fsio::MAX_READ_BYTES && !in_queue {
        tracing::warn!(
            "{}: {}; skipped (not read)",
            path.display(),
            fsio::too_big(meta.len())
        );
        state.judged.insert(path.to_path_buf(), stamp);
        return;
    }
    let now = std::time::SystemTime::now();
    match rigmind_queue::quarantine::judge(path, now) {
        Some(reason) => {
            state.judged.remove(path);
            crate::observe::reject(layout, logs, state, path, &reason);
        }
        // Judged good, unless still too fresh to judge.
        None => {
            let settled = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                >= Some(rigmind_queue::quarantine::SETTLE);
            if settled {
                state.judged.insert(path.to_path_buf(), stamp);
            }
        }
    }
}

/// A hand-placed queue file that is no known task's. A copy of a task that has
/// completed (same `task_id`) is moved aside, never run again. Any other is logged
/// with its owner (`decision=hand_task`) when the brain did not let it in, and only
/// then let in (`released_by`), so that no worker runs it unlogged; one that does
/// not say `queued` has no dependencies the brain knows of, so it is accepted as it
/// is.
pub(crate) fn accept_stray(
    layout: &Layout,
    logs: &Logs,
    state: &BrainState,
    index: &mut QueueIndex,
    name: &str,
) {
    let Some(e) = index.get(name) else { return };
    // A queued one let in is the workers' already (and is not read again here on
    // every rescan); a copy of a completed task still says `complete`.
    if (e.status == TaskStatus::Queued && e.released) || e.executor != Executor::Worker {
        return;
    }
    let path = layout.dir(TaskDir::Queue).join(name);
    let Ok(mut t) = TaskFile::read(&path) else {
        return;
    };
    if let Some(reason) = rigmind_queue::access::refusal_at(layout, &path) {
        if crate::observe::quarantine(layout, logs, &path, &reason).is_some() {
            index.forget(name);
        }
        return;
    }
    if let Some(done) = completed_file(state, &t) {
        let reason = format!(
            "a copy of task {} ({}), which is complete as complete/{done}; not run again",
            t.task_id, t.name
        );
        if crate::observe::quarantine(layout, logs, &path, &reason).is_some() {
            index.forget(name);
        }
        return;
    }
    if t.task_class.is_none() {
        return; // fix_unclassified's, which logs it as a hand task too
    }
    crate::observe::note_hand_task(logs, &path, &mut t);
    if t.status != TaskStatus::Queued {
        crate::observe::accept(logs, &path, &t);
    } else if let Err(e) = fsio::write_atomic(&path, &t.to_bytes(), fsio::Sync::Data) {
        tracing::warn!("{e}");
    }
}

/// The `complete/` file of the known task that `t` copies (same task id, or the
/// same name in the same batch: names are unique in a batch, and a completed
/// task read back at a start is known by its name alone), if it has completed.
fn completed_file(state: &BrainState, t: &TaskFile) -> Option<String> {
    state
        .batches
        .get(&t.batch_id)?
        .jobs
        .iter()
        .find(|j| {
            j.status == JobStatus::Complete
                && (j.name == t.name || (!j.task_id.is_empty() && j.task_id == t.task_id))
        })
        .map(|j| j.file_name.clone())
}

/// Whether the queue file `name` is a worker task without a class (one for
/// `fix_unclassified`).
pub(crate) fn unclassified(index: &QueueIndex, name: &str) -> bool {
    index
        .get(name)
        .is_some_and(|e| e.task_class.is_none() && e.executor == Executor::Worker)
}
