//! The endpoint lane: llm tasks an `[[endpoint]]` serves need no card, so every
//! worker (cpu workers too) runs them concurrently beside its card or cpu task.
//! The lane has its own view of the queue, claims only endpoint tasks
//! ([`endpoint_tier`]), as many as the endpoints' limits allow, and runs each in
//! its own tokio task. An endpoint's `max_concurrent` is its implicit
//! concurrency group `endpoint:<name>`, counted in `processing/` under the claim
//! lock like any group, so the limit holds across all workers; waiting tasks go
//! in claim order (priority, then age). An endpoint's `requests_per_minute` is
//! counted under the same lock (`rigmind_queue::rate`); the lane logs when an
//! endpoint's tasks start and stop waiting for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rigmind_config::RigConfig;
use rigmind_decide::claim::{endpoint_tier, ClaimContext};
use rigmind_exec::{run_claimed, Filed, Runner};
use rigmind_queue::aging::Aging;
use rigmind_queue::claim::{Claimed, QueueIndex, QueueLock};
use rigmind_queue::rate::RateHold;
use rigmind_queue::task::{endpoint_group, TaskFile};
use rigmind_queue::watch::{watch_dirs, Change};
use rigmind_queue::{Layout, TaskDir};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::WorkerSummary;

/// While endpoint tasks wait for a slot that another worker holds, the lane
/// looks again this often (a slot freed elsewhere raises no event here).
const HELD_POLL: Duration = Duration::from_millis(200);

/// The limits the lane claims under: rig.toml's groups and each endpoint's
/// `max_concurrent` as group `endpoint:<name>`.
pub(crate) fn limits(config: &RigConfig) -> BTreeMap<String, u32> {
    let mut limits = config.groups.clone();
    for e in &config.endpoints {
        if let Some(n) = e.max_concurrent {
            limits.insert(endpoint_group(&e.name), n);
        }
    }
    limits
}

/// Each endpoint's `requests_per_minute`, for those that declare one.
pub(crate) fn rates(config: &RigConfig) -> BTreeMap<String, u32> {
    config
        .endpoints
        .iter()
        .filter_map(|e| Some((e.name.clone(), e.requests_per_minute?)))
        .collect()
}

/// How the worker's lane claims and ends: the claim order's aging, and the
/// worker's signals (`abort` stops the runs after the grace period, `give_up`
/// ends filing that keeps failing).
pub(crate) struct LaneSignals {
    pub aging: Aging,
    pub abort: watch::Receiver<bool>,
    pub give_up: Arc<AtomicBool>,
}

/// Starts the lane; it claims until `stop` says true, then waits for its runs.
pub(crate) fn spawn(
    layout: Layout,
    runner: Runner,
    limits: BTreeMap<String, u32>,
    rates: BTreeMap<String, u32>,
    rescan_every: Duration,
    signals: LaneSignals,
    stop: watch::Receiver<bool>,
) -> JoinHandle<WorkerSummary> {
    tokio::spawn(async move {
        let lane = Lane {
            layout,
            runner,
            limits,
            rates,
            signals,
        };
        lane.run(rescan_every, stop).await
    })
}

struct Lane {
    layout: Layout,
    runner: Runner,
    limits: BTreeMap<String, u32>,
    rates: BTreeMap<String, u32>,
    signals: LaneSignals,
}

impl Lane {
    async fn run(self, rescan_every: Duration, mut stop: watch::Receiver<bool>) -> WorkerSummary {
        let id = self.runner.worker_id.clone();
        let queue = self.layout.dir(TaskDir::Queue);
        let (Ok((_watcher, mut events)), Ok(mut lock)) = (
            watch_dirs(&[queue]),
            QueueLock::open(&self.layout).map(|l| l.with_rates(self.rates.clone())),
        ) else {
            tracing::error!(worker = %id, "endpoint lane: cannot watch or lock the queue; endpoint tasks are left to other workers");
            return WorkerSummary::default();
        };
        let mut index = QueueIndex::with_aging(self.signals.aging);
        let mut runs: JoinSet<Option<Filed>> = JoinSet::new();
        let mut summary = WorkerSummary::default();
        let _ = index.rescan(&self.layout);
        let mut held = Vec::new();
        while !*stop.borrow() {
            while let Some(c) = self.claim(&mut lock, &mut index) {
                runs.spawn(self.run_one(c));
            }
            self.log_rate_holds(&mut held, lock.rate_held());
            let waiting = index.entries().any(|e| e.endpoint.is_some());
            let poll = if waiting { HELD_POLL } else { rescan_every };
            tokio::select! {
                Some(ev) = events.recv() => match ev {
                    Change::Paths(paths) => {
                        for p in paths.iter().filter_map(|p| p.file_name()?.to_str()) {
                            index.note(&self.layout, p);
                        }
                    }
                    Change::Rescan => { let _ = index.rescan(&self.layout); }
                },
                Some(r) = runs.join_next(), if !runs.is_empty() => count(&mut summary, r),
                _ = tokio::time::sleep(poll) => { let _ = index.rescan(&self.layout); }
                _ = stop.changed() => {}
            }
        }
        while let Some(r) = runs.join_next().await {
            count(&mut summary, r);
        }
        summary
    }

    /// Logs each endpoint whose tasks start or stop waiting for its
    /// `requests_per_minute` (`held`: the endpoints held at the last look).
    fn log_rate_holds(&self, held: &mut Vec<String>, now: &[RateHold]) {
        let id = &self.runner.worker_id;
        for h in now.iter().filter(|h| !held.contains(&h.endpoint)) {
            tracing::info!(worker = %id, endpoint = %h.endpoint, "endpoint '{}': {} starts in the last minute, its requests_per_minute; its tasks wait until {}", h.endpoint, h.starts, h.until);
        }
        for e in held
            .iter()
            .filter(|e| !now.iter().any(|h| &h.endpoint == *e))
        {
            tracing::info!(worker = %id, endpoint = %e, "endpoint '{e}': no longer held by its requests_per_minute");
        }
        *held = now.iter().map(|h| h.endpoint.clone()).collect();
    }

    /// Claims the best endpoint task the limits allow now.
    fn claim(&self, lock: &mut QueueLock, index: &mut QueueIndex) -> Option<Claimed> {
        // A drained worker's lane takes nothing new either (the worker logs it).
        if rigmind_queue::drain::is_drained(&self.layout, &self.runner.worker_id) {
            return None;
        }
        let now = Utc::now();
        let ctx = ClaimContext::new(&self.runner.worker_id, &[], None, false, true, now);
        lock.claim_within(&self.layout, index, &self.limits, now, |e| {
            endpoint_tier(&ctx, e)
        })
        .unwrap_or_else(|e| {
            tracing::warn!(worker = %self.runner.worker_id, "endpoint lane: {e}");
            None
        })
    }

    /// Runs one claimed task and files its result.
    fn run_one(&self, c: Claimed) -> impl std::future::Future<Output = Option<Filed>> {
        let (layout, runner, abort) = (
            self.layout.clone(),
            self.runner.clone(),
            self.signals.abort.clone(),
        );
        let give_up = self.signals.give_up.clone();
        async move {
            if crate::refuse::refuse_claimed(&layout, &runner.worker_id, &c.path) {
                return None;
            }
            let task = match TaskFile::read(&c.path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(worker = %runner.worker_id, "{e}; left in processing/ for the brain");
                    return None;
                }
            };
            let finished = run_claimed(&layout, &c.path, task, &runner, abort).await;
            let filed = tokio::task::spawn_blocking(move || {
                finished.file_until_done(&layout, Duration::from_secs(2), || {
                    give_up.load(Ordering::SeqCst)
                })
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            filed
                .map_err(|e| tracing::error!(worker = %runner.worker_id, "filing a result: {e}"))
                .ok()
        }
    }
}

fn count(summary: &mut WorkerSummary, r: Result<Option<Filed>, tokio::task::JoinError>) {
    match r {
        Ok(Some(Filed::Complete)) => summary.completed += 1,
        Ok(Some(Filed::Failed(_))) => summary.failed += 1,
        Ok(Some(Filed::Returned)) => summary.returned += 1,
        _ => {}
    }
}
