//! Alerts: the conditions a person watching the rig must hear about, decided from
//! what the brain has read, as pure functions.
//!
//! Four kinds ([`AlertKind`]): a card over `[safety] max_gpu_temp_c`, a worker that
//! has not stopped but whose life lock is free or whose heartbeat is older than
//! `[defaults] stale_after`, a plan task whose tasks failed on every attempt their
//! retries allowed, and a queue that has held claimable tasks without any task
//! moving for `[alerts] stalled_after` while a worker is idle.
//!
//! An alert is raised once, when its condition begins, and cleared once, when it
//! ends: [`decide`] compares the conditions true now ([`conditions`]) with the
//! alerts raised ([`Alerts::active`]) and returns only the changes; the caller
//! logs them, runs `[notify]`, and records each with [`Alerts::apply`]. The brain
//! keeps the raised alerts in `brain/alerts.json`, so a restarted brain does not
//! raise them again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::{BrainState, JobStatus};
use rigmind_queue::task::FailureKind;

/// A card is cleared from `gpu_hot` only this far below the limit, so that a card
/// hovering at the limit does not raise and clear every few seconds.
pub const HOT_CLEAR_MARGIN_C: f64 = 3.0;

/// A failed task counts for `task_failing` while its batch runs and this long after
/// it finished: the alert is about work in progress, not history.
pub const FAILING_WINDOW_SECS: i64 = 24 * 3600;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A card is over `[safety] max_gpu_temp_c`.
    GpuHot,
    /// A worker that did not stop is gone or silent.
    WorkerLost,
    /// A plan task's tasks failed on every attempt.
    TaskFailing,
    /// The queue has not moved for `[alerts] stalled_after` while a worker is idle.
    QueueStalled,
}

impl AlertKind {
    /// The word in logs, files, metrics and `RIGMIND_ALERT_KIND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GpuHot => "gpu_hot",
            Self::WorkerLost => "worker_lost",
            Self::TaskFailing => "task_failing",
            Self::QueueStalled => "queue_stalled",
        }
    }

    /// Every kind, in a fixed order (for metrics).
    pub const ALL: [AlertKind; 4] = [
        Self::GpuHot,
        Self::WorkerLost,
        Self::TaskFailing,
        Self::QueueStalled,
    ];
}

/// One alert: its kind, what it is about (a worker id, `batch/plan task`, or
/// `queue`), and why, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub subject: String,
    pub reason: String,
    /// When it was raised (for a clear: when it was raised, too).
    #[serde(with = "rigmind_queue::time::rfc3339")]
    pub since: DateTime<Utc>,
}

/// A change to the raised alerts.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertAction {
    /// A condition began.
    Raise(Alert),
    /// A raised alert's condition ended; `reason` says it is over.
    Clear(Alert),
}

/// A worker as its state file and life lock show it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerSeen {
    pub worker: String,
    /// Its state file says `stopped` (a clean stop).
    pub stopped: bool,
    /// Its life lock: `None` when there is no lock file to ask.
    pub lock_held: Option<bool>,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
    /// Idle, not draining: it could claim a task now.
    pub idle: bool,
    /// Its card's temperature, if it has a card that reports one.
    pub gpu_temp_c: Option<f64>,
    /// The safety gates holding it now.
    pub gates: Vec<String>,
}

/// What the alerts are judged against besides the brain's state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RigSeen {
    pub workers: Vec<WorkerSeen>,
    /// `[safety] max_gpu_temp_c`.
    pub max_gpu_temp_c: f64,
    /// `[defaults] stale_after`, seconds.
    pub stale_after_secs: f64,
    /// `[alerts] stalled_after`, seconds; 0: never.
    pub stalled_after_secs: f64,
}

/// A live batch's id and its counts (pending, queued, processing, complete, failed).
type BatchCounts = (String, [usize; 5]);

/// The alerts raised, and when the queue last moved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alerts {
    /// Raised and not cleared, by kind and subject.
    pub active: BTreeMap<(AlertKind, String), Alert>,
    /// The live batches' counts when last looked at, and when they last changed.
    #[serde(skip)]
    moved: Option<(Vec<BatchCounts>, DateTime<Utc>)>,
}

impl Alerts {
    /// Starts from the alerts a previous brain left raised.
    pub fn with_active(active: Vec<Alert>) -> Self {
        Self {
            active: active
                .into_iter()
                .map(|a| ((a.kind, a.subject.clone()), a))
                .collect(),
            moved: None,
        }
    }

    /// Notes whether any task moved since the last look (the live batches' counts
    /// changed); the queue has not moved since the time this returns.
    pub fn note_moves(&mut self, state: &BrainState, now: DateTime<Utc>) -> DateTime<Utc> {
        let counts: Vec<BatchCounts> = state
            .batches
            .iter()
            .filter(|(_, b)| !b.record.state.is_done())
            .map(|(id, b)| {
                let c = &b.record.counts;
                (
                    id.clone(),
                    [c.pending, c.queued, c.processing, c.complete, c.failed],
                )
            })
            .collect();
        match &self.moved {
            Some((seen, since)) if *seen == counts => *since,
            _ => {
                self.moved = Some((counts, now));
                now
            }
        }
    }

    /// Records a change [`decide`] returned (after it was logged).
    pub fn apply(&mut self, action: &AlertAction) {
        match action {
            AlertAction::Raise(a) => {
                self.active.insert((a.kind, a.subject.clone()), a.clone());
            }
            AlertAction::Clear(a) => {
                self.active.remove(&(a.kind, a.subject.clone()));
            }
        }
    }
}

/// The changes to the raised alerts: a raise for each condition true now that is
/// not raised, a clear for each raised alert whose condition ended. `quiet_since`
/// is when the queue last moved ([`Alerts::note_moves`]).
pub fn decide(
    alerts: &Alerts,
    state: &BrainState,
    rig: &RigSeen,
    quiet_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<AlertAction> {
    let now_true = conditions(state, rig, quiet_since, now);
    let mut out = Vec::new();
    for (key, raised) in &alerts.active {
        let holds = now_true.iter().any(|a| (a.kind, &a.subject) == (key.0, &key.1))
            // A hot card is cleared only below the limit less the margin.
            || (key.0 == AlertKind::GpuHot && still_warm(rig, &key.1));
        if !holds {
            out.push(AlertAction::Clear(Alert {
                reason: cleared_reason(raised.kind).to_string(),
                ..raised.clone()
            }));
        }
    }
    for a in now_true {
        if !alerts.active.contains_key(&(a.kind, a.subject.clone())) {
            out.push(AlertAction::Raise(a));
        }
    }
    out
}

/// Every alert condition true now.
pub fn conditions(
    state: &BrainState,
    rig: &RigSeen,
    quiet_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Alert> {
    let mut out = Vec::new();
    out.extend(rig.workers.iter().filter_map(|w| hot(rig, w)));
    out.extend(rig.workers.iter().filter_map(|w| lost(rig, w)));
    out.extend(failing(state, now));
    out.extend(stalled(state, rig, quiet_since, now));
    out.into_iter()
        .map(|(kind, subject, reason)| Alert {
            kind,
            subject,
            reason,
            since: now,
        })
        .collect()
}

/// An alert's kind, subject and reason, before it is dated.
type Found = (AlertKind, String, String);

fn hot(rig: &RigSeen, w: &WorkerSeen) -> Option<Found> {
    let t = w.gpu_temp_c?;
    (t > rig.max_gpu_temp_c && !is_gone(rig, w)).then(|| {
        (
            AlertKind::GpuHot,
            w.worker.clone(),
            format!(
                "card of {} at {t:.0} °C, over [safety] max_gpu_temp_c = {:.0}",
                w.worker, rig.max_gpu_temp_c
            ),
        )
    })
}

/// A raised `gpu_hot` holds until its card is below the limit less the margin.
fn still_warm(rig: &RigSeen, worker: &str) -> bool {
    rig.workers.iter().any(|w| {
        w.worker == worker
            && !is_gone(rig, w)
            && w.gpu_temp_c
                .is_some_and(|t| t > rig.max_gpu_temp_c - HOT_CLEAR_MARGIN_C)
    })
}

/// A worker that did not stop and whose lock is free, or (no lock to ask, or a
/// lock held by a hung process) whose heartbeat is stale.
fn is_gone(rig: &RigSeen, w: &WorkerSeen) -> bool {
    !w.stopped && (w.lock_held == Some(false) || w.heartbeat_age_secs > rig.stale_after_secs)
}

fn lost(rig: &RigSeen, w: &WorkerSeen) -> Option<Found> {
    if !is_gone(rig, w) {
        return None;
    }
    let why = if w.lock_held == Some(false) {
        "its process is gone (life lock free) but it never stopped"
    } else {
        "no heartbeat"
    };
    Some((
        AlertKind::WorkerLost,
        w.worker.clone(),
        format!(
            "worker {}: {why}; last heartbeat {:.0}s ago",
            w.worker, w.heartbeat_age_secs
        ),
    ))
}

/// Plan tasks with tasks that failed on every attempt (at least one retry, all
/// spent), in running batches or batches finished within [`FAILING_WINDOW_SECS`].
fn failing(state: &BrainState, now: DateTime<Utc>) -> Vec<Found> {
    let mut out = Vec::new();
    for (id, b) in &state.batches {
        let recent = b
            .record
            .finished_at
            .is_none_or(|t| (now - t).num_seconds() < FAILING_WINDOW_SECS);
        if !recent || b.record.counts.failed == 0 {
            continue;
        }
        let mut by_task: BTreeMap<&str, (usize, &str, u32)> = BTreeMap::new();
        for j in &b.jobs {
            let JobStatus::Failed(f) = j.status else {
                continue;
            };
            let retried = matches!(
                f.kind,
                FailureKind::WorkerFailure | FailureKind::Timeout | FailureKind::LostWorker
            );
            if retried && f.retries > 0 && f.retry_count >= f.retries {
                let e = by_task
                    .entry(&j.plan_task_id)
                    .or_insert((0, &j.name, f.retries));
                e.0 += 1;
            }
        }
        out.extend(by_task.into_iter().map(|(task, (n, last, retries))| {
            (
                AlertKind::TaskFailing,
                format!("{id}/{task}"),
                format!(
                    "batch {id}: {n} task(s) of '{task}' failed on all {} attempts (e.g. {last})",
                    retries + 1
                ),
            )
        }));
    }
    out
}

/// The queue holds tasks a worker could claim (not waiting out a back-off), none
/// has moved for `stalled_after`, and a worker is idle.
fn stalled(
    state: &BrainState,
    rig: &RigSeen,
    quiet_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Found> {
    if rig.stalled_after_secs <= 0.0 {
        return None;
    }
    let quiet = (now - quiet_since).num_milliseconds() as f64 / 1000.0;
    let waiting: usize = state
        .batches
        .values()
        .filter(|b| !b.record.state.is_done())
        .map(|b| {
            let backing_off = b.retry_at.values().filter(|t| **t > now).count();
            b.record.counts.queued.saturating_sub(backing_off)
        })
        .sum();
    let idle: Vec<&WorkerSeen> = rig
        .workers
        .iter()
        .filter(|w| w.idle && !is_gone(rig, w))
        .collect();
    if waiting == 0 || idle.is_empty() || quiet < rig.stalled_after_secs {
        return None;
    }
    let names: Vec<String> = idle
        .iter()
        .map(|w| match w.gates.is_empty() {
            true => w.worker.clone(),
            false => format!("{} (held by {})", w.worker, w.gates.join(", ")),
        })
        .collect();
    Some((
        AlertKind::QueueStalled,
        "queue".into(),
        format!(
            "{waiting} queued task(s), none moved for {quiet:.0}s (stalled_after {:.0}s) while idle: {}",
            rig.stalled_after_secs,
            names.join(", ")
        ),
    ))
}

fn cleared_reason(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::GpuHot => "the card cooled below the limit",
        AlertKind::WorkerLost => {
            "the worker is back, or stopped cleanly, or its state file is gone"
        }
        AlertKind::TaskFailing => {
            "no task of it is failed with its retries spent any more (retried, or its batch is old)"
        }
        AlertKind::QueueStalled => "the queue moved, emptied, or no worker is idle",
    }
}

#[cfg(test)]
mod tests;
