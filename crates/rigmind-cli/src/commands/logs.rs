//! `rigmind logs TASK [-f]`: a task's log (`logs/tasks/<id>.log`), found by the
//! task's id, name or file name; with `-f` it follows the log while the task waits
//! or runs, as `tail -F` would (a task the brain has not released yet has no log:
//! it waits for it), and stops once the task is done.

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rigmind_queue::{Layout, TaskDir};

use rigmind_queue::task::TaskFile;

use super::find::{private_dirs, tasks_named_in, the_one, Asked, Found};
use crate::args::LogsArgs;

/// How often `-f` looks for more output (`tail -f` looks once a second).
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// `rigmind logs`: exit 0 with the log printed, 1 when the task has none yet.
pub fn logs(a: LogsArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    let mut out = std::io::stdout().lock();
    // An id names its log directly: no task file needs reading.
    let direct = layout.task_log(&a.task);
    if !a.follow && is_id(&a.task) && direct.is_file() {
        copy_from(&direct, 0, &mut out)?;
        return Ok(0);
    }
    let found = find(&layout, &a.task)?;
    let task = &found.task;
    let log = log_of(&layout, task);
    if !log.is_file() && !a.follow {
        eprintln!(
            "{} has no log yet ({} does not exist): it has not started; -f waits for it",
            a.task,
            log.display()
        );
        return Ok(1);
    }
    let mut at = copy_from(&log, 0, &mut out)?;
    if a.follow {
        let name = found.path.file_name().unwrap_or_default();
        while live(&layout, &task.batch_id, name) {
            std::thread::sleep(FOLLOW_EVERY);
            at = copy_from(&log, at, &mut out)?;
        }
        // What it wrote between the last look and its end.
        copy_from(&log, at, &mut out)?;
    }
    Ok(0)
}

/// The one task `wanted` names (id, name or file name), wherever it is.
fn find(layout: &Layout, wanted: &str) -> Result<Found> {
    let matches = tasks_named_in(&every_dir(layout), wanted)?;
    let asked = Asked {
        kind: "",
        where_: layout.tasks_dir().display().to_string(),
        verb: "show",
    };
    the_one(matches, wanted, &asked)
}

/// Where a task's log is (or will be).
fn log_of(layout: &Layout, task: &TaskFile) -> PathBuf {
    task.log_path
        .clone()
        .unwrap_or_else(|| layout.task_log(&task.task_id))
}

/// The log of the task `wanted` names (it may not exist yet): an id names it
/// directly, anything else is looked up as `rigmind logs` does.
pub(super) fn log_file(layout: &Layout, wanted: &str) -> Result<PathBuf> {
    let direct = layout.task_log(wanted);
    if is_id(wanted) && direct.is_file() {
        return Ok(direct);
    }
    Ok(log_of(layout, &find(layout, wanted)?.task))
}

/// The last `max` bytes of a log (all of it when shorter; nothing when it does
/// not exist yet), for `rigmind top`'s log view.
pub(super) fn log_tail(path: &Path, max: u64) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    let mut out = Vec::new();
    copy_from(path, len.saturating_sub(max), &mut out)?;
    Ok(out)
}

/// A task id as the brain makes them (a UUID): the only names safe to join to a
/// path as they are.
fn is_id(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Copies `path` from byte `from` to `out`; returns where it ended. A log not
/// there yet has nothing to copy.
fn copy_from(path: &Path, from: u64, out: &mut impl Write) -> Result<u64> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(from),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    out.write_all(&buf)?;
    out.flush()?;
    Ok(from + buf.len() as u64)
}

/// The public task folders and the brain's unreleased ones.
fn every_dir(layout: &Layout) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = TaskDir::ALL.iter().map(|d| layout.dir(*d)).collect();
    dirs.extend(private_dirs(layout));
    dirs
}

/// Whether the task may still write to its log: its file (which keeps its name
/// wherever it moves) is waiting to be released, queued or running. Three stats,
/// however big the queue.
fn live(layout: &Layout, batch: &str, name: &OsStr) -> bool {
    [
        layout.private_dir(batch),
        layout.dir(TaskDir::Queue),
        layout.dir(TaskDir::Processing),
    ]
    .iter()
    .any(|d| d.join(name).exists())
}
