//! The full rescan: every task directory re-listed, for the events the kernel
//! dropped. Jobs whose place changed are brought into the state, files that are no
//! known task's are judged, and jobs whose file is in no directory any more are
//! followed as lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rigmind_config::RigConfig;
use rigmind_queue::claim::QueueIndex;
use rigmind_queue::fsio;
use rigmind_queue::logs::Logs;
use rigmind_queue::task::FailureKind;
use rigmind_queue::{Layout, TaskDir};
use rigmind_types::Executor;

use crate::observe::refresh;
use crate::state::{BrainState, JobStatus};
use crate::strays::{accept_stray, is_known_job, judge_stray};

/// Where each listed file is: its name and the status its directory stands for.
type Seen = HashMap<String, JobStatus>;

/// A periodic rescan takes at most one part in this many of the brain's time: it
/// is a safety net for events the kernel lost, and listing a 100,000-file queue
/// every 2 s cost the brain a third of a big submission's time.
const COST_SHARE: u32 = 20;

/// While a submission's ready tasks are being written, the periodic rescan waits
/// this long at most: the queue it would list is the one being written, and each
/// rescan forgets the echoes of the brain's own writes, so every later event of
/// the submission would be read back.
const QUEUEING_WAIT: Duration = Duration::from_secs(30);

/// When the next periodic rescan is due: `every` (`--rescan`) apart, or further
/// apart when rescans are costly or a submission is being queued. A rescan forced
/// by lost events (an overflow) runs at once and counts as the last one.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    every: Duration,
    /// When the last rescan started; `None`: none yet, the first is due at once.
    last_start: Option<Instant>,
    last_cost: Duration,
}

impl Pace {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last_start: None,
            last_cost: Duration::ZERO,
        }
    }

    /// Whether a periodic rescan is due at `now` (a tick of the `every` timer);
    /// `queueing`: a submission's ready tasks are still being written.
    pub(crate) fn due(&self, now: Instant, queueing: bool) -> bool {
        let mut gap = self.every.max(self.last_cost * COST_SHARE);
        if queueing {
            gap = gap.max(QUEUEING_WAIT);
        }
        // Half a period of slack: the timer's ticks are `every` apart, give or
        // take how late each was handled.
        self.last_start
            .is_none_or(|last| now.saturating_duration_since(last) + self.every / 2 >= gap)
    }

    /// A rescan ran from `start` to `end`.
    pub(crate) fn ran(&mut self, start: Instant, end: Instant) {
        self.last_cost = end.saturating_duration_since(start);
        self.last_start = Some(start);
    }
}

/// Re-lists every directory and brings each job whose place changed into the state;
/// jobs whose file is in no directory any more are followed as lost.
pub(crate) fn full_rescan(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    brain_queue: &mut QueueIndex,
    config: &RigConfig,
) {
    if let Err(e) = brain_queue.rescan(layout) {
        tracing::warn!("{e}");
    }
    state.judged.retain(|p, _| p.exists());
    let (mut seen, twice) = list_task_dirs(layout, logs, state);
    settle_queue_files(layout, logs, state, brain_queue);
    list_private_dirs(layout, logs, state, &mut seen);
    crate::lost::follow_vanished(layout, logs, state, config, &|n| seen.contains_key(n));
    let changed = moved_jobs(state, &seen);
    for name in changed.into_iter().chain(twice) {
        refresh(layout, logs, state, &name);
    }
}

/// The status a file in `d` stands for.
fn dir_status(d: TaskDir) -> JobStatus {
    match d {
        TaskDir::Queue => JobStatus::Queued,
        TaskDir::Processing => JobStatus::Processing,
        TaskDir::Complete => JobStatus::Complete,
        // Any failure: only "failed or not" is compared here.
        TaskDir::Failed => JobStatus::Failed(crate::state::FailureInfo {
            kind: FailureKind::WorkerFailure,
            retry_count: 0,
            retries: 0,
            tier: None,
            tier_failures: 0,
        }),
    }
}

/// Lists the public task directories, judging what is no known task's file; also
/// returns the known tasks found in two places.
fn list_task_dirs(layout: &Layout, logs: &Logs, state: &mut BrainState) -> (Seen, Vec<String>) {
    let mut seen = Seen::new();
    let mut twice = Vec::new();
    for d in TaskDir::ALL {
        let status = dir_status(d);
        let dir = layout.dir(d);
        for name in fsio::list_names(&dir).unwrap_or_default() {
            if !is_known_job(state, &name) {
                judge_stray(layout, logs, state, &dir.join(&name));
            }
            // In two places: refreshed below, which removes the stale copy.
            if seen.insert(name.clone(), status).is_some() && is_known_job(state, &name) {
                twice.push(name);
            }
        }
        for odd in rigmind_queue::quarantine::odd_entries(&dir) {
            judge_stray(layout, logs, state, &odd);
        }
    }
    (seen, twice)
}

/// Queue files that are no known task's: unclassified ones are fixed, strays
/// accepted, and files no worker can read (truncated, garbage with a task's name)
/// moved aside.
fn settle_queue_files(
    layout: &Layout,
    logs: &Logs,
    state: &mut BrainState,
    brain_queue: &mut QueueIndex,
) {
    let unclassified_names: Vec<String> = brain_queue
        .entries()
        .filter(|e| e.task_class.is_none() && e.executor == Executor::Worker)
        .map(|e| e.file_name.clone())
        .collect();
    for name in unclassified_names {
        crate::observe::fix_unclassified(layout, logs, state, &name);
    }
    let strays: Vec<String> = brain_queue
        .entries()
        .filter(|e| !is_known_job(state, &e.file_name))
        .map(|e| e.file_name.clone())
        .collect();
    for name in strays {
        accept_stray(layout, logs, state, brain_queue, &name);
    }
    for name in brain_queue.unreadable() {
        let path = layout.dir(TaskDir::Queue).join(&name);
        if let Some(reason) = rigmind_queue::quarantine::judge(&path, std::time::SystemTime::now())
        {
            brain_queue.forget(&name);
            crate::observe::reject(layout, logs, state, &path, &reason);
        }
    }
}

/// Lists every batch's private directory (a finished batch's is empty, and cheap)
/// so that junk dropped there is found; its files count as pending.
fn list_private_dirs(layout: &Layout, logs: &Logs, state: &mut BrainState, seen: &mut Seen) {
    let ids: Vec<String> = state.batches.keys().cloned().collect();
    for id in &ids {
        for name in fsio::list_names(&layout.private_dir(id)).unwrap_or_default() {
            if rigmind_queue::task::TaskName::parse(&name).is_none() {
                judge_stray(layout, logs, state, &layout.private_dir(id).join(&name));
            }
            seen.entry(name).or_insert(JobStatus::Pending);
        }
    }
}

/// The jobs listed somewhere other than where the state has them. Finished batches
/// without failures have nothing left to move (events still cover them); the rest
/// are compared in full.
fn moved_jobs(state: &BrainState, seen: &Seen) -> Vec<String> {
    let watched = |b: &crate::state::Batch| b.active() || b.record.counts.failed > 0;
    let mut changed = Vec::new();
    for b in state.batches.values().filter(|b| watched(b)) {
        for j in &b.jobs {
            let differs = match (seen.get(&j.file_name), j.status) {
                (None, _) => false,
                (Some(JobStatus::Failed(_)), JobStatus::Failed(_)) => false,
                (Some(s), now) => *s != now,
            };
            if differs {
                changed.push(j.file_name.clone());
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rescan_waits_for_its_period_its_cost_and_a_submission_being_queued() {
        let t0 = Instant::now();
        let (s, ms) = (Duration::from_secs, Duration::from_millis);
        let mut pace = Pace::new(s(2));
        assert!(pace.due(t0, false), "the first at once");
        pace.ran(t0, t0);
        // Every tick of the timer, even one handled a little early.
        assert!(!pace.due(t0 + ms(900), false));
        assert!(pace.due(t0 + ms(1990), false));
        // A cheap rescan keeps the period.
        pace.ran(t0 + s(2), t0 + s(2) + ms(10));
        assert!(pace.due(t0 + s(4), false));
        // One that took 0.5 s waits 20 times that (the tick at 10 s).
        pace.ran(t0 + s(4), t0 + s(4) + ms(500));
        assert!(!pace.due(t0 + s(12), false));
        assert!(pace.due(t0 + s(14), false));
        // A submission being queued holds it back up to 30 s.
        assert!(!pace.due(t0 + s(32), true));
        assert!(pace.due(t0 + s(34), true));
    }
}
