//! Who holds the slots of the concurrency groups now: the tasks in `processing/`,
//! the live `rigmind gate`s ([`crate::gates`]) and the processes on the box whose
//! command line matches a group's pattern ([`crate::procs`]). Workers count them
//! under the claim lock before a claim, and gates before they take a slot: one count
//! for both.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::error::QueueError;
use crate::procs::{self, Owned};
use crate::{fsio, gates, Layout, TaskDir, TaskFile};

/// What holds one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A task in `processing/`.
    Task {
        name: String,
        worker: Option<String>,
    },
    /// A live `rigmind gate`.
    Gate { pid: u32, command: String },
    /// A process whose command line matches the group's `match`.
    Process { pid: u32, cmdline: String },
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Task { name, worker } => {
                write!(f, "task {name} on {}", worker.as_deref().unwrap_or("?"))
            }
            Holder::Gate { pid, command } => write!(f, "gate pid {pid} ({})", cut(command)),
            Holder::Process { pid, cmdline } => write!(f, "process {pid} ({})", cut(cmdline)),
        }
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= 60 {
        return s.to_string();
    }
    let mut t: String = s.chars().take(59).collect();
    t.push('…');
    t
}

/// One slot of one group, taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHolder {
    pub group: String,
    pub holder: Holder,
}

/// Every slot taken now. `matches` are the groups' command-line patterns; with none,
/// `/proc` is not read. Dead gates' files are removed on the way.
pub fn group_holders(
    layout: &Layout,
    matches: &BTreeMap<String, regex::Regex>,
) -> Result<Vec<GroupHolder>, QueueError> {
    let mut out = Vec::new();
    let mut owned: BTreeMap<String, Owned> = BTreeMap::new();
    let dir = layout.dir(TaskDir::Processing);
    for name in fsio::list_names(&dir)? {
        // A file that cannot be read is counted as nothing: it is being moved, or
        // it is junk the brain will move aside.
        let Ok(t) = TaskFile::read(&dir.join(&name)) else {
            continue;
        };
        for group in t.held_groups() {
            if let Some(pgid) = t.pgid {
                owned
                    .entry(group.clone())
                    .or_default()
                    .task_pgids
                    .insert(pgid);
            }
            let holder = Holder::Task {
                name: t.name.clone(),
                worker: t.worker_id.clone(),
            };
            out.push(GroupHolder { group, holder });
        }
    }
    for g in gates::live(layout)? {
        let Some(group) = g.group else { continue };
        owned
            .entry(group.clone())
            .or_default()
            .gate_pids
            .insert(g.pid);
        let holder = Holder::Gate {
            pid: g.pid,
            command: g.command.join(" "),
        };
        out.push(GroupHolder { group, holder });
    }
    if !matches.is_empty() {
        let procs = procs::scan(Path::new("/proc"));
        for (group, pid, cmdline) in
            procs::foreign_holders(&procs, matches, &owned, std::process::id())
        {
            let holder = Holder::Process { pid, cmdline };
            out.push(GroupHolder { group, holder });
        }
    }
    Ok(out)
}

/// Compiles the groups' patterns (rig.toml `[groups]` `match`, checked when it was
/// read); one that does not compile is left out with a warning.
pub fn compile_matches(patterns: &BTreeMap<String, String>) -> BTreeMap<String, regex::Regex> {
    patterns
        .iter()
        .filter_map(|(g, p)| match regex::Regex::new(p) {
            Ok(re) => Some((g.clone(), re)),
            Err(e) => {
                tracing::warn!("group '{g}': match {p:?} is not a regex: {e}");
                None
            }
        })
        .collect()
}
