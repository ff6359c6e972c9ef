//! How long a job is expected to run: the plan's written `estimate`, corrected by
//! the run times seen of the same plan task (the other items of its `for_each`, or
//! earlier runs of the same plan task name).
//!
//! The correction is robust: the median of what was seen, not the last value or
//! the mean (one task stuck on a slow file must not move the estimate of the rest),
//! blended with the written estimate by count — the written estimate counts as one
//! run, so after three runs it weighs a quarter. Without a written estimate the
//! median alone is used, and without either [`DEFAULT_ESTIMATE_SECS`].
//!
//! Loads are learned the same way, per model and card, from the `load_llm` tasks
//! that completed ([`load_of`]): the projection turns a card for its own load time.
//!
//! The brain learns from every completion it observes and rebuilds what it learned
//! from the `complete/` files of the live batches at start
//! (`rigmind_brain::rebuild`); the simulator learns from its virtual completions.
//! The resource manager's work ([`crate::resources::work_of`]) and its projection use
//! these values, and its decisions say which estimate each plan task had
//! ([`Estimate`]'s display: `estimate=learned:7.4s n=3`, `estimate=written:4s`).

use std::fmt;

use crate::state::{BrainState, Job};

/// The run time assumed for a task with neither an `estimate` nor an earlier run.
pub const DEFAULT_ESTIMATE_SECS: f64 = 60.0;

/// Run times seen of one plan task; one level down so that the brain's state,
/// which keeps them, does not depend on this module.
pub use crate::learned::Learned;

/// The key of `model`'s load times on `worker`'s card in
/// [`BrainState::learned_loads`].
pub fn load_key(model: &str, worker: &str) -> String {
    format!("{model}@{worker}")
}

/// How long loading `model` on `worker`'s card is expected to take: rig.toml's
/// `load_seconds` (`written`), corrected by the loads seen there as a task's
/// estimate is by its runs.
pub fn load_of(state: &BrainState, model: &str, worker: &str, written: f64) -> Estimate {
    Estimate::of(
        Some(written),
        state.learned_loads.get(&load_key(model, worker)),
    )
}

/// How far the run times seen were from the plan's written estimates, over the
/// plan tasks of the live batches that have both: `exp(mean |ln(median seen /
/// written)|) - 1`, each plan task one vote (a person misjudges a task, not an
/// item). 0 when every median matched its estimate or nothing was seen yet;
/// estimates off by ×2 either way give 1. The resource manager's hysteresis
/// (`resources/hysteresis.rs`) asks a move to gain this share of its cost on top
/// of its margin: a projection built on estimates that have proven wrong is
/// trusted for large gains only.
pub fn estimate_error(state: &BrainState) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0u32);
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for batch in state.batches.values().filter(|b| b.active()) {
        // The jobs of a plan task come one after another: one look-up each.
        for &first in batch.plan_task_runs() {
            let j = &batch.jobs[first];
            if !seen.insert(&j.plan_task_id) {
                continue;
            }
            let Some(w) = j.work.estimate_secs.filter(|w| *w > 0.0) else {
                continue;
            };
            let Some(m) = state.learned.get(&j.plan_task_id).and_then(Learned::median) else {
                continue;
            };
            sum += (m.max(1e-3) / w).ln().abs();
            n += 1;
        }
    }
    if n == 0 {
        return 0.0;
    }
    (sum / f64::from(n)).exp() - 1.0
}

/// A job's expected run time and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Estimate {
    /// The plan's `estimate`, nothing seen yet.
    Written(f64),
    /// Corrected by `n` runs seen.
    Learned { secs: f64, n: u32 },
    /// Neither: [`DEFAULT_ESTIMATE_SECS`].
    Default,
}

impl Estimate {
    /// The estimate of `written` (the plan's) given what was `learned`.
    pub fn of(written: Option<f64>, learned: Option<&Learned>) -> Self {
        let seen = learned.and_then(|l| Some((l.median()?, l.runs())));
        match (written, seen) {
            (Some(w), Some((m, n))) => Self::Learned {
                secs: (w + f64::from(n) * m) / f64::from(n + 1),
                n,
            },
            (None, Some((m, n))) => Self::Learned { secs: m, n },
            (Some(w), None) => Self::Written(w),
            (None, None) => Self::Default,
        }
    }

    /// The estimate of `job` in `state`.
    pub fn of_job(state: &BrainState, job: &Job) -> Self {
        Self::of(job.work.estimate_secs, state.learned.get(&job.plan_task_id))
    }

    /// Seconds.
    pub fn secs(self) -> f64 {
        match self {
            Self::Written(s) | Self::Learned { secs: s, .. } => s,
            Self::Default => DEFAULT_ESTIMATE_SECS,
        }
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Written(s) => write!(f, "written:{}s", short(*s)),
            Self::Learned { secs, n } => write!(f, "learned:{}s n={n}", short(*secs)),
            Self::Default => write!(f, "default:{}s", short(DEFAULT_ESTIMATE_SECS)),
        }
    }
}

/// `4`, `7.4`, `120`: one decimal, none when it is zero.
fn short(s: f64) -> String {
    let r = (s * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_corrects_the_written_estimate_by_count() {
        let mut l = Learned::default();
        assert_eq!(Estimate::of(Some(4.0), Some(&l)), Estimate::Written(4.0));
        for s in [7.5, 7.4, 90.0] {
            l.add(s);
        }
        // Median 7.5 (the 90 s outlier does not move it), written 4 counts once.
        let e = Estimate::of(Some(4.0), Some(&l));
        assert_eq!(e, Estimate::Learned { secs: 6.625, n: 3 });
        assert_eq!(e.to_string(), "learned:6.6s n=3");
        assert_eq!(Estimate::of(None, Some(&l)).secs(), 7.5);
        assert_eq!(Estimate::of(None, None).secs(), DEFAULT_ESTIMATE_SECS);
        assert_eq!(Estimate::Written(4.0).to_string(), "written:4s");
    }

    #[test]
    fn the_estimate_error_is_how_far_the_medians_were_from_the_written_estimates() {
        let mut b = crate::state::tests::batch(&[&[], &[], &[]]);
        for (j, (task, est)) in b
            .jobs
            .iter_mut()
            .zip([("a", 10.0), ("a", 10.0), ("b", 60.0)])
        {
            j.plan_task_id = task.into();
            j.work.estimate_secs = Some(est);
        }
        let mut state = BrainState::default();
        state.insert(b);
        assert_eq!(estimate_error(&state), 0.0, "nothing seen yet");
        state.learned.entry("a".into()).or_default().add(10.0);
        assert_eq!(estimate_error(&state), 0.0, "as written");
        // a took twice its estimate, b half of it: off by ×2 either way.
        state.learned.entry("a".into()).or_default().add(30.0);
        state.learned.entry("a".into()).or_default().add(20.0);
        state.learned.entry("b".into()).or_default().add(30.0);
        assert!((estimate_error(&state) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn load_times_are_learned_per_model_and_card() {
        let mut state = BrainState::default();
        for secs in [3.0, 3.2, 2.9] {
            let key = load_key("m", "gpu1");
            state.learned_loads.entry(key).or_default().add(secs);
        }
        // rig.toml says 120 s; gpu1 loaded m in about 3 s three times.
        assert_eq!(load_of(&state, "m", "gpu1", 120.0).secs(), 32.25);
        assert_eq!(
            load_of(&state, "m", "gpu0", 120.0),
            Estimate::Written(120.0)
        );
        assert_eq!(load_of(&state, "other", "gpu1", 120.0).secs(), 120.0);
    }

    #[test]
    fn a_long_history_keeps_about_its_median() {
        let mut l = Learned::default();
        // 0..=1000 in a scrambled order (7919 is prime to 1001).
        for i in 0..1001u32 {
            l.add(f64::from(i * 7919 % 1001));
        }
        assert_eq!(l.runs(), 1001);
        let m = l.median().unwrap();
        assert!((450.0..=550.0).contains(&m), "{m}");
    }
}
