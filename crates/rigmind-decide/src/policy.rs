//! The brain's decisions, as a pure function of the state it has read and the time.
//!
//! [`decide`] looks only at what changed (the ready set, failures not yet handled,
//! jobs back from failed, batches whose state no longer matches their counts) and
//! returns [`Action`]s; the live brain applies them to the files (`rigmind_brain::apply`) and
//! calls it again until nothing is left to do. Tests call it directly on hand-built
//! states, and the simulator does too: there is one policy, never two. What each
//! action then does to the state is [`crate::effect::apply`].

use std::collections::{BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use rigmind_queue::batch::BatchState;
use rigmind_queue::task::FailureKind;
use serde::{Deserialize, Serialize};

use crate::ladder::Ladder;
use crate::state::{Batch, BrainState, FailureInfo, Holder, JobStatus};

/// One decision for the apply layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// private_tasks → queue: every dependency is complete.
    Release {
        batch: String,
        job: usize,
        reason: String,
    },
    /// failed → queue after a backoff: a worker failure with retries left.
    Retry {
        batch: String,
        job: usize,
        not_before: DateTime<Utc>,
        reason: String,
    },
    /// failed → queue at once, on the next escalation tier: an llm task that failed
    /// `after_failures` times on tier `tier - 1` runs on model `to` (and
    /// `endpoint`, the one that serves it; `None`: a card).
    Escalate {
        batch: String,
        job: usize,
        step: Box<Climb>,
    },
    /// A failure is final (no retries left, or not retryable).
    Fail {
        batch: String,
        job: usize,
        reason: String,
    },
    /// private_tasks → failed: a dependency (`cause`) failed for good.
    Cascade {
        batch: String,
        job: usize,
        cause: usize,
    },
    /// failed → private_tasks: it failed only because `cause` failed, and `cause`
    /// has been sent back to run again.
    Revive {
        batch: String,
        job: usize,
        cause: usize,
    },
    /// The batch's overall state changed (done, or running again).
    Settle { batch: String, state: BatchState },
    /// processing → failed (`lost_worker`): whoever ran it is gone. Its process group
    /// is killed first; the failure then goes the way of any worker failure.
    Lost {
        batch: String,
        job: usize,
        reason: String,
    },
    /// A cancelled batch's task that has not finished: pending or queued ones go to
    /// `failed/` as `cancelled`; a failure that came after the cancellation is
    /// recorded as `cancelled` too (never retried).
    Cancel { batch: String, job: usize },
    /// A cancelled batch's running task: its process group is killed.
    Kill { batch: String, job: usize },
    /// queue → private_tasks: a task put into the queue (by hand) before its
    /// dependencies are complete is held back until they are.
    HoldBack { batch: String, job: usize },
    /// pending or queued → failed (`definition_error`): the task cannot run on this
    /// rig as written (its model is unknown to the LLM servers).
    Unrunnable {
        batch: String,
        job: usize,
        reason: String,
    },
}

/// One step up the escalation tiers (boxed in [`Action::Escalate`]: actions
/// stay small).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Climb {
    /// The model it failed on.
    pub from: String,
    /// The next tier's model.
    pub to: String,
    /// The next tier (1-based).
    pub tier: u32,
    /// The endpoint that serves `to`; `None`: a card.
    pub endpoint: Option<String>,
    pub reason: String,
}

/// A claimed task with no start record after this long was claimed by a runner
/// that died before it could start it.
pub const CLAIM_GRACE_SECS: f64 = 30.0;

/// First backoff before a retry; it doubles with each retry, up to [`MAX_BACKOFF_SECS`].
pub const BASE_BACKOFF_SECS: f64 = 2.0;
/// The longest wait before a retry.
pub const MAX_BACKOFF_SECS: f64 = 300.0;

/// Everything that should happen now, in the order to apply it. Releases come
/// last, all batches together, in claim order (highest priority first, then the
/// oldest): each is visible to workers the moment it is written, so whatever part
/// of a group they see holds its best task.
pub fn decide(state: &BrainState, now: DateTime<Utc>) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut releases: Vec<(&str, Action)> = Vec::new();
    for (id, batch) in &state.batches {
        let before = actions.len() + releases.len();
        if batch.record.cancel_requested {
            if !batch.active() && batch.record.state == BatchState::Cancelled {
                continue;
            }
            decide_cancelled(id, batch, state.queueing.contains_key(id), &mut actions);
            let settled = batch.settled_state();
            if actions.len() + releases.len() == before && settled != batch.record.state {
                actions.push(Action::Settle {
                    batch: id.clone(),
                    state: settled,
                });
            }
            continue;
        }
        decide_lost(id, batch, state, now, &mut actions);
        decide_unrunnable(id, batch, state, &mut actions);
        decide_failures(id, batch, &state.ladder, now, &mut actions);
        decide_revivals(id, batch, &mut actions);
        decide_releases(id, batch, state, &mut releases);
        // A batch settles only once nothing else is decided for it this round.
        let settled = batch.settled_state();
        if actions.len() + releases.len() == before && settled != batch.record.state {
            actions.push(Action::Settle {
                batch: id.clone(),
                state: settled,
            });
        }
    }
    // File names sort in claim order (`pRR-SSSSSSSS-...`).
    releases.sort_by(|a, b| a.0.cmp(b.0));
    actions.extend(releases.into_iter().map(|(_, a)| a));
    actions
}

/// The batch's ready jobs, each with its file name (its claim order).
fn decide_releases<'a>(
    id: &str,
    batch: &'a Batch,
    state: &BrainState,
    out: &mut Vec<(&'a str, Action)>,
) {
    for &i in &batch.ready {
        if unrunnable(state, &batch.jobs[i]).is_some() {
            continue; // failed just above instead
        }
        let n = batch.jobs[i].deps.len();
        let reason = match n {
            0 => "no dependencies".to_string(),
            1 => "its 1 dependency is complete".to_string(),
            n => format!("all {n} dependencies complete"),
        };
        out.push((
            batch.jobs[i].file_name.as_str(),
            Action::Release {
                batch: id.to_string(),
                job: i,
                reason,
            },
        ));
    }
}

/// Why an llm job cannot run on this rig (its model is unknown), if it cannot.
fn unrunnable<'a>(state: &'a BrainState, job: &crate::state::Job) -> Option<&'a String> {
    if job.work.class != Some(rigmind_types::TaskClass::Llm) {
        return None;
    }
    job.work
        .model
        .as_ref()
        .and_then(|m| state.unknown_models.get(m))
}

/// llm tasks not started whose model the LLM servers do not know.
fn decide_unrunnable(id: &str, batch: &Batch, state: &BrainState, out: &mut Vec<Action>) {
    // Files still being written by the submission are judged once they exist.
    if state.unknown_models.is_empty() || state.queueing.contains_key(id) {
        return;
    }
    for (i, job) in batch.jobs.iter().enumerate() {
        if !matches!(job.status, JobStatus::Pending | JobStatus::Queued) {
            continue;
        }
        let Some(why) = unrunnable(state, job) else {
            continue;
        };
        out.push(Action::Unrunnable {
            batch: id.to_string(),
            job: i,
            reason: why.clone(),
        });
    }
}

/// `queueing`: the batch's submission is still writing its ready tasks into the
/// queue; its queued jobs are cancelled once their files exist.
fn decide_cancelled(id: &str, batch: &Batch, queueing: bool, out: &mut Vec<Action>) {
    for (i, job) in batch.jobs.iter().enumerate() {
        let batch = id.to_string();
        match job.status {
            JobStatus::Queued if queueing => {}
            JobStatus::Pending | JobStatus::Queued => out.push(Action::Cancel { batch, job: i }),
            JobStatus::Processing if !job.kill_sent => out.push(Action::Kill { batch, job: i }),
            _ => {}
        }
    }
    for &i in &batch.unhandled_failures {
        out.push(Action::Cancel {
            batch: id.to_string(),
            job: i,
        });
    }
}

fn decide_lost(
    id: &str,
    batch: &Batch,
    state: &BrainState,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) {
    for &i in &batch.running {
        let job = &batch.jobs[i];
        if let Some(reason) = job.holder.as_ref().and_then(|h| holder_gone(h, state, now)) {
            out.push(Action::Lost {
                batch: id.to_string(),
                job: i,
                reason,
            });
        }
    }
    // Only a hand can put a task into the queue before its dependencies.
    for &i in &batch.queued_early {
        if batch.jobs[i].status == JobStatus::Queued && batch.jobs[i].unmet > 0 {
            out.push(Action::HoldBack {
                batch: id.to_string(),
                job: i,
            });
        }
    }
}

/// Why the holder of a running task is gone, or `None` while it may be alive.
///
/// The life lock is the truth when it can be asked: free means dead (the kernel
/// drops it however the process died), held under another session means the
/// worker was restarted under the same id. Without a lock file, the heartbeat
/// decides (`stale_after`).
pub fn holder_gone(h: &Holder, state: &BrainState, now: DateTime<Utc>) -> Option<String> {
    let age = |t: DateTime<Utc>| (now - t).num_milliseconds() as f64 / 1000.0;
    let Some(worker) = &h.worker else {
        return (age(h.since) > CLAIM_GRACE_SECS)
            .then(|| format!("claimed {:.0}s ago and never started", age(h.since)));
    };
    if worker == "brain" {
        return (h.session.as_deref() != Some(state.brain_session.as_str()))
            .then(|| "the brain that ran it has stopped".to_string());
    }
    let live = state.workers.get(worker).cloned().unwrap_or_default();
    match live.lock_held {
        Some(false) => Some(format!("worker {worker} is dead (its lock is free)")),
        Some(true) => match (&h.session, &live.session) {
            (Some(mine), Some(now_running)) if mine != now_running => Some(format!(
                "worker {worker} was restarted (session {now_running} is not {mine})"
            )),
            _ => None,
        },
        None => {
            let last = live.heartbeat_at.unwrap_or(h.since).max(h.since);
            (age(last) > state.stale_after_secs).then(|| {
                format!(
                    "worker {worker} silent for {:.0}s (stale_after {:.0}s)",
                    age(last),
                    state.stale_after_secs
                )
            })
        }
    }
}

fn decide_failures(
    id: &str,
    batch: &Batch,
    ladder: &Ladder,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) {
    let mut cascaded = BTreeSet::new();
    for &i in &batch.unhandled_failures {
        let JobStatus::Failed(info) = batch.jobs[i].status else {
            continue;
        };
        let job = &batch.jobs[i];
        if let Some(a) = climb(id, i, job, info, ladder, now) {
            out.push(a);
            continue;
        }
        if info.retryable() {
            let delay = backoff_secs(&job.task_id, info.retry_count);
            out.push(Action::Retry {
                batch: id.to_string(),
                job: i,
                not_before: now + chrono::Duration::milliseconds((delay * 1000.0) as i64),
                reason: format!(
                    "{}; retry {} of {} in {:.1}s",
                    info.kind,
                    info.retry_count + 1,
                    info.retries,
                    delay
                ),
            });
            continue;
        }
        let reason = if info.kind == FailureKind::DependencyFailed {
            "a dependency failed".to_string()
        } else if matches!(
            info.kind,
            FailureKind::WorkerFailure
                | FailureKind::Timeout
                | FailureKind::LostWorker
                | FailureKind::Oom
        ) {
            format!("{}; no retries left ({} allowed)", info.kind, info.retries)
        } else {
            format!("{}; not retried", info.kind)
        };
        out.push(Action::Fail {
            batch: id.to_string(),
            job: i,
            reason,
        });
        // Everything still waiting downstream can never run now.
        let mut queue: VecDeque<usize> = job.dependents.iter().copied().collect();
        while let Some(d) = queue.pop_front() {
            if batch.jobs[d].status != JobStatus::Pending || !cascaded.insert(d) {
                continue;
            }
            out.push(Action::Cascade {
                batch: id.to_string(),
                job: d,
                cause: i,
            });
            queue.extend(batch.jobs[d].dependents.iter().copied());
        }
    }
}

/// The escalation of a failed llm task on a tier below the last: retried on its
/// tier until it has failed `after_failures` times there (its own `retries` do
/// not limit that: tiers multiply attempts), then moved up a tier. `None`: the
/// ordinary retry rule decides (not on a tier, on the last tier, or a failure
/// that is not the server's: a definition error, a cancellation).
fn climb(
    id: &str,
    i: usize,
    job: &crate::state::Job,
    info: FailureInfo,
    ladder: &Ladder,
    now: DateTime<Utc>,
) -> Option<Action> {
    let tier = info.tier?;
    let (next, to) = ladder.next(tier)?;
    if !matches!(
        info.kind,
        FailureKind::WorkerFailure
            | FailureKind::Timeout
            | FailureKind::LostWorker
            | FailureKind::Oom
    ) {
        return None;
    }
    let from = job.work.model.clone().unwrap_or_default();
    if info.tier_failures < ladder.after_failures {
        let delay = backoff_secs(&job.task_id, info.retry_count);
        return Some(Action::Retry {
            batch: id.to_string(),
            job: i,
            not_before: now + chrono::Duration::milliseconds((delay * 1000.0) as i64),
            reason: format!(
                "{}; attempt {} of {} on tier {tier} ({from}) in {:.1}s",
                info.kind,
                info.tier_failures + 1,
                ladder.after_failures,
                delay
            ),
        });
    }
    Some(Action::Escalate {
        batch: id.to_string(),
        job: i,
        step: Box::new(Climb {
            reason: format!(
                "{}; failed {} times on tier {tier} ({from})",
                info.kind, info.tier_failures
            ),
            from,
            to: to.to_string(),
            tier: next,
            endpoint: ladder.endpoint_for(to, job.work.pinned_endpoint.as_deref()),
        }),
    })
}

fn decide_revivals(id: &str, batch: &Batch, out: &mut Vec<Action>) {
    let mut revived = BTreeSet::new();
    for &r in &batch.revived {
        for &d in &batch.jobs[r].dependents {
            let job = &batch.jobs[d];
            let by_dependency = matches!(
                job.status,
                JobStatus::Failed(f) if f.kind == FailureKind::DependencyFailed
            );
            let no_failed_dep = job
                .deps
                .iter()
                .all(|x| !matches!(batch.jobs[*x].status, JobStatus::Failed(_)));
            if by_dependency && no_failed_dep && revived.insert(d) {
                out.push(Action::Revive {
                    batch: id.to_string(),
                    job: d,
                    cause: r,
                });
            }
        }
    }
}

/// Exponential backoff with jitter: `2s · 2^retry`, capped, ±25 %. The jitter comes
/// from the task id, so the function stays pure and retries of many tasks that
/// failed together still spread out.
pub fn backoff_secs(task_id: &str, retry_count: u32) -> f64 {
    let base = (BASE_BACKOFF_SECS * 2f64.powi(retry_count.min(16) as i32)).min(MAX_BACKOFF_SECS);
    let mut h: u64 = 0xcbf29ce484222325;
    for b in task_id.bytes().chain(retry_count.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let unit = (h % 10_000) as f64 / 10_000.0; // [0, 1)
    base * (0.75 + 0.5 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::batch;
    use crate::state::FailureInfo;

    fn state_of(b: Batch) -> BrainState {
        let mut s = BrainState::default();
        s.insert(b);
        s
    }

    /// A failure of `kind` after `retry_count` of `retries` retries, off the tiers.
    fn failed(kind: FailureKind, retry_count: u32, retries: u32) -> JobStatus {
        JobStatus::Failed(FailureInfo {
            kind,
            retry_count,
            retries,
            tier: None,
            tier_failures: 0,
        })
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .into()
    }

    #[test]
    fn an_escalation_keeps_the_plans_endpoint_pin_where_it_serves_the_next_tier() {
        let mut s = state_of(batch(&[&[], &[]]));
        s.ladder = crate::ladder::Ladder {
            tiers: vec!["small:latest".into(), "big:latest".into()],
            after_failures: 1,
            endpoints: vec![
                ("lan".into(), vec!["big:latest".into()]),
                ("cloud".into(), vec!["big:latest".into()]),
            ],
        };
        let b = s.batches.get_mut("b").unwrap();
        for (i, pin) in [(0, None), (1, Some("cloud"))] {
            b.jobs[i].work.model = Some("small:latest".into());
            b.jobs[i].work.pinned_endpoint = pin.map(str::to_string);
            b.set_status(
                i,
                JobStatus::Failed(FailureInfo {
                    kind: FailureKind::WorkerFailure,
                    retry_count: 0,
                    retries: 0,
                    tier: Some(1),
                    tier_failures: 1,
                }),
            );
        }
        let endpoints: Vec<Option<String>> = decide(&s, now())
            .into_iter()
            .filter_map(|a| match a {
                Action::Escalate { step, .. } => Some(step.endpoint),
                _ => None,
            })
            .collect();
        // Unpinned: the first endpoint that serves the model; pinned: its pin.
        assert_eq!(endpoints, vec![Some("lan".into()), Some("cloud".into())]);
    }

    #[test]
    fn releases_roots_then_dependents() {
        let mut s = state_of(batch(&[&[], &[0], &[0]]));
        let a = decide(&s, now());
        assert_eq!(
            a,
            vec![Action::Release {
                batch: "b".into(),
                job: 0,
                reason: "no dependencies".into()
            }]
        );
        let b = s.batches.get_mut("b").unwrap();
        b.set_status(0, JobStatus::Queued);
        assert!(decide(&s, now()).is_empty());
        s.batches
            .get_mut("b")
            .unwrap()
            .set_status(0, JobStatus::Complete);
        let released: Vec<usize> = decide(&s, now())
            .into_iter()
            .map(|a| match a {
                Action::Release { job, .. } => job,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(released, vec![1, 2]);
    }

    #[test]
    fn a_final_failure_cascades_transitively_and_settles_last() {
        // 0 -> 1 -> 2, and 3 independent.
        let mut s = state_of(batch(&[&[], &[0], &[1], &[]]));
        let b = s.batches.get_mut("b").unwrap();
        b.set_status(3, JobStatus::Complete);
        b.set_status(0, failed(FailureKind::WorkerFailure, 0, 0));
        let a = decide(&s, now());
        assert!(
            matches!(&a[0], Action::Fail { job: 0, reason, .. } if reason.contains("no retries left"))
        );
        assert_eq!(
            a[1..],
            [
                Action::Cascade {
                    batch: "b".into(),
                    job: 1,
                    cause: 0
                },
                Action::Cascade {
                    batch: "b".into(),
                    job: 2,
                    cause: 0
                },
            ]
        );
        assert!(!a.iter().any(|x| matches!(x, Action::Settle { .. })));
    }

    #[test]
    fn worker_failures_with_retries_left_are_retried_with_backoff() {
        let mut s = state_of(batch(&[&[]]));
        s.batches
            .get_mut("b")
            .unwrap()
            .set_status(0, failed(FailureKind::Timeout, 1, 3));
        match &decide(&s, now())[0] {
            Action::Retry {
                not_before, reason, ..
            } => {
                let wait = (*not_before - now()).num_milliseconds() as f64 / 1000.0;
                assert!((3.0..=5.0).contains(&wait), "{wait}");
                assert!(reason.starts_with("timeout; retry 2 of 3"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Definition errors are never retried.
        s.batches
            .get_mut("b")
            .unwrap()
            .set_status(0, failed(FailureKind::DefinitionError, 0, 3));
        assert!(matches!(&decide(&s, now())[0], Action::Fail { .. }));
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for r in 0..5 {
            let b = backoff_secs("t", r);
            let base = 2.0 * 2f64.powi(r as i32);
            assert!(b >= base * 0.75 && b <= base * 1.25, "{r}: {b}");
        }
        assert!(backoff_secs("t", 40) <= MAX_BACKOFF_SECS * 1.25);
        assert_ne!(backoff_secs("a", 0), backoff_secs("b", 0));
    }

    #[test]
    fn a_batch_settles_when_nothing_is_left() {
        let mut s = state_of(batch(&[&[]]));
        s.batches
            .get_mut("b")
            .unwrap()
            .set_status(0, JobStatus::Complete);
        assert_eq!(
            decide(&s, now()),
            vec![Action::Settle {
                batch: "b".into(),
                state: BatchState::Complete
            }]
        );
    }

    #[test]
    fn a_retried_failure_revives_its_cascaded_dependents() {
        let mut s = state_of(batch(&[&[], &[0]]));
        let b = s.batches.get_mut("b").unwrap();
        b.set_status(0, failed(FailureKind::WorkerFailure, 0, 0));
        b.set_status(1, failed(FailureKind::DependencyFailed, 0, 0));
        b.unhandled_failures.clear();
        b.set_status(0, JobStatus::Queued);
        assert_eq!(
            decide(&s, now()),
            vec![Action::Revive {
                batch: "b".into(),
                job: 1,
                cause: 0
            }]
        );
    }
}
