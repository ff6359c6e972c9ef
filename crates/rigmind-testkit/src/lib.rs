//! What rigmind's tests share, so that no test file keeps its own copy: waiting for
//! a condition with a deadline ([`eventually`]), for a child's exit ([`wait_exit`]),
//! whether a process still runs ([`running`], from `/proc/<pid>/stat`), and the skip
//! log of tests that cannot run on this machine ([`skip`]), and the file names a
//! hostile folder may hold ([`HOSTILE_NAMES`]); and a real llama-server router
//! ([`llama`]). Dev-only: no crate depends on it outside `[dev-dependencies]`, and
//! it depends only on libc (to stop that router with SIGTERM).

pub mod llama;

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Polls `f` (every 50 ms) until it is true; fails the test naming `what` if `secs`
/// pass first.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to `secs`) for `child` to exit and returns its status. Past the deadline
/// the child is killed and reaped, so that a hung process does not outlive the
/// failing test, and the test fails naming `what`.
pub fn wait_exit(child: &mut Child, secs: u64, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` runs: a zombie waiting to be reaped does not count, nor a
/// pid that is gone. `pid` may be text read from a pid file (surrounding white space
/// is ignored).
pub fn running(pid: impl std::fmt::Display) -> bool {
    let pid = pid.to_string();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // The command name is in parentheses and may hold spaces or ')': the state is
    // the first field after the last ')'.
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .chars()
        .next();
    !matches!(state, None | Some('Z') | Some('X'))
}

/// File names a hostile folder may hold, for `for_each` items: each would run
/// `touch PWNED` (or split, glob or escape) if pasted into a command raw. The
/// substitution's unit tests and the end-to-end run share this one list.
pub const HOSTILE_NAMES: &[&str] = &[
    "x\"; touch PWNED; echo \".txt",
    "$(touch PWNED).txt",
    "`touch PWNED`.txt",
    "a'b;touch PWNED;'.txt",
    "new\nline.txt",
    "*",
    "sp a ces.txt",
    "back\\slash\\.txt",
    "back\\slash\\'.txt",
    "-n.txt",
    "{stem} $HOME.txt",
];

/// Where tests record that they could not run here: `target/tmp/skipped-tests.txt`
/// of the workspace, which `.ci/run` counts and lists.
pub const SKIP_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../target/tmp/skipped-tests.txt"
);

/// Records that `test` could not run on this machine, and why. The harness has no
/// run-time skip, so the test then returns early as "ok": this line is what keeps
/// that from passing silently (`.ci/run` prints the count and the reasons).
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    eprintln!("SKIPPED {test}: {why}");
    let log = Path::new(SKIP_LOG);
    if let Some(dir) = log.parent() {
        // target/tmp exists only once cargo has built an integration test there.
        std::fs::create_dir_all(dir).expect("create the skip log's directory");
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the skip log");
    writeln!(f, "{test}: {why}").expect("write the skip log");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_tells_a_live_process_from_a_reaped_one() {
        assert!(running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        assert!(wait_exit(&mut child, 10, "true").success());
        assert!(!running(format!("{pid}\n")));
    }

    #[test]
    fn eventually_returns_once_true() {
        let mut n = 0;
        eventually(5, "the third call", || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
    }
}
