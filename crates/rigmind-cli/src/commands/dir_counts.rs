//! How `rigmind status` counts the task directories without reading every file
//! in them (issue 13: a 100,000-task batch must not make each `status` read
//! 100,000 files).
//!
//! The totals come from the listings alone: every entry that is not a dot-name is
//! a file, and a file name says its batch and task name (`TaskName`). The class is
//! not in the name, so the files of a directory are grouped by batch and plan task
//! (the task name before its `[item]`) and one file of each group is read: the
//! items of a plan task share their class, written once in the plan. A call reads
//! about one file per (batch, plan task) and directory, whatever the number of
//! items.
//!
//! `processing/` is the exception: it holds a few tasks per worker, and each of
//! them is read, for its exact class and to find tasks held by a dead worker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use rigmind_queue::task::TaskFile;
use rigmind_queue::{fsio, Layout, LifeLock, QueueError, TaskDir};

/// How many files of a group that are not valid tasks are tried before the group
/// is counted as `invalid` (a ruined file waits in `queue/` until the brain moves
/// it to `rejected/`).
const SAMPLE_TRIES: usize = 3;

/// How many files of a group may vanish between the listing and their read (a
/// worker claimed them, a result moved them on) before the group's class is
/// taken from another directory instead.
const VANISHED_TRIES: usize = 32;

/// A task in `processing/` whose worker is dead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LostTask {
    pub task: String,
    pub batch: String,
    pub worker: String,
}

/// A task in `processing/`, as its file says (`rigmind top` shows how long it
/// has run).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunningTask {
    pub task_id: String,
    pub task: String,
    pub batch: String,
    /// The worker that claimed it (`brain` for the brain's own tasks).
    pub worker: Option<String>,
    /// When its command started; none while it is only claimed.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One directory, counted.
#[derive(Debug, Default)]
pub struct DirCount {
    /// class -> files; `invalid` for files that are not tasks, `unclassified` for
    /// tasks without a class, `unknown` for a group whose files all moved on
    /// before one could be read, when no other directory told its class.
    pub by_class: BTreeMap<String, usize>,
    /// class -> written priority (from the `pRR` of the file name) -> files.
    pub by_class_priority: BTreeMap<String, BTreeMap<u8, usize>>,
    /// Requests to the brain (`@execute_plan`, ...): not tasks.
    pub requests: usize,
    /// Tasks in `processing/` held by a dead worker.
    pub lost: Vec<LostTask>,
    /// Every task of `processing/` (empty for the other directories).
    pub running: Vec<RunningTask>,
}

impl DirCount {
    /// Counts `n` files of `class` written with `ranks` (priority rank -> files).
    fn add(&mut self, class: &str, n: usize, ranks: &BTreeMap<u8, usize>) {
        *self.by_class.entry(class.to_string()).or_default() += n;
        let by_priority = self.by_class_priority.entry(class.to_string()).or_default();
        for (rank, k) in ranks {
            *by_priority.entry(10u8.saturating_sub(*rank)).or_default() += k;
        }
    }
}

/// The priority rank a file name carries (`p05-...` -> 5); none for other names.
fn rank_of(file_name: &str) -> Option<u8> {
    let r: u8 = file_name.strip_prefix('p')?.get(..2)?.parse().ok()?;
    (r <= 10).then_some(r)
}

/// A (batch, plan task): files that share a class. A name that is not a task
/// file's is a group of its own (the empty batch and the whole name).
type Group = (String, String);

/// Counts every task directory ([`TaskDir::ALL`], in that order): from the
/// names, reading one file per (batch, plan task) and directory, and every file
/// of `processing/`.
pub fn count_all(layout: &Layout) -> Result<Vec<DirCount>, QueueError> {
    let mut known: BTreeMap<Group, String> = BTreeMap::new();
    let mut counts = Vec::new();
    // Groups none of whose files could be read: (directory, group, files).
    let mut moved_on: Vec<(usize, Group, Seen)> = Vec::new();
    for (k, d) in TaskDir::ALL.into_iter().enumerate() {
        let (c, open) = count_dir(layout, d, &mut known)?;
        moved_on.extend(open.into_iter().map(|(g, seen)| (k, g, seen)));
        counts.push(c);
    }
    for (k, group, seen) in moved_on {
        let class = known.get(&group).map_or("unknown", String::as_str);
        counts[k].add(class, seen.files, &seen.ranks);
    }
    Ok(counts)
}

/// The files of one group seen in a listing: how many, by priority rank, and the
/// last few names (the ones a sample is taken from).
#[derive(Default)]
struct Seen {
    files: usize,
    ranks: BTreeMap<u8, usize>,
    last: VecDeque<usize>,
}

/// Counts directory `d`: requests apart, `processing/` read file by file, the
/// other files sampled per group. The classes found go into `known`; the groups
/// whose files all moved on are returned with what was seen of them.
fn count_dir(
    layout: &Layout,
    d: TaskDir,
    known: &mut BTreeMap<Group, String>,
) -> Result<(DirCount, Vec<(Group, Seen)>), QueueError> {
    let dir = layout.dir(d);
    let names = fsio::list_names(&dir)?;
    let mut c = DirCount::default();
    let mut groups: HashMap<(&str, &str), Seen> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let key = group_of(name);
        if key.1.starts_with(rigmind_queue::requests::REQUEST_MARK) && !key.0.is_empty() {
            c.requests += 1;
        } else if d == TaskDir::Processing {
            let class = read_processing(layout, &dir.join(name), &mut c);
            let ranks = rank_of(name).map(|r| (r, 1)).into_iter().collect();
            c.add(&class, 1, &ranks);
            known.entry(owned(key)).or_insert(class);
        } else {
            let seen = groups.entry(key).or_default();
            seen.files += 1;
            if let Some(r) = rank_of(name) {
                *seen.ranks.entry(r).or_default() += 1;
            }
            seen.last.push_back(i);
            if seen.last.len() > SAMPLE_TRIES + VANISHED_TRIES {
                seen.last.pop_front();
            }
        }
    }
    let mut open = Vec::new();
    for (key, seen) in groups {
        let last: Vec<&str> = seen.last.iter().map(|&i| names[i].as_str()).collect();
        match sample_class(&dir, &last) {
            Some(class) => {
                c.add(&class, seen.files, &seen.ranks);
                known.entry(owned(key)).or_insert(class);
            }
            None => open.push((owned(key), seen)),
        }
    }
    Ok((c, open))
}

/// The group of a file name, read from the name as it is (nothing decoded or
/// allocated: a call splits 100,000 names): its batch and the (encoded) name
/// before its `[item]`, as `TaskName` lays a name out. A name of another shape
/// is a group of its own (the empty batch and the whole name).
fn group_of(file_name: &str) -> (&str, &str) {
    let parts = || {
        let rest = file_name.strip_suffix(".json")?.strip_prefix('p')?;
        let mut p = rest.splitn(4, '-');
        let (rank, _seq, batch, name) = (p.next()?, p.next()?, p.next()?, p.next()?);
        (rank.len() == 2 && !batch.is_empty() && !name.is_empty())
            .then(|| (batch, plan_task_of(name)))
    };
    parts().unwrap_or(("", file_name))
}

fn owned((batch, task): (&str, &str)) -> Group {
    (batch.to_string(), task.to_string())
}

/// The plan task a task name belongs to: `transcribe[ep1]` -> `transcribe`.
pub fn plan_task_of(name: &str) -> &str {
    name.split_once('[').map_or(name, |(base, _)| base)
}

/// The class of a group of files of one plan task: that of the first of them,
/// from the end of the listing (the last a worker claims), that reads as a task;
/// `invalid` after [`SAMPLE_TRIES`] files that are not tasks; `None` when the
/// files tried all moved on before they could be read.
fn sample_class(dir: &Path, names: &[&str]) -> Option<String> {
    let (mut invalid, mut vanished) = (0, 0);
    for n in names.iter().rev() {
        match TaskFile::read(&dir.join(n)) {
            Ok(t) => return Some(class_of(&t)),
            Err(e) if e.is_not_found() => vanished += 1,
            Err(_) => invalid += 1,
        }
        if invalid >= SAMPLE_TRIES {
            return Some("invalid".into());
        }
        if vanished >= VANISHED_TRIES {
            return None;
        }
    }
    (invalid > 0).then(|| "invalid".into())
}

fn class_of(t: &TaskFile) -> String {
    t.task_class
        .map_or("unclassified".into(), |c| c.to_string())
}

/// Reads a file of `processing/`: its class; the task goes into `c.running`, and
/// into `c.lost` when its worker's life lock is free.
fn read_processing(layout: &Layout, path: &Path, c: &mut DirCount) -> String {
    let Ok(t) = TaskFile::read(path) else {
        return "invalid".into();
    };
    c.running.push(RunningTask {
        task_id: t.task_id.clone(),
        task: t.name.clone(),
        batch: t.batch_id.clone(),
        worker: t.worker_id.clone(),
        started_at: t.started_at,
    });
    if let Some(w) = &t.worker_id {
        if w != "brain" && LifeLock::is_held(&layout.worker_lock(w)) == Some(false) {
            c.lost.push(LostTask {
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

    fn classes(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn one_file_per_plan_task_is_read_and_the_names_give_the_totals() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        let complete = layout.dir(TaskDir::Complete);
        // The sample is the last of its group in the listing.
        let last = task(&layout, TaskDir::Complete, "t[z]", TaskClass::Cpu);
        task(&layout, TaskDir::Complete, "llm", TaskClass::Llm);
        // Other items are garbage: counted by name as their plan task.
        for i in 0..50 {
            let n = last.replace("t[z]", &format!("t[b{i}]"));
            std::fs::write(complete.join(n), b"\x00 not json").unwrap();
        }
        std::fs::write(complete.join("notes.txt"), b"hello").unwrap();
        let c = count_all(&layout).unwrap();
        let want = classes(&[("cpu", 51), ("llm", 1), ("invalid", 1)]);
        assert_eq!(c[2].by_class, want);
        assert_eq!(plan_task_of("transcribe[ep1]"), "transcribe");
        assert_eq!(plan_task_of("init"), "init");
        assert_eq!(
            group_of("p05-00000012-abc123-t[a%20b].json"),
            ("abc123", "t")
        );
        assert_eq!(group_of("notes.txt"), ("", "notes.txt"));
    }

    #[test]
    fn files_that_moved_on_before_their_read_leave_the_class_open() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue");
        std::fs::create_dir(&queue).unwrap();
        // Listed, then claimed by a worker before status read them.
        let gone: Vec<String> = (0..40)
            .map(|i| format!("p05-{i:08}-abc123-t[q{i}].json"))
            .collect();
        let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
        assert_eq!(sample_class(&queue, &gone), None);
        // One garbage file among them: the group is invalid.
        std::fs::write(queue.join(gone[39]), b"{").unwrap();
        assert_eq!(sample_class(&queue, &gone[30..]), Some("invalid".into()));
    }
}
