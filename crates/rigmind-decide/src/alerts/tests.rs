//! The alert policy on hand-built states: raised once, cleared once.

use super::*;
use crate::state::tests::batch;
use crate::state::FailureInfo;

fn at(s: &str) -> DateTime<Utc> {
    rigmind_queue::time::parse_rfc3339(s).unwrap()
}

fn rig(workers: Vec<WorkerSeen>) -> RigSeen {
    RigSeen {
        workers,
        max_gpu_temp_c: 83.0,
        stale_after_secs: 120.0,
        stalled_after_secs: 600.0,
    }
}

fn worker(id: &str) -> WorkerSeen {
    WorkerSeen {
        worker: id.into(),
        lock_held: Some(true),
        heartbeat_age_secs: 1.0,
        ..Default::default()
    }
}

/// Applies what `decide` returns, as the brain does; returns the kinds raised and
/// cleared.
fn round(
    alerts: &mut Alerts,
    state: &BrainState,
    rig: &RigSeen,
    quiet: &str,
    now: &str,
) -> Vec<String> {
    let actions = decide(alerts, state, rig, at(quiet), at(now));
    for a in &actions {
        alerts.apply(a);
    }
    actions
        .iter()
        .map(|a| match a {
            AlertAction::Raise(a) => format!("raise {} {}", a.kind.as_str(), a.subject),
            AlertAction::Clear(a) => format!("clear {} {}", a.kind.as_str(), a.subject),
        })
        .collect()
}

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-01T00:00:10Z";

#[test]
fn a_hot_card_is_raised_once_and_cleared_below_the_margin() {
    let state = BrainState::default();
    let mut alerts = Alerts::default();
    let mut w = worker("worker_0");
    w.gpu_temp_c = Some(90.0);
    assert_eq!(
        round(&mut alerts, &state, &rig(vec![w.clone()]), T0, T1),
        ["raise gpu_hot worker_0"]
    );
    assert!(
        round(&mut alerts, &state, &rig(vec![w.clone()]), T0, T1).is_empty(),
        "not every tick"
    );
    w.gpu_temp_c = Some(82.0);
    assert!(
        round(&mut alerts, &state, &rig(vec![w.clone()]), T0, T1).is_empty(),
        "within the margin"
    );
    w.gpu_temp_c = Some(79.0);
    assert_eq!(
        round(&mut alerts, &state, &rig(vec![w]), T0, T1),
        ["clear gpu_hot worker_0"]
    );
}

#[test]
fn a_worker_without_lock_or_heartbeat_is_lost_until_it_comes_back_or_stops() {
    let state = BrainState::default();
    let mut alerts = Alerts::default();
    let mut w = worker("w1");
    w.lock_held = Some(false);
    assert_eq!(
        round(&mut alerts, &state, &rig(vec![w.clone()]), T0, T1),
        ["raise worker_lost w1"]
    );
    w.stopped = true;
    assert_eq!(
        round(&mut alerts, &state, &rig(vec![w.clone()]), T0, T1),
        ["clear worker_lost w1"]
    );
    // A hung worker: its lock is held but it stopped writing heartbeats.
    let mut hung = worker("w2");
    hung.heartbeat_age_secs = 500.0;
    assert_eq!(
        round(&mut alerts, &state, &rig(vec![hung]), T0, T1),
        ["raise worker_lost w2"]
    );
}

#[test]
fn a_plan_task_failing_on_every_retry_is_one_alert() {
    let mut b = batch(&[&[], &[], &[]]);
    let spent = FailureInfo {
        kind: FailureKind::WorkerFailure,
        retry_count: 2,
        retries: 2,
        tier: None,
        tier_failures: 0,
    };
    for i in 0..2 {
        b.jobs[i].plan_task_id = "transcribe".into();
        b.set_status(i, JobStatus::Failed(spent));
    }
    // A definition error is not "failing on every retry": it is never retried.
    b.set_status(
        2,
        JobStatus::Failed(FailureInfo {
            kind: FailureKind::DefinitionError,
            ..spent
        }),
    );
    let mut state = BrainState::default();
    state.insert(b);
    let mut alerts = Alerts::default();
    let r = round(&mut alerts, &state, &rig(vec![]), T0, T1);
    assert_eq!(r, ["raise task_failing b/transcribe"]);
    let a = alerts.active.values().next().unwrap();
    assert!(
        a.reason
            .contains("2 task(s) of 'transcribe' failed on all 3 attempts"),
        "{}",
        a.reason
    );
    // Retried by hand: cleared.
    for i in 0..2 {
        state
            .batches
            .get_mut("b")
            .unwrap()
            .set_status(i, JobStatus::Queued);
    }
    assert_eq!(
        round(&mut alerts, &state, &rig(vec![]), T0, T1),
        ["clear task_failing b/transcribe"]
    );
}

/// A batch with one queued task, and one idle worker.
fn one_queued_task_and_an_idle_worker() -> (BrainState, RigSeen) {
    let mut b = batch(&[&[]]);
    b.set_status(0, JobStatus::Queued);
    let mut state = BrainState::default();
    state.insert(b);
    let mut idle = worker("w");
    idle.idle = true;
    (state, rig(vec![idle]))
}

#[test]
fn a_queue_that_does_not_move_while_a_worker_idles_is_stalled() {
    let (mut state, rig) = one_queued_task_and_an_idle_worker();
    let mut alerts = Alerts::default();
    let quiet = alerts.note_moves(&state, at(T0));
    assert_eq!(quiet, at(T0));
    // Not yet: 10 s of 600.
    assert!(round(&mut alerts, &state, &rig, T0, T1).is_empty());
    let later = "2026-01-01T00:10:01Z";
    assert_eq!(
        alerts.note_moves(&state, at(later)),
        at(T0),
        "nothing moved"
    );
    assert_eq!(
        round(&mut alerts, &state, &rig, T0, later),
        ["raise queue_stalled queue"]
    );
    // The task is claimed: the queue moved.
    state
        .batches
        .get_mut("b")
        .unwrap()
        .set_status(0, JobStatus::Processing);
    let even_later = "2026-01-01T00:10:05Z";
    let quiet = alerts.note_moves(&state, at(even_later));
    assert_eq!(quiet, at(even_later));
    let r = round(&mut alerts, &state, &rig, even_later, even_later);
    assert_eq!(r, ["clear queue_stalled queue"]);
}

#[test]
fn stalled_after_zero_turns_the_stall_alert_off() {
    let (state, mut rig) = one_queued_task_and_an_idle_worker();
    rig.stalled_after_secs = 0.0;
    let mut alerts = Alerts::default();
    assert!(round(&mut alerts, &state, &rig, T0, "2026-01-02T00:00:00Z").is_empty());
}

#[test]
fn alerts_left_raised_by_a_previous_brain_are_not_raised_again() {
    let state = BrainState::default();
    let mut w = worker("worker_0");
    w.gpu_temp_c = Some(95.0);
    let mut alerts = Alerts::default();
    round(&mut alerts, &state, &rig(vec![w.clone()]), T0, T1);
    let saved: Vec<Alert> = alerts.active.values().cloned().collect();
    let mut restarted = Alerts::with_active(saved);
    assert!(round(&mut restarted, &state, &rig(vec![w]), T0, T1).is_empty());
}
