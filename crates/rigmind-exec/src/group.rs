//! Killing what a dead runner left running.
//!
//! Commands run in a process group of their own, so when a worker dies (the OOM
//! killer, `kill -9`) its command lives on. The brain kills that group before the
//! task runs again, so a requeued task never runs twice at once. A group id can be
//! reused once the group is gone, so the kill is made only when a process of the
//! group still carries the task's `RIGMIND_TASK_ID` in its environment.

use std::path::Path;

/// Kills every process group that holds a process of task `task_id`, found by the
/// `RIGMIND_TASK_ID` in its environment: a reused group id is never hit, and a
/// command whose group was never recorded (its runner died first) is found all the
/// same. Returns how many of the task's processes were found.
pub fn kill_task_group(task_id: &str) -> usize {
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
    let mut groups: Vec<i32> = Vec::new();
    let mut found = 0;
    for pid in pids {
        if !ours(pid) {
            continue;
        }
        found += 1;
        if let Some(g) = process_group(pid).filter(|g| *g > 1 && !groups.contains(g)) {
            groups.push(g);
        }
    }
    for g in groups {
        // SAFETY: kill(2) on a negative pid signals a process group; no memory involved.
        unsafe { libc::kill(-g, libc::SIGKILL) };
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
        std::thread::sleep(std::time::Duration::from_millis(200));
        // Another task's id leaves the groups alone.
        assert_eq!(kill_task_group("task-c"), 0);
        assert!(other.try_wait().unwrap().is_none());
        assert!(kill_task_group("task-a") >= 2, "bash and its sleeps");
        mine.wait().unwrap();
        let _ = other.kill();
        let _ = other.wait();
        // Gone: nothing to do.
        assert_eq!(kill_task_group("task-a"), 0);
    }
}
