//! The operators' sections of rig.toml: `[alerts]` (when the brain raises an alert)
//! and `[notify]` (the command it runs on batch ends and alerts).

use serde::Deserialize;

/// `[alerts]`: the thresholds of the brain's alerts (`rigmind_decide::alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alerts {
    /// Seconds the queue may hold tasks without any task moving, while a worker is
    /// idle, before `queue_stalled` is raised; 0 turns that alert off.
    pub stalled_after_secs: f64,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            stalled_after_secs: 600.0,
        }
    }
}

/// `[notify]`: what the brain runs when a batch ends or an alert is raised or
/// cleared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notify {
    /// Run with `sh -c`, the event in its environment (`RIGMIND_EVENT`, ...); none:
    /// nothing is run.
    pub command: Option<String>,
    /// Seconds the command may run before it is killed.
    pub timeout_secs: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    pub(crate) stalled_after: Option<toml::Spanned<crate::RawDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub(crate) command: Option<String>,
    pub(crate) timeout: Option<toml::Spanned<crate::RawDuration>>,
}

/// The default time a notify command may run.
pub const NOTIFY_TIMEOUT_SECS: f64 = 60.0;
