//! `bash -c` in a process group (and, where possible, a cgroup) of its own, with a
//! timeout and a capped log.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rigmind_queue::task::FailureKind;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::contain::{Containment, Mechanism};
pub use crate::memwatch::MemReport;
use crate::memwatch::MemWatch;
use crate::tasklog::{kill_line, LogSink};

/// Set to `true` to stop a running command (all its processes) and return its task.
/// Only a runner's shutdown sets it.
pub type Abort = watch::Receiver<bool>;

/// What to run.
pub struct ShellRun<'a> {
    pub command: &'a str,
    pub workdir: &'a Path,
    pub env: Vec<(String, String)>,
    /// Variables taken out of the environment the command inherits (the API key
    /// variables of rig.toml's endpoints: a task never sees a key).
    pub unset: &'a [String],
    pub timeout_secs: f64,
    pub log_path: &'a Path,
    /// A line written to the log before the run's output.
    pub header: String,
    /// The task's id: its processes carry it as `RIGMIND_TASK_ID` (it must be in
    /// `env`), and its cgroup is named after it.
    pub task_id: &'a str,
    /// Bytes of output the log keeps of this run (its head and its tail); `None`:
    /// all of it.
    pub log_cap: Option<u64>,
    /// The task's memory cap in MB ([`crate::memwatch`]); `None`: no cap.
    pub mem_cap_mb: Option<u64>,
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
    /// Its memory cap, peak, and whether it went past the cap.
    pub mem: MemReport,
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
        if self.mem.oom {
            let cap = self.mem.cap_mb.unwrap_or(0);
            let peak = self
                .mem
                .peak_mb
                .map_or_else(String::new, |p| format!(" (peak {p} MB)"));
            return Some((
                FailureKind::Oom,
                format!(
                    "oom: past its memory cap of {cap} MB{peak}; all its processes were killed"
                ),
            ));
        }
        if self.timed_out {
            return Some((
                FailureKind::Timeout,
                format!(
                    "timeout: still running after {}; all its processes were killed",
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
/// Between SIGTERM and SIGKILL when a task is stopped.
const KILL_GRACE: Duration = Duration::from_secs(2);

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

/// Runs the command to its end, its timeout, or an abort; then ends every process
/// it started (by this process's [`crate::contain::mechanism`]).
///
/// `on_spawn` is called with the process group and the task's cgroup (if it has
/// one) right after the command starts, so that the caller's bookkeeping (and this
/// function's log file) happen while the command already runs rather than before it.
pub async fn run_shell(
    run: ShellRun<'_>,
    abort: Abort,
    on_spawn: impl FnOnce(Option<i32>, Option<&Path>),
) -> ShellOutcome {
    run_contained(run, abort, on_spawn, crate::contain::mechanism()).await
}

/// [`run_shell`] with the containment mechanism given.
pub(crate) async fn run_contained(
    run: ShellRun<'_>,
    mut abort: Abort,
    on_spawn: impl FnOnce(Option<i32>, Option<&Path>),
    how: &Mechanism,
) -> ShellOutcome {
    let started = Instant::now();
    let mut outcome = ShellOutcome {
        timeout_secs: run.timeout_secs,
        ..ShellOutcome::default()
    };
    let mut contained = Containment::new(run.task_id, how);
    let mut mem = MemWatch::new(run.mem_cap_mb, contained.cgroup());
    let mut child = match spawn(&run, &mut contained) {
        Ok(c) => c,
        Err(e) => {
            contained.end().await;
            outcome.spawn_error = Some(e);
            return outcome;
        }
    };
    let pgid = child.id().map(|p| p as i32);
    mem.started(pgid);
    on_spawn(pgid, contained.cgroup());
    // Output waits in the pipes until the log is open.
    let log = match open_log(&run) {
        Ok(log) => log,
        Err(e) => {
            stop(pgid, &contained, &mut child).await;
            contained.end().await;
            outcome.spawn_error = Some(e);
            return outcome;
        }
    };
    let (stdout, stderr) = child.take_pipes();
    let out = tokio::spawn(copy_to_log(stdout, log.clone(), false));
    let err = tokio::spawn(copy_to_log(stderr, log.clone(), true));

    // Absurd timeouts (1e30 s in a hand-written file) mean "no timeout", not a panic.
    let timeout = Duration::try_from_secs_f64(run.timeout_secs.max(0.0))
        .unwrap_or(Duration::from_secs(100 * 365 * 86_400));
    let mut killed: Option<(String, String)> = None;
    let status = tokio::select! {
        s = child.wait() => s.ok(),
        _ = tokio::time::sleep(timeout) => {
            outcome.timed_out = true;
            let why = format!("timeout after {}", rigmind_types::format_duration(run.timeout_secs));
            killed = Some((rigmind_queue::time::now_rfc3339(), why));
            stop(pgid, &contained, &mut child).await
        }
        _ = mem.until_over() => {
            let why = format!("past its memory cap of {} MB", run.mem_cap_mb.unwrap_or(0));
            killed = Some((rigmind_queue::time::now_rfc3339(), why));
            kill_now(pgid, &contained, &mut child).await
        }
        _ = wait_abort(&mut abort) => {
            outcome.aborted = true;
            let why = "the runner is shutting down and its grace period is over; the task goes back to the queue";
            killed = Some((rigmind_queue::time::now_rfc3339(), why.to_string()));
            stop(pgid, &contained, &mut child).await
        }
    };
    outcome.return_code = status.map(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    });
    // Whatever the command left running (background children, daemons that left
    // its group) ends with it; then nothing holds the pipes any more. The group
    // first: a child that has not yet left it is caught whatever its environment
    // shows at this instant.
    if let Some(pg) = pgid {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe { libc::kill(-pg, libc::SIGKILL) };
    }
    outcome.mem = mem.finish(child.max_rss());
    contained.end().await;
    finish_log(&mut outcome, (out, err), &log, killed).await;
    outcome.elapsed_secs = started.elapsed().as_secs_f64();
    outcome
}

/// A started command: started into its cgroup by [`crate::spawn`], or by std's
/// `Command` (no cgroup, or `clone3` not available here).
enum Proc {
    Std(Child),
    Clone(crate::spawn::Spawned),
}

/// A pipe from the command, whichever way it was started.
type Pipe = Box<dyn AsyncRead + Unpin + Send>;

impl Proc {
    fn id(&self) -> Option<u32> {
        match self {
            Proc::Std(c) => c.id(),
            Proc::Clone(s) => Some(s.id()),
        }
    }

    /// The command's `ru_maxrss` in bytes, once reaped (known only when it was
    /// started by [`crate::spawn`]).
    fn max_rss(&self) -> Option<u64> {
        match self {
            Proc::Std(_) => None,
            Proc::Clone(s) => s.max_rss(),
        }
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Proc::Std(c) => c.wait().await,
            Proc::Clone(s) => s.wait().await,
        }
    }

    /// The command's stdout and stderr (once).
    fn take_pipes(&mut self) -> (Option<Pipe>, Option<Pipe>) {
        fn boxed<R: AsyncRead + Unpin + Send + 'static>(r: Option<R>) -> Option<Pipe> {
            r.map(|r| Box::new(r) as Pipe)
        }
        match self {
            Proc::Std(c) => (boxed(c.stdout.take()), boxed(c.stderr.take())),
            Proc::Clone(s) => (boxed(s.stdout.take()), boxed(s.stderr.take())),
        }
    }
}

/// Starts `bash -c` in its own process group, in the task's cgroup if any: started
/// inside it where the machine allows ([`crate::spawn`]), else joining it before
/// its exec.
fn spawn(run: &ShellRun<'_>, contained: &mut Containment) -> Result<Proc, String> {
    let failed =
        |e: &dyn std::fmt::Display| format!("cannot start bash in {}: {e}", run.workdir.display());
    if let Some(dir) = contained.dir().filter(|_| bash().is_absolute()) {
        let spec = crate::spawn::Spec {
            program: bash(),
            args: &["-c", run.command],
            env: environment_of(run),
            cwd: run.workdir,
            cgroup: dir,
        };
        match crate::spawn::spawn(&spec) {
            Ok(s) => {
                contained.started();
                return Ok(Proc::Clone(s));
            }
            Err(crate::spawn::SpawnError::Io(e)) => {
                contained.started();
                return Err(failed(&e));
            }
            Err(e @ crate::spawn::SpawnError::Unsupported(_)) => {
                tracing::debug!("{e}; forking instead");
            }
        }
    }
    let mut cmd = Command::new(bash());
    cmd.arg("-c")
        .arg(run.command)
        .current_dir(run.workdir)
        .envs(run.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in run.unset {
        cmd.env_remove(var);
    }
    let spawned = contained.prepare(&mut cmd).and_then(|()| cmd.spawn());
    contained.started();
    spawned.map(Proc::Std).map_err(|e| failed(&e))
}

/// The command's whole environment: the runner's, less `unset`, with `env` over it
/// (what std's `Command` makes of the same).
fn environment_of(run: &ShellRun<'_>) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> =
        std::env::vars_os().collect();
    for var in run.unset {
        env.remove(std::ffi::OsStr::new(var));
    }
    env.extend(run.env.iter().map(|(k, v)| (k.into(), v.into())));
    env.into_iter().collect()
}

/// Opens the task's log for this run and writes the run's header.
fn open_log(run: &ShellRun<'_>) -> Result<Arc<Mutex<LogSink>>, String> {
    // Non-blocking open: a FIFO under the log's name must not hang the runner.
    let mut f = rigmind_queue::fsio::open_regular(
        run.log_path,
        OpenOptions::new().create(true).append(true),
        "task log",
    )
    .map_err(|e| format!("cannot open log {}: {e}", run.log_path.display()))?;
    let _ = writeln!(f, "{}", run.header);
    Ok(Arc::new(Mutex::new(LogSink::new(f, run.log_cap))))
}

type Copier = tokio::task::JoinHandle<(u64, String)>;

/// Once the command's processes are gone: the rest of its output, the kept tail
/// of a capped log, and the line saying why it was killed (`killed`: when, why).
async fn finish_log(
    outcome: &mut ShellOutcome,
    (out, err): (Copier, Copier),
    log: &Mutex<LogSink>,
    killed: Option<(String, String)>,
) {
    // A process that escaped everything may still hold the pipes: do not wait forever.
    if let Ok(Ok((n, _))) = tokio::time::timeout(KILL_GRACE, out).await {
        outcome.output_lines += n;
    }
    if let Ok(Ok((n, tail))) = tokio::time::timeout(KILL_GRACE, err).await {
        outcome.output_lines += n;
        outcome.stderr_tail = tail;
    }
    if let Ok(mut sink) = log.lock() {
        sink.finish();
        if let Some((at, why)) = killed {
            let how = format!(
                "{why} (SIGTERM to its processes, SIGKILL {} s later)",
                KILL_GRACE.as_secs()
            );
            sink.note(&kill_line(&at, &how));
        }
    }
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

/// SIGTERM to the group and every process of the task, SIGKILL to them two seconds
/// later if the command is still there (or at once after it exits: children that
/// ignored SIGTERM go too).
async fn stop(
    pgid: Option<i32>,
    contained: &Containment,
    child: &mut Proc,
) -> Option<std::process::ExitStatus> {
    signal_all(pgid, contained, libc::SIGTERM);
    let status = match tokio::time::timeout(KILL_GRACE, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            signal_all(pgid, contained, libc::SIGKILL);
            child.wait().await.ok()
        }
    };
    signal_all(pgid, contained, libc::SIGKILL);
    status
}

/// SIGKILL to the group and every process of the task at once, no grace period
/// (a task past its memory cap is still growing), and its exit status.
async fn kill_now(
    pgid: Option<i32>,
    contained: &Containment,
    child: &mut Proc,
) -> Option<std::process::ExitStatus> {
    signal_all(pgid, contained, libc::SIGKILL);
    child.wait().await.ok()
}

fn signal_all(pgid: Option<i32>, contained: &Containment, sig: i32) {
    if let Some(pg) = pgid {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe { libc::kill(-pg, sig) };
    }
    contained.signal(sig);
}

/// Copies a pipe into the log, counting lines; for stderr keeps the last characters.
async fn copy_to_log(
    pipe: Option<impl AsyncRead + Unpin>,
    log: Arc<Mutex<LogSink>>,
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
        if let Ok(mut sink) = log.lock() {
            sink.write(chunk);
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
    use rigmind_testkit::running;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A task id no other test (or test process) uses.
    fn task_id() -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "shell-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )
    }

    async fn run_with(
        cmd: &str,
        timeout: f64,
        how: &Mechanism,
        cap: Option<u64>,
        abort: Abort,
    ) -> (ShellOutcome, String) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.log");
        let id = task_id();
        let o = run_contained(
            ShellRun {
                command: cmd,
                workdir: dir.path(),
                env: vec![
                    ("GREETING".into(), "hi".into()),
                    ("RIGMIND_TASK_ID".into(), id.clone()),
                ],
                unset: &[],
                timeout_secs: timeout,
                log_path: &log,
                header: "--- header ---".into(),
                task_id: &id,
                log_cap: cap,
                mem_cap_mb: None,
            },
            abort,
            |_, _| {},
            how,
        )
        .await;
        (o, std::fs::read_to_string(&log).unwrap())
    }

    async fn run(cmd: &str, timeout: f64) -> (ShellOutcome, String) {
        let (_tx, rx) = watch::channel(false);
        run_with(cmd, timeout, crate::contain::mechanism(), None, rx).await
    }

    /// A retry on another runner reuses the task's name for its cgroup: one left
    /// behind by an attempt whose runner died, killed by the brain through
    /// `cgroup.kill`, must not kill the new command.
    #[tokio::test]
    async fn a_retry_runs_where_an_earlier_attempt_s_cgroup_was_killed() {
        let how = crate::contain::mechanism();
        let Mechanism::Cgroup { parent } = how else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.log");
        let id = task_id();
        let left = parent.join(format!("rigmind-task-{id}"));
        std::fs::create_dir(&left).unwrap();
        crate::contain::kill_cgroup(&left);
        let (_tx, abort) = watch::channel(false);
        let run = ShellRun {
            command: "echo ran",
            workdir: dir.path(),
            env: vec![("RIGMIND_TASK_ID".into(), id.clone())],
            unset: &[],
            timeout_secs: 30.0,
            log_path: &log,
            header: "--- header ---".into(),
            task_id: &id,
            log_cap: None,
            mem_cap_mb: None,
        };
        let o = run_contained(run, abort, |_, _| {}, how).await;
        assert_eq!(o.return_code, Some(0), "{o:?}");
        assert!(!left.exists(), "the task's cgroup is removed at its end");
    }

    /// Runs `cmd` under a memory cap of `cap_mb` by `how`.
    async fn run_capped(cmd: &str, how: &Mechanism, cap_mb: Option<u64>) -> ShellOutcome {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.log");
        let id = task_id();
        let run = ShellRun {
            command: cmd,
            workdir: dir.path(),
            env: vec![("RIGMIND_TASK_ID".into(), id.clone())],
            unset: &[],
            timeout_secs: 60.0,
            log_path: &log,
            header: "--- header ---".into(),
            task_id: &id,
            log_cap: None,
            mem_cap_mb: cap_mb,
        };
        run_contained(run, watch::channel(false).1, |_, _| {}, how).await
    }

    /// `tail -n 1` keeps a line without a newline whole: it holds `mb` MB until
    /// its input ends, `hold` seconds later.
    fn hog(mb: u64, hold: u32) -> String {
        format!("(head -c {mb}M /dev/zero; sleep {hold}) | tail -n 1 > /dev/null; echo done")
    }

    #[tokio::test]
    async fn a_task_past_its_memory_cap_is_killed_as_oom_its_peak_recorded() {
        for how in mechanisms() {
            let o = run_capped(&hog(400, 30), &how, Some(100)).await;
            let (kind, why) = o.failure().expect("killed");
            assert_eq!(kind, FailureKind::Oom, "{how}: {why} {o:?}");
            assert!(
                why.starts_with("oom: past its memory cap of 100 MB"),
                "{why}"
            );
            assert!(
                o.elapsed_secs < 25.0,
                "{how}: killed at once, not at its end"
            );
            assert_eq!(o.mem.cap_mb, Some(100));
            assert!(o.mem.peak_mb.is_some_and(|p| p >= 90), "{how}: {:?}", o.mem);
            // Under its cap it runs to its end, with its peak.
            let o = run_capped(&hog(150, 1), &how, Some(1000)).await;
            assert_eq!(o.failure(), None, "{how}: {o:?}");
            assert!(
                o.mem.peak_mb.is_some_and(|p| p >= 150),
                "{how}: {:?}",
                o.mem
            );
            let o = run_capped("true", &how, None).await;
            assert_eq!((o.failure(), o.mem.cap_mb, o.mem.oom), (None, None, false));
        }
    }

    /// Both mechanisms where this machine has cgroups, else the marker alone.
    fn mechanisms() -> Vec<Mechanism> {
        let marker = Mechanism::Marker { why: "test".into() };
        match crate::contain::mechanism() {
            m @ Mechanism::Cgroup { .. } => vec![m.clone(), marker],
            Mechanism::Marker { why } => {
                eprintln!("no cgroups here ({why}): testing the marker only");
                vec![marker]
            }
        }
    }

    /// A command that starts a daemon outside its process group and records its pid.
    fn daemon_cmd(pidfile: &Path, then: &str) -> String {
        format!("setsid sleep 300 & echo $! > {}; {then}", pidfile.display())
    }

    /// An abort that is sent once `path` holds a whole line (the command has got that far).
    fn abort_once_exists(path: &Path) -> Abort {
        let (tx, rx) = watch::channel(false);
        let path = path.to_path_buf();
        tokio::spawn(async move {
            // The shell creates the file before it writes the pid: wait for the line.
            while !std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n')) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = tx.send(true);
            // Keep the sender alive until the run is over.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        rx
    }

    /// A command that escapes its task's cgroup as far as it can: it makes a child
    /// cgroup there, moves into it (so the task's `cgroup.procs` lists nothing)
    /// and starts a daemon without the task's marker, recording its pid in
    /// `pidfile` and the task cgroup's name in `pidfile.cg`; exit 9 if it cannot.
    fn escape_cmd(parent: &Path, pidfile: &Path, then: &str) -> String {
        let (parent, pidfile) = (parent.display(), pidfile.display());
        format!(
            "cg=$(basename \"$(sed -n 's/^0:://p' /proc/self/cgroup)\"); echo \"$cg\" > {pidfile}.cg; \
             mkdir {parent}/$cg/sub && echo $$ > {parent}/$cg/sub/cgroup.procs || exit 9; \
             env -u RIGMIND_TASK_ID setsid sleep 300 & echo $! > {pidfile}; {then}"
        )
    }

    fn read_pid(p: &Path) -> i32 {
        std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
    }

    #[tokio::test]
    async fn daemons_end_with_their_task_on_exit_timeout_and_abort() {
        for how in mechanisms() {
            let dir = tempfile::tempdir().unwrap();
            // Exit 0 with a daemon left behind.
            let pidfile = dir.path().join("exit");
            let (o, _) = run_with(
                &daemon_cmd(&pidfile, "exit 0"),
                30.0,
                &how,
                None,
                watch::channel(false).1,
            )
            .await;
            assert_eq!(o.return_code, Some(0));
            let pid = read_pid(&pidfile);
            assert!(
                !running(pid),
                "{how}: the daemon {pid} of a task that exited 0 survived"
            );

            // Timeout.
            let pidfile = dir.path().join("timeout");
            let (o, log) = run_with(
                &daemon_cmd(&pidfile, "sleep 60"),
                0.5,
                &how,
                None,
                watch::channel(false).1,
            )
            .await;
            assert!(o.timed_out);
            let pid = read_pid(&pidfile);
            assert!(
                !running(pid),
                "{how}: the daemon {pid} of a timed-out task survived"
            );
            let last = log.lines().last().unwrap();
            assert!(
                last.starts_with("--- rigmind: killed at ")
                    && last.ends_with(
                        ": timeout after 0.5s (SIGTERM to its processes, SIGKILL 2 s later) ---"
                    ),
                "{log}"
            );

            // Abort (the runner's shutdown).
            let pidfile = dir.path().join("abort");
            let rx = abort_once_exists(&pidfile);
            let (o, log) = run_with(&daemon_cmd(&pidfile, "sleep 60"), 30.0, &how, None, rx).await;
            assert!(o.aborted);
            let pid = read_pid(&pidfile);
            assert!(
                !running(pid),
                "{how}: the daemon {pid} of an aborted task survived"
            );
            assert!(log.contains("the runner is shutting down"), "{log}");
        }
    }

    #[tokio::test]
    async fn a_task_that_moves_into_a_child_cgroup_still_ends_with_it() {
        let how = crate::contain::mechanism();
        let Mechanism::Cgroup { parent } = how else {
            rigmind_testkit::skip(
                "rigmind-exec shell::a_task_that_moves_into_a_child_cgroup_still_ends_with_it",
                &format!("no writable cgroup v2 here ({how})"),
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let gone = |pidfile: &Path, what: &str| {
            let pid = read_pid(pidfile);
            assert!(!running(pid), "the escaped daemon {pid} of {what} survived");
            let cg = std::fs::read_to_string(pidfile.with_extension("cg")).unwrap();
            let cg = parent.join(cg.trim());
            assert!(!cg.exists(), "{what}: {} is left", cg.display());
        };
        // Exit 0 with the daemon left behind in the child cgroup.
        let pidfile = dir.path().join("exit");
        let cmd = escape_cmd(parent, &pidfile, "exit 0");
        let (o, log) = run_with(&cmd, 30.0, how, None, watch::channel(false).1).await;
        assert_eq!(o.return_code, Some(0), "{log}");
        gone(&pidfile, "a task that exited 0");
        // Timeout.
        let pidfile = dir.path().join("timeout");
        let cmd = escape_cmd(parent, &pidfile, "sleep 60");
        let (o, log) = run_with(&cmd, 0.5, how, None, watch::channel(false).1).await;
        assert!(o.timed_out, "{log}");
        gone(&pidfile, "a timed-out task");
        // Abort (the worker stops).
        let pidfile = dir.path().join("abort");
        let cmd = escape_cmd(parent, &pidfile, "sleep 60");
        let rx = abort_once_exists(&pidfile);
        let (o, log) = run_with(&cmd, 30.0, how, None, rx).await;
        assert!(o.aborted, "{log}");
        gone(&pidfile, "an aborted task");
    }

    #[tokio::test]
    async fn the_log_keeps_head_and_tail_within_its_cap() {
        let (_tx, rx) = watch::channel(false);
        let cmd = "echo first; head -c 300000 /dev/zero | tr '\\0' x; echo; echo last";
        let (o, log) = run_with(cmd, 30.0, crate::contain::mechanism(), Some(1000), rx).await;
        assert_eq!(o.return_code, Some(0));
        assert!(
            log.starts_with("--- header ---\nfirst\nxxx"),
            "{}",
            &log[..50]
        );
        assert!(log.ends_with("xxx\nlast\n"), "{}", &log[log.len() - 50..]);
        assert!(
            log.contains("\n--- rigmind: 299012 bytes cut here (log cap 0.00 MB) ---\n"),
            "{log}"
        );
        assert!(log.len() < 1200, "{}", log.len());
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
