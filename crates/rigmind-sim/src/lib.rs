//! The rigmind simulator: a plan on a virtual rig, in virtual time, decided by the
//! very code the live processes run. One policy, never two.
//!
//! - Releases: [`rigmind_decide::policy::decide`] over a real
//!   [`BrainState`](rigmind_decide::state::BrainState) holding the batch a submission
//!   would build ([`rigmind_decide::tasks::task_files`], [`rigmind_decide::tasks::job_of`]).
//! - Claims: [`rigmind_decide::claim::tier`] through
//!   [`QueueIndex::best`](rigmind_queue::claim::QueueIndex::best), from the worker's
//!   [`ClaimContext::new`](rigmind_decide::claim::ClaimContext::new), after the
//!   live claim lock's filter [`rigmind_decide::claim::admissible`] (the concurrency
//!   groups at their limit by [`rigmind_decide::claim::full_groups`] over the groups
//!   each running task holds, [`rigmind_decide::claim::held_groups`], as the live
//!   lock counts them; the memory reservation's fit).
//! - Cards: [`rigmind_decide::resources::decide`] over the `RigView` that
//!   [`rigmind_decide::resources::view_of`] builds from the cards' facts, as for the
//!   live brain; each action becomes the `load_llm` / `unload_llm` resource task
//!   [`rigmind_decide::resources::task_of`] makes, which its worker claims at tier 0
//!   and which takes rig.toml's `load_seconds` / `unload_seconds`.
//!
//! [`simulate_live`] runs the rest of what is live under a root (`rigmind
//! simulate --root`) from the state a restarting brain would rebuild.
//!
//! [`round`] holds the two decision steps of an instant, callable from a live
//! brain's recorded observations.
//!
//! The model: one worker per `[[gpu]]` (LLM-capable iff it has `ollama`), one task at
//! a time each; every task takes its `estimate` (60 s without one), or, with
//! [`noise`], a seeded run time the estimate misjudges; no failures, no
//! safety gates, no dispatch latency. `executor: brain` tasks run beside the GPUs as
//! soon as they are released. See [`engine`] for the loop and [`bound`] for the
//! lower bound.

pub mod bound;
pub mod compare;
pub mod engine;
pub mod noise;
pub mod observed;
pub mod round;
pub mod svg;

pub use bound::{bound_terms, lower_bound, BoundTerms};
pub use compare::{compare, compare_truth, estimate_warning, Comparison, PolicyChoice, PolicyRun};
pub use engine::{
    simulate, simulate_live, simulate_truth, GpuTimeline, LiveStart, Segment, SegmentKind,
    SimError, SimResult,
};
pub use observed::observed;
pub use rigmind_decide::resources::RmPolicy;
pub use svg::svg;
