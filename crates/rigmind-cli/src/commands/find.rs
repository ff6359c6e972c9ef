//! Finding a task the way a person names it: by its id, its name (e.g.
//! `transcribe[ep1]`) or its file name, in some of the task directories. Shared by
//! `retry` and `logs`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use rigmind_queue::task::TaskFile;
use rigmind_queue::{fsio, Layout, TaskDir};

/// A task file that matched, where it was.
pub(super) struct Found {
    pub path: PathBuf,
    pub task: TaskFile,
}

/// Every task in `dirs` whose id, name or file name is `wanted`. Files that are not
/// tasks (or moved on while listed) are skipped.
pub(super) fn tasks_named(layout: &Layout, dirs: &[TaskDir], wanted: &str) -> Result<Vec<Found>> {
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| layout.dir(*d)).collect();
    tasks_named_in(&dirs, wanted)
}

/// The brain's folders of tasks not yet released (one per batch).
pub(super) fn private_dirs(layout: &Layout) -> Vec<PathBuf> {
    std::fs::read_dir(layout.private_root())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// [`tasks_named`] over any folders of task files.
pub(super) fn tasks_named_in(dirs: &[PathBuf], wanted: &str) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            continue;
        }
        for name in fsio::list_names(dir)? {
            let path = dir.join(&name);
            let Ok(task) = TaskFile::read(&path) else {
                continue;
            };
            let named = task.task_id == wanted || task.name == wanted || name == wanted;
            // A released task may still have its private copy: the first folder wins.
            if named && !out.iter().any(|f: &Found| f.task.task_id == task.task_id) {
                out.push(Found { path, task });
            }
        }
    }
    Ok(out)
}

/// What the person asked for, to word the errors: "failed " for `retry`'s failed
/// tasks; where it looked; what they would do with one ("retry").
pub(super) struct Asked<'a> {
    pub kind: &'a str,
    pub where_: String,
    pub verb: &'a str,
}

/// The one task `matches` holds, or an error that says there was none or lists
/// them so the person can give an id.
pub(super) fn the_one(mut matches: Vec<Found>, wanted: &str, asked: &Asked<'_>) -> Result<Found> {
    let Asked { kind, where_, verb } = asked;
    match matches.len() {
        0 => bail!("no {kind}task '{wanted}' in {where_} (give a task id, a name or a file name)"),
        1 => Ok(matches.remove(0)),
        n => {
            let list: Vec<String> = matches
                .iter()
                .map(|f| {
                    let t = &f.task;
                    format!("  {} (batch {}, id {})", t.name, t.batch_id, t.task_id)
                })
                .collect();
            bail!(
                "'{wanted}' names {n} {kind}tasks; {verb} one by its id:\n{}",
                list.join("\n")
            )
        }
    }
}
