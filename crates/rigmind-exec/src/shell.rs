//! `bash -c` in a process group of its own, with a timeout and a log.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rigmind_queue::task::FailureKind;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

/// Set to `true` to stop a running command (its whole group) and return its task.
pub type Abort = watch::Receiver<bool>;

/// What to run.
pub struct ShellRun<'a> {
    pub command: &'a str,
    pub workdir: &'a Path,
    pub env: Vec<(String, String)>,
    pub timeout_secs: f64,
    pub log_path: &'a Path,
    /// A line written to the log before the run's output.
    pub header: String,
}

/// How a command ended.
#[derive(Debug, Clone, Default)]
pub struct ShellOutcome {
    /// Exit code; `128 + signal` when killed by a signal (as bash reports it).
    pub return_code: Option<i32>,
    pub timed_out: bool,
    pub timeout_secs: f64,
    pub aborted: bool,
    /// Why it could not start at all.
    pub spawn_error: Option<String>,
    pub elapsed_secs: f64,
    pub output_lines: u64,
    /// The last 200 characters of stderr.
    pub stderr_tail: String,
}

impl ShellOutcome {
    /// An outcome for a task that cannot be run as written.
    pub fn not_runnable(reason: String) -> Self {
        Self {
            spawn_error: Some(reason),
            ..Self::default()
        }
    }

    /// `None` on success, else the failure kind and a reason for people.
    pub fn failure(&self) -> Option<(FailureKind, String)> {
        if let Some(e) = &self.spawn_error {
            return Some((FailureKind::DefinitionError, e.clone()));
        }
        if self.timed_out {
            return Some((
                FailureKind::Timeout,
                format!(
                    "timeout: still running after {}; its process group was killed",
                    rigmind_types::format_duration(self.timeout_secs)
                ),
            ));
        }
        match self.return_code {
            Some(0) => None,
            Some(c) if c > 128 => Some((
                FailureKind::WorkerFailure,
                format!("killed by signal {}", c - 128),
            )),
            Some(c) => Some((FailureKind::WorkerFailure, format!("exit code {c}"))),
            None => Some((FailureKind::WorkerFailure, "no exit status".into())),
        }
    }
}

const TAIL_CHARS: usize = 200;

/// bash, found on PATH once: a spawn then need not walk PATH again.
fn bash() -> &'static Path {
    static BASH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BASH.get_or_init(|| {
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("bash"))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| "bash".into())
    })
}

/// Runs the command to its end, its timeout, or an abort.
///
/// `on_spawn` is called with the process group right after the command starts, so
/// that the caller's bookkeeping (and this function's log file) happen while the
/// command already runs rather than before it.
pub async fn run_shell(
    run: ShellRun<'_>,
    mut abort: Abort,
    on_spawn: impl FnOnce(Option<i32>),
) -> ShellOutcome {
    let started = Instant::now();
    let mut outcome = ShellOutcome {
        timeout_secs: run.timeout_secs,
        ..ShellOutcome::default()
    };
    let mut cmd = Command::new(bash());
    cmd.arg("-c")
        .arg(run.command)
        .current_dir(run.workdir)
        .envs(run.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            outcome.spawn_error = Some(format!(
                "cannot start bash in {}: {e}",
                run.workdir.display()
            ));
            return outcome;
        }
    };
    let pgid = child.id().map(|p| p as i32);
    on_spawn(pgid);
    // Output waits in the pipes until the log is open.
    // Non-blocking open: a FIFO under the log's name must not hang the runner.
    let log = match rigmind_queue::fsio::open_regular(
        run.log_path,
        OpenOptions::new().create(true).append(true),
        "task log",
    ) {
        Ok(mut f) => {
            let _ = writeln!(f, "{}", run.header);
            Arc::new(Mutex::new(f))
        }
        Err(e) => {
            kill_group(pgid, &mut child).await;
            outcome.spawn_error = Some(format!("cannot open log {}: {e}", run.log_path.display()));
            return outcome;
        }
    };
    let out = tokio::spawn(copy_to_log(child.stdout.take(), log.clone(), false));
    let err = tokio::spawn(copy_to_log(child.stderr.take(), log.clone(), true));

    // Absurd timeouts (1e30 s in a hand-written file) mean "no timeout", not a panic.
    let timeout = Duration::try_from_secs_f64(run.timeout_secs.max(0.0))
        .unwrap_or(Duration::from_secs(100 * 365 * 86_400));
    let status = tokio::select! {
        s = child.wait() => s.ok(),
        _ = tokio::time::sleep(timeout) => {
            outcome.timed_out = true;
            kill_group(pgid, &mut child).await
        }
        _ = wait_abort(&mut abort) => {
            outcome.aborted = true;
            kill_group(pgid, &mut child).await
        }
    };
    outcome.return_code = status.map(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    });
    // A grandchild that left the group may hold the pipes open: do not wait forever.
    let grace = Duration::from_secs(2);
    if let Ok(Ok((n, _))) = tokio::time::timeout(grace, out).await {
        outcome.output_lines += n;
    }
    if let Ok(Ok((n, tail))) = tokio::time::timeout(grace, err).await {
        outcome.output_lines += n;
        outcome.stderr_tail = tail;
    }
    outcome.elapsed_secs = started.elapsed().as_secs_f64();
    outcome
}

async fn wait_abort(abort: &mut Abort) {
    loop {
        if *abort.borrow() {
            return;
        }
        if abort.changed().await.is_err() {
            // The sender is gone: nobody can abort any more.
            std::future::pending::<()>().await;
        }
    }
}

/// SIGTERM to the whole group, SIGKILL two seconds later if it is still there.
async fn kill_group(
    pgid: Option<i32>,
    child: &mut tokio::process::Child,
) -> Option<std::process::ExitStatus> {
    if let Some(pg) = pgid {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe { libc::kill(-pg, libc::SIGTERM) };
    }
    match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(s) => {
            if let Some(pg) = pgid {
                // Children of the group that ignored SIGTERM go too.
                unsafe { libc::kill(-pg, libc::SIGKILL) };
            }
            s.ok()
        }
        Err(_) => {
            if let Some(pg) = pgid {
                unsafe { libc::kill(-pg, libc::SIGKILL) };
            }
            child.wait().await.ok()
        }
    }
}

/// Copies a pipe into the log, counting lines; for stderr keeps the last characters.
async fn copy_to_log(
    pipe: Option<impl AsyncRead + Unpin>,
    log: Arc<Mutex<std::fs::File>>,
    keep_tail: bool,
) -> (u64, String) {
    let Some(mut pipe) = pipe else {
        return (0, String::new());
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = 0u64;
    let mut last = b'\n';
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        last = chunk[n - 1];
        if let Ok(mut f) = log.lock() {
            let _ = f.write_all(chunk);
        }
        if keep_tail {
            tail.extend_from_slice(chunk);
            if tail.len() > 4 * TAIL_CHARS {
                tail.drain(..tail.len() - 4 * TAIL_CHARS);
            }
        }
    }
    if last != b'\n' {
        lines += 1;
    }
    let text = String::from_utf8_lossy(&tail);
    let chars: Vec<char> = text.chars().collect();
    let start = chars.len().saturating_sub(TAIL_CHARS);
    (lines, chars[start..].iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(cmd: &str, timeout: f64) -> (ShellOutcome, String) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.log");
        let (_tx, rx) = watch::channel(false);
        let o = run_shell(
            ShellRun {
                command: cmd,
                workdir: dir.path(),
                env: vec![("GREETING".into(), "hi".into())],
                timeout_secs: timeout,
                log_path: &log,
                header: "--- header ---".into(),
            },
            rx,
            |_| {},
        )
        .await;
        (o, std::fs::read_to_string(&log).unwrap())
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_exit_codes_are_kept() {
        let (o, log) = run(
            "echo $GREETING; echo oops >&2; pwd >/dev/null; exit 3",
            30.0,
        )
        .await;
        assert_eq!(o.return_code, Some(3));
        assert_eq!(o.output_lines, 2);
        assert_eq!(o.stderr_tail, "oops\n");
        assert!(log.starts_with("--- header ---\n"));
        assert!(log.contains("hi\n") && log.contains("oops\n"));
        assert_eq!(o.failure().unwrap().1, "exit code 3");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pid");
        let cmd = format!("sleep 60 & echo $! > {}; wait", marker.display());
        let (o, _) = run(&cmd, 0.5).await;
        assert!(o.timed_out);
        assert_eq!(o.failure().unwrap().0, FailureKind::Timeout);
        assert!(o.failure().unwrap().1.starts_with("timeout"));
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was in the group: it must be gone.
        std::thread::sleep(Duration::from_millis(200));
        // Gone, or a zombie waiting for init to reap it: either way not running.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        assert!(
            matches!(state, None | Some('Z') | Some('X')),
            "grandchild {pid} survived: {stat}"
        );
    }

    #[tokio::test]
    async fn stderr_tail_keeps_the_last_200_characters() {
        let (o, _) = run(
            "for i in $(seq 1 200); do echo line$i >&2; done; exit 1",
            30.0,
        )
        .await;
        assert_eq!(o.stderr_tail.chars().count(), 200);
        assert!(o.stderr_tail.ends_with("line200\n"));
    }
}
