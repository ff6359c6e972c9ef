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

/// Kills every process of task `task_id`: those that carry its `RIGMIND_TASK_ID`
/// (and their process groups), and its cgroup with everything below it: the one
/// its start record names (`cgroup`, given its runner's own cgroup, wherever that
/// is), else the one this process would make for it. A reused group id is never
/// hit, and a command whose group was never recorded (its runner died first) is
/// found all the same. Returns how many of the task's processes were found.
pub fn kill_task_group(task_id: &str, cgroup: Option<&Path>) -> usize {
    let found = signal_task_processes(task_id, libc::SIGKILL);
    found.max(crate::contain::kill_recorded_cgroup(task_id, cgroup))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use rigmind_testkit::{eventually, running};
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn kills_only_the_group_of_its_task() {
        let spawn = |task: &str| {
            Command::new("bash")
                .args(["-c", "sleep 30 & sleep 30"])
                .env("RIGMIND_TASK_ID", task)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let mut mine = spawn("task-a");
        let mut other = spawn("task-b");
        // bash and both its sleeps (signal 0 only counts them).
        eventually(10, "task-a's three processes", || {
            signal_task_processes("task-a", 0) >= 3
        });
        // Another task's id leaves the groups alone.
        assert_eq!(kill_task_group("task-c", None), 0);
        assert!(other.try_wait().unwrap().is_none());
        assert!(kill_task_group("task-a", None) >= 2, "bash and its sleeps");
        mine.wait().unwrap();
        let _ = other.kill();
        let _ = other.wait();
        // Gone (a SIGKILLed process takes a moment to die): nothing to do.
        eventually(10, "task-a's processes gone", || {
            kill_task_group("task-a", None) == 0
        });
    }

    #[test]
    fn kills_marked_processes_that_left_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut bash = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "setsid sleep 30 & echo $! > {}; wait",
                pidfile.display()
            ))
            .env("RIGMIND_TASK_ID", "task-setsid")
            .process_group(0)
            .spawn()
            .unwrap();
        eventually(30, "a pid written", || {
            std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
        });
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        assert!(
            kill_task_group("task-setsid", None) >= 2,
            "bash and the setsid sleep"
        );
        bash.wait().unwrap();
        eventually(30, &format!("the setsid sleep {pid} to end"), || {
            !running(&pid)
        });
    }
}
