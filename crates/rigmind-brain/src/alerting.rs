//! The brain's side of the alerts: it gathers what the policy
//! ([`rigmind_decide::alerts::decide`]) judges, logs each raise and clear
//! (`decision=alert` / `decision=alert_cleared`), and keeps the raised alerts in
//! `brain/alerts.json`, so that a restarted brain neither forgets nor repeats them.

use chrono::{DateTime, Utc};
use rigmind_decide::alerts::{self, Alert, AlertAction, Alerts, RigSeen, WorkerSeen};
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::workers::WorkerStatus;
use rigmind_queue::Layout;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::state::BrainState;
use crate::worker_view::WorkerView;

/// `brain/alerts.json`: the alerts raised and not cleared.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AlertsFile {
    alerts: Vec<Alert>,
}

/// The raised alerts and the memory the policy keeps between rounds.
#[derive(Debug, Default)]
pub struct Alerting {
    alerts: Alerts,
}

impl Alerting {
    /// Starts from `brain/alerts.json`; a missing or damaged file means none raised
    /// (a damaged one is named in a warning).
    pub fn load(layout: &Layout) -> Self {
        let path = layout.alerts_file();
        let saved = match fsio::read(&path) {
            Ok(bytes) => serde_json::from_slice::<AlertsFile>(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: not an alerts file ({e}); starting with none raised",
                    path.display()
                );
                AlertsFile::default()
            }),
            Err(_) => AlertsFile::default(),
        };
        Self {
            alerts: Alerts::with_active(saved.alerts),
        }
    }

    /// The alerts raised now.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.active.values()
    }

    /// One round: decide, log and record each change; returns the changes (for
    /// `[notify]`).
    pub fn round(
        &mut self,
        layout: &Layout,
        logs: &Logs,
        state: &BrainState,
        rig: &RigSeen,
        now: DateTime<Utc>,
    ) -> Vec<AlertAction> {
        let quiet = self.alerts.note_moves(state, now);
        let actions = alerts::decide(&self.alerts, state, rig, quiet, now);
        for a in &actions {
            log(logs, a);
            self.alerts.apply(a);
        }
        if !actions.is_empty() {
            self.save(layout);
        }
        actions
    }

    fn save(&self, layout: &Layout) {
        let file = AlertsFile {
            alerts: self.active().cloned().collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = fsio::write_atomic(&layout.alerts_file(), &bytes, Sync::None) {
            tracing::warn!("{e}");
        }
    }
}

fn log(logs: &Logs, a: &AlertAction) {
    let (kind, alert) = match a {
        AlertAction::Raise(a) => ("alert", a),
        AlertAction::Clear(a) => ("alert_cleared", a),
    };
    let _ = logs.decision(
        &Decision::new(kind)
            .kv("kind", alert.kind.as_str())
            .kv("subject", &alert.subject)
            .kv("reason", &alert.reason),
    );
    let _ = logs.event(
        kind,
        crate::observe::obj(
            json!({"kind": alert.kind.as_str(), "subject": alert.subject,
            "reason": alert.reason, "since": rigmind_queue::time::to_rfc3339(alert.since)}),
        ),
    );
}

/// What the alert policy judges besides the state: the workers and rig.toml's
/// limits.
pub fn rig_seen(workers: &[WorkerView], config: &rigmind_config::RigConfig) -> RigSeen {
    RigSeen {
        workers: workers
            .iter()
            .map(|w| WorkerSeen {
                worker: w.state.worker_id.clone(),
                stopped: w.state.state == WorkerStatus::Stopped,
                lock_held: w.lock_held,
                heartbeat_age_secs: w.heartbeat_age_secs,
                idle: w.state.state == WorkerStatus::Idle && !w.state.draining,
                gpu_temp_c: w
                    .state
                    .telemetry
                    .as_ref()
                    .and_then(|t| t.temperature_c)
                    .map(f64::from),
                gates: w.state.gates.clone(),
            })
            .collect(),
        max_gpu_temp_c: config.safety.max_gpu_temp_c,
        stale_after_secs: config.defaults.stale_after_secs,
        stalled_after_secs: config.alerts.stalled_after_secs,
    }
}
