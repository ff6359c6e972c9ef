//! Killing whatever is left of a task, both ways at once: the processes that carry
//! its marker ([`crate::group`]) and its cgroup ([`crate::contain`]). The brain
//! calls it before a task whose runner died runs again. Above both modules, so
//! that neither depends on the other for it.

use std::path::Path;

use crate::contain::kill_recorded_cgroup;
use crate::group::signal_task_processes;

/// Kills every process of task `task_id`: those that carry its `RIGMIND_TASK_ID`
/// (and their process groups), and its cgroup with everything below it: the one
/// its start record names (`cgroup`, given its runner's own cgroup, wherever that
/// is), else the one this process would make for it. A reused group id is never
/// hit, and a command whose group was never recorded (its runner died first) is
/// found all the same. Returns how many of the task's processes were found.
pub fn kill_task_group(task_id: &str, cgroup: Option<&Path>) -> usize {
    let found = signal_task_processes(task_id, libc::SIGKILL);
    found.max(kill_recorded_cgroup(task_id, cgroup))
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
