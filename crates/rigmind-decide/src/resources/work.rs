//! The work a brain's state holds, as the resource manager sees it: every job not
//! yet done, how long it runs, and how soon it can start.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rigmind_types::TaskClass;

use super::Work;
use crate::estimate::Estimate;
use crate::state::{Batch, BrainState, JobStatus};

/// The work a brain's state holds, with the look-ahead of the module doc: every job
/// not yet done, its dependencies among them, and how long a running one has left
/// at `now`. Run times are [`Estimate::of_job`]'s: the plan's `estimate` corrected by
/// the runs seen of the same plan task.
pub fn work_of(state: &BrainState, default_model: &str, now: DateTime<Utc>) -> Vec<Work> {
    let mut out = Vec::new();
    for (batch_at, batch) in state.batches.values().filter(|b| b.active()).enumerate() {
        let n = batch.jobs.len();
        let secs = |i: usize| estimate_of(state, &batch.jobs[i]);
        let left = |i: usize| left_of(state, &batch.jobs[i], now);
        // Where each unfinished job lands in `out`.
        let base = out.len();
        let mut slot: Vec<Option<usize>> = vec![None; n];
        let mut k = base;
        for (i, j) in batch.jobs.iter().enumerate() {
            if !is_done(j.status) {
                slot[i] = Some(k);
                k += 1;
            }
        }
        let at = ready_times(batch, left);
        for (i, j) in batch.jobs.iter().enumerate() {
            if slot[i].is_none() {
                continue;
            }
            let class = match j.work.class {
                // An endpoint runs it: no card is needed, like cpu work.
                Some(TaskClass::Llm) if j.work.endpoint.is_some() => TaskClass::Cpu,
                Some(c @ (TaskClass::Script | TaskClass::Llm)) => c,
                _ => TaskClass::Cpu,
            };
            out.push(Work {
                class,
                model: (class == TaskClass::Llm).then(|| {
                    j.work
                        .model
                        .clone()
                        .unwrap_or_else(|| default_model.to_string())
                }),
                secs: secs(i),
                ready_in: at[i].unwrap_or(0.0),
                running: j.status == JobStatus::Processing,
                left: left(i),
                // A job already queued or running waits for nothing (one put there
                // by hand may still have unfinished dependencies).
                deps: if matches!(j.status, JobStatus::Queued | JobStatus::Processing) {
                    Vec::new()
                } else {
                    j.deps.iter().filter_map(|d| slot[*d]).collect()
                },
                group: j.work.group.clone(),
                batch: batch_at,
            });
        }
    }
    out
}

/// How soon each unfinished job of `batch` can start (`None` for jobs done): the
/// longest chain of unfinished dependencies before it, each taking what it has
/// `left`. Memoised; computed depth-first without recursion.
fn ready_times(batch: &Batch, left: impl Fn(usize) -> f64) -> Vec<Option<f64>> {
    let n = batch.jobs.len();
    let mut at: Vec<Option<f64>> = vec![None; n];
    for start in 0..n {
        if at[start].is_some() || is_done(batch.jobs[start].status) {
            continue;
        }
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            if at[i].is_some() {
                continue;
            }
            let j = &batch.jobs[i];
            if matches!(j.status, JobStatus::Queued | JobStatus::Processing) || j.unmet == 0 {
                at[i] = Some(0.0);
                continue;
            }
            if !expanded {
                stack.push((i, true));
                for &d in &j.deps {
                    if at[d].is_none() && !is_done(batch.jobs[d].status) {
                        stack.push((d, false));
                    }
                }
                continue;
            }
            let mut ready = 0.0f64;
            for &d in &j.deps {
                if is_done(batch.jobs[d].status) {
                    continue;
                }
                ready = ready.max(at[d].unwrap_or(0.0) + left(d));
            }
            at[i] = Some(ready);
        }
    }
    at
}

/// The estimate of each plan task with a job not yet done in a live batch.
pub fn estimates_of(state: &BrainState) -> BTreeMap<String, Estimate> {
    let mut out = BTreeMap::new();
    for batch in state.batches.values().filter(|b| b.active()) {
        for j in batch.jobs.iter().filter(|j| !is_done(j.status)) {
            if !out.contains_key(&j.plan_task_id) {
                out.insert(j.plan_task_id.clone(), Estimate::of_job(state, j));
            }
        }
    }
    out
}

/// A job's expected run time, in seconds ([`Estimate::of_job`]).
pub fn estimate_of(state: &BrainState, job: &crate::state::Job) -> f64 {
    Estimate::of_job(state, job).secs()
}

/// How long a job still needs at `now`: its estimate, less what it has run if it
/// runs (past its estimate: a little more, not nothing).
pub fn left_of(state: &BrainState, job: &crate::state::Job, now: DateTime<Utc>) -> f64 {
    let s = estimate_of(state, job);
    match (&job.holder, job.status) {
        (Some(h), JobStatus::Processing) => {
            let ran = (now - h.since).num_milliseconds().max(0) as f64 / 1000.0;
            (s - ran).max(0.05 * s)
        }
        _ => s,
    }
}

/// Done, or failed for good: no demand. A failure that will be retried still is.
fn is_done(s: JobStatus) -> bool {
    match s {
        JobStatus::Complete => true,
        JobStatus::Failed(f) => !f.retryable(),
        _ => false,
    }
}
