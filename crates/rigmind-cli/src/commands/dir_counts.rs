//! How `rigmind status` counts a task directory without reading every file in it
//! (issue 13: a 100,000-task batch must not make each `status` read 100,000 files).
//!
//! The totals come from the listing alone: every entry that is not a dot-name is a
//! file, and a file name says its batch and task name (`TaskName`). The class is
//! not in the name, so the files are grouped by batch and plan task (the task name
//! before its `[item]`) and one file of each group is read: the items of a plan
//! task share their class, written once in the plan. A call reads one file per
//! (batch, plan task) of the directory, whatever the number of items.
//!
//! `processing/` is the exception: it holds a few tasks per worker, and each of
//! them is read, for its exact class and to find tasks held by a dead worker.

use std::collections::BTreeMap;
use std::path::Path;

use rigmind_queue::task::{TaskFile, TaskName};
use rigmind_queue::{fsio, Layout, LifeLock, TaskDir};

/// How many files of a group are tried before its class is given up as unknown
/// (a ruined file waits in `queue/` until the brain moves it to `rejected/`).
const SAMPLE_TRIES: usize = 3;

/// A task in `processing/` whose worker is dead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LostTask {
    pub task: String,
    pub batch: String,
    pub worker: String,
}

/// One directory, counted.
#[derive(Debug, Default)]
pub struct DirCount {
    /// class -> files; `invalid` for files that are not tasks, `unclassified` for
    /// tasks without a class.
    pub by_class: BTreeMap<String, usize>,
    /// Requests to the brain (`@execute_plan`, ...): not tasks.
    pub requests: usize,
    /// Tasks in `processing/` held by a dead worker.
    pub lost: Vec<LostTask>,
}

/// Counts directory `d` of the root: from its names, reading one file per
/// (batch, plan task), or every file of `processing/`.
pub fn count(layout: &Layout, d: TaskDir) -> Result<DirCount, rigmind_queue::QueueError> {
    let dir = layout.dir(d);
    let mut out = DirCount::default();
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for name in fsio::list_names(&dir)? {
        match TaskName::parse(&name) {
            Some(n) if rigmind_queue::requests::is_request(&n.name) => out.requests += 1,
            // Read each file here: exact, and few (about two per worker).
            _ if d == TaskDir::Processing => {
                let class = read_processing(layout, &dir.join(&name), &mut out.lost);
                *out.by_class.entry(class).or_default() += 1;
            }
            Some(n) => {
                let key = (n.batch, plan_task_of(&n.name).to_string());
                groups.entry(key).or_default().push(name);
            }
            // Not a task file's name: a file of its own (hand-dropped, rare).
            None => groups
                .entry((String::new(), name.clone()))
                .or_default()
                .push(name),
        }
    }
    for names in groups.values() {
        *out.by_class.entry(sample_class(&dir, names)).or_default() += names.len();
    }
    Ok(out)
}

/// The plan task a task name belongs to: `transcribe[ep1]` -> `transcribe`.
pub fn plan_task_of(name: &str) -> &str {
    name.split_once('[').map_or(name, |(base, _)| base)
}

/// The class of a group of files of one plan task: that of the first of them that
/// reads as a task (at most [`SAMPLE_TRIES`] are tried), else `invalid`.
fn sample_class(dir: &Path, names: &[String]) -> String {
    names
        .iter()
        .take(SAMPLE_TRIES)
        .find_map(|n| TaskFile::read(&dir.join(n)).ok())
        .map_or("invalid".into(), |t| class_of(&t))
}

fn class_of(t: &TaskFile) -> String {
    t.task_class
        .map_or("unclassified".into(), |c| c.to_string())
}

/// Reads a file of `processing/`: its class, and a lost task when its worker's
/// life lock is free.
fn read_processing(layout: &Layout, path: &Path, lost: &mut Vec<LostTask>) -> String {
    let Ok(t) = TaskFile::read(path) else {
        return "invalid".into();
    };
    if let Some(w) = &t.worker_id {
        if w != "brain" && LifeLock::is_held(&layout.worker_lock(w)) == Some(false) {
            lost.push(LostTask {
                task: t.name.clone(),
                batch: t.batch_id.clone(),
                worker: w.clone(),
            });
        }
    }
    class_of(&t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigmind_queue::task::TaskStatus;
    use rigmind_types::TaskClass;

    fn task(layout: &Layout, d: TaskDir, name: &str, class: TaskClass) -> String {
        let mut t = TaskFile::new("abc123", name, class);
        t.status = TaskStatus::Complete;
        let p = t.write_to(&layout.dir(d), fsio::Sync::None).unwrap();
        p.file_name().unwrap().to_str().unwrap().to_string()
    }

    #[test]
    fn one_file_per_plan_task_is_read_and_the_names_give_the_totals() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        let complete = layout.dir(TaskDir::Complete);
        let first = task(&layout, TaskDir::Complete, "t[a]", TaskClass::Cpu);
        task(&layout, TaskDir::Complete, "llm", TaskClass::Llm);
        // Items after the first are garbage: counted by name as their plan task.
        for i in 0..50 {
            let n = first.replace("t[a]", &format!("t[b{i}]"));
            std::fs::write(complete.join(n), b"\x00 not json").unwrap();
        }
        std::fs::write(complete.join("notes.txt"), b"hello").unwrap();
        let c = count(&layout, TaskDir::Complete).unwrap();
        let want: BTreeMap<String, usize> = [("cpu", 51), ("llm", 1), ("invalid", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(c.by_class, want);
        assert_eq!(plan_task_of("transcribe[ep1]"), "transcribe");
        assert_eq!(plan_task_of("init"), "init");
    }
}
