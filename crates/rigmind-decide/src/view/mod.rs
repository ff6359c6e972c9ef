//! The rig as the resource manager's policies and the projection see it
//! ([`RigView`]: its [`RmConfig`], [`Card`]s and [`Work`]), with the models' sizes
//! ([`ModelSizes`]) and the most cards that may hold the model (`llm_cap`).
//! Below both: the policies ([`crate::resources`]) run projections
//! ([`crate::projection`]), and both read these types.

use std::collections::BTreeMap;

use rigmind_types::TaskClass;
use serde::{Deserialize, Serialize};

use crate::estimate::Estimate;

#[cfg(test)]
pub(crate) mod testkit;

/// The models' sizes and the margin a card keeps beside one (rig.toml's
/// `[[model]]` entries and `[llm] vram_margin_mb`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSizes {
    /// MB each declared model takes, by canonical name.
    pub vram_mb: BTreeMap<String, u64>,
    /// MB a card keeps free beside its model.
    pub margin_mb: u64,
}

impl ModelSizes {
    pub fn of(cfg: &rigmind_config::RigConfig) -> Self {
        Self {
            vram_mb: cfg
                .models
                .iter()
                .map(|m| (m.name.clone(), m.vram_mb))
                .collect(),
            margin_mb: cfg.llm.vram_margin_mb,
        }
    }

    /// The memory `model` takes (`None`: not declared).
    pub fn need(&self, model: &str) -> Option<u64> {
        self.vram_mb
            .get(&rigmind_types::canonical_model(model))
            .copied()
    }

    /// Whether a card of `card_mb` (unknown: `None`) can hold `model`.
    pub fn fits(&self, card_mb: Option<u64>, model: &str) -> bool {
        match (card_mb, self.need(model)) {
            (Some(card), Some(need)) => card.saturating_sub(self.margin_mb) >= need,
            _ => true,
        }
    }

    /// `model=M fits=yes vram_mb=10500 card_vram_mb=24576` for a decision's reason.
    pub(crate) fn note(&self, card: &Card, model: &str) -> String {
        let mb = |v: Option<u64>| v.map_or("unknown".to_string(), |v| v.to_string());
        format!(
            "model={model} fits={} vram_mb={} card_vram_mb={} margin_mb={}",
            if self.fits(card.vram_mb, model) {
                "yes"
            } else {
                "no"
            },
            mb(self.need(model)),
            mb(card.vram_mb),
            self.margin_mb
        )
    }
}

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
    /// Its current task has run past its estimate, so `busy_for` is a guess: no load
    /// or unload is queued behind it now (it would wait as long as the task runs).
    pub overdue: bool,
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
    pub(crate) fn free(&self) -> bool {
        self.running.is_none()
    }
}

/// A group of jobs not yet done, as demand: `items` identical jobs of one batch
/// (one plan task, class, model, concurrency group, estimate, and the same start
/// time), or one running job. Grouping is what lets the look-ahead project 100,000
/// jobs in a few groups ([`work_of`](crate::resources::work_of), `docs/scheduling.md`).
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
    /// Its first job's place in the claim order: the rank of its written priority
    /// and its submission sequence, as in its file name. The projection's cards
    /// take ready work in this order, as workers claim (aging aside). The first job
    /// stands for the group: alike jobs share their chain to the batch's end, so
    /// they are numbered one after another.
    pub claim: (u8, u64),
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
            claim: (0, 0),
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

/// Everything [`decide`](crate::resources::decide) looks at.
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

/// The most cards that may hold the model at once.
pub(crate) fn llm_cap(view: &RigView) -> usize {
    let capable = view.cards.iter().filter(|c| c.llm_capable).count();
    view.config
        .max_llm_gpus
        .map_or(capable, |m| capable.min(m as usize))
}

/// The most cards the policy keeps in the LLM state: [`llm_cap`], and under
/// `static` at most its count (there the model step switches a card instead of
/// loading one more).
pub(crate) fn llm_card_limit(view: &RigView) -> usize {
    match view.config.policy {
        RmPolicy::Static { llm_cards } => llm_cap(view).min(llm_cards as usize),
        _ => llm_cap(view),
    }
}
