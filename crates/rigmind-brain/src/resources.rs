//! The resource manager: which GPUs hold their LLM and which run script work.
//!
//! [`decide`] is a pure function of a [`RigView`] — the cards as their workers
//! published them, the resource tasks already in flight, and the work left in the
//! DAG — and returns [`RmAction`]s (`load_llm` / `unload_llm` on one worker, each with
//! its reason). The live brain builds the view from the files ([`crate::rig`]) and
//! writes the actions as resource tasks; the simulator builds it from its virtual
//! state and calls the very same function.
//!
//! Work is seen through [`work_of`]: every job not yet done, with its class, its
//! expected run time and how soon it can start — the longest chain of unfinished
//! dependencies before it, run on unlimited cards. That look-ahead is what lets a
//! card start loading its model while the last script tasks of a stage still run.

use std::collections::BTreeMap;

use rigmind_types::TaskClass;

use chrono::{DateTime, Utc};

use crate::projection::{project, Strategy};
use crate::state::{BrainState, JobStatus};

/// The run time assumed for a task with neither an `estimate` nor an earlier run.
pub const DEFAULT_ESTIMATE_SECS: f64 = 60.0;

/// How cards are moved between their states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq)]
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
}

impl Card {
    fn free(&self) -> bool {
        self.running.is_none()
    }
}

/// One job not yet done, as demand.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// `cpu`, `script` or `llm` (cpu work runs on any card, whatever its state).
    pub class: TaskClass,
    /// For llm work: the model it needs.
    pub model: Option<String>,
    /// Expected run time.
    pub secs: f64,
    /// Seconds until it can start (0: ready now).
    pub ready_in: f64,
    /// It runs now.
    pub running: bool,
    /// Seconds it still needs (its estimate, less what a running one has run).
    pub left: f64,
    /// The unfinished jobs it waits for (indices into [`RigView::work`]).
    pub deps: Vec<usize>,
    /// Its concurrency group.
    pub group: Option<String>,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct RigView {
    pub config: RmConfig,
    /// The GPU workers that are alive.
    pub cards: Vec<Card>,
    /// Every job not yet done, with the dependencies among them.
    pub work: Vec<Work>,
}

/// One decision of the resource manager.
#[derive(Debug, Clone, PartialEq)]
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

/// The demand the view holds, summed once.
#[derive(Debug, Clone, Default)]
struct Demand {
    /// Work (seconds) ready now and not running, by class.
    ready_llm: f64,
    ready_script: f64,
    /// Tasks ready now and not running.
    ready_llm_n: usize,
    ready_script_n: usize,
    running_llm_n: usize,
    running_script_n: usize,
    /// Work (seconds) that can start within the horizon, running work included.
    soon_llm: f64,
    soon_script: f64,
    soon_llm_n: usize,
    /// All llm work left, and llm work by model (all of it, and what is ready).
    left_llm_n: usize,
    by_model: BTreeMap<String, f64>,
    ready_by_model: BTreeMap<String, f64>,
}

fn demand(view: &RigView, horizon: f64) -> Demand {
    let mut d = Demand::default();
    for w in view.work.iter().filter(|w| w.class != TaskClass::Cpu) {
        let llm = w.class == TaskClass::Llm;
        let ready = w.ready_in <= 0.0 && !w.running;
        if llm {
            d.left_llm_n += 1;
            let m = w.model.clone().unwrap_or_else(|| view.config.model.clone());
            if ready {
                *d.ready_by_model.entry(m.clone()).or_default() += w.secs;
            }
            *d.by_model.entry(m).or_default() += w.secs;
        }
        match (llm, ready, w.running) {
            (true, true, _) => {
                d.ready_llm += w.secs;
                d.ready_llm_n += 1;
            }
            (false, true, _) => {
                d.ready_script += w.secs;
                d.ready_script_n += 1;
            }
            (true, _, true) => d.running_llm_n += 1,
            (false, _, true) => d.running_script_n += 1,
            _ => {}
        }
        if w.ready_in <= horizon {
            // A running task has, on average, half its run left.
            let secs = if w.running { w.secs / 2.0 } else { w.secs };
            if llm {
                d.soon_llm += secs;
                d.soon_llm_n += 1;
            } else {
                d.soon_script += secs;
            }
        }
    }
    d
}

/// Above this many unfinished jobs, `adaptive` weighs demand instead of projecting.
pub const PROJECT_AT_MOST: usize = 2000;

/// `adaptive`: projects the rest of the work under each way of moving the cards —
/// every fixed number of LLM cards, phases, and stages (phases whose cards turn one
/// by one as their kind runs dry, so loads overlap a stage's tail) — and takes the
/// first step of the best, if it beats staying as things are by a margin (the
/// hysteresis: a move must pay for itself, so cards do not flap).
fn decide_adaptive(view: &RigView) -> Vec<RmAction> {
    if view.work.len() > PROJECT_AT_MOST {
        return decide_proportional(view);
    }
    let cfg = &view.config;
    let d = demand(view, 0.0);
    if d.left_llm_n == 0 && d.ready_script_n == 0 {
        // Nothing for the model to do and nothing a freed card would run.
        return idle_unloads(view, &d);
    }
    let model = wanted_model(view, &d);
    let cap = llm_cap(view).min(view.cards.len());
    let floor = (cfg.min_llm_gpus as usize).min(cap);
    let mut tried: Vec<(Strategy, crate::projection::Projection)> = Vec::new();
    for k in floor..=cap {
        for s in [Strategy::Fixed(k), Strategy::Split(k)] {
            tried.push((s, project(view, s)));
        }
    }
    for s in [Strategy::Phases, Strategy::Stages, Strategy::OnDemand] {
        tried.push((s, project(view, s)));
    }
    let still = tried
        .iter()
        .filter(|(_, p)| p.now.is_empty())
        .map(|(_, p)| p.makespan)
        .fold(f64::INFINITY, f64::min);
    // The best that moves now; of equals, the one that moves fewest cards.
    let Some((best, proj)) = tried
        .iter()
        .filter(|(_, p)| !p.now.is_empty())
        .min_by(|a, b| {
            a.1.makespan
                .total_cmp(&b.1.makespan)
                .then(a.1.now.len().cmp(&b.1.now.len()))
        })
    else {
        return Vec::new();
    };
    tracing::debug!(
        still,
        tried = ?tried.iter().map(|(s, p)| (*s, p.makespan.round(), p.now.len())).collect::<Vec<_>>(),
        "resource manager look-ahead"
    );
    let margin = (0.02 * still).max(cfg.unload_secs);
    if !proj.makespan.is_finite() || (still.is_finite() && proj.makespan >= still - margin) {
        return Vec::new();
    }
    let have = llm_cards(view);
    let reason = |to_llm: bool| {
        let plan = match best {
            Strategy::Fixed(k) => format!("{k} llm cards"),
            Strategy::Split(k) => format!("{k} llm cards, turning as work runs dry"),
            Strategy::Phases => "phases".to_string(),
            Strategy::Stages => "stages".to_string(),
            Strategy::OnDemand => "on demand".to_string(),
        };
        let staying = if still.is_finite() {
            format!("{still:.0}s")
        } else {
            "never".to_string()
        };
        format!(
            "{} llm tasks ready, {} script tasks ready, {have} llm cards; look-ahead ({plan}): {} this card now ends the work in {:.0}s, standing still in {staying}",
            d.ready_llm_n,
            d.ready_script_n,
            if to_llm { "loading" } else { "freeing" },
            proj.makespan,
        )
    };

    proj.now
        .iter()
        .filter_map(|&(i, to_llm)| {
            let c = view.cards.get(i)?;
            if c.cooling_down {
                return None;
            }
            Some(if to_llm {
                load(c, &model, reason(true))
            } else {
                unload(c, reason(false))
            })
        })
        .collect()
}

/// What should change now, in the order to apply it.
pub fn decide(view: &RigView) -> Vec<RmAction> {
    let cfg = &view.config;
    let swaps = model_swaps(view);
    if !swaps.is_empty() {
        return swaps;
    }
    match cfg.policy {
        RmPolicy::Static { llm_cards } => decide_static(view, llm_cards),
        RmPolicy::Phases => decide_phases(view),
        RmPolicy::OnDemand => decide_on_demand(view),
        RmPolicy::Adaptive => decide_adaptive(view),
    }
}

/// Whatever the policy: when ready llm work needs a model that no card holds or is
/// loading, a free card whose model has no ready work is unloaded (the next round
/// loads the model wanted); so is a free card whose model no work left needs while
/// another model's work waits. Without this a plan using two models could wait for
/// ever.
fn model_swaps(view: &RigView) -> Vec<RmAction> {
    let d = demand(view, 0.0);
    if d.left_llm_n == 0 {
        return Vec::new();
    }
    let wanted = wanted_model(view, &d);
    let held = |m: &str| {
        view.cards
            .iter()
            .any(|c| c.mode.is_llm() && c.model.as_deref() == Some(m))
    };
    let starved = d.ready_by_model.keys().any(|m| !held(m));
    let mut out = Vec::new();
    for c in view
        .cards
        .iter()
        .filter(|c| c.mode == CardMode::Llm && c.free() && !c.cooling_down)
    {
        let m = c.model.clone().unwrap_or_default();
        if m == wanted {
            continue;
        }
        let needed = d.by_model.get(&m).copied().unwrap_or(0.0) > 0.0;
        let ready = d.ready_by_model.get(&m).copied().unwrap_or(0.0) > 0.0;
        if !needed {
            out.push(unload(
                c,
                format!("no llm work left for model {m}; {wanted} is wanted"),
            ));
        } else if starved && !ready && out.is_empty() {
            out.push(unload(
                c,
                format!(
                    "llm work for {wanted} is ready and no card holds it; nothing ready needs {m}"
                ),
            ));
        }
    }
    out
}

/// The most cards that may hold the model at once.
fn llm_cap(view: &RigView) -> usize {
    let capable = view.cards.iter().filter(|c| c.llm_capable).count();
    view.config
        .max_llm_gpus
        .map_or(capable, |m| capable.min(m as usize))
}

/// The model to load next: the one with the most ready llm work (else with the
/// most llm work left; the rig's model on a tie or when none waits).
fn wanted_model(view: &RigView, d: &Demand) -> String {
    let pick = if d.ready_by_model.is_empty() {
        &d.by_model
    } else {
        &d.ready_by_model
    };
    let mut best = (
        view.config.model.clone(),
        pick.get(&view.config.model).copied().unwrap_or(0.0),
    );
    for (m, w) in pick {
        if *w > best.1 {
            best = (m.clone(), *w);
        }
    }
    best.0
}

/// Cards that could take a load now, best first: free script cards before busy ones.
fn load_candidates(view: &RigView) -> Vec<&Card> {
    let mut c: Vec<&Card> = view
        .cards
        .iter()
        .filter(|c| c.llm_capable && c.mode == CardMode::Script && !c.cooling_down)
        .collect();
    c.sort_by_key(|c| (!c.free(), c.worker.clone()));
    c
}

/// Cards that could be unloaded now, best first: free ones, the longest idle first.
fn unload_candidates(view: &RigView) -> Vec<&Card> {
    let mut c: Vec<&Card> = view
        .cards
        .iter()
        .filter(|c| c.mode == CardMode::Llm && !c.cooling_down)
        .collect();
    c.sort_by(|a, b| {
        (!a.free())
            .cmp(&!b.free())
            .then(b.llm_idle_secs.total_cmp(&a.llm_idle_secs))
            .then(a.worker.cmp(&b.worker))
    });
    c
}

fn load(card: &Card, model: &str, reason: String) -> RmAction {
    RmAction::Load {
        worker: card.worker.clone(),
        model: model.to_string(),
        reason,
    }
}

fn unload(card: &Card, reason: String) -> RmAction {
    RmAction::Unload {
        worker: card.worker.clone(),
        model: card.model.clone().unwrap_or_default(),
        reason,
    }
}

fn llm_cards(view: &RigView) -> usize {
    view.cards.iter().filter(|c| c.mode.is_llm()).count()
}

fn decide_static(view: &RigView, llm_cards_wanted: u32) -> Vec<RmAction> {
    let target = (llm_cards_wanted as usize).min(llm_cap(view));
    let have = llm_cards(view);
    let model = wanted_model(view, &demand(view, 0.0));
    let mut out = Vec::new();
    if have < target {
        for c in load_candidates(view).into_iter().take(target - have) {
            out.push(load(
                c,
                &model,
                format!("static policy keeps {target} cards loaded; {have} are"),
            ));
        }
    } else if have > target {
        for c in unload_candidates(view).into_iter().take(have - target) {
            out.push(unload(
                c,
                format!("static policy keeps {target} cards loaded; {have} are"),
            ));
        }
    }
    out
}

fn decide_phases(view: &RigView) -> Vec<RmAction> {
    let d = demand(view, 0.0);
    let in_llm_phase = view.cards.iter().any(|c| c.mode.is_llm());
    let unloading = view.cards.iter().any(|c| c.mode == CardMode::Unloading);
    let model = wanted_model(view, &d);
    let mut out = Vec::new();
    if !in_llm_phase && !unloading {
        // Script phase: switch once script work has drained and llm work waits.
        if d.ready_script_n + d.running_script_n == 0 && d.ready_llm_n > 0 {
            let reason = format!(
                "phase switch to llm: {} llm tasks ready, no script task ready or running",
                d.ready_llm_n
            );
            for c in load_candidates(view).into_iter().take(llm_cap(view)) {
                out.push(load(c, &model, reason.clone()));
            }
        }
    } else if in_llm_phase {
        let llm_done = d.ready_llm_n + d.running_llm_n == 0;
        let loading = view.cards.iter().any(|c| c.mode == CardMode::Loading);
        if llm_done && !loading && d.ready_script_n > 0 {
            let reason = format!(
                "phase switch to script: {} script tasks ready, no llm task ready or running",
                d.ready_script_n
            );
            for c in unload_candidates(view) {
                out.push(unload(c, reason.clone()));
            }
        } else if llm_done && !loading {
            out.extend(idle_unloads(view, &d));
        }
    }
    out
}

/// Loaded cards idle past `idle_unload` with no llm work waiting.
fn idle_unloads(view: &RigView, d: &Demand) -> Vec<RmAction> {
    if d.ready_llm_n + d.running_llm_n > 0 {
        return Vec::new();
    }
    let keep = view.config.min_llm_gpus as usize;
    let mut loaded = llm_cards(view);
    let mut out = Vec::new();
    for c in unload_candidates(view) {
        if loaded <= keep {
            break;
        }
        if c.free() && c.llm_idle_secs >= view.config.idle_unload_secs {
            out.push(unload(
                c,
                format!(
                    "idle {:.0}s >= idle_unload {:.0}s, no llm work waiting",
                    c.llm_idle_secs, view.config.idle_unload_secs
                ),
            ));
            loaded -= 1;
        }
    }
    out
}

fn decide_on_demand(view: &RigView) -> Vec<RmAction> {
    let d = demand(view, 0.0);
    let model = wanted_model(view, &d);
    let mut out = Vec::new();
    let free_script = view
        .cards
        .iter()
        .filter(|c| c.mode == CardMode::Script && c.free())
        .count();
    let free_llm = view
        .cards
        .iter()
        .filter(|c| c.mode == CardMode::Llm && c.free())
        .count();
    let loading = view
        .cards
        .iter()
        .filter(|c| c.mode == CardMode::Loading)
        .count();
    let unloading = view
        .cards
        .iter()
        .filter(|c| c.mode == CardMode::Unloading)
        .count();
    // A free card whose own kind has nothing ready turns to the other kind when
    // that kind has more ready tasks than free cards to take them.
    if d.ready_script_n == 0 && d.ready_llm_n > free_llm + loading {
        let want = d.ready_llm_n - free_llm - loading;
        let cands = load_candidates(view).into_iter().filter(|c| c.free());
        for c in cands.take(want) {
            out.push(load(
                c,
                &model,
                format!("on demand: {} llm tasks ready, card free", d.ready_llm_n),
            ));
        }
    }
    if d.ready_llm_n == 0 && d.ready_script_n > free_script + unloading {
        let want = d.ready_script_n - free_script - unloading;
        let cands = unload_candidates(view).into_iter().filter(|c| c.free());
        for c in cands.take(want) {
            out.push(unload(
                c,
                format!(
                    "on demand: {} script tasks ready, card free",
                    d.ready_script_n
                ),
            ));
        }
    }
    out
}

/// The demand-proportional rule `adaptive` falls back on when the batch is too big
/// to project every round.
fn decide_proportional(view: &RigView) -> Vec<RmAction> {
    let cfg = &view.config;
    let horizon = (3.0 * cfg.load_secs).max(60.0);
    let d = demand(view, horizon);
    let model = wanted_model(view, &d);
    let gpus = view.cards.len();
    let cap = llm_cap(view);
    let have = llm_cards(view);
    let script_cards = gpus - have;
    let floor = (cfg.min_llm_gpus as usize).min(cap);
    let mut out = Vec::new();

    // Script work ready and no card to run it: llm work that waits on it would
    // wait for ever. A free loaded card with nothing ready to run turns.
    if d.ready_script_n > 0 && script_cards == 0 && d.ready_llm_n == 0 && have > floor {
        if let Some(c) = unload_candidates(view).into_iter().find(|c| c.free()) {
            out.push(unload(
                c,
                format!(
                    "{} script tasks ready, no llm task ready, and no card runs script work",
                    d.ready_script_n
                ),
            ));
            return out;
        }
    }

    // How many cards the llm share of the coming work calls for.
    let total = d.soon_llm + d.soon_script;
    let mut target = if d.soon_llm <= 0.0 || total <= 0.0 {
        0
    } else {
        let share = d.soon_llm / total;
        ((share * gpus as f64).round() as usize).max(1)
    };
    // No more cards than llm tasks to run on them, nor than allowed.
    target = target
        .min(d.soon_llm_n.max(usize::from(d.left_llm_n > 0)))
        .min(cap);
    // While script work waits, one card stays for it (when there are two or more).
    if gpus > 1 && d.soon_script > 0.0 {
        target = target.min(gpus - 1);
    }
    // A further card pays only if its share of the llm work outweighs its load.
    while target > have.max(1) && d.soon_llm / (target as f64) < cfg.load_secs {
        target -= 1;
    }
    // The only card: it serves whichever kind is ready now.
    if gpus == 1 && d.ready_llm_n == 0 && d.ready_script_n > 0 {
        target = 0;
    }
    target = target.max(floor);

    if target > have {
        let reason = format!(
            "{} llm tasks ready ({:.0}s of llm work due within {:.0}s), {} llm cards",
            d.ready_llm_n, d.soon_llm, horizon, have
        );
        for c in load_candidates(view).into_iter().take(target - have) {
            out.push(load(c, &model, reason.clone()));
        }
        return out;
    }
    if target < have {
        // Unload only what script work will use, and never a card just loaded
        // while llm work remains (hysteresis: a load is paid for once).
        let script_wants = d.ready_script_n > 0;
        let mut extra = have - target;
        for c in unload_candidates(view) {
            if extra == 0 {
                break;
            }
            if !c.free() {
                continue;
            }
            let settled = c.in_mode_secs >= cfg.load_secs || d.left_llm_n == 0;
            let idle_long = c.llm_idle_secs >= cfg.idle_unload_secs;
            if (script_wants && settled) || idle_long {
                let reason = if script_wants {
                    format!(
                        "{} script tasks ready, llm work needs {} cards, {} loaded",
                        d.ready_script_n, target, have
                    )
                } else {
                    format!(
                        "idle {:.0}s >= idle_unload {:.0}s, no llm work waiting",
                        c.llm_idle_secs, cfg.idle_unload_secs
                    )
                };
                out.push(unload(c, reason));
                extra -= 1;
            }
        }
    }
    out
}

/// The work a brain's state holds, with the look-ahead of the module doc: every job
/// not yet done, its dependencies among them, and how long a running one has left
/// at `now`. Run times come from the plan's `estimate`, else the mean of earlier runs
/// of the same plan task, else [`DEFAULT_ESTIMATE_SECS`].
pub fn work_of(state: &BrainState, default_model: &str, now: DateTime<Utc>) -> Vec<Work> {
    let mut out = Vec::new();
    for batch in state.batches.values().filter(|b| b.active()) {
        let n = batch.jobs.len();
        let secs = |i: usize| estimate_of(state, &batch.jobs[i]);
        let left = |i: usize| left_of(state, &batch.jobs[i], now);
        // Where each unfinished job lands in `out`.
        let base = out.len();
        let mut slot: Vec<Option<usize>> = vec![None; n];
        let mut k = base;
        for (i, j) in batch.jobs.iter().enumerate() {
            if !is_done(j.status) {
                slot[i] = Some(k);
                k += 1;
            }
        }
        // ready_in of each job, memoised; computed depth-first without recursion.
        let mut at: Vec<Option<f64>> = vec![None; n];
        for start in 0..n {
            if at[start].is_some() || is_done(batch.jobs[start].status) {
                continue;
            }
            let mut stack = vec![(start, false)];
            while let Some((i, expanded)) = stack.pop() {
                if at[i].is_some() {
                    continue;
                }
                let j = &batch.jobs[i];
                if matches!(j.status, JobStatus::Queued | JobStatus::Processing) || j.unmet == 0 {
                    at[i] = Some(0.0);
                    continue;
                }
                if !expanded {
                    stack.push((i, true));
                    for &d in &j.deps {
                        if at[d].is_none() && !is_done(batch.jobs[d].status) {
                            stack.push((d, false));
                        }
                    }
                    continue;
                }
                let mut ready = 0.0f64;
                for &d in &j.deps {
                    if is_done(batch.jobs[d].status) {
                        continue;
                    }
                    ready = ready.max(at[d].unwrap_or(0.0) + left(d));
                }
                at[i] = Some(ready);
            }
        }
        for (i, j) in batch.jobs.iter().enumerate() {
            if slot[i].is_none() {
                continue;
            }
            let class = match j.work.class {
                Some(c @ (TaskClass::Script | TaskClass::Llm)) => c,
                _ => TaskClass::Cpu,
            };
            out.push(Work {
                class,
                model: (class == TaskClass::Llm).then(|| {
                    j.work
                        .model
                        .clone()
                        .unwrap_or_else(|| default_model.to_string())
                }),
                secs: secs(i),
                ready_in: at[i].unwrap_or(0.0),
                running: j.status == JobStatus::Processing,
                left: left(i),
                // A job already queued or running waits for nothing (one put there
                // by hand may still have unfinished dependencies).
                deps: if matches!(j.status, JobStatus::Queued | JobStatus::Processing) {
                    Vec::new()
                } else {
                    j.deps.iter().filter_map(|d| slot[*d]).collect()
                },
                group: j.work.group.clone(),
            });
        }
    }
    out
}

/// A job's expected run time: the plan's `estimate`, else the mean of earlier runs
/// of the same plan task, else [`DEFAULT_ESTIMATE_SECS`].
pub fn estimate_of(state: &BrainState, job: &crate::state::Job) -> f64 {
    job.work
        .estimate_secs
        .or_else(|| state.learned.get(&job.plan_task_id).map(|l| l.mean()))
        .unwrap_or(DEFAULT_ESTIMATE_SECS)
}

/// How long a job still needs at `now`: its estimate, less what it has run if it
/// runs (past its estimate: a little more, not nothing).
pub fn left_of(state: &BrainState, job: &crate::state::Job, now: DateTime<Utc>) -> f64 {
    let s = estimate_of(state, job);
    match (&job.holder, job.status) {
        (Some(h), JobStatus::Processing) => {
            let ran = (now - h.since).num_milliseconds().max(0) as f64 / 1000.0;
            (s - ran).max(0.05 * s)
        }
        _ => s,
    }
}

/// Done, or failed for good: no demand. A failure that will be retried still is.
fn is_done(s: JobStatus) -> bool {
    match s {
        JobStatus::Complete => true,
        JobStatus::Failed(f) => !f.retryable(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(policy: RmPolicy) -> RmConfig {
        RmConfig {
            policy,
            model: "m".into(),
            min_llm_gpus: 0,
            max_llm_gpus: None,
            idle_unload_secs: 1800.0,
            load_secs: 120.0,
            unload_secs: 10.0,
            groups: BTreeMap::new(),
        }
    }

    fn card(worker: &str, mode: CardMode) -> Card {
        Card {
            worker: worker.into(),
            mode,
            model: mode.is_llm().then(|| "m".to_string()),
            running: None,
            busy_for: 0.0,
            llm_idle_secs: 0.0,
            in_mode_secs: 1000.0,
            llm_capable: true,
            cooling_down: false,
        }
    }

    fn work(class: TaskClass, n: usize, secs: f64, ready_in: f64) -> Vec<Work> {
        (0..n)
            .map(|_| Work {
                class,
                model: (class == TaskClass::Llm).then(|| "m".to_string()),
                secs,
                ready_in,
                running: false,
                left: secs,
                deps: vec![],
                group: None,
            })
            .collect()
    }

    fn view(policy: RmPolicy, cards: Vec<Card>, work: Vec<Work>) -> RigView {
        RigView {
            config: cfg(policy),
            cards,
            work,
        }
    }

    fn loads(a: &[RmAction]) -> Vec<&str> {
        a.iter()
            .filter(|a| matches!(a, RmAction::Load { .. }))
            .map(|a| a.worker())
            .collect()
    }

    fn unloads(a: &[RmAction]) -> Vec<&str> {
        a.iter()
            .filter(|a| matches!(a, RmAction::Unload { .. }))
            .map(|a| a.worker())
            .collect()
    }

    #[test]
    fn adaptive_loads_a_card_for_ready_llm_work_and_says_why() {
        let v = view(
            RmPolicy::Adaptive,
            vec![card("w1", CardMode::Script), card("w2", CardMode::Script)],
            work(TaskClass::Llm, 7, 300.0, 0.0),
        );
        let a = decide(&v);
        assert_eq!(loads(&a), vec!["w1", "w2"]);
        let RmAction::Load { reason, model, .. } = &a[0] else {
            panic!()
        };
        assert_eq!(model, "m");
        assert!(reason.contains("7 llm tasks ready"), "{reason}");
        assert!(reason.contains("0 llm cards"), "{reason}");
    }

    #[test]
    fn adaptive_runs_scripts_first_when_a_split_would_idle_cards() {
        // 4 cards, 40 x 300 s of llm work and 20 x 300 s of scripts, all ready:
        // scripts on all 4 cards, then all turn (4,620 s), beats every split (the
        // best, 2 + 2, ends at 6,120 s): no load yet.
        let mut w = work(TaskClass::Llm, 40, 300.0, 0.0);
        w.extend(work(TaskClass::Script, 20, 300.0, 0.0));
        let cards: Vec<Card> = (1..=4)
            .map(|i| card(&format!("w{i}"), CardMode::Script))
            .collect();
        assert!(decide(&view(RmPolicy::Adaptive, cards.clone(), w)).is_empty());
        // With only llm work left, every card loads.
        let w = work(TaskClass::Llm, 40, 300.0, 0.0);
        assert_eq!(loads(&decide(&view(RmPolicy::Adaptive, cards, w))).len(), 4);
    }

    #[test]
    fn adaptive_runs_the_ready_llm_work_before_turning_the_card() {
        // One loaded card with one llm task ready and scripts waiting: it runs the
        // llm task first (turning now would mean loading again), so no move yet;
        // once no llm work is left, it turns.
        let mut w = work(TaskClass::Script, 10, 100.0, 0.0);
        w.extend(work(TaskClass::Llm, 1, 100.0, 0.0));
        let cards = vec![card("w1", CardMode::Llm), card("w2", CardMode::Script)];
        assert!(decide(&view(RmPolicy::Adaptive, cards.clone(), w)).is_empty());
        let w = work(TaskClass::Script, 10, 100.0, 0.0);
        assert_eq!(
            unloads(&decide(&view(RmPolicy::Adaptive, cards, w))),
            vec!["w1"]
        );
    }

    #[test]
    fn adaptive_looks_ahead_to_llm_work_the_dag_will_release() {
        // One script task running (50 s left) and 21 llm tasks waiting on it: the
        // free card loads now, so that its load overlaps the script task (1,220 s,
        // against 1,270 s loading both cards once the script ends).
        let mut w = work(TaskClass::Script, 1, 100.0, 0.0);
        w[0].running = true;
        w[0].left = 50.0;
        let mut llm = work(TaskClass::Llm, 21, 100.0, 50.0);
        for t in &mut llm {
            t.deps = vec![0];
        }
        w.extend(llm);
        let mut busy = card("w1", CardMode::Script);
        busy.running = Some(TaskClass::Script);
        busy.busy_for = 50.0;
        let v = view(
            RmPolicy::Adaptive,
            vec![busy, card("w2", CardMode::Script)],
            w,
        );
        assert_eq!(loads(&decide(&v))[0], "w2");
    }

    #[test]
    fn adaptive_frees_a_card_when_script_work_waits_and_none_runs_scripts() {
        // The only card holds the model; a script task is ready and the llm work
        // waits on it: without a turn nothing would ever run.
        let mut w = work(TaskClass::Script, 1, 100.0, 0.0);
        let mut llm = work(TaskClass::Llm, 3, 100.0, 100.0);
        for t in &mut llm {
            t.deps = vec![0];
        }
        w.extend(llm);
        let v = view(RmPolicy::Adaptive, vec![card("w1", CardMode::Llm)], w);
        let a = decide(&v);
        assert_eq!(unloads(&a), vec!["w1"]);
        let RmAction::Unload { reason, .. } = &a[0] else {
            panic!()
        };
        assert!(reason.contains("standing still in never"), "{reason}");
    }

    #[test]
    fn idle_unload_frees_a_card_with_no_llm_work() {
        let mut c = card("w1", CardMode::Llm);
        c.llm_idle_secs = 1799.0;
        let v = view(RmPolicy::Adaptive, vec![c.clone()], vec![]);
        assert!(decide(&v).is_empty());
        c.llm_idle_secs = 1800.0;
        let v = view(RmPolicy::Adaptive, vec![c], vec![]);
        let a = decide(&v);
        assert_eq!(unloads(&a), vec!["w1"]);
        let RmAction::Unload { reason, .. } = &a[0] else {
            panic!()
        };
        assert!(reason.contains("idle_unload"), "{reason}");
    }

    #[test]
    fn static_keeps_its_count() {
        let v = view(
            RmPolicy::Static { llm_cards: 2 },
            (1..=3)
                .map(|i| card(&format!("w{i}"), CardMode::Script))
                .collect(),
            vec![],
        );
        assert_eq!(loads(&decide(&v)), vec!["w1", "w2"]);
        let v = view(
            RmPolicy::Static { llm_cards: 0 },
            vec![card("w1", CardMode::Llm)],
            work(TaskClass::Llm, 3, 10.0, 0.0),
        );
        assert_eq!(unloads(&decide(&v)), vec!["w1"]);
    }

    #[test]
    fn phases_switch_only_when_the_phase_has_drained() {
        let cards: Vec<Card> = (1..=2)
            .map(|i| card(&format!("w{i}"), CardMode::Script))
            .collect();
        let mut w = work(TaskClass::Script, 1, 10.0, 0.0);
        w.extend(work(TaskClass::Llm, 3, 10.0, 0.0));
        assert!(decide(&view(RmPolicy::Phases, cards.clone(), w)).is_empty());
        let w = work(TaskClass::Llm, 3, 10.0, 0.0);
        assert_eq!(
            loads(&decide(&view(RmPolicy::Phases, cards, w))),
            vec!["w1", "w2"]
        );
    }

    #[test]
    fn on_demand_turns_a_free_card_for_the_next_ready_task() {
        let w = work(TaskClass::Script, 2, 10.0, 0.0);
        let v = view(RmPolicy::OnDemand, vec![card("w1", CardMode::Llm)], w);
        assert_eq!(unloads(&decide(&v)), vec!["w1"]);
    }

    #[test]
    fn max_llm_gpus_and_capability_are_respected() {
        let mut c3 = card("w3", CardMode::Script);
        c3.llm_capable = false;
        let mut v = view(
            RmPolicy::Adaptive,
            vec![
                card("w1", CardMode::Script),
                card("w2", CardMode::Script),
                c3,
            ],
            work(TaskClass::Llm, 30, 600.0, 0.0),
        );
        v.config.max_llm_gpus = Some(1);
        assert_eq!(loads(&decide(&v)), vec!["w1"]);
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
