//! Running one claimed task and filing its result.
//!
//! Workers and the brain's own executor (`executor: brain`) both come here, so a task
//! runs the same way wherever it runs: `bash -c` in the plan's directory, in a process
//! group of its own (so a timeout kills everything it started), stdout and stderr
//! appended to `logs/tasks/<task_id>.log`, and the result fields of queue-layout.md
//! written into the file that moves to `complete/` or `failed/`.

mod group;
pub mod llm;
mod shell;

pub use group::kill_task_group;
pub use shell::{run_shell, Abort, ShellOutcome, ShellRun};

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
}

/// What an llm run adds to the result (queue-layout.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmStats {
    pub model: String,
    pub eval_count: Option<u64>,
    pub tokens_per_second: Option<f64>,
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

/// A task whose run is over, to be filed by [`Finished::file`].
#[derive(Debug)]
pub struct Finished {
    pub task: TaskFile,
    /// Where the task is now (in `processing/`).
    pub from: PathBuf,
    pub dir: TaskDir,
    pub filed: Filed,
}

impl Finished {
    /// Writes the result into `complete/` or `failed/` (or the task back into
    /// `queue/`) and removes it from `processing/`. Blocking file I/O. A result is
    /// flushed with its directory entry: once filed, a power cut cannot undo it.
    pub fn file(&self, layout: &Layout) -> Result<Filed, QueueError> {
        if !self.still_ours() {
            tracing::warn!(
                task = %self.task.name,
                "the task was taken from this runner while it ran; its result is discarded"
            );
            return Ok(Filed::Discarded);
        }
        if self.dir == TaskDir::Queue {
            // Backwards (processing -> queue): one copy at every instant, so a
            // claim can never be deleted by our clean-up.
            fsio::rewrite_and_move(
                &self.from,
                &layout.dir(TaskDir::Queue),
                &self.task.to_bytes(),
            )?;
            return Ok(self.filed);
        }
        file_into(layout, &self.from, &self.task, self.dir, Sync::Dir)?;
        Ok(self.filed)
    }

    /// Whether `processing/` still holds this run of the task (same session).
    fn still_ours(&self) -> bool {
        match TaskFile::read(&self.from) {
            // No session: the start record never got written; nobody else has it.
            Ok(t) => t.worker_session.is_none() || t.worker_session == self.task.worker_session,
            // Unreadable but present: ours to replace. Gone: taken.
            Err(e) => !e.is_not_found(),
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
    task.status = TaskStatus::Processing;
    task.worker_id = Some(runner.worker_id.clone());
    task.worker_session = Some(runner.session.clone());
    task.gpu = runner.gpu.clone();
    task.started_at = Some(rigmind_queue::time::now_rfc3339());
    // Looked at after `started_at` is taken: a cancellation accepted (its marker
    // written) before this look stops the task here; one accepted after it came
    // later than `started_at`. So no task starts after its batch's cancellation.
    if rigmind_queue::cancel::is_cancelled(layout, &task.batch_id) {
        tracing::info!(task = %task.name, batch = %task.batch_id, "batch cancelled; not started");
        task.status = TaskStatus::Queued;
        task.clear_run_results();
        return Finished {
            task,
            from: processing_path.to_path_buf(),
            dir: TaskDir::Queue,
            filed: Filed::Returned,
        };
    }
    task.attempts += 1;
    task.log_path = Some(layout.task_log(&task.task_id));
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
        task.started_at.as_deref().unwrap_or("")
    );
    let outcome: RunOutcome = match (task.task_class, &runner.llm) {
        (Some(TaskClass::Llm | TaskClass::Resource), None) => ShellOutcome::not_runnable(format!(
            "task '{}' needs an LLM server and {} has none",
            task.name, runner.worker_id
        ))
        .into(),
        (Some(class @ (TaskClass::Llm | TaskClass::Resource)), Some(llm)) => {
            // No process to record: the start record is written before the request.
            if let Err(e) = fsio::write_atomic(processing_path, &task.to_bytes(), Sync::None) {
                tracing::warn!(task = %task.name, "recording the start: {e}");
            }
            if class == TaskClass::Llm {
                llm::run_llm(&task, llm, &workdir, &log, &header, abort).await
            } else {
                llm::run_resource(&task, llm, &log, &header, abort).await
            }
        }
        _ => match task.command.clone() {
            Some(cmd) => {
                let run = ShellRun {
                    command: &cmd,
                    workdir: &workdir,
                    env: environment(&task, runner),
                    timeout_secs: task.timeout_seconds,
                    log_path: &log,
                    header,
                };
                let record = |pgid: Option<i32>| {
                    task.pgid = pgid;
                    // This replaces the claimed file by rename: the journal orders the
                    // new data before the rename (ext4's default data=ordered), so a
                    // crash leaves the old version or the new one without a flush.
                    if let Err(e) =
                        fsio::write_atomic(processing_path, &task.to_bytes(), Sync::None)
                    {
                        tracing::warn!(task = %task.name, "recording the start: {e}");
                    }
                };
                run_shell(run, abort, record).await.into()
            }
            None => ShellOutcome::not_runnable(format!(
                "task '{}' has no command a {} runner can run",
                task.name, runner.worker_id
            ))
            .into(),
        },
    };
    let from = processing_path.to_path_buf();
    if outcome.aborted {
        task.status = TaskStatus::Queued;
        task.clear_run_results();
        task.attempts = task.attempts.saturating_sub(1);
        return Finished {
            task,
            from,
            dir: TaskDir::Queue,
            filed: Filed::Returned,
        };
    }
    task.finished_at = Some(rigmind_queue::time::now_rfc3339());
    task.elapsed_seconds = Some((outcome.elapsed_secs * 1000.0).round() / 1000.0);
    task.return_code = outcome.return_code;
    task.output_lines = Some(outcome.output_lines);
    if let Some(stats) = &outcome.llm {
        task.model = Some(stats.model.clone());
        task.eval_count = stats.eval_count;
        task.tokens_per_second = stats.tokens_per_second.map(|t| (t * 100.0).round() / 100.0);
    }
    let (dir, filed) = match outcome.failure.clone() {
        None => {
            task.status = TaskStatus::Complete;
            (TaskDir::Complete, Filed::Complete)
        }
        Some((kind, reason)) => {
            task.status = TaskStatus::Failed;
            task.failure_kind = Some(kind);
            task.error = Some(reason);
            task.error_snippet = outcome.error_snippet.clone();
            (TaskDir::Failed, Filed::Failed(kind))
        }
    };
    Finished {
        task,
        from,
        dir,
        filed,
    }
}

/// Writes `task` into `dir` (under the name it has now), then removes it from
/// where it was. A crash between the
/// two leaves it in both places, which the brain resolves (the later state wins).
pub fn file_into(
    layout: &Layout,
    from: &Path,
    task: &TaskFile,
    dir: TaskDir,
    sync: Sync,
) -> Result<PathBuf, QueueError> {
    let name = from
        .file_name()
        .and_then(|n| n.to_str())
        .map_or_else(|| task.file_name(), str::to_string);
    let to = task.write_named(&layout.dir(dir), &name, sync)?;
    if to != from {
        fsio::remove_if_exists(from)?;
    }
    Ok(to)
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
    env
}
