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
//! This file holds the types and [`decide`].

use std::collections::BTreeMap;

use rigmind_types::TaskClass;
use serde::{Deserialize, Serialize};

use crate::estimate::Estimate;
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
pub(crate) mod testkit;
mod work;

pub use crate::estimate::DEFAULT_ESTIMATE_SECS;
pub(crate) use cards::llm_cap;
pub use models::{model_errors, ModelSizes};
pub use observed::{task_of, view_of, CardFacts, InFlight};
pub use work::{estimate_of, estimates_of, left_of, work_and_estimates, work_of};

/// How cards are moved between their states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RmPolicy {
    /// By demand and look-ahead, weighed against the load cost, with hysteresis.
    Adaptive,
    /// The whole rig in one phase at a time: all script work, then all llm work.
    Phases,
    /// A fixed number of cards keep the model loaded; the rest never load it.
    Static { llm_cards: u32 },
    /// A free card loads or unloads whenever the next ready task needs the other
    /// state: how a bare per-request server behaves. A baseline for the simulator.
    OnDemand,
}

impl RmPolicy {
    pub fn name(&self) -> String {
        match self {
            Self::Adaptive => "adaptive".into(),
            Self::Phases => "phases".into(),
            Self::Static { llm_cards } => format!("static-{llm_cards}"),
            Self::OnDemand => "on-demand".into(),
        }
    }
}

/// The resource manager's settings (rig.toml's `[llm]` and `[resource_manager]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RmConfig {
    pub policy: RmPolicy,
    /// The model loaded when the work does not name one.
    pub model: String,
    pub min_llm_gpus: u32,
    pub max_llm_gpus: Option<u32>,
    pub idle_unload_secs: f64,
    pub load_secs: f64,
    pub unload_secs: f64,
    /// Concurrency groups (rig.toml `[groups]`): the projection honours them.
    pub groups: BTreeMap<String, u32>,
    /// The models' sizes (`[[model]]`) and the margin a card keeps
    /// (`[llm] vram_margin_mb`): no card is loaded with a model it cannot hold.
    #[serde(default)]
    pub models: ModelSizes,
}

impl RmConfig {
    pub fn from_rig(cfg: &rigmind_config::RigConfig) -> Self {
        let rm = &cfg.resource_manager;
        let policy = match rm.policy {
            rigmind_config::Policy::Adaptive => RmPolicy::Adaptive,
            rigmind_config::Policy::Phases => RmPolicy::Phases,
            rigmind_config::Policy::Static => RmPolicy::Static {
                llm_cards: rm.min_llm_gpus,
            },
        };
        Self {
            policy,
            model: cfg.llm.model.clone(),
            min_llm_gpus: rm.min_llm_gpus,
            max_llm_gpus: rm.max_llm_gpus,
            idle_unload_secs: rm.idle_unload_secs,
            load_secs: cfg.llm.load_seconds,
            unload_secs: cfg.llm.unload_seconds,
            groups: cfg.groups.clone(),
            models: ModelSizes::of(cfg),
        }
    }
}

/// Where a card stands, counting the resource task in flight for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardMode {
    /// No model: runs script work.
    Script,
    /// A `load_llm` is queued or running for it.
    Loading,
    /// Its model is loaded: runs llm work.
    Llm,
    /// An `unload_llm` is queued or running for it.
    Unloading,
}

impl CardMode {
    /// Counts as an LLM card (has or is getting its model).
    pub fn is_llm(self) -> bool {
        matches!(self, Self::Loading | Self::Llm)
    }
}

/// One GPU worker, as the resource manager sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    pub worker: String,
    pub mode: CardMode,
    /// The model it holds or is loading.
    pub model: Option<String>,
    /// The class of the task it runs now.
    pub running: Option<TaskClass>,
    /// Seconds until its current task is expected to end (0 when free).
    pub busy_for: f64,
    /// Seconds since it last ran an llm task or finished loading (in `Llm` mode).
    pub llm_idle_secs: f64,
    /// Seconds since its mode last changed (hysteresis).
    pub in_mode_secs: f64,
    /// It has an LLM server to load a model into.
    pub llm_capable: bool,
    /// A resource task for it failed a moment ago: leave it alone for now.
    pub cooling_down: bool,
    /// How long loading the model takes on it: `load_secs`, or what was learned
    /// of its loads ([`crate::estimate::load_of`]).
    pub load_secs: f64,
    /// Its memory in MB (`[[gpu]] vram_mb`, else the worker's NVML reading; `None`:
    /// unknown, it fits every model).
    pub vram_mb: Option<u64>,
}

impl Card {
    fn free(&self) -> bool {
        self.running.is_none()
    }
}

/// A group of jobs not yet done, as demand: `items` identical jobs of one batch
/// (one plan task, class, model, concurrency group, estimate, and the same start
/// time), or one running job. Grouping is what lets the look-ahead project 100,000
/// jobs in a few groups ([`work_of`], `docs/scheduling.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// `cpu`, `script` or `llm` (cpu work runs on any card, whatever its state).
    pub class: TaskClass,
    /// For llm work: the model it needs.
    pub model: Option<String>,
    /// Expected run time of each item.
    pub secs: f64,
    /// Seconds until its items can start (0: ready now).
    pub ready_in: f64,
    /// How many jobs it stands for (1 for a running job).
    pub items: usize,
    /// It is one job that runs now.
    pub running: bool,
    /// Seconds each item still needs (its estimate, less what a running one has run).
    pub left: f64,
    /// The unfinished groups its items wait for.
    pub deps: Vec<Dep>,
    /// Its concurrency group.
    pub group: Option<String>,
    /// Its batch: the index among the active batches, in `state.batches` order
    /// (what [`crate::projection::Projection::batch_ends`] is indexed by).
    pub batch: usize,
}

impl Work {
    /// One job of `class` that runs `secs`, ready now, waiting for nothing.
    pub fn one(class: TaskClass, secs: f64) -> Self {
        Self {
            class,
            model: None,
            secs,
            ready_in: 0.0,
            items: 1,
            running: false,
            left: secs,
            deps: Vec::new(),
            group: None,
            batch: 0,
        }
    }
}

/// What a group waits for in another group of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dep {
    /// The group waited for (an index into [`RigView::work`]).
    pub on: usize,
    /// `Some(n)`: item-wise (a `for_each` stage after another): `n` of the items
    /// wait each for its own item of `on`, and start one by one as those end.
    /// `None`: all of it (a fan-in): no item starts before every item of `on` ends.
    pub each: Option<usize>,
}

impl Dep {
    /// Waits for all of group `on`.
    pub fn all(on: usize) -> Self {
        Self { on, each: None }
    }
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct RigView {
    pub config: RmConfig,
    /// The GPU workers that are alive.
    pub cards: Vec<Card>,
    /// Every job not yet done, in groups, with the dependencies among them.
    pub work: Vec<Work>,
    /// The estimate each plan task with work left has, by plan task id: what
    /// `work`'s run times came from, named in each decision's reason.
    pub estimates: BTreeMap<String, Estimate>,
    /// How far the run times seen were from the plan's estimates
    /// ([`crate::estimate::estimate_error`]: 0 when they matched or nothing was
    /// seen, 0.5 when they were off by half on the typical plan task): the
    /// hysteresis asks a move to gain this much of its cost on top of its margin.
    pub estimate_error: f64,
}

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
        projection: crate::eta::projection_of(view, followed),
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
            RmPolicy::Static { llm_cards } => (static_cards::decide(view, llm_cards), None),
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
