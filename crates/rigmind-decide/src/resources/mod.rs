//! The resource manager: which GPUs hold their LLM and which run script work.
//!
//! [`decide`] is a pure function of a [`RigView`] — the cards as their workers
//! published them, the resource tasks already in flight, and the work left in the
//! DAG — and returns [`RmAction`]s (`load_llm` / `unload_llm` on one worker, each with
//! its reason). The live brain gathers the cards' facts from the files
//! (`rigmind_brain::rig`), the simulator from its virtual state; both build the
//! view with [`view_of`] and write each action as the resource task [`task_of`] makes.
//!
//! Work is seen through [`work_of`]: every job not yet done, in groups of alike
//! jobs, with its class, its expected run time and how soon it can start — the
//! longest chain of unfinished dependencies before it, run on unlimited cards. That
//! look-ahead is what lets a card start loading its model while the last script
//! tasks of a stage still run.
//!
//! One file per policy — [`adaptive`](adaptive), `phases`, `static_cards` and
//! `on_demand` — over the
//! shared pieces: `demand` (the work, summed), `cards` (which cards may move, and
//! the actions that move them), `work` (the view's work from a brain's state) and
//! `observed` (the cards from what their workers publish, and the resource tasks)
//! and `models` (which card holds which model: sizes, switches, each load's model).
//! This file holds the decisions' types and [`decide`]; the view's types, which the
//! projection reads too, are [`crate::view`]'s (re-exported here).

use serde::{Deserialize, Serialize};

use crate::projection::Projection;

mod adaptive;
mod cards;
mod demand;
mod hysteresis;
mod models;
#[cfg(test)]
mod no_losing_moves;
mod observed;
mod on_demand;
mod phases;
mod static_cards;
#[cfg(test)]
mod testkit;
mod work;

pub use crate::estimate::DEFAULT_ESTIMATE_SECS;
// The view's types live one level down, where the projection reads them too;
// their paths here keep working.
pub(crate) use crate::view::llm_cap;
pub use crate::view::{Card, CardMode, Dep, ModelSizes, RigView, RmConfig, RmPolicy, Work};
pub use models::model_errors;
pub use observed::{task_of, view_of, CardFacts, InFlight};
pub use work::{estimate_of, left_of, work_and_estimates, work_of};

/// One decision of the resource manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RmAction {
    Load {
        worker: String,
        model: String,
        reason: String,
    },
    Unload {
        worker: String,
        model: String,
        reason: String,
    },
}

impl RmAction {
    pub fn worker(&self) -> &str {
        match self {
            Self::Load { worker, .. } | Self::Unload { worker, .. } => worker,
        }
    }
}

/// What should change now, in the order to apply it. Each reason ends with the
/// estimates the decision weighed (`estimates: prep=learned:7.4s n=3, ...`).
/// Which model each load takes, and on which card, is [`models`]'s: the policy
/// says how many cards turn.
pub fn decide(view: &RigView) -> Vec<RmAction> {
    decide_projecting(view).0
}

/// A resource manager's round: its decisions, and the projection of the rest of
/// the work under the plan its policy follows, for the batches' ETAs.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// What [`decide`] returns.
    pub actions: Vec<RmAction>,
    /// [`crate::eta::projection_of`]: `adaptive`'s own look-ahead, reused.
    pub projection: Projection,
}

/// [`decide`], with the projection its policy follows ([`Decided`]): the live
/// brain's round, which writes the batches' ETAs from it.
pub fn decide_round(view: &RigView) -> Decided {
    let (actions, followed) = decide_projecting(view);
    Decided {
        actions,
        projection: crate::projection::projection_of(view, followed),
    }
}

/// The decisions, with the projection the policy made and followed, if it made one
/// (only `adaptive` projects).
fn decide_projecting(view: &RigView) -> (Vec<RmAction>, Option<Projection>) {
    let cfg = &view.config;
    let swaps = models::switches(view);
    let (mut actions, followed) = if !swaps.is_empty() {
        (swaps, None)
    } else {
        let (by_policy, followed) = match cfg.policy {
            RmPolicy::Static { .. } => (static_cards::decide(view), None),
            RmPolicy::Phases => (phases::decide(view), None),
            RmPolicy::OnDemand => (on_demand::decide(view), None),
            RmPolicy::Adaptive => adaptive::decide(view),
        };
        (models::assign(view, by_policy), followed)
    };
    if let Some(note) = estimates_note(view) {
        for a in &mut actions {
            let (RmAction::Load { reason, .. } | RmAction::Unload { reason, .. }) = a;
            reason.push_str(&note);
        }
    }
    (actions, followed)
}

/// `; estimates: prep=learned:7.4s n=3, post=written:4s` for the first few plan
/// tasks with work left (`None` when there is none).
fn estimates_note(view: &RigView) -> Option<String> {
    const SHOWN: usize = 4;
    if view.estimates.is_empty() {
        return None;
    }
    let mut parts: Vec<String> = view
        .estimates
        .iter()
        .take(SHOWN)
        .map(|(task, e)| format!("{task}={e}"))
        .collect();
    if view.estimates.len() > SHOWN {
        parts.push(format!("{} more", view.estimates.len() - SHOWN));
    }
    Some(format!("; estimates: {}", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;

    #[test]
    fn a_decision_names_the_estimates_it_weighed() {
        let mut v = view(
            RmPolicy::Adaptive,
            vec![card("w1", CardMode::Script)],
            work(TaskClass::Llm, 3, 60.0, 0.0),
        );
        v.estimates
            .insert("ask".into(), Estimate::Learned { secs: 7.4, n: 3 });
        v.estimates.insert("post".into(), Estimate::Written(4.0));
        let a = decide(&v);
        let Some(RmAction::Load { reason, .. }) = a.first() else {
            panic!("{a:?}")
        };
        assert!(
            reason.ends_with("; estimates: ask=learned:7.4s n=3, post=written:4s"),
            "{reason}"
        );
    }

    #[test]
    fn a_card_turns_to_the_model_the_work_needs() {
        // w1 holds "m"; all llm work left is for "other": unloaded, whatever the
        // policy, and the next round loads "other".
        let mut w = work(TaskClass::Llm, 3, 60.0, 0.0);
        for t in &mut w {
            t.model = Some("other".into());
        }
        for policy in [
            RmPolicy::Adaptive,
            RmPolicy::Phases,
            RmPolicy::OnDemand,
            RmPolicy::Static { llm_cards: 1 },
        ] {
            let v = view(policy, vec![card("w1", CardMode::Llm)], w.clone());
            let a = decide(&v);
            assert_eq!(unloads(&a), vec!["w1"], "{policy:?}");
            let mut bare = card("w1", CardMode::Script);
            bare.model = None;
            let a = decide(&view(policy, vec![bare], w.clone()));
            let Some(RmAction::Load { model, .. }) = a.first() else {
                panic!("{policy:?}: {a:?}")
            };
            assert_eq!(model, "other");
        }
    }
}
