//! Where everything lives under the shared root (queue-layout.md).

use std::path::{Path, PathBuf};

use crate::error::QueueError;

/// One of the public task directories under `tasks/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskDir {
    Queue,
    Processing,
    Complete,
    Failed,
}

impl TaskDir {
    /// The four public directories, in the order a task moves through them.
    pub const ALL: [TaskDir; 4] = [Self::Queue, Self::Processing, Self::Complete, Self::Failed];

    /// The directory's name under `tasks/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Processing => "processing",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }
}

/// The shared root and the paths below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout over `root`; nothing is created until [`Layout::ensure`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates every directory of the layout that does not exist yet. A root whose
    /// path is not UTF-8 is refused: task files hold paths as JSON strings.
    pub fn ensure(&self) -> Result<(), QueueError> {
        if self.root.to_str().is_none() {
            return Err(QueueError::Invalid {
                path: self.root.clone(),
                what: "root",
                reason: "the path is not UTF-8".into(),
            });
        }
        let mut dirs = vec![
            self.private_root(),
            self.batches_dir(),
            self.workers_dir(),
            self.task_logs_dir(),
            self.rejected_dir(),
            self.cancel_dir(),
        ];
        dirs.extend(TaskDir::ALL.iter().map(|d| self.dir(*d)));
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(|e| QueueError::io("create directory", &d, e))?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn rig_toml(&self) -> PathBuf {
        self.root.join("rig.toml")
    }
    pub fn tasks_dir(&self) -> PathBuf {
        self.root.join("tasks")
    }
    /// `tasks/queue`, `tasks/processing`, `tasks/complete` or `tasks/failed`.
    pub fn dir(&self, d: TaskDir) -> PathBuf {
        self.tasks_dir().join(d.as_str())
    }
    /// Where files that are not valid tasks are moved aside.
    pub fn rejected_dir(&self) -> PathBuf {
        self.tasks_dir().join("rejected")
    }
    /// `tasks/cancel/`: one marker per cancelled batch (see [`crate::cancel`]).
    pub fn cancel_dir(&self) -> PathBuf {
        self.tasks_dir().join("cancel")
    }
    /// The marker that cancels `batch`.
    pub fn cancel_marker(&self, batch: &str) -> PathBuf {
        self.cancel_dir().join(batch)
    }
    /// The file whose lock serialises claims (and group counting) across workers.
    pub fn queue_lock(&self) -> PathBuf {
        self.tasks_dir().join(".claim.lock")
    }
    /// `tasks/rate/`: the recent starts of each endpoint with a
    /// `requests_per_minute` limit (see [`crate::rate`]), made on first use.
    pub fn rate_dir(&self) -> PathBuf {
        self.tasks_dir().join("rate")
    }
    pub fn brain_dir(&self) -> PathBuf {
        self.root.join("brain")
    }
    pub fn private_root(&self) -> PathBuf {
        self.brain_dir().join("private_tasks")
    }
    /// `brain/private_tasks/<batch>/`: the batch's tasks still waiting on dependencies.
    pub fn private_dir(&self, batch: &str) -> PathBuf {
        self.private_root().join(batch)
    }
    pub fn batches_dir(&self) -> PathBuf {
        self.brain_dir().join("batches")
    }
    pub fn batch_file(&self, batch: &str) -> PathBuf {
        self.batches_dir().join(format!("{batch}.json"))
    }
    /// Held locked by the running brain for its whole life: one brain per root.
    pub fn brain_lock(&self) -> PathBuf {
        self.brain_dir().join("brain.lock")
    }
    /// The brain's heartbeat.
    pub fn brain_state(&self) -> PathBuf {
        self.brain_dir().join("brain.json")
    }
    /// The alerts the brain has raised and not cleared (`docs/operations.md`).
    pub fn alerts_file(&self) -> PathBuf {
        self.brain_dir().join("alerts.json")
    }
    /// `metrics/`: the brain's Prometheus text file, for node_exporter's textfile
    /// collector (made by the brain on first write).
    pub fn metrics_dir(&self) -> PathBuf {
        self.root.join("metrics")
    }
    /// `metrics/rigmind.prom`.
    pub fn metrics_file(&self) -> PathBuf {
        self.metrics_dir().join("rigmind.prom")
    }
    pub fn workers_dir(&self) -> PathBuf {
        self.root.join("workers")
    }
    pub fn worker_file(&self, worker: &str) -> PathBuf {
        self.workers_dir().join(format!("{worker}.json"))
    }
    /// Held locked by a worker for its whole life.
    pub fn worker_lock(&self, worker: &str) -> PathBuf {
        self.workers_dir().join(format!("{worker}.lock"))
    }
    /// `gates/`: one file per live `rigmind gate` ([`crate::gates`]).
    pub fn gates_dir(&self) -> PathBuf {
        self.root.join("gates")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn decisions_log(&self) -> PathBuf {
        self.logs_dir().join("brain_decisions.log")
    }
    pub fn events_log(&self) -> PathBuf {
        self.logs_dir().join("events.jsonl")
    }
    pub fn task_logs_dir(&self) -> PathBuf {
        self.logs_dir().join("tasks")
    }
    pub fn task_log(&self, task_id: &str) -> PathBuf {
        self.task_logs_dir().join(format!("{task_id}.log"))
    }
}
