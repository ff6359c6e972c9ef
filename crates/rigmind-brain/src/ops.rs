//! What the brain does for the people who run the rig, once a second beside its
//! decisions: alerts ([`crate::alerting`]), `[notify]` on batch ends and alerts
//! ([`crate::notify`]), and the metrics ([`crate::metrics`]) written to
//! `metrics/rigmind.prom` and served by `--metrics-addr` ([`crate::serve`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rigmind_config::RigConfig;
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::logs::Logs;
use rigmind_queue::workers::{WorkerState, WorkerStatus};
use rigmind_queue::{Layout, LifeLock};
use serde_json::json;

use crate::alerting::{rig_seen, Alerting};
use crate::metrics::{render, Metrics, Snapshot};
use crate::notify::{Event, Notifier};
use crate::serve::{Served, Shared};
use crate::state::BrainState;
use crate::worker_view::WorkerView;

/// `metrics/rigmind.prom` is rewritten at most this often (when it changed).
pub const METRICS_FILE_EVERY: Duration = Duration::from_secs(5);

/// The operators' side of the brain.
pub struct Ops {
    metrics: Metrics,
    alerting: Alerting,
    notifier: Notifier,
    /// Batches seen done (so that each end is notified once; a reopened batch
    /// leaves the set and is notified again when it ends again).
    done: BTreeSet<String>,
    served: Option<Shared>,
    last_file: Option<(Instant, String)>,
    started_at: DateTime<Utc>,
}

impl Ops {
    /// Starts from the files: batches already done are not notified again, alerts
    /// already raised are not raised again. With `serve`, answers its requests.
    pub fn new(layout: &Layout, state: &BrainState, served: Option<Shared>) -> Self {
        Self {
            metrics: Metrics::default(),
            alerting: Alerting::load(layout),
            notifier: Notifier::new(layout.root()),
            done: done_batches(state),
            served,
            last_file: None,
            started_at: Utc::now(),
        }
    }

    /// One look: counts, batch ends, alerts, then the metrics.
    pub fn tick(
        &mut self,
        layout: &Layout,
        logs: &Logs,
        state: &mut BrainState,
        config: &RigConfig,
    ) {
        let now = Utc::now();
        let workers = read_workers(layout, now);
        self.metrics.follow(state);
        self.notify_batch_ends(logs, state, config);
        let rig = rig_seen(&workers, config);
        for a in self.alerting.round(layout, logs, state, &rig, now) {
            self.notifier.send(&config.notify, logs, Event::alert(&a));
        }
        for (event, ok) in self.notifier.finished() {
            *self.metrics.notify_runs.entry((event, ok)).or_default() += 1;
        }
        let snapshot = Snapshot {
            state,
            workers: &workers,
            alerts: &self.alerting,
            brain_started_unix: self.started_at.timestamp_millis() as f64 / 1000.0,
        };
        let text = render(&self.metrics, &snapshot);
        if let Some(served) = &self.served {
            let health = health(&self.metrics, &snapshot, layout);
            if let Ok(mut s) = served.lock() {
                *s = Served {
                    metrics: text.clone(),
                    health,
                };
            }
        }
        self.write_file(layout, text);
    }

    /// Batches that reached an end since the last look are notified once.
    fn notify_batch_ends(&mut self, logs: &Logs, state: &BrainState, config: &RigConfig) {
        let now_done = done_batches(state);
        for id in now_done.difference(&self.done) {
            if let Some(b) = state.batches.get(id) {
                self.notifier
                    .send(&config.notify, logs, Event::batch(&b.record));
            }
        }
        self.done = now_done;
    }

    /// Writes `metrics/rigmind.prom` (temp file + rename) when it changed and
    /// [`METRICS_FILE_EVERY`] has passed since the last write.
    fn write_file(&mut self, layout: &Layout, text: String) {
        if let Some((at, last)) = &self.last_file {
            if *last == text || at.elapsed() < METRICS_FILE_EVERY {
                return;
            }
        }
        let dir = layout.metrics_dir();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!("{}: {e}", dir.display());
            return;
        }
        // Not flushed: a crash leaves the old or the new file, and the next
        // write is seconds away.
        match fsio::write_atomic(&layout.metrics_file(), text.as_bytes(), Sync::None) {
            Ok(()) => self.last_file = Some((Instant::now(), text)),
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

fn done_batches(state: &BrainState) -> BTreeSet<String> {
    state
        .batches
        .iter()
        .filter(|(_, b)| b.record.state.is_done())
        .map(|(id, _)| id.clone())
        .collect()
}

/// Every worker with a state file, with whether it is alive (its life lock held
/// and not stopped; where no lock can be asked, a heartbeat younger than
/// `[defaults] stale_after`... judged by the alert policy) and its heartbeat's age.
pub fn read_workers(layout: &Layout, now: DateTime<Utc>) -> Vec<WorkerView> {
    let Ok(all) = WorkerState::read_all(layout) else {
        return Vec::new();
    };
    all.into_iter()
        .flatten()
        .map(|w| {
            let lock_held = LifeLock::is_held(&layout.worker_lock(&w.worker_id));
            let age = (now - w.heartbeat_at).num_milliseconds().max(0) as f64 / 1000.0;
            WorkerView {
                alive: w.state != WorkerStatus::Stopped && lock_held.unwrap_or(true),
                lock_held,
                heartbeat_age_secs: age,
                state: w,
            }
        })
        .collect()
}

/// `/health`: up, the workers alive, the gates holding, queue depths, alerts.
fn health(m: &Metrics, s: &Snapshot<'_>, layout: &Layout) -> String {
    let tasks = m.tasks();
    let depth = |place: &str| -> serde_json::Map<String, serde_json::Value> {
        tasks
            .iter()
            .filter(|((_, st), _)| *st == place)
            .map(|((class, _), n)| (class.to_string(), json!(n)))
            .collect()
    };
    let gates: Vec<serde_json::Value> = s
        .workers
        .iter()
        .filter(|w| w.alive && !w.state.gates.is_empty())
        .map(|w| json!({"worker": w.state.worker_id, "gates": w.state.gates}))
        .collect();
    let workers: Vec<serde_json::Value> = s
        .workers
        .iter()
        .map(|w| {
            json!({"worker": w.state.worker_id, "alive": w.alive, "state": w.state.state.as_str(),
                   "draining": w.state.draining, "heartbeat_age_seconds": w.heartbeat_age_secs,
                   "current_task": w.state.current_task_name})
        })
        .collect();
    let alerts: Vec<&rigmind_decide::alerts::Alert> = s.alerts.active().collect();
    let running = s
        .state
        .batches
        .values()
        .filter(|b| !b.record.state.is_done())
        .count();
    let body = json!({
        "up": true,
        "pid": std::process::id(),
        "root": layout.root().display().to_string(),
        "started_at": rigmind_queue::time::to_rfc3339(DateTime::from_timestamp_millis((s.brain_started_unix * 1000.0) as i64).unwrap_or_default()),
        "workers_alive": s.workers.iter().filter(|w| w.alive).count(),
        "workers": workers,
        "gates_holding": gates,
        "queue": {"pending": depth("pending"), "queued": depth("queued"), "processing": depth("processing")},
        "batches_running": running,
        "alerts": alerts,
    });
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    text
}
