//! A plan becomes a batch: validated, expanded, written into `private_tasks/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rigmind_config::RigConfig;
use rigmind_plan::{ExpandDefaults, ExpandedPlan, PlanError};
use rigmind_queue::batch::{BatchRecord, BatchState, Counts};
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{TaskFile, TaskStatus};
use rigmind_queue::{Layout, QueueError};
use rigmind_types::TaskClass;

use crate::state::{Batch, BrainState, Job, JobStatus};

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The plan has errors (each `path:line: message`).
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("batch {0} already exists")]
    Exists(String),
}

/// A new batch id: six hex digits, not used under this root yet.
pub fn new_batch_id(layout: &Layout) -> String {
    loop {
        let id = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
        if !layout.batch_file(&id).exists() && !layout.private_dir(&id).exists() {
            return id;
        }
    }
}

/// Reads and expands a plan with the rig's defaults.
pub fn load_plan(path: &Path, config: &RigConfig) -> Result<ExpandedPlan, PlanError> {
    let plan = rigmind_plan::parse_file(path)?;
    rigmind_plan::expand(
        &plan,
        &ExpandDefaults {
            timeout_secs: config.defaults.timeout_secs,
            retries: config.defaults.retries,
        },
    )
}

/// Writes `plan` as batch `batch_id`: every task into `private_tasks/<batch>/`, then
/// the batch record (the commit point: a batch without a record is a submission
/// that did not finish, and is redone). Adds the batch to `state`.
pub fn submit_plan(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    plan: &ExpandedPlan,
    batch_id: &str,
    config: &RigConfig,
) -> Result<(), SubmitError> {
    if state.batches.contains_key(batch_id) || layout.batch_file(batch_id).exists() {
        return Err(SubmitError::Exists(batch_id.to_string()));
    }
    let dir = layout.private_dir(batch_id);
    // A half-written earlier attempt of this very submission is redone from scratch.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| QueueError::Io {
            op: "clear",
            path: dir.clone(),
            source: e,
        })?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| QueueError::Io {
        op: "create directory",
        path: dir.clone(),
        source: e,
    })?;
    let plan_file = absolute(&plan.path);
    let workdir = absolute(&plan.dir);
    let seq_base = state.next_seq.max(1);
    let now = rigmind_queue::time::now_rfc3339();
    let mut jobs = Vec::with_capacity(plan.jobs.len());
    for (i, j) in plan.jobs.iter().enumerate() {
        let mut t = TaskFile::new(batch_id, &j.name, j.task_class);
        t.plan_task_id = j.plan_task_id.clone();
        t.executor = j.executor;
        t.command = j.command.clone();
        t.depends_on = j.depends_on_names.clone();
        t.priority = j.priority;
        t.status = TaskStatus::Pending;
        t.created_at = now.clone();
        t.seq = seq_base + i as u64;
        t.plan_file = Some(plan_file.clone());
        t.workdir = Some(workdir.clone());
        t.timeout_seconds = j.timeout_secs;
        t.retries = j.retries;
        t.group = j.group.clone();
        t.vram_mb = j.vram_mb;
        t.env = j.env.iter().cloned().collect::<BTreeMap<_, _>>();
        t.model = match (j.task_class, &j.model) {
            (TaskClass::Llm, None) => Some(config.llm.model.clone()),
            (_, m) => m.clone(),
        };
        t.prompt = j.prompt.clone();
        t.prompt_file = j.prompt_file.clone();
        t.system = j.system.clone();
        t.output = j.output.clone();
        t.sensitive = j.sensitive;
        t.estimate_seconds = j.estimate_secs;
        t.item = j.item.clone();
        t.index = j.index;
        if j.class_inferred {
            let fix = format!("task_class inferred as {}", j.task_class);
            logs.decision(
                &Decision::new("fix")
                    .kv("batch", batch_id)
                    .kv("task", &j.name)
                    .kv("plan_task_id", &j.plan_task_id)
                    .kv("fix_applied", &fix)
                    .kv("reason", "the plan gives no task_class"),
            )?;
            t.fix_applied = Some(fix);
        }
        // Durability for the whole batch comes from one filesystem flush below.
        t.write_to(&dir, Sync::None)?;
        jobs.push(Job {
            name: t.name.clone(),
            plan_task_id: t.plan_task_id.clone(),
            task_id: t.task_id.clone(),
            file_name: t.file_name(),
            executor: t.executor,
            status: JobStatus::Pending,
            deps: j.depends_on.clone(),
            dependents: Vec::new(),
            unmet: 0,
        });
    }
    sync_filesystem(&dir)?;
    let record = BatchRecord {
        batch_id: batch_id.to_string(),
        name: plan.name.clone(),
        plan_file,
        workdir,
        submitted_at: now,
        finished_at: None,
        elapsed_seconds: None,
        state: BatchState::Running,
        counts: Counts {
            total: jobs.len(),
            pending: jobs.len(),
            ..Counts::default()
        },
        seq_base,
    };
    record.write(layout)?;
    fsio::sync_dir(&layout.batches_dir())?;
    let batch = Batch::new(record, jobs);
    logs.decision(
        &Decision::new("submit")
            .kv("batch", batch_id)
            .kv("plan", &plan.name)
            .kv("file", plan.path.display())
            .kv("tasks", batch.jobs.len())
            .kv("ready", batch.ready.len())
            .kv("reason", "plan accepted"),
    )?;
    logs.event(
        "submit",
        serde_json::json!({"batch": batch_id, "plan": plan.name, "tasks": batch.jobs.len()})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )?;
    state.insert(batch);
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Flushes the whole filesystem holding `dir` in one call (cheaper than flushing
/// thousands of task files one by one).
fn sync_filesystem(dir: &Path) -> Result<(), QueueError> {
    let f = std::fs::File::open(dir).map_err(|e| QueueError::Io {
        op: "open",
        path: dir.to_path_buf(),
        source: e,
    })?;
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(QueueError::Io {
            op: "flush filesystem of",
            path: dir.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
