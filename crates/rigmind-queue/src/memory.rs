//! Host memory reservations (docs/safety.md, "Memory: reservations and caps").
//!
//! A task with `mem_mb` is claimed only when the host's available RAM, less what
//! the holders of reservations (the tasks running, and the live `rigmind gate`s
//! that asked for `--mem-mb`: [`holders_now`]) have reserved but not yet touched, less
//! `[safety] min_free_ram_mb`, covers it. The arithmetic is [`room_mb`], a pure
//! function over [`Reservation`]s that the claim lock and the simulator both call;
//! this module also owns the readings it is fed: `MemAvailable`
//! ([`mem_available_mb`]) and what a running task already uses ([`task_used_mb`]:
//! its cgroup's `memory.current`, else the RSS of its processes).

use std::path::Path;

use crate::task::TaskFile;

pub use rigmind_types::{meminfo_path, MEMINFO_ENV};

/// One holder of a memory reservation: it reserved `mem_mb` and already uses
/// `used_mb` of it (which `MemAvailable` already counts as gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub mem_mb: u64,
    pub used_mb: u64,
}

impl Reservation {
    /// What it reserved and has not touched yet (never below 0).
    pub fn untouched_mb(&self) -> u64 {
        self.mem_mb.saturating_sub(self.used_mb)
    }
}

/// The RAM a new reservation may take now: `available_mb` (the host's
/// `MemAvailable`) less what `holders` reserved and have not touched, less
/// `min_free_mb`; 0 when that is nothing. A task fits when its `mem_mb` is at most
/// this. Pure: the claim lock and the simulator call it alike.
pub fn room_mb(available_mb: u64, min_free_mb: u64, holders: &[Reservation]) -> u64 {
    let untouched: u64 = holders.iter().map(Reservation::untouched_mb).sum();
    available_mb
        .saturating_sub(untouched)
        .saturating_sub(min_free_mb)
}

/// Whether a task reserving `need_mb` (`None`: it reserves nothing) may start
/// with `room_mb` free for reservations (`None`: not known or not limited).
pub fn fits(need_mb: Option<u64>, room_mb: Option<u64>) -> bool {
    match (need_mb, room_mb) {
        (Some(need), Some(room)) => need <= room,
        _ => true,
    }
}

/// The host's `MemAvailable` in MB, from `meminfo` (a file in `/proc/meminfo`
/// form, [`meminfo_path`]); `None` when it cannot be read (then no reservation is
/// refused for want of a reading).
pub fn mem_available_mb(meminfo: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(meminfo).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// What a running task uses now, in bytes: its cgroup's `memory.current` where the
/// memory controller is on there, else the RSS of its cgroup's processes, else of
/// its process group's. 0 when none of these can be read (it has not started, or
/// has ended).
pub fn task_used_bytes(cgroup: Option<&Path>, pgid: Option<i32>) -> u64 {
    if let Some(dir) = cgroup {
        if let Some(b) = read_u64(&dir.join("memory.current")) {
            return b;
        }
        if dir.is_dir() {
            return rss_bytes(&subtree_pids(dir), Rss::Now);
        }
    }
    pgid.map_or(0, |g| rss_bytes(&group_pids(g), Rss::Now))
}

/// Every reservation held now: the tasks in `processing/` with `mem_mb` (what
/// each uses from its cgroup or process group) and the live gates with `mem_mb`
/// (what the gate's process tree uses). Read under the claim lock by the workers
/// and by `rigmind gate` alike, so both see the same holders.
pub fn holders_now(layout: &crate::Layout) -> Vec<Reservation> {
    let dir = layout.dir(crate::TaskDir::Processing);
    let mut out: Vec<Reservation> = crate::fsio::list_names(&dir)
        .unwrap_or_default()
        .iter()
        // A file that cannot be read holds nothing: it is being moved, or junk.
        .filter_map(|name| TaskFile::read(&dir.join(name)).ok())
        .filter_map(|t| {
            Some(Reservation {
                mem_mb: t.mem_mb?,
                used_mb: task_used_mb(&t),
            })
        })
        .collect();
    let gates: Vec<_> = crate::gates::live(layout)
        .unwrap_or_default()
        .into_iter()
        .filter(|g| g.mem_mb.is_some())
        .collect();
    if !gates.is_empty() {
        let procs = crate::procs::scan(Path::new("/proc"));
        out.extend(gates.iter().filter_map(|g| {
            Some(Reservation {
                mem_mb: g.mem_mb?,
                used_mb: rss_bytes(&tree_pids(&procs, g.pid), Rss::Now) / (1024 * 1024),
            })
        }));
    }
    out
}

/// `root` and every process below it, from a scan of `/proc`.
fn tree_pids(procs: &[crate::procs::ProcInfo], root: u32) -> Vec<i32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(procs.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    tree.into_iter().map(|p| p as i32).collect()
}

/// What the running task of `task`'s start record uses now, in MB.
pub fn task_used_mb(task: &TaskFile) -> u64 {
    task_used_bytes(task.cgroup.as_deref(), task.pgid) / (1024 * 1024)
}

/// Which RSS of a process to sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rss {
    /// `VmRSS`: what it holds now.
    Now,
    /// `VmHWM`: the most it ever held.
    Peak,
}

/// The summed RSS of `pids`, in bytes (a process gone meanwhile counts 0).
pub fn rss_bytes(pids: &[i32], which: Rss) -> u64 {
    let key = match which {
        Rss::Now => "VmRSS:",
        Rss::Peak => "VmHWM:",
    };
    pids.iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix(key))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kb * 1024)
        })
        .sum()
}

/// The processes of a cgroup and of every cgroup below it.
pub fn subtree_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(subtree_pids(&e.path()));
            }
        }
    }
    pids
}

/// The processes whose process group is `pgid` (from `/proc/<pid>/stat`).
pub fn group_pids(pgid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // The command name is in parentheses and may hold spaces.
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(2)?.parse::<i32>().ok()
                })
                == Some(pgid)
        })
        .collect()
}

/// A cgroup file holding one number (`max` and unreadable: `None`).
pub fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1024;

    #[test]
    fn room_is_what_is_available_less_untouched_reservations_and_the_margin() {
        assert_eq!(room_mb(12 * GB, 2 * GB, &[]), 10 * GB);
        // A 10 GB task that has touched nothing yet holds all of it back.
        let fresh = Reservation {
            mem_mb: 10 * GB,
            used_mb: 0,
        };
        assert_eq!(room_mb(12 * GB, 2 * GB, &[fresh]), 0);
        // Once it uses 6 GB, MemAvailable shows that: only 4 GB more are held back.
        let warm = Reservation {
            mem_mb: 10 * GB,
            used_mb: 6 * GB,
        };
        assert_eq!(room_mb(6 * GB, 0, &[warm]), 2 * GB);
        // Using more than it reserved holds nothing back (never below 0).
        let over = Reservation {
            mem_mb: GB,
            used_mb: 3 * GB,
        };
        assert_eq!(over.untouched_mb(), 0);
        assert_eq!(room_mb(5 * GB, GB, &[over, fresh]), 0);
        assert_eq!(room_mb(GB, 2 * GB, &[]), 0, "floored at 0");
    }

    #[test]
    fn two_ten_gb_reservations_do_not_fit_twelve_available() {
        let need = 10 * GB;
        assert!(need <= room_mb(12 * GB, 0, &[]));
        let first = Reservation {
            mem_mb: need,
            used_mb: 0,
        };
        assert!(need > room_mb(12 * GB, 0, &[first]));
    }

    #[test]
    fn this_processes_rss_is_read() {
        let me = std::process::id() as i32;
        // Now first, then the peak: other tests' threads allocate in between, and
        // a peak read before the current size could be below it.
        let now = rss_bytes(&[me], Rss::Now);
        assert!(now > 0);
        assert!(rss_bytes(&[me], Rss::Peak) >= now);
        assert_eq!(rss_bytes(&[i32::MAX], Rss::Now), 0, "no such process");
    }
}
