//! The brain: takes submitted plans, keeps each batch's dependency DAG, releases
//! ready tasks into the queue, follows completions and failures, and logs every
//! decision for people.
//!
//! The split follows one rule: decisions are pure ([`policy::decide`] over
//! [`state::BrainState`], in the `rigmind-decide` crate and re-exported here), and everything that touches files is elsewhere —
//! [`rebuild`] reads them at start, [`observe`] follows them while running,
//! [`submit`] turns a plan into a batch, [`cancel`] takes cancellations, [`apply`]
//! carries decisions out, [`requests`] runs the requests to the brain itself
//! (plan submissions), and [`run`] is the loop that ties them together (with
//! `rescan` and `strays` for the full rescan and the files no task owns). The resource manager follows the
//! same split: [`resources::decide`] is pure, [`rig`] reads the workers and writes
//! its `load_llm` / `unload_llm` tasks. [`record`] writes each decision round, on
//! request, for a replay through the simulator. [`ops`] is what the brain does for
//! the people who run the rig: [`alerting`] (the alert policy's raises and clears),
//! [`notify`] (`[notify] command`), [`metrics`] (Prometheus text) and [`serve`]
//! (`--metrics-addr`).

pub mod alerting;
pub mod apply;
pub mod cancel;
pub mod flush;
pub mod lost;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod ops;
pub mod rebuild;
pub mod record;
pub mod requests;
mod rescan;
pub mod rig;
pub mod run;
pub mod serve;
mod strays;
pub mod submit;
pub mod worker_view;

// The pure decisions live in rigmind-decide; their paths here keep working.
pub use rigmind_decide::{policy, projection, resources, state};
pub use run::{run_brain, BrainOptions};

/// A failure of the brain that stops it; each names the path or batch concerned.
#[derive(Debug, thiserror::Error)]
pub enum BrainError {
    #[error(transparent)]
    Queue(#[from] rigmind_queue::QueueError),
    #[error(transparent)]
    Config(#[from] rigmind_config::ConfigError),
    #[error("another brain (pid {pid}) is already running on {root}")]
    AlreadyRunning {
        pid: String,
        root: std::path::PathBuf,
    },
    #[error("--metrics-addr {addr}: cannot listen there: {source}")]
    MetricsAddr {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Watch(#[from] rigmind_queue::watch::WatchError),
}
