//! The decision core: every rigmind decision as a pure function, shared by the live
//! brain, the worker and the simulator, so nothing is mirrored between them.
//!
//! - [`alerts`]: the alerts people must hear about ([`alerts::decide`]), raised
//!   once and cleared once.
//! - [`state`]: what the brain knows of its batches ([`state::BrainState`]).
//! - [`policy`]: which tasks to release, retry, fail or kill ([`policy::decide`]),
//!   and [`effect`]: what each of those actions does to the state.
//! - [`estimate`]: how long a job is expected to run, written and learned.
//! - [`resources`]: how cards move between script and LLM work
//!   ([`resources::decide`]), with [`projection`] of the work left for the adaptive
//!   policy.
//! - [`eta`]: each live batch's expected finish time, from the projection the
//!   resource manager's policy follows.
//! - [`claim`]: which queued task a worker may claim now ([`claim::tier`]), from
//!   what it is ([`claim::ClaimContext::new`]) and the concurrency groups at their
//!   limit ([`claim::full_groups`]), and the state its card is in.
//! - [`tasks`]: the task files and jobs a plan becomes ([`tasks::task_files`],
//!   [`tasks::job_of`]).
//! - [`record`]: one decision round as the brain saw and decided it, to replay
//!   through the simulator.
//!
//! Nothing here reads or writes files, spawns processes or needs an async runtime:
//! callers gather the facts and carry the decisions out.

pub mod alerts;
pub mod claim;
pub mod effect;
pub mod estimate;
pub mod eta;
pub mod gate;
pub mod ladder;
pub mod learned;
pub mod policy;
pub mod projection;
pub mod record;
pub mod resources;
pub mod state;
pub mod tasks;
pub mod view;
