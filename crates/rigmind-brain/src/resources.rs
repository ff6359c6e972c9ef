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
    pub class: TaskClass,
    /// For llm work: the model it needs.
    pub model: Option<String>,
    /// Expected run time.
    pub secs: f64,
    /// Seconds until it can start (0: ready now).
    pub ready_in: f64,
    /// It runs now.
    pub running: bool,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct RigView {
    pub config: RmConfig,
    /// The GPU workers that are alive.
    pub cards: Vec<Card>,
    /// Script and llm work not yet done (cpu work runs anywhere and is left out).
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
    /// All llm work left, and llm work by model.
    left_llm_n: usize,
    by_model: BTreeMap<String, f64>,
}

fn demand(view: &RigView, horizon: f64) -> Demand {
    let mut d = Demand::default();
    for w in &view.work {
        let llm = w.class == TaskClass::Llm;
        let ready = w.ready_in <= 0.0 && !w.running;
        if llm {
            d.left_llm_n += 1;
            let m = w.model.clone().unwrap_or_else(|| view.config.model.clone());
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

/// What should change now, in the order to apply it.
pub fn decide(view: &RigView) -> Vec<RmAction> {
    let cfg = &view.config;
    match cfg.policy {
        RmPolicy::Static { llm_cards } => decide_static(view, llm_cards),
        RmPolicy::Phases => decide_phases(view),
        RmPolicy::OnDemand => decide_on_demand(view),
        RmPolicy::Adaptive => decide_adaptive(view),
    }
}

/// The most cards that may hold the model at once.
fn llm_cap(view: &RigView) -> usize {
    let capable = view.cards.iter().filter(|c| c.llm_capable).count();
    view.config
        .max_llm_gpus
        .map_or(capable, |m| capable.min(m as usize))
}

/// The model to load next: the one with the most llm work left (the rig's model
/// when none is waiting, or on a tie).
fn wanted_model(view: &RigView, d: &Demand) -> String {
    let mut best = (
        view.config.model.clone(),
        d.by_model.get(&view.config.model).copied().unwrap_or(0.0),
    );
    for (m, w) in &d.by_model {
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
    let model = view.config.model.clone();
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

fn decide_adaptive(view: &RigView) -> Vec<RmAction> {
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
    // A card holding a model nobody needs, while another model is wanted.
    for c in view
        .cards
        .iter()
        .filter(|c| c.mode == CardMode::Llm && c.free())
    {
        let m = c.model.clone().unwrap_or_default();
        if m != model && d.by_model.get(&m).copied().unwrap_or(0.0) <= 0.0 && d.left_llm_n > 0 {
            if out.iter().any(|a| a.worker() == c.worker) {
                continue;
            }
            out.push(unload(
                c,
                format!("no work left for model {m}; {model} is wanted"),
            ));
        }
    }
    out
}

/// The work a brain's state holds, with the look-ahead of the module doc. `learned`
/// gives the mean run time of earlier runs by plan task; `running_for` how long each
/// running job has run.
pub fn work_of(state: &BrainState, default_model: &str) -> Vec<Work> {
    let mut out = Vec::new();
    for batch in state.batches.values().filter(|b| b.active()) {
        let n = batch.jobs.len();
        // ready_in of each job, memoised; computed depth-first without recursion.
        let mut at: Vec<Option<f64>> = vec![None; n];
        let secs = |i: usize| -> f64 {
            let j = &batch.jobs[i];
            j.work
                .estimate_secs
                .or_else(|| state.learned.get(&j.plan_task_id).map(|l| l.mean()))
                .unwrap_or(DEFAULT_ESTIMATE_SECS)
        };
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
                    let dj = &batch.jobs[d];
                    if dj.status == JobStatus::Complete {
                        continue;
                    }
                    let left = if dj.status == JobStatus::Processing {
                        secs(d) / 2.0
                    } else {
                        secs(d)
                    };
                    ready = ready.max(at[d].unwrap_or(0.0) + left);
                }
                at[i] = Some(ready);
            }
        }
        for (i, j) in batch.jobs.iter().enumerate() {
            let Some(class) = j.work.class else { continue };
            if !matches!(class, TaskClass::Script | TaskClass::Llm) || is_done(j.status) {
                continue;
            }
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
            });
        }
    }
    out
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
        }
    }

    fn card(worker: &str, mode: CardMode) -> Card {
        Card {
            worker: worker.into(),
            mode,
            model: mode.is_llm().then(|| "m".to_string()),
            running: None,
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
    fn adaptive_splits_cards_by_the_share_of_work() {
        let mut w = work(TaskClass::Llm, 10, 300.0, 0.0);
        w.extend(work(TaskClass::Script, 30, 300.0, 0.0));
        let v = view(
            RmPolicy::Adaptive,
            (1..=4)
                .map(|i| card(&format!("w{i}"), CardMode::Script))
                .collect(),
            w,
        );
        assert_eq!(
            loads(&decide(&v)).len(),
            1,
            "a quarter of the work, a quarter of the cards"
        );
    }

    #[test]
    fn adaptive_does_not_load_a_second_card_for_less_work_than_a_load() {
        let v = view(
            RmPolicy::Adaptive,
            vec![card("w1", CardMode::Llm), card("w2", CardMode::Script)],
            work(TaskClass::Llm, 4, 20.0, 0.0),
        );
        assert!(decide(&v).is_empty());
    }

    #[test]
    fn adaptive_keeps_a_fresh_card_while_llm_work_remains() {
        let mut c = card("w1", CardMode::Llm);
        c.in_mode_secs = 5.0;
        let mut w = work(TaskClass::Script, 10, 100.0, 0.0);
        w.extend(work(TaskClass::Llm, 1, 100.0, 500.0));
        let v = view(
            RmPolicy::Adaptive,
            vec![c.clone(), card("w2", CardMode::Script)],
            w.clone(),
        );
        assert!(unloads(&decide(&v)).is_empty(), "just loaded: hysteresis");
        c.in_mode_secs = 500.0;
        let v = view(RmPolicy::Adaptive, vec![c, card("w2", CardMode::Script)], w);
        assert_eq!(unloads(&decide(&v)), vec!["w1"]);
    }

    #[test]
    fn adaptive_looks_ahead_to_llm_work_the_dag_will_release() {
        // One script task left, llm work due once it ends: the free card loads now.
        let mut w = work(TaskClass::Script, 1, 100.0, 0.0);
        w[0].running = true;
        w.extend(work(TaskClass::Llm, 20, 100.0, 50.0));
        let mut busy = card("w1", CardMode::Script);
        busy.running = Some(TaskClass::Script);
        let v = view(
            RmPolicy::Adaptive,
            vec![busy, card("w2", CardMode::Script)],
            w,
        );
        assert_eq!(loads(&decide(&v))[0], "w2");
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
}
