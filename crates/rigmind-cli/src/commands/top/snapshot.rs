//! What one frame of `rigmind top` shows, read from the root: the same
//! [`Overview`] `rigmind status` prints, the tail of `logs/brain_decisions.log`
//! and the newest failed tasks. The screen is a pure function of this struct
//! (`view::draw`), so tests build one from a real root and draw it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::Result;
use chrono::{DateTime, Utc};
use rigmind_queue::task::{TaskFile, TaskName};
use rigmind_queue::{fsio, Layout, TaskDir};

use crate::commands::overview::{self, Overview};

/// How many decision lines a snapshot keeps (more than any screen shows).
const DECISIONS_KEPT: usize = 50;
/// How much of the end of the decisions log is read for them: the log grows
/// without bound, and only its end is ever shown.
const DECISIONS_TAIL_BYTES: u64 = 16 * 1024;
/// How many of the newest failed tasks are read (one file each) and listed.
const FAILED_SHOWN: usize = 20;

/// The root at one moment, as `rigmind top` draws it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was read (the clocks on screen count from here).
    pub taken_at: DateTime<Utc>,
    pub overview: Overview,
    /// The last lines of the decisions log, oldest first.
    pub decisions: Vec<String>,
    /// The newest failed tasks, newest first.
    pub failed: Vec<FailedTask>,
}

/// A task in `failed/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTask {
    pub task_id: String,
    pub name: String,
    pub batch: String,
    /// `worker_failure`, `timeout`, `dependency_failed`, ...
    pub kind: Option<String>,
}

impl Snapshot {
    /// Reads the root now. Workers are listed by id, batches live first (oldest
    /// submission first), then the ended ones, latest end first.
    pub fn read(root: &Path) -> Result<Snapshot> {
        let layout = Layout::new(root);
        let mut overview = overview::gather(&layout)?;
        overview
            .workers
            .sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        overview.batches.sort_by_key(|b| {
            let done = b.state.is_done();
            let end = b.finished_at.map_or(0, |t| -t.timestamp_millis());
            (
                done,
                if done {
                    end
                } else {
                    b.submitted_at.timestamp_millis()
                },
            )
        });
        Ok(Snapshot {
            taken_at: Utc::now(),
            decisions: tail_lines(&layout.decisions_log(), DECISIONS_KEPT),
            failed: newest_failed(&layout, FAILED_SHOWN)?,
            overview,
        })
    }
}

/// The last `n` whole lines of a file, read from its last few KiB only.
fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let from = len.saturating_sub(DECISIONS_TAIL_BYTES);
        f.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        // A cut first line is not shown.
        Ok(match (from > 0, text.split_once('\n')) {
            (true, Some((_, rest))) => rest.to_string(),
            _ => text,
        })
    };
    let text = read().unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| l.to_string()).collect()
}

/// The `n` failed tasks of highest submission sequence (from the file names),
/// each file read for its id and why it failed; requests are left out.
fn newest_failed(layout: &Layout, n: usize) -> Result<Vec<FailedTask>> {
    let dir = layout.dir(TaskDir::Failed);
    let mut named: Vec<(u64, String)> = fsio::list_names(&dir)?
        .into_iter()
        .filter_map(|f| TaskName::parse(&f).map(|t| (t.seq, f)))
        .collect();
    named.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    let mut out = Vec::new();
    for (_, file) in named {
        if out.len() >= n {
            break;
        }
        // Moved on since the listing (a retry), or not a task: not listed.
        let Ok(t) = TaskFile::read(&dir.join(&file)) else {
            continue;
        };
        if t.action.is_some() {
            continue;
        }
        out.push(FailedTask {
            task_id: t.task_id,
            name: t.name,
            batch: t.batch_id,
            kind: t.failure_kind.map(|k| k.to_string()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_of_a_long_log_is_its_last_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("d.log");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = tail_lines(&log, 3);
        assert_eq!(tail, ["line 4997", "line 4998", "line 4999"]);
        assert!(tail_lines(&dir.path().join("none"), 3).is_empty());
    }
}
