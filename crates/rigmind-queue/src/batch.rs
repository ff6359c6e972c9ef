//! `brain/batches/<batch>.json`: one record per submitted plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::QueueError;
use crate::fsio;
use crate::layout::Layout;

/// Where a batch stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    /// Some task is pending, queued or running.
    Running,
    /// Every task completed.
    Complete,
    /// Nothing left to run, and at least one task failed.
    Failed,
    /// Cancelled by the operator; nothing left running.
    Cancelled,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
    /// True once nothing is left to run.
    pub fn is_done(self) -> bool {
        self != Self::Running
    }
}

/// How many of a batch's tasks are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: usize,
    pub pending: usize,
    pub queued: usize,
    pub processing: usize,
    pub complete: usize,
    pub failed: usize,
    /// Of `queued`: tasks waiting out a retry back-off (`not_before` ahead).
    #[serde(default)]
    pub retrying: usize,
    /// Of `processing`: tasks whose command runs now. A runner claims its next
    /// task while the last one's result is still being filed, and a claimed task
    /// has not started yet; neither is running, though both are in `processing/`.
    #[serde(default)]
    pub running: usize,
}

/// One record per submitted plan, kept current by the brain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub batch_id: String,
    /// The plan's name (its `# Plan:` heading).
    pub name: String,
    pub plan_file: PathBuf,
    pub workdir: PathBuf,
    #[serde(with = "crate::time::rfc3339")]
    pub submitted_at: DateTime<Utc>,
    #[serde(
        default,
        with = "crate::time::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_seconds: Option<f64>,
    pub state: BatchState,
    pub counts: Counts,
    /// The first submission sequence number of this batch's tasks.
    pub seq_base: u64,
    /// Set by `rigmind cancel`: nothing more is released or retried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// What the batch's llm results cost so far, by endpoint (USD, or whatever
    /// currency the endpoint's prices are in): the sum of every result's
    /// `cost_usd`, failed attempts included. Absent while nothing cost anything.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cost_usd: BTreeMap<String, f64>,
    /// When the batch is expected to finish: the resource manager's projection of
    /// the rest of the work under the plan its policy follows. Absent before the
    /// first projection, when the projection never ends the batch, and once the
    /// batch is done.
    #[serde(
        default,
        with = "crate::time::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub eta: Option<DateTime<Utc>>,
    /// When `eta` was computed (the record is rewritten for a new ETA only when it
    /// moved by more than a few seconds or a minute passed).
    #[serde(
        default,
        with = "crate::time::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub eta_computed_at: Option<DateTime<Utc>>,
}

impl BatchRecord {
    /// The record of a batch just submitted: running, all `total` tasks pending.
    pub fn submitted(
        batch_id: &str,
        name: &str,
        plan_file: PathBuf,
        workdir: PathBuf,
        submitted_at: DateTime<Utc>,
        total: usize,
        seq_base: u64,
    ) -> Self {
        Self {
            batch_id: batch_id.to_string(),
            name: name.to_string(),
            plan_file,
            workdir,
            submitted_at,
            finished_at: None,
            elapsed_seconds: None,
            state: BatchState::Running,
            counts: Counts {
                total,
                pending: total,
                ..Counts::default()
            },
            seq_base,
            cancel_requested: false,
            cost_usd: BTreeMap::new(),
            eta: None,
            eta_computed_at: None,
        }
    }

    pub fn read(path: &Path) -> Result<Self, QueueError> {
        let bytes = fsio::read_regular(path, "batch record")?;
        crate::json::from_slice(path, "batch record", &bytes)
    }

    /// The record's bytes as written to disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }

    pub fn write(&self, layout: &Layout) -> Result<(), QueueError> {
        let path = layout.batch_file(&self.batch_id);
        fsio::write_atomic(&path, &self.to_bytes(), fsio::Sync::Data)
    }

    /// Every batch record under the root, oldest submission first; unreadable ones
    /// are returned as errors beside the good ones.
    pub fn read_all(layout: &Layout) -> Result<Vec<Result<Self, QueueError>>, QueueError> {
        let dir = layout.batches_dir();
        let mut out: Vec<Result<Self, QueueError>> = fsio::list_names(&dir)?
            .into_iter()
            .filter(|n| n.ends_with(".json"))
            .map(|n| Self::read(&dir.join(n)))
            .collect();
        out.sort_by_key(|r| r.as_ref().map(|b| b.seq_base).unwrap_or(u64::MAX));
        Ok(out)
    }
}
