//! A worker as the operators' side of the brain sees it ([`WorkerView`]): what the
//! alert policy ([`crate::alerting`]), the metrics ([`crate::metrics`]) and
//! `/health` ([`crate::ops`]) read of each worker. Its own module so that those
//! depend on it, not on each other.

use rigmind_queue::workers::WorkerState;

/// A worker as the metrics and `/health` show it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub state: WorkerState,
    /// Its life lock is held (or, where none can be asked, its heartbeat is fresh).
    pub alive: bool,
    /// Its life lock, as asked (`None`: no lock file to ask).
    pub lock_held: Option<bool>,
    pub heartbeat_age_secs: f64,
}
