//! Running one claimed task and filing its result.
//!
//! Workers and the brain's own executor (`executor: brain`) both come here, so a task
//! runs the same way wherever it runs: `bash -c` in the plan's directory, in a process
//! group and (where the machine allows) a cgroup of its own, so that every process
//! it started ends with it ([`contain`]), stdout and stderr appended to
//! `logs/tasks/<task_id>.log` within a cap ([`tasklog`]), and the result fields of
//! queue-layout.md written into the file that moves to `complete/` or `failed/`.

pub mod answer;
mod contain;
mod group;
mod kill;
pub mod llm;
mod memwatch;
mod shell;
mod spawn;
mod tasklog;

pub use contain::{mechanism, remove_stale_cgroups, Mechanism};
pub use kill::kill_task_group;
pub use memwatch::cap_mechanism;
pub use shell::{run_shell, Abort, ShellOutcome, ShellRun};
pub use tasklog::{append_note, kill_line, DEFAULT_MAX_TASK_LOG_MB};

use std::path::{Path, PathBuf};

use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::task::{FailureKind, TaskFile, TaskStatus};
use rigmind_queue::{Layout, QueueError, TaskDir};
use rigmind_types::TaskClass;

/// Who is running the task, for the task's result and environment.
#[derive(Debug, Clone)]
pub struct Runner {
    pub worker_id: String,
    /// This life of the runner; recorded on each task it starts.
    pub session: String,
    /// The GPU the runner is pinned to: exported as `RIGMIND_GPU`.
    pub gpu: Option<String>,
    /// Exported as `CUDA_VISIBLE_DEVICES` when set.
    pub cuda_visible_devices: Option<String>,
    /// Where a task without a `workdir` runs.
    pub default_workdir: PathBuf,
    /// The GPU's LLM server, for llm and resource tasks.
    pub llm: Option<llm::LlmRunner>,
    /// Bytes of output a task's log keeps per run (rig.toml `[logs]
    /// max_task_log_mb`); `None`: no cap.
    pub log_cap: Option<u64>,
    /// Environment variables no task command inherits: the `api_key_env`
    /// variables of rig.toml's endpoints.
    pub scrub_env: Vec<String>,
    /// rig.toml's `[safety]`: a task's memory cap is `mem_limit_mb`, else its
    /// `mem_mb` times its `mem_limit_factor`.
    pub safety: rigmind_config::Safety,
}

/// What came of running a task, whatever kind of task it was.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    /// `None` on success, else the failure kind and a reason for people.
    pub failure: Option<(FailureKind, String)>,
    /// Stopped by the runner's shutdown: the task goes back to the queue.
    pub aborted: bool,
    pub return_code: Option<i32>,
    pub elapsed_secs: f64,
    pub output_lines: u64,
    /// The last 200 characters of stderr (or of the error) on failure.
    pub error_snippet: Option<String>,
    /// For llm and resource tasks.
    pub llm: Option<LlmStats>,
    /// A failed llm attempt's answer (cut), for the next escalation tier.
    pub failed_output: Option<String>,
    /// A shell run's memory: its cap, its peak, and whether it went past the cap.
    pub mem: shell::MemReport,
}

/// What an llm run adds to the result (queue-layout.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmStats {
    pub model: String,
    pub eval_count: Option<u64>,
    pub tokens_per_second: Option<f64>,
    /// Prompt tokens.
    pub prompt_tokens: Option<u64>,
    /// The model's load time for this answer, in seconds.
    pub load_seconds: Option<f64>,
    /// The answer's cost, from its endpoint's prices.
    pub cost_usd: Option<f64>,
}

impl From<ShellOutcome> for RunOutcome {
    fn from(o: ShellOutcome) -> Self {
        let failure = o.failure();
        Self {
            error_snippet: failure.as_ref().map(|_| o.stderr_tail.clone()),
            failure,
            aborted: o.aborted,
            return_code: o.return_code,
            elapsed_secs: o.elapsed_secs,
            output_lines: o.output_lines,
            llm: None,
            failed_output: None,
            mem: o.mem,
        }
    }
}

/// How a run ended, as far as the queue is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filed {
    /// Moved to `complete/`.
    Complete,
    /// Moved to `failed/` with this kind.
    Failed(FailureKind),
    /// Put back into `queue/` unrun to the end (the runner is shutting down), or
    /// not started at all (its batch was cancelled after the claim).
    Returned,
    /// Not filed: the task had been taken from this runner (the brain judged it
    /// lost and killed it), so its result is not the task's any more.
    Discarded,
}

/// Whether a finished run's task is still this runner's to file.
enum Ours {
    Yes,
    /// Another run (a retry on another worker) holds it now.
    Taken,
    /// Its file is in `processing/` no more.
    Gone,
}

/// A task whose run is over, to be filed by [`Finished::file`].
#[derive(Debug)]
pub struct Finished {
    pub task: TaskFile,
    /// Where the task is now (in `processing/`).
    pub from: PathBuf,
    pub dir: TaskDir,
    pub filed: Filed,
    /// The runner session and start time this run was recorded under. Kept apart
    /// from `task` because a task going back to the queue has its run fields
    /// cleared, and the claim must still be recognised as ours.
    pub session: Option<String>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Finished {
    /// Writes the result into `complete/` or `failed/` (or the task back into
    /// `queue/`) and removes it from `processing/`. Blocking file I/O. A result is
    /// flushed with its directory entry: once filed, a power cut cannot undo it.
    pub fn file(&self, layout: &Layout) -> Result<Filed, QueueError> {
        match self.still_ours() {
            Ours::Yes => {}
            Ours::Gone => {
                tracing::warn!(
                    task = %self.task.name,
                    file = %self.from.display(),
                    "the task's file is gone from processing/ (removed while it ran); \
                     nothing is filed, its result is discarded (the brain retries it as lost)"
                );
                return Ok(Filed::Discarded);
            }
            Ours::Taken => {
                tracing::warn!(
                    task = %self.task.name,
                    "the task was taken from this runner while it ran; its result is discarded"
                );
                return Ok(Filed::Discarded);
            }
        }
        if self.dir == TaskDir::Queue {
            tracing::info!(
                task = %self.task.name,
                attempts = self.task.attempts,
                retries_used = self.task.retry_count,
                "task put back into the queue unfinished (its runner is stopping, or its batch was cancelled before it started); this attempt is not counted and spends no retry"
            );
            // Backwards (processing -> queue): one copy at every instant, so a
            // claim can never be deleted by our clean-up.
            fsio::rewrite_and_move(
                &self.from,
                &layout.dir(TaskDir::Queue),
                &self.task.to_bytes(),
            )?;
            return Ok(self.filed);
        }
        rigmind_queue::file_into(layout, &self.from, &self.task, self.dir, Sync::Dir)?;
        Ok(self.filed)
    }

    /// Whether `processing/` still holds this run of the task (same session).
    fn still_ours(&self) -> Ours {
        match TaskFile::read(&self.from) {
            // Another task under the same name (one re-created after its file was
            // removed), or a later run of it on this very worker (same session,
            // another start).
            Ok(t) if t.task_id != self.task.task_id => Ours::Taken,
            Ok(t) if t.worker_session.is_some() && t.started_at != self.started_at => Ours::Taken,
            // No session: the start record never got written; nobody else has it.
            Ok(t) if t.worker_session.is_none() || t.worker_session == self.session => Ours::Yes,
            Ok(_) => Ours::Taken,
            Err(e) if e.is_not_found() => Ours::Gone,
            // Unreadable but present: ours to replace.
            Err(_) => Ours::Yes,
        }
    }

    /// [`Finished::file`], tried again every `every` while it fails (a full disk, a
    /// permission problem), until it succeeds or `give_up` says so. Nothing is
    /// half-written meanwhile: the task stays in `processing/` with its start record.
    pub fn file_until_done(
        &self,
        layout: &Layout,
        every: std::time::Duration,
        give_up: impl Fn() -> bool,
    ) -> Result<Filed, QueueError> {
        let mut last_error = String::new();
        loop {
            match self.file(layout) {
                Ok(f) => {
                    if !last_error.is_empty() {
                        tracing::info!(task = %self.task.name, "filed after an error");
                    }
                    return Ok(f);
                }
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::error!(task = %self.task.name, "filing the result: {msg}; will retry");
                        last_error = msg;
                    }
                    if give_up() {
                        return Err(e);
                    }
                    std::thread::sleep(every);
                }
            }
        }
    }
}

/// Runs a claimed task to its end (or its timeout, or an abort). The start is
/// recorded in `processing/` (worker, times, log path, process group) while the
/// command already runs. The result still has to be filed ([`Finished::file`]).
pub async fn run_claimed(
    layout: &Layout,
    processing_path: &Path,
    mut task: TaskFile,
    runner: &Runner,
    abort: Abort,
) -> Finished {
    mark_started(&mut task, runner);
    // Looked at after `started_at` is taken: a cancellation accepted (its marker
    // written) before this look stops the task here; one accepted after it came
    // later than `started_at`. So no task starts after its batch's cancellation.
    if rigmind_queue::cancel::is_cancelled(layout, &task.batch_id) {
        tracing::info!(task = %task.name, batch = %task.batch_id, "batch cancelled; not started");
        return put_back(task, processing_path);
    }
    task.attempts += 1;
    task.log_path = Some(layout.task_log(&task.task_id));
    let outcome = run_started(layout, processing_path, &mut task, runner, abort).await;
    finish(task, processing_path, outcome)
}

/// The start record's fields: who runs the task, in which session, on which GPU,
/// since when.
fn mark_started(task: &mut TaskFile, runner: &Runner) {
    task.status = TaskStatus::Processing;
    task.worker_id = Some(runner.worker_id.clone());
    task.worker_session = Some(runner.session.clone());
    task.gpu = runner.gpu.clone();
    task.started_at = Some(rigmind_queue::time::now());
}

/// Runs a started task by its class: an llm or resource task against the
/// runner's LLM server, anything else as its command under `bash -c`.
async fn run_started(
    layout: &Layout,
    processing_path: &Path,
    task: &mut TaskFile,
    runner: &Runner,
    abort: Abort,
) -> RunOutcome {
    let log = layout.task_log(&task.task_id);
    let workdir = task
        .workdir
        .clone()
        .unwrap_or_else(|| runner.default_workdir.clone());
    let header = format!(
        "--- rigmind: {} attempt {} on {} at {} ---",
        task.name,
        task.attempts,
        runner.worker_id,
        task.started_at
            .map(rigmind_queue::time::to_rfc3339)
            .unwrap_or_default()
    );
    match (task.task_class, &runner.llm) {
        (Some(TaskClass::Llm | TaskClass::Resource), None) => ShellOutcome::not_runnable(format!(
            "task '{}' needs an LLM server and {} has none",
            task.name, runner.worker_id
        ))
        .into(),
        (Some(class @ (TaskClass::Llm | TaskClass::Resource)), Some(llm)) => {
            // No process to record: the start record is written before the request.
            record_start(processing_path, task);
            let resource = class == TaskClass::Resource;
            llm::run_on_server(task, llm, resource, &workdir, &log, &header, abort).await
        }
        _ => match task.command.clone() {
            Some(cmd) => {
                let task_id = task.task_id.clone();
                let run = ShellRun {
                    command: &cmd,
                    workdir: &workdir,
                    env: environment(task, runner),
                    unset: &runner.scrub_env,
                    timeout_secs: task.timeout_seconds,
                    log_path: &log,
                    header,
                    task_id: &task_id,
                    log_cap: runner.log_cap,
                    mem_cap_mb: runner.safety.mem_cap_mb(task.mem_mb, task.mem_limit_mb),
                };
                let record = |pgid: Option<i32>, cgroup: Option<&Path>| {
                    task.pgid = pgid;
                    task.cgroup = cgroup.map(Path::to_path_buf);
                    record_start(processing_path, task);
                };
                run_shell(run, abort, record).await.into()
            }
            None => ShellOutcome::not_runnable(format!(
                "task '{}' has no command a {} runner can run",
                task.name, runner.worker_id
            ))
            .into(),
        },
    }
}

/// Writes the start record over the claimed file in `processing/`; a failure is
/// said and the run goes on.
fn record_start(processing_path: &Path, task: &TaskFile) {
    // This replaces the claimed file by rename: the journal orders the new data
    // before the rename (ext4's default data=ordered), so a crash leaves the old
    // version or the new one without a flush.
    if let Err(e) = fsio::write_atomic(processing_path, &task.to_bytes(), Sync::None) {
        tracing::warn!(task = %task.name, "recording the start: {e}");
    }
}

/// The result of a run, to be filed: `complete/` or `failed/` with the outcome's
/// fields, or back into the queue when the run was aborted (the attempt not
/// counted).
fn finish(mut task: TaskFile, processing_path: &Path, outcome: RunOutcome) -> Finished {
    if outcome.aborted {
        task.attempts = task.attempts.saturating_sub(1);
        return put_back(task, processing_path);
    }
    task.finished_at = Some(rigmind_queue::time::now());
    task.elapsed_seconds = Some((outcome.elapsed_secs * 1000.0).round() / 1000.0);
    task.return_code = outcome.return_code;
    task.output_lines = Some(outcome.output_lines);
    if let Some(stats) = &outcome.llm {
        task.model = Some(stats.model.clone());
        task.eval_count = stats.eval_count;
        task.tokens_per_second = stats.tokens_per_second.map(|t| (t * 100.0).round() / 100.0);
        task.prompt_tokens = stats.prompt_tokens;
        task.load_seconds = stats.load_seconds.map(|t| (t * 1000.0).round() / 1000.0);
        task.cost_usd = stats.cost_usd;
    }
    task.failed_output = outcome.failed_output.clone();
    task.mem_cap_mb = outcome.mem.cap_mb;
    task.peak_rss_mb = outcome.mem.peak_mb;
    // Failures on an escalation tier are counted there; the brain moves the
    // task up once they reach `[escalation] after_failures`.
    if outcome.failure.is_some() && task.tier.is_some() {
        task.tier_failures += 1;
    }
    let (session, started_at) = (task.worker_session.clone(), task.started_at);
    let (dir, filed) = match outcome.failure {
        None => {
            task.status = TaskStatus::Complete;
            (TaskDir::Complete, Filed::Complete)
        }
        Some((kind, reason)) => {
            task.status = TaskStatus::Failed;
            task.failure_kind = Some(kind);
            task.error = Some(reason);
            task.error_snippet = outcome.error_snippet;
            (TaskDir::Failed, Filed::Failed(kind))
        }
    };
    Finished {
        task,
        from: processing_path.to_path_buf(),
        dir,
        filed,
        session,
        started_at,
    }
}

/// A task going back into the queue, unstarted or unfinished: its run fields are
/// cleared, and the session and start it ran under are kept apart so that the
/// claim is still recognised as ours when it is filed.
fn put_back(mut task: TaskFile, processing_path: &Path) -> Finished {
    let (session, started_at) = (task.worker_session.clone(), task.started_at);
    task.status = TaskStatus::Queued;
    task.clear_run_results();
    Finished {
        task,
        from: processing_path.to_path_buf(),
        dir: TaskDir::Queue,
        filed: Filed::Returned,
        session,
        started_at,
    }
}

fn environment(task: &TaskFile, runner: &Runner) -> Vec<(String, String)> {
    let mut env = vec![
        ("RIGMIND_TASK_ID".to_string(), task.task_id.clone()),
        ("RIGMIND_TASK_NAME".to_string(), task.name.clone()),
        ("RIGMIND_BATCH_ID".to_string(), task.batch_id.clone()),
        ("RIGMIND_WORKER_ID".to_string(), runner.worker_id.clone()),
        (
            "RIGMIND_GPU".to_string(),
            runner.gpu.clone().unwrap_or_default(),
        ),
    ];
    if let Some(cvd) = &runner.cuda_visible_devices {
        env.push(("CUDA_VISIBLE_DEVICES".to_string(), cvd.clone()));
    }
    env.extend(task.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    // Last, so that a plan's own env cannot change what `{item}` in its command
    // refers to.
    env.extend(item_environment(task));
    env
}

/// `RIGMIND_ITEM`, `RIGMIND_STEM`, `RIGMIND_INDEX` of a fanned-out task. A file
/// written before the stem was recorded gets it from the item, as the plan does.
fn item_environment(task: &TaskFile) -> Vec<(String, String)> {
    let Some(item) = &task.item else {
        return Vec::new();
    };
    let stem = task.stem.clone().unwrap_or_else(|| {
        Path::new(item)
            .file_stem()
            .map_or_else(|| item.clone(), |s| s.to_string_lossy().into_owned())
    });
    let mut env = vec![
        (rigmind_types::ITEM_ENV.to_string(), item.clone()),
        (rigmind_types::STEM_ENV.to_string(), stem),
    ];
    if let Some(i) = task.index {
        env.push((rigmind_types::INDEX_ENV.to_string(), i.to_string()));
    }
    env
}
