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
    let marker = format!("RIGMIND_TASK_ID={task_id}");
    let ours = |pid: i32| {
        std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ"))
            .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
            .unwrap_or(false)
    };
    let pids: Vec<i32> = match std::fs::read_dir("/proc") {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .collect(),
        Err(_) => return 0,
    };
    let me = std::process::id() as i32;
    // SAFETY: getpgrp(2) cannot fail and touches no memory.
    let my_group = unsafe { libc::getpgrp() };
    let mut groups: Vec<i32> = Vec::new();
    let mut found = 0;
    for pid in pids {
        if pid == me || !ours(pid) {
            continue;
        }
        found += 1;
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
    found
}

/// The process group of `pid`, from `/proc/<pid>/stat`.
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: read after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(2)?.parse().ok()
}
