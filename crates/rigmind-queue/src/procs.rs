//! The processes on the box, as `/proc` shows them, and which of them hold a
//! concurrency group by their command line (`[groups]` `match`): heavy work that
//! runs outside the queue, started by anything, counts against its group.
//!
//! A process whose command line matches a group's pattern does not count against that
//! group when it is one of the group's own holders or inside one: a task of the
//! group in `processing/` (its process group, or a descendant of its leader), a live
//! `rigmind gate` of the group (a descendant of the gate's pid). Nor does it count
//! when it is a `rigmind gate` process itself (argv `rigmind… gate …`, which carries
//! its command in its own argv, and may be waiting) or an ancestor of one (a script
//! that calls `rigmind gate`), or the process asking, or one of its ancestors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// One process as `/proc/PID/stat` and `/proc/PID/cmdline` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: i32,
    /// Its argv; empty for kernel threads and zombies.
    pub argv: Vec<String>,
}

impl ProcInfo {
    /// The command line as one string, arguments joined by spaces (what a
    /// pattern is matched against).
    pub fn cmdline(&self) -> String {
        self.argv.join(" ")
    }

    /// Whether it is a `rigmind gate` process (waiting or holding).
    fn is_gate(&self) -> bool {
        let prog = self.argv.first().map(|a| a.rsplit('/').next().unwrap_or(a));
        prog.is_some_and(|p| p.starts_with("rigmind"))
            && self.argv.get(1).is_some_and(|a| a == "gate")
    }
}

/// What a group's own holders are: the process groups of its running tasks and the
/// pids of its live gates.
#[derive(Debug, Clone, Default)]
pub struct Owned {
    pub task_pgids: BTreeSet<i32>,
    pub gate_pids: BTreeSet<u32>,
}

/// Every process under `proc_root` (`/proc`) with a readable stat; those that end
/// while being read are left out.
pub fn scan(proc_root: &Path) -> Vec<ProcInfo> {
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_proc(&proc_root.join(pid.to_string()), pid))
        .collect()
}

fn read_proc(dir: &Path, pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let (_state, ppid, pgid) = (f.next()?, f.next()?, f.next()?);
    let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let argv = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(ProcInfo {
        pid,
        ppid: ppid.parse().ok()?,
        pgid: pgid.parse().ok()?,
        argv,
    })
}

/// The processes of `procs` that hold a group by their command line: (group, pid,
/// command line) for each process and each group whose pattern it matches, with
/// the exclusions of the module's documentation. `me` is the asking process. Pure.
pub fn foreign_holders(
    procs: &[ProcInfo],
    matches: &BTreeMap<String, regex::Regex>,
    owned: &BTreeMap<String, Owned>,
    me: u32,
) -> Vec<(String, u32, String)> {
    if matches.is_empty() {
        return Vec::new();
    }
    let parent: HashMap<u32, u32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let chain = |pid: u32| ancestry(&parent, pid);
    // The asker and the gates, with their ancestors, never count.
    let mut never: BTreeSet<u32> = chain(me).into_iter().collect();
    for p in procs.iter().filter(|p| p.is_gate()) {
        never.extend(chain(p.pid));
    }
    let none = Owned::default();
    let mut out = Vec::new();
    for p in procs
        .iter()
        .filter(|p| !p.argv.is_empty() && !never.contains(&p.pid))
    {
        let line = p.cmdline();
        for (group, re) in matches {
            if !re.is_match(&line) {
                continue;
            }
            let own = owned.get(group).unwrap_or(&none);
            let up = chain(p.pid);
            let inside = own.task_pgids.contains(&p.pgid)
                || up.iter().any(|a| {
                    own.gate_pids.contains(a)
                        || i32::try_from(*a).is_ok_and(|a| own.task_pgids.contains(&a))
                });
            if !inside {
                out.push((group.clone(), p.pid, line.clone()));
            }
        }
    }
    out
}

/// `pid` and its ancestors, nearest first (stops at a loop or an unknown parent).
fn ancestry(parent: &HashMap<u32, u32>, pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut at = pid;
    while let Some(&up) = parent.get(&at) {
        if up == 0 || out.contains(&up) {
            break;
        }
        out.push(up);
        at = up;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, pgid: i32, argv: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgid,
            argv: argv.split_whitespace().map(String::from).collect(),
        }
    }

    fn whisper() -> BTreeMap<String, regex::Regex> {
        BTreeMap::from([("wl".into(), regex::Regex::new("whisper.*large").unwrap())])
    }

    #[test]
    fn a_matching_process_counts_unless_it_is_the_group_s_own() {
        let procs = vec![
            p(1, 0, 1, "init"),
            p(10, 1, 10, "bash"),
            p(11, 10, 11, "whisper --model large a.mp3"),
            // A task of the group: its process group.
            p(20, 1, 20, "bash -c whisper --model large b.mp3"),
            p(21, 20, 20, "whisper --model large b.mp3"),
            // A gate of the group, holding, and its command.
            p(
                30,
                10,
                30,
                "/usr/bin/rigmind gate --group wl -- whisper --model large c.mp3",
            ),
            p(31, 30, 30, "whisper --model large c.mp3"),
            // A gate waiting, and the script that called it.
            p(40, 10, 40, "bash transcribe-whisper-large.sh"),
            p(41, 40, 40, "rigmind gate --group wl -- whisper large d.mp3"),
            p(50, 1, 50, "sleep 30"),
        ];
        let owned = BTreeMap::from([(
            "wl".to_string(),
            Owned {
                task_pgids: BTreeSet::from([20]),
                gate_pids: BTreeSet::from([30]),
            },
        )]);
        let got = foreign_holders(&procs, &whisper(), &owned, 50);
        assert_eq!(
            got,
            [("wl".into(), 11, "whisper --model large a.mp3".into())]
        );
        // The asker's own chain never counts.
        assert!(foreign_holders(&procs, &whisper(), &owned, 11).is_empty());
        // Without the group's holders known, the task's and the gate's commands count.
        let pids: Vec<u32> = foreign_holders(&procs, &whisper(), &BTreeMap::new(), 50)
            .into_iter()
            .map(|(_, pid, _)| pid)
            .collect();
        assert_eq!(pids, [11, 20, 21, 31]);
    }

    #[test]
    fn this_machine_s_proc_lists_this_process() {
        let me = std::process::id();
        let procs = scan(Path::new("/proc"));
        let mine = procs
            .iter()
            .find(|p| p.pid == me)
            .expect("own pid in /proc");
        assert!(!mine.argv.is_empty());
    }
}
