//! The full rescan: every task directory re-listed, for the events the kernel
//! dropped. Jobs whose place changed are brought into the state, files that are no
//! known task's are judged, and jobs whose file is in no directory any more are
//! followed as lost.

use std::collections::HashMap;

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
