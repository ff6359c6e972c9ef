//! Finding and killing a task's processes by the marker they carry.
//!
//! Every command runs with `RIGMIND_TASK_ID=<id>` in its environment, which its
//! children inherit, also those that left its process group (`setsid`). When a
//! worker dies (the OOM killer, `kill -9`) its command lives on: the brain kills
//! the task's processes before the task runs again, so a requeued task never runs
//! twice at once. Where cgroups are not used ([`crate::contain`]), a runner ends its
//! own tasks this way too. A group id can be reused once the group is gone, so a
//! group is signalled only through a process of it that still carries the marker.

use std::path::Path;

/// Sends `sig` to every process that carries task `task_id`'s marker, and to its
/// process group. Never to this process or its own group. Returns how many
/// processes were found.
pub(crate) fn signal_task_processes(task_id: &str, sig: i32) -> usize {
    signal_marked(task_id, &proc_pids(), sig).found
}

/// What a scan for a task's processes saw.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Processes that carry the marker (each was signalled).
    pub found: usize,
    /// Processes that showed no environment at all and are neither kernel threads
    /// nor dead: in the middle of an exec (the kernel swaps their memory), or
    /// started with an empty one. Such a process may be the task's: [`recheck`]
    /// looks at them again a moment later.
    pub unsure: Vec<i32>,
}

/// [`signal_task_processes`], also naming the processes it could not judge.
pub(crate) fn scan_task_processes(task_id: &str, sig: i32) -> Scan {
    let mut scan = signal_marked(task_id, &proc_pids(), sig);
    scan.unsure.retain(|&pid| may_be_exec(pid));
    scan
}

/// Looks again at processes a scan could not judge ([`Scan::unsure`]): those that
/// now carry task `task_id`'s marker are signalled. Returns how many did.
pub(crate) fn recheck(task_id: &str, pids: &[i32], sig: i32) -> usize {
    signal_marked(task_id, pids, sig).found
}

/// Every process on the machine (none if `/proc` cannot be read).
fn proc_pids() -> Vec<i32> {
    match std::fs::read_dir("/proc") {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Signals those of `pids` that carry task `task_id`'s marker, and their groups.
/// Its `unsure` holds every process that showed an empty environment, kernel
/// threads and zombies included: only [`scan_task_processes`] asks which.
fn signal_marked(task_id: &str, pids: &[i32], sig: i32) -> Scan {
    let marker = format!("RIGMIND_TASK_ID={task_id}");
    let me = std::process::id() as i32;
    // SAFETY: getpgrp(2) cannot fail and touches no memory.
    let my_group = unsafe { libc::getpgrp() };
    let mut groups: Vec<i32> = Vec::new();
    let mut scan = Scan::default();
    for &pid in pids {
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ"))
        else {
            // Gone, or another user's: not a process this runner started.
            continue;
        };
        if env.is_empty() {
            scan.unsure.push(pid);
            continue;
        }
        if !env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            continue;
        }
        scan.found += 1;
        // SAFETY: kill(2) on a pid that carries the task's marker; no memory involved.
        unsafe { libc::kill(pid, sig) };
        if let Some(g) =
            process_group(pid).filter(|g| *g > 1 && *g != my_group && !groups.contains(g))
        {
            groups.push(g);
        }
    }
    for g in groups {
        // SAFETY: kill(2) on a negative pid signals a process group; no memory involved.
        unsafe { libc::kill(-g, sig) };
    }
    scan
}

/// `PF_KTHREAD` in the `flags` of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether `pid`, which showed an empty environment, may be a process in the
/// middle of an exec: not a kernel thread (they have none) and not a zombie (its
/// memory is gone, and so is the process).
fn may_be_exec(pid: i32) -> bool {
    let Some(stat) = stat_fields(pid) else {
        return false; // gone
    };
    // State, then five fields, then flags.
    let mut fields = stat.split_whitespace();
    let state = fields.next().unwrap_or("");
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    !matches!(state, "Z" | "X" | "x") && flags & PF_KTHREAD == 0
}

/// The process group of `pid`, from `/proc/<pid>/stat`.
fn process_group(pid: i32) -> Option<i32> {
    stat_fields(pid)?.split_whitespace().nth(2)?.parse().ok()
}

/// The fields of `/proc/<pid>/stat` after the command name, its state first. The
/// name is in parentheses and may hold spaces or ')': read after the last ')'.
fn stat_fields(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigmind_testkit::eventually;
    use std::process::Command;

    fn state_of(pid: u32) -> String {
        stat_fields(pid as i32)
            .and_then(|f| f.split_whitespace().next().map(str::to_string))
            .unwrap_or_default()
    }

    #[test]
    fn a_process_with_no_environment_is_looked_at_again_and_kept_if_not_the_task_s() {
        // `env -i` leaves `sleep` no environment at all, as an exec in progress
        // shows for a moment: the scan cannot judge it, the recheck finds no marker.
        let mut bare = Command::new("env")
            .args(["-i", "sleep", "30"])
            .spawn()
            .unwrap();
        let pid = bare.id() as i32;
        // (`env` itself runs with the test's environment until it execs `sleep`.)
        eventually(10, "sleep running with an empty environment", || {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
                && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| e.is_empty())
        });
        let scan = scan_task_processes("no-such-task", 0);
        assert_eq!(scan.found, 0);
        assert!(scan.unsure.contains(&pid), "{scan:?}");
        assert_eq!(recheck("no-such-task", &scan.unsure, 0), 0);
        assert!(bare.try_wait().unwrap().is_none(), "left alone");
        bare.kill().unwrap();
        bare.wait().unwrap();
    }

    #[test]
    fn zombies_and_kernel_threads_are_not_unsure() {
        let me = std::process::id() as i32;
        assert!(may_be_exec(me), "a live process of ours");
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        eventually(10, "the child a zombie", || state_of(pid) == "Z");
        assert!(!may_be_exec(pid as i32));
        child.wait().unwrap();
        // Kernel threads, where this machine shows any (a container may not).
        let kthread = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&p| {
                stat_fields(p)
                    .and_then(|f| f.split_whitespace().nth(6)?.parse::<u64>().ok())
                    .is_some_and(|flags| flags & PF_KTHREAD != 0)
            });
        match kthread {
            Some(p) => assert!(!may_be_exec(p), "kernel thread {p}"),
            None => {
                eprintln!("skipped the kernel-thread case: no kernel thread visible in /proc here")
            }
        }
    }
}
