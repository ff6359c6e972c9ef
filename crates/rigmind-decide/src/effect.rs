//! What an [`Action`] does to the brain's in-memory state once it is carried out.
//!
//! The live apply layer (`rigmind_brain::apply`) moves the files and then calls
//! [`apply`] at the point where the state must follow; the simulator, which has no
//! files, calls it alone. So a release or a settle changes the state in one place,
//! whoever takes the decision.

use chrono::{DateTime, Utc};
use rigmind_queue::batch::BatchState;

use crate::policy::Action;
use crate::state::{Batch, BrainState, JobStatus};

/// Applies the state effect of `action`, decided at `now`. Returns false, and
/// changes nothing, for the actions whose effect depends on what the files say
/// (`Cascade`, `Lost`: the failure recorded in the file; `Cancel`, `Unrunnable`:
/// whether a worker claimed the task first; `Escalate`: the task's new model, read
/// back from its file): the apply layer sets those itself.
pub fn apply(state: &mut BrainState, action: &Action, now: DateTime<Utc>) -> bool {
    match action {
        Action::Release { batch, job, .. } => {
            batch_mut(state, batch).set_status(*job, JobStatus::Queued);
        }
        Action::Retry {
            batch,
            job,
            not_before,
            ..
        } => {
            let b = batch_mut(state, batch);
            b.set_status(*job, JobStatus::Queued);
            b.retry_at.insert(*job, *not_before);
        }
        Action::Fail { batch, job, .. } => {
            batch_mut(state, batch).unhandled_failures.remove(job);
        }
        Action::Revive { batch, job, .. } | Action::HoldBack { batch, job } => {
            batch_mut(state, batch).set_status(*job, JobStatus::Pending);
        }
        Action::Kill { batch, job } => batch_mut(state, batch).jobs[*job].kill_sent = true,
        Action::Settle { batch, state: to } => settle(batch_mut(state, batch), *to, now),
        Action::Cascade { .. }
        | Action::Escalate { .. }
        | Action::Lost { .. }
        | Action::Cancel { .. }
        | Action::Unrunnable { .. } => return false,
    }
    true
}

/// The batch an action was decided on (the policy decides only on known batches).
fn batch_mut<'s>(state: &'s mut BrainState, batch: &str) -> &'s mut Batch {
    state
        .batches
        .get_mut(batch)
        .expect("decided on a known batch")
}

/// A batch reaches state `to`: done (with its end time and elapsed seconds, and no
/// ETA) or running again (without them); its live counts are brought up to date.
fn settle(b: &mut Batch, to: BatchState, now: DateTime<Utc>) {
    b.record.state = to;
    if to.is_done() {
        // A batch that ended has its end, not an expected one.
        b.record.eta = None;
        b.record.eta_computed_at = None;
        let ms = (now - b.record.submitted_at).num_milliseconds();
        b.record.finished_at = Some(rigmind_queue::time::millis(now));
        b.record.elapsed_seconds = Some((ms as f64 / 1000.0).max(0.0));
    } else {
        b.record.finished_at = None;
        b.record.elapsed_seconds = None;
    }
    b.refresh_live_counts(now);
}
