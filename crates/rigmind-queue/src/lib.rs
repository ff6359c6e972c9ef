//! The shared directory protocol: what users see with `ls` and `cat` (queue-layout.md).
//!
//! This crate owns the file formats and every move between directories; the brain,
//! the workers and the CLI all go through it so that the rules (atomic writes, one
//! claim per task, claim order, quarantine of bad files) live in one place.

pub mod access;
pub mod action;
pub mod aging;
pub mod batch;
pub mod brain_record;
pub mod cancel;
pub mod claim;
pub mod drain;
pub mod error;
pub mod fsio;
pub mod gates;
pub mod holders;
pub mod json;
pub mod layout;
pub mod lifelock;
pub mod logs;
pub mod memory;
pub mod moves;
pub mod procs;
pub mod quarantine;
pub mod rate;
pub mod requests;
pub mod task;
pub mod time;
#[cfg(feature = "watch")]
pub mod watch;
pub mod workers;

pub use error::QueueError;
pub use layout::{Layout, TaskDir};
pub use lifelock::LifeLock;
pub use moves::file_into;
pub use task::{FailureKind, ResourceAction, TaskFile, TaskName, TaskStatus};
