//! Cancellations as the brain sees them: the markers of `tasks/cancel/`.
//!
//! `rigmind cancel` accepts a cancellation by writing a marker, and from then on no
//! claim or runner starts a task of the batch (see `rigmind_queue::cancel`). The brain
//! looks at the markers first in each turn of its loop (one `stat` when nothing
//! changed) and turns each new one into the batch's `cancel_requested`, written into
//! its record; the policy then files what waits as cancelled and kills what runs. A
//! marker for a batch whose plan is still a pending `@execute_plan` request cancels
//! that request; one for no batch at all, or for a batch already done, is moved
//! aside with a decision line.

use std::collections::BTreeSet;
use std::path::Path;

use rigmind_queue::cancel::{read_marker, CancelMarker, CancelMarkers};
use rigmind_queue::claim::{QueueIndex, QueueLock};
use rigmind_queue::fsio::Sync;
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::requests::EXECUTE_PLAN;
use rigmind_queue::task::{FailureKind, TaskFile, TaskName, TaskStatus};
use rigmind_queue::{Layout, TaskDir};
use rigmind_types::Executor;

use crate::state::BrainState;

/// The markers read so far and the ones already acted on.
pub struct Cancellations {
    markers: CancelMarkers,
    handled: BTreeSet<String>,
}

impl Cancellations {
    pub fn new(layout: &Layout) -> Self {
        Self {
            markers: CancelMarkers::new(layout),
            handled: BTreeSet::new(),
        }
    }

    /// Acts on every marker not acted on yet. Cheap when nothing changed: one
    /// `stat` of the directory. A marker whose handling failed (the batch record
    /// could not be written) is tried again on the next turn.
    pub fn take(
        &mut self,
        layout: &Layout,
        logs: &Logs,
        state: &mut BrainState,
        queue: &mut QueueIndex,
    ) {
        if let Err(e) = self.markers.refresh() {
            tracing::warn!("{e}");
        }
        // Markers removed by hand are forgotten, so that a new one counts again.
        let present = self.markers.batches();
        self.handled.retain(|b| present.contains(b));
        let new: Vec<String> = present.difference(&self.handled).cloned().collect();
        for batch in new {
            let marker = read_marker(layout, &batch);
            if take_one(layout, logs, state, queue, &marker) {
                self.handled.insert(batch);
            }
        }
    }
}

/// Who asked, for the decision line.
fn requester(m: &CancelMarker) -> String {
    m.requested_by
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "an unnamed operator (marker without content)".into())
}

/// Acts on one marker; false when it must be looked at again next turn.
fn take_one(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    queue: &mut QueueIndex,
    marker: &CancelMarker,
) -> bool {
    let batch = marker.batch.as_str();
    let who = requester(marker);
    let Some(b) = state.batches.get_mut(batch) else {
        if cancel_pending_submission(layout, logs, queue, batch, &who) {
            return true;
        }
        set_aside(
            layout,
            logs,
            batch,
            &format!("no batch {batch} and no pending submission of it"),
        );
        return true;
    };
    if b.record.cancel_requested {
        return true;
    }
    if b.record.state.is_done() {
        let why = format!(
            "batch {batch} is already {}; nothing to cancel",
            b.record.state.as_str()
        );
        set_aside(layout, logs, batch, &why);
        return true;
    }
    b.record.cancel_requested = true;
    // In the record as well: retry and status read it, and it outlives the marker.
    if let Err(e) = b.record.write(layout) {
        tracing::warn!(batch, "{e}; the cancellation is taken again next turn");
        b.record.cancel_requested = false;
        return false;
    }
    let c = b.record.counts;
    let _ = logs.decision(
        &Decision::new("cancel_batch")
            .kv("batch", batch)
            .kv("plan", &b.record.name)
            .kv("pending", c.pending)
            .kv("queued", c.queued)
            .kv("running", c.processing)
            .kv("requested_by", &who)
            .opt("requested_at", marker.requested_at.as_ref())
            .kv("reason", format!("requested by {who}")),
    );
    true
}

/// Files the queued `@execute_plan` request of `batch` as cancelled, if there is
/// one, and removes the marker (no batch will ever carry it).
fn cancel_pending_submission(
    layout: &Layout,
    logs: &Logs,
    queue: &mut QueueIndex,
    batch: &str,
    who: &str,
) -> bool {
    let request = queue
        .entries()
        .filter(|e| e.executor == Executor::Brain)
        .find(|e| {
            TaskName::parse(&e.file_name)
                .is_some_and(|n| n.batch == batch && n.name.ends_with(EXECUTE_PLAN))
        })
        .map(|e| e.file_name.clone());
    let Some(name) = request else {
        return false;
    };
    let from = layout.dir(TaskDir::Queue).join(&name);
    let filed = QueueLock::open(layout)
        .and_then(|mut lock| lock.with(|| file_request_cancelled(layout, &from, who))?);
    match filed {
        Ok(true) => {}
        Ok(false) => return false, // claimed meanwhile: the batch appears next turn
        Err(e) => {
            tracing::warn!(batch, "{e}");
            return false;
        }
    }
    queue.forget(&name);
    let _ = rigmind_queue::fsio::remove_if_exists(&layout.cancel_marker(batch));
    let _ = logs.decision(
        &Decision::new("cancel_batch")
            .kv("batch", batch)
            .kv("file", from.display())
            .kv("requested_by", who)
            .kv(
                "reason",
                format!("requested by {who} before the plan was submitted"),
            ),
    );
    true
}

/// Moves a queued request into `failed/` as cancelled; false if it is gone.
fn file_request_cancelled(
    layout: &Layout,
    from: &Path,
    who: &str,
) -> Result<bool, rigmind_queue::QueueError> {
    if !from.exists() {
        return Ok(false);
    }
    let mut t = TaskFile::read(from)?;
    t.status = TaskStatus::Failed;
    t.failure_kind = Some(FailureKind::Cancelled);
    t.error = Some(format!("cancelled by {who} before the plan was submitted"));
    t.finished_at = Some(rigmind_queue::time::now());
    rigmind_queue::file_into(layout, from, &t, TaskDir::Failed, Sync::Data)?;
    Ok(true)
}

/// Moves a marker that cancels nothing into `tasks/rejected/` (as
/// `cancel.<batch>`, with a time suffix if that name is taken), so that it blocks
/// no later task of that id.
fn set_aside(layout: &Layout, logs: &Logs, batch: &str, why: &str) {
    let from = layout.cancel_marker(batch);
    let to = match rigmind_queue::cancel::set_aside_marker(layout, batch) {
        Ok(to) => to,
        Err(e) => {
            tracing::warn!(batch, "{e}");
            return;
        }
    };
    let _ = logs.decision(
        &Decision::new("cancel_ignored")
            .kv("batch", batch)
            .kv("file", from.display())
            .kv("moved_to", to.display())
            .kv("reason", why),
    );
}
