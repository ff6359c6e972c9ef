//! The task file: its JSON fields (queue-layout.md) and its name on disk.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rigmind_types::{Executor, TaskClass, TaskType};
use serde::{Deserialize, Serialize};

use crate::action::BrainAction;
use crate::error::QueueError;
use crate::fsio;
use crate::time::rfc3339_opt as opt_time;

/// Where a task is in its life; mirrors the directory it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Queued,
    Processing,
    Complete,
    Failed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }
}

/// Why a task failed (queue-layout.md's `failure_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The command exited non-zero (or could not start).
    WorkerFailure,
    /// The task cannot run as written; never retried.
    DefinitionError,
    /// A task it depends on failed.
    DependencyFailed,
    /// It ran past its timeout and all its processes were killed.
    Timeout,
    /// The worker holding it died.
    LostWorker,
    /// It went past its memory cap and was killed (by the kernel in its cgroup,
    /// or by its runner watching its processes); retried while retries remain.
    Oom,
    /// Cancelled by the operator.
    Cancelled,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkerFailure => "worker_failure",
            Self::DefinitionError => "definition_error",
            Self::DependencyFailed => "dependency_failed",
            Self::Timeout => "timeout",
            Self::LostWorker => "lost_worker",
            Self::Oom => "oom",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One task, as a JSON file. Fields the protocol does not know are kept as they were
/// (`extra`), so a hand-added note survives every move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFile {
    pub task_id: String,
    pub batch_id: String,
    pub name: String,
    #[serde(default)]
    pub plan_task_id: String,
    /// `shell`, `llm` or `resource`; derived from the class when written.
    #[serde(rename = "type", default)]
    pub task_type: TaskType,
    /// `None` only in a file written by hand or by an older tool.
    #[serde(default)]
    pub task_class: Option<TaskClass>,
    #[serde(default)]
    pub executor: Executor,
    /// What a brain-executed task does: `execute_plan`, or a shell `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<BrainAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default = "default_priority")]
    pub priority: u8,
    pub status: TaskStatus,
    /// `None` (written `""`) only in a file written by hand.
    #[serde(default, with = "crate::time::rfc3339_or_empty")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub retry_count: u32,

    // --- the definition, from the plan ---
    /// Claim order among tasks of equal priority (older first).
    #[serde(default)]
    pub seq: u64,
    /// The plan file this task came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_file: Option<PathBuf>,
    /// Where the command runs: the plan's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// How many times a worker failure is retried.
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_mb: Option<u64>,
    /// Host RAM (MB) the task reserves: claimed only where it fits (docs/safety.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_mb: Option<u64>,
    /// Its memory cap (MB); absent: `mem_mb` × `[safety] mem_limit_factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `output` may lie outside the plan's directory (the plan says so).
    #[serde(default, skip_serializing_if = "is_false")]
    pub write_outside: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub sensitive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_seconds: Option<f64>,
    /// An llm task's `[[endpoint]]`: it runs there, on any worker, never on a card
    /// (pinned by the plan, or chosen at submission and escalation: the first
    /// endpoint that lists its model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The plan's `endpoint:` pin, kept through every tier: an escalation moves the
    /// task to the pinned endpoint whenever it serves the new tier's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_endpoint: Option<String>,
    /// `json`: the answer must parse as JSON, else the attempt fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Starts on the last escalation tier.
    #[serde(default, skip_serializing_if = "is_false")]
    pub requires_external: bool,
    /// The escalation tier it runs on (1 = the first of `[escalation] tiers`);
    /// `None`: its model is on no tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<u32>,
    /// Failures on its current tier so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tier_failures: u32,
    /// What the attempts on earlier tiers answered and why they failed; the next
    /// tier's prompt carries them as data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_attempts: Vec<EarlierAttempt>,
    /// The for_each item, its stem and index of a fanned-out task: the executor
    /// exports them as `RIGMIND_ITEM`, `RIGMIND_STEM`, `RIGMIND_INDEX`, which the
    /// task's command refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// For resource tasks: the worker that must run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_worker: Option<String>,
    /// Who let this task into the queue: `brain` for what a submission or the
    /// resource manager made, `hand (<owner>)` for a file someone wrote there that
    /// the brain has logged (`decision=hand_task`). Workers claim only tasks that
    /// have it, so no hand-dropped task runs before the brain has logged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,

    // --- results, added by the worker ---
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// The life of the worker that runs it (a worker restarted under the same id
    /// has a new session), so a task of a dead incarnation is recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_session: Option<String>,
    /// Process group of the running command, so a dead worker's commands can be found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<i32>,
    /// The cgroup v2 directory its runner made for it, if any: the brain kills that
    /// cgroup (and all below it) when the runner is lost or the batch is cancelled,
    /// wherever the runner's own cgroup is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    #[serde(default, with = "opt_time", skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, with = "opt_time", skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_snippet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_lines: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// An llm result's prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// How long the model took to load for this answer, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_seconds: Option<f64>,
    /// What the answer cost, from its endpoint's prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// A failed llm attempt's answer (cut to 2,000 characters; never for a
    /// sensitive task), for the next tier's "Earlier attempts".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_output: Option<String>,
    /// The memory cap the run had (MB), where it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_cap_mb: Option<u64>,
    /// The most RAM its processes held together (MB): the cgroup's `memory.peak`,
    /// else the largest sum of their peak RSS seen while it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<u64>,
    /// The most GPU memory its processes held (MB), sampled from NVML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_vram_mb: Option<u64>,
    /// Its card's mean utilisation while it ran (percent), sampled from NVML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_util_mean: Option<f64>,

    // --- added by the brain ---
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_applied: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_kind: Option<FailureKind>,
    /// Human-readable reason for the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// No worker claims the task before this time (retry backoff).
    #[serde(default, with = "opt_time", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,

    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_priority() -> u8 {
    5
}
fn default_timeout() -> f64 {
    1800.0
}

/// One failed attempt on an earlier escalation tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlierAttempt {
    pub tier: u32,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Why it failed.
    pub error: String,
    /// What it answered, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl TaskFile {
    /// The implicit concurrency group of an endpoint task (`endpoint:<name>`),
    /// limited by the endpoint's `max_concurrent`.
    pub fn endpoint_group(&self) -> Option<String> {
        self.endpoint.as_deref().map(endpoint_group)
    }

    /// The concurrency groups this task holds a slot of while it runs
    /// ([`held_groups`]).
    pub fn held_groups(&self) -> impl Iterator<Item = String> + '_ {
        held_groups(self.group.as_deref(), self.endpoint.as_deref())
    }
}

/// The implicit concurrency group of endpoint `name`.
pub fn endpoint_group(name: &str) -> String {
    format!("endpoint:{name}")
}

/// The concurrency groups a task of `group` on `endpoint` holds a slot of while it
/// runs: its endpoint's implicit group ([`endpoint_group`]), then its own group.
/// The one naming that the claim lock's count of `processing/`, its filter and
/// the simulator's count of its running tasks all use.
pub fn held_groups<'a>(
    group: Option<&'a str>,
    endpoint: Option<&'a str>,
) -> impl Iterator<Item = String> + 'a {
    endpoint
        .map(endpoint_group)
        .into_iter()
        .chain(group.map(str::to_string))
}

/// [`TaskFile::released_by`] of the tasks the brain makes.
pub const RELEASED_BY_BRAIN: &str = "brain";

/// The batch id of the resource manager's tasks; plan batches have six hex digits.
pub const RESOURCE_BATCH: &str = "rm";
/// The name of the task that loads a worker's model.
pub const LOAD_LLM: &str = ResourceAction::LoadLlm.as_str();
/// The name of the task that unloads it.
pub const UNLOAD_LLM: &str = ResourceAction::UnloadLlm.as_str();

/// What a resource task does; its name in the task file (`load_llm`, `unload_llm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceAction {
    /// Load the worker's model into its LLM server.
    LoadLlm,
    /// Unload it, to free the card for script work.
    UnloadLlm,
}

impl ResourceAction {
    /// The task's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LoadLlm => "load_llm",
            Self::UnloadLlm => "unload_llm",
        }
    }

    /// The action a resource task's name says, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::LoadLlm, Self::UnloadLlm]
            .into_iter()
            .find(|a| a.as_str() == name)
    }
}

impl fmt::Display for ResourceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TaskFile {
    /// A resource task (`load_llm` or `unload_llm`) for one worker, queued, at
    /// priority 10 so that it sorts before all plan work. Its `seq` is the time in
    /// milliseconds, which keeps every such file's name unique over the rig's life.
    pub fn resource(action: ResourceAction, worker: &str, model: &str, timeout_secs: f64) -> Self {
        let mut t = Self::new(RESOURCE_BATCH, action.as_str(), TaskClass::Resource);
        t.priority = 10;
        t.status = TaskStatus::Queued;
        t.target_worker = Some(worker.to_string());
        t.released_by = Some(RELEASED_BY_BRAIN.to_string());
        t.model = Some(model.to_string());
        t.timeout_seconds = timeout_secs;
        t.seq = chrono::Utc::now().timestamp_millis().max(0) as u64;
        t
    }

    /// Whether this is one of the resource manager's tasks.
    pub fn is_resource(&self) -> bool {
        self.task_class == Some(TaskClass::Resource)
    }

    /// What a resource task does (`None` for any other task, or an unknown name).
    pub fn resource_action(&self) -> Option<ResourceAction> {
        self.is_resource()
            .then(|| ResourceAction::from_name(&self.name))
            .flatten()
    }

    /// A fresh task with the given identity; everything else at its default.
    pub fn new(batch_id: &str, name: &str, class: TaskClass) -> Self {
        Self {
            task_id: uuid::Uuid::new_v4().to_string(),
            batch_id: batch_id.to_string(),
            name: name.to_string(),
            plan_task_id: name.to_string(),
            task_type: class.task_type(),
            task_class: Some(class),
            executor: Executor::Worker,
            action: None,
            command: None,
            depends_on: Vec::new(),
            priority: default_priority(),
            status: TaskStatus::Pending,
            created_at: Some(crate::time::now()),
            retry_count: 0,
            seq: 0,
            plan_file: None,
            workdir: None,
            timeout_seconds: default_timeout(),
            retries: 0,
            group: None,
            vram_mb: None,
            mem_mb: None,
            mem_limit_mb: None,
            env: BTreeMap::new(),
            model: None,
            prompt: None,
            prompt_file: None,
            system: None,
            output: None,
            write_outside: false,
            sensitive: false,
            estimate_seconds: None,
            endpoint: None,
            pinned_endpoint: None,
            expect: None,
            requires_external: false,
            tier: None,
            tier_failures: 0,
            earlier_attempts: Vec::new(),
            item: None,
            stem: None,
            index: None,
            target_worker: None,
            released_by: None,
            worker_id: None,
            gpu: None,
            worker_session: None,
            pgid: None,
            cgroup: None,
            started_at: None,
            finished_at: None,
            elapsed_seconds: None,
            return_code: None,
            error_snippet: None,
            output_lines: None,
            log_path: None,
            eval_count: None,
            tokens_per_second: None,
            prompt_tokens: None,
            load_seconds: None,
            cost_usd: None,
            failed_output: None,
            mem_cap_mb: None,
            peak_rss_mb: None,
            peak_vram_mb: None,
            gpu_util_mean: None,
            fix_applied: None,
            failure_kind: None,
            error: None,
            not_before: None,
            attempts: 0,
            extra: serde_json::Map::new(),
        }
    }

    /// The name this task's file has in every directory.
    pub fn file_name(&self) -> String {
        TaskName::new(
            10u8.saturating_sub(self.priority.min(10)),
            self.seq,
            &self.batch_id,
            &self.name,
        )
        .to_file_name()
    }

    /// Serialises as written to disk: pretty JSON so that `cat` reads well.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }

    /// Parses and checks a task file's bytes; `path` names it in the error.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, QueueError> {
        let invalid = |reason: String| QueueError::Invalid {
            path: path.to_path_buf(),
            what: "task file",
            reason,
        };
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(invalid("the file is empty".into()));
        }
        let t: TaskFile =
            serde_json::from_slice(bytes).map_err(|e| invalid(crate::json::reason(bytes, &e)))?;
        if t.task_id.trim().is_empty() {
            return Err(invalid("task_id is empty".into()));
        }
        if t.name.trim().is_empty() {
            return Err(invalid("name is empty".into()));
        }
        if t.batch_id.trim().is_empty() {
            return Err(invalid("batch_id is empty".into()));
        }
        // Both become parts of file names (logs/tasks/<task_id>.log, ...).
        for (field, id) in [("task_id", &t.task_id), ("batch_id", &t.batch_id)] {
            if let Some(why) = crate::access::safe_file_stem(id) {
                return Err(invalid(format!("{field} '{}' {why}", id.escape_debug())));
            }
        }
        if !(1..=10).contains(&t.priority) {
            return Err(invalid(format!("priority {} is not 1..10", t.priority)));
        }
        Ok(t)
    }

    /// Reads a task file from disk.
    pub fn read(path: &Path) -> Result<Self, QueueError> {
        let bytes = fsio::read_regular(path, "task file")?;
        Self::from_bytes(path, &bytes)
    }

    /// Writes the task atomically to `dir` under `file_name`: a task that moves
    /// keeps the name it has, even if a hand edit changed its priority.
    pub fn write_named(
        &self,
        dir: &Path,
        file_name: &str,
        sync: fsio::Sync,
    ) -> Result<PathBuf, QueueError> {
        self.write_named_via(dir, file_name, dir, sync)
            .map(|(path, _)| path)
    }

    /// [`TaskFile::write_named`] with the temporary file in `tmp_dir` (an
    /// unwatched directory), so that `dir` sees only the rename
    /// ([`fsio::write_atomic_via`]); gives its path and stamp.
    pub fn write_named_via(
        &self,
        dir: &Path,
        file_name: &str,
        tmp_dir: &Path,
        sync: fsio::Sync,
    ) -> Result<(PathBuf, Option<fsio::FileStamp>), QueueError> {
        let path = dir.join(file_name);
        let bytes = self.to_bytes();
        let stamp = fsio::write_atomic_via(&path, tmp_dir, sync, |f| {
            std::io::Write::write_all(f, &bytes)
        })?;
        Ok((path, stamp))
    }

    /// Writes the task atomically to `dir` under its file name.
    pub fn write_to(&self, dir: &Path, sync: fsio::Sync) -> Result<PathBuf, QueueError> {
        let path = dir.join(self.file_name());
        fsio::write_atomic(&path, &self.to_bytes(), sync)?;
        Ok(path)
    }

    /// Marks the task as let into the queue by the brain, unless it says already
    /// who let it in (see [`TaskFile::released_by`]).
    pub fn let_in(&mut self) {
        self.released_by
            .get_or_insert_with(|| RELEASED_BY_BRAIN.to_string());
    }

    /// Clears everything a run or a failure added, for a task sent back to run again.
    pub fn clear_run_results(&mut self) {
        self.worker_id = None;
        self.gpu = None;
        self.worker_session = None;
        self.pgid = None;
        self.cgroup = None;
        self.started_at = None;
        self.finished_at = None;
        self.elapsed_seconds = None;
        self.return_code = None;
        self.error_snippet = None;
        self.output_lines = None;
        self.eval_count = None;
        self.tokens_per_second = None;
        self.prompt_tokens = None;
        self.load_seconds = None;
        self.cost_usd = None;
        self.failed_output = None;
        self.mem_cap_mb = None;
        self.peak_rss_mb = None;
        self.peak_vram_mb = None;
        self.gpu_util_mean = None;
        self.failure_kind = None;
        self.error = None;
    }
}

/// The parts of a task's file name: `pRR-SSSSSSSS-<batch>-<name>.json`.
///
/// `RR` is the claim rank, `10 - priority`, so that `ls` lists the queue in claim
/// order: resource tasks (priority 10) as `p00`, a default priority-5 task as `p05`.
/// `SSSSSSSS` is the submission sequence (older first).
///
/// The name part is bounded ([`NAME_PART_MAX`] bytes): a longer name is cut and
/// marked `~<hash of the full name>`, so that a file name never depends on how
/// long a name is (the kernel refuses names past 255 bytes) and two names still
/// never share a file. The full name is always inside the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskName {
    pub rank: u8,
    pub seq: u64,
    pub batch: String,
    /// The task's name; only its beginning when `cut` is set.
    pub name: String,
    /// Set when the name was cut: the hash of the full name, as in the file name.
    /// `name` is then not the task's name, which only the file holds.
    pub cut: Option<String>,
}

/// The most bytes the (encoded) name takes in a file name, before the `~hash`
/// mark of a cut name: with the rank, a 13-digit sequence, the batch id and the
/// mark, a file name stays well under the 255 bytes a file system allows.
pub const NAME_PART_MAX: usize = 150;

/// How many hex digits of the full name's hash mark a cut name.
const CUT_HASH_LEN: usize = 12;

impl TaskName {
    /// The parts of a task file's name for a task `name` (not cut yet).
    pub fn new(rank: u8, seq: u64, batch: &str, name: &str) -> Self {
        Self {
            rank,
            seq,
            batch: batch.to_string(),
            name: name.to_string(),
            cut: None,
        }
    }

    /// The file name. Characters that cannot (or should not) stand in a file name
    /// are percent-encoded (`/` → `%2F`, a space → `%20`, `%` → `%25`, and `~`,
    /// which marks a cut name), so that two task names never share a file name and
    /// a name that was not cut can be read back. A name whose encoding is longer
    /// than [`NAME_PART_MAX`] is cut there (never inside an escape) and marked
    /// `~` + a hash of the full name.
    pub fn to_file_name(&self) -> String {
        let (safe, hash) = match &self.cut {
            Some(h) => (encode_name(&self.name, usize::MAX).0, Some(h.clone())),
            None => match encode_name(&self.name, NAME_PART_MAX) {
                (safe, true) => (safe, Some(name_hash(&self.name))),
                (safe, false) => (safe, None),
            },
        };
        let mark = hash.map(|h| format!("~{h}")).unwrap_or_default();
        format!(
            "p{:02}-{:08}-{}-{}{}.json",
            self.rank, self.seq, self.batch, safe, mark
        )
    }

    /// Parses a file name written by [`TaskName::to_file_name`]. A cut name comes
    /// back with `cut` set: its `name` is only the beginning of the task's name.
    pub fn parse(file_name: &str) -> Option<TaskName> {
        let stem = file_name.strip_suffix(".json")?;
        let rest = stem.strip_prefix('p')?;
        let (rank, rest) = rest.split_once('-')?;
        let (seq, rest) = rest.split_once('-')?;
        let (batch, name) = rest.split_once('-')?;
        if rank.len() != 2 || batch.is_empty() || name.is_empty() {
            return None;
        }
        let (name, cut) = match name.split_once('~') {
            None if name.len() > NAME_PART_MAX => return None,
            None => (name, None),
            Some((head, hash)) => {
                let is_hash = hash.len() == CUT_HASH_LEN
                    && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !is_hash || head.is_empty() || head.len() > NAME_PART_MAX {
                    return None;
                }
                (head, Some(hash.to_string()))
            }
        };
        Some(TaskName {
            rank: rank.parse().ok()?,
            seq: seq.parse().ok()?,
            batch: batch.to_string(),
            name: percent_decode(name)?,
            cut,
        })
    }
}

/// Percent-encodes a name for a file name, up to `max` bytes: the encoding, and
/// whether the name had to be cut.
pub(crate) fn encode_name(name: &str, max: usize) -> (String, bool) {
    let mut safe = String::with_capacity(name.len().min(max));
    for c in name.chars() {
        let mut piece = String::new();
        if c == '/' || c == '\\' || c == '%' || c == '~' || c.is_control() || c.is_whitespace() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                piece.push_str(&format!("%{b:02X}"));
            }
        } else {
            piece.push(c);
        }
        if safe.len() + piece.len() > max {
            return (safe, true);
        }
        safe.push_str(&piece);
    }
    (safe, false)
}

/// A stable hash of a full name (FNV-1a, 64 bits), as hex digits: the same in
/// every process and every version, since it is part of file names on disk.
fn name_hash(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")[..CUT_HASH_LEN].to_string()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_in_claim_order_and_parse_back() {
        let mut hi = TaskFile::new("ab12cd", "load_llm", TaskClass::Resource);
        hi.priority = 10;
        hi.seq = 7;
        let mut lo = TaskFile::new("ab12cd", "transcribe[ep 1]", TaskClass::Script);
        lo.seq = 3;
        let (h, l) = (hi.file_name(), lo.file_name());
        assert_eq!(h, "p00-00000007-ab12cd-load_llm.json");
        assert_eq!(l, "p05-00000003-ab12cd-transcribe[ep%201].json");
        assert!(h < l);
        let parsed = TaskName::parse(&l).unwrap();
        assert_eq!(
            (parsed.rank, parsed.seq, parsed.batch.as_str()),
            (5, 3, "ab12cd")
        );
        assert_eq!(parsed.name, "transcribe[ep 1]");
        let odd = TaskName::new(5, 1, "b", "a/b%c d~e");
        assert_eq!(TaskName::parse(&odd.to_file_name()).unwrap(), odd);
        assert!(TaskName::parse("notes.txt").is_none());
        assert!(TaskName::parse("p5-1-x.json").is_none());
    }

    #[test]
    fn long_names_are_cut_and_marked_with_a_hash() {
        let long = "x".repeat(300);
        let other = format!("{}y", "x".repeat(299));
        let a = TaskName::new(5, 1, "ab12cd", &long).to_file_name();
        let b = TaskName::new(5, 1, "ab12cd", &other).to_file_name();
        assert!(a.len() < 200, "{a}");
        assert_ne!(a, b, "two long names share a file name");
        let parsed = TaskName::parse(&a).unwrap();
        assert!(parsed.cut.is_some());
        assert!(long.starts_with(&parsed.name));
        assert_ne!(parsed.name, long);
        assert_eq!(parsed.to_file_name(), a);
        // Never cut inside an escape, nor inside a character.
        let spaced = " é".repeat(100);
        let f = TaskName::new(5, 1, "b", &spaced).to_file_name();
        let p = TaskName::parse(&f).unwrap();
        assert!(spaced.starts_with(&p.name), "{f}");
        // Short names are not cut; a `~` in a name is encoded, not a mark.
        let short = TaskName::parse(&TaskName::new(5, 1, "b", "a~b").to_file_name()).unwrap();
        assert_eq!((short.name.as_str(), short.cut), ("a~b", None));
        assert!(TaskName::parse("p05-00000001-b-a~zz.json").is_none());
    }

    #[test]
    fn round_trip_keeps_unknown_fields() {
        let mut t = TaskFile::new("b1", "init", TaskClass::Cpu);
        t.command = Some("true".into());
        t.extra
            .insert("note".into(), serde_json::json!("hand-added"));
        let back = TaskFile::from_bytes(Path::new("x.json"), &t.to_bytes()).unwrap();
        assert_eq!(back, t);
        assert!(String::from_utf8(t.to_bytes())
            .unwrap()
            .contains("\"note\": \"hand-added\""));
    }

    #[test]
    fn bad_files_are_named_errors() {
        let p = Path::new("tasks/queue/x.json");
        for bytes in [
            &b""[..],
            b"   ",
            b"{",
            b"\x00\x01binary",
            b"[]",
            b"{\"task_id\":\"a\"}",
        ] {
            let e = TaskFile::from_bytes(p, bytes).unwrap_err().to_string();
            assert!(
                e.starts_with("tasks/queue/x.json: not a valid task file"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_bad_word_or_time_is_refused_naming_the_field() {
        let p = Path::new("tasks/queue/x.json");
        let mut t = TaskFile::new("b1", "init", TaskClass::Cpu);
        t.not_before = Some(crate::time::now() + chrono::Duration::seconds(5));
        let text = String::from_utf8(t.to_bytes()).unwrap();
        let when = crate::time::to_rfc3339(t.not_before.unwrap());
        let cases = [
            (
                when.as_str(),
                "soon",
                "field 'not_before': 'soon' is not an RFC 3339 time",
            ),
            (
                "\"cpu\"",
                "\"gpu\"",
                "field 'task_class': unknown variant `gpu`",
            ),
        ];
        for (from, to, want) in cases {
            let bad = text.replace(from, to);
            let e = TaskFile::from_bytes(p, bad.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
        // Open words are kept as written.
        let odd = text.replace("\"type\": \"shell\"", "\"type\": \"bash\"");
        let back = TaskFile::from_bytes(p, odd.as_bytes()).unwrap();
        assert_eq!(back.task_type, TaskType::Other("bash".into()));
        assert_eq!(String::from_utf8(back.to_bytes()).unwrap(), odd);
    }

    #[test]
    fn a_file_without_task_class_still_reads() {
        let json =
            br#"{"task_id":"1","batch_id":"b","name":"n","status":"queued","command":"echo"}"#;
        let t = TaskFile::from_bytes(Path::new("x"), json).unwrap();
        assert_eq!(t.task_class, None);
        assert_eq!(t.priority, 5);
    }
}
