//! A quick projection of the rest of a batch under a plan for the cards: the
//! `adaptive` resource manager's look-ahead.
//!
//! [`project`] list-schedules the unfinished DAG of a [`RigView`] on its cards in
//! virtual time — each free card takes the oldest ready task its state allows (cpu on
//! any card), a card that changes state is unavailable for the load or unload time —
//! under one [`Strategy`], and returns the projected end and the state changes the
//! strategy makes right now. It is a model, not the simulator: it has no queue files,
//! no claim lock and no brain rounds, only the DAG, the estimates and the cards. It
//! is deterministic and costs O((tasks + edges) · log tasks) per strategy.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use rigmind_types::TaskClass;

use crate::resources::{CardMode, RigView, RmConfig};

/// How the cards are moved between their states in a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// This many cards hold the model from now on, the rest run scripts.
    Fixed(usize),
    /// This many cards hold the model from now on; at the end, when a card's state
    /// has nothing ready and the other's has work no card takes, it turns.
    Split(usize),
    /// The whole rig in one state; all cards change once the current state's work
    /// (ready and running) is gone and the other state's is ready.
    Phases,
    /// Like phases, but each card changes on its own as soon as it is free and its
    /// state has nothing ready while the other has work left: loads overlap the tail
    /// of a stage.
    Stages,
    /// A free card whose state has nothing ready changes when the other state has
    /// ready work that no card takes (what `on-demand` does).
    OnDemand,
}

/// What a projection found.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// Seconds from now until the last task ends (infinite: it never does).
    pub makespan: f64,
    /// Cards (indices into the view's cards) the strategy moves now, and whether to
    /// the LLM state (`true`) or to the script state.
    pub now: Vec<(usize, bool)>,
    /// Seconds from now until each batch's last task ends, indexed by
    /// [`Work::batch`](crate::resources::Work::batch) (infinite: it never does; 0
    /// for a batch with no work in the view).
    pub batch_ends: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Script,
    Llm,
}

impl Mode {
    /// Whether a card in this mode runs `class`: the claim rule's card rule.
    fn takes(self, class: TaskClass) -> bool {
        crate::claim::card_runs(self == Mode::Llm, class)
    }

    /// Its place in the per-class arrays (script 0, llm 1; cpu is 2).
    fn slot(self) -> usize {
        match self {
            Mode::Script => 0,
            Mode::Llm => 1,
        }
    }

    fn other(self) -> Mode {
        match self {
            Mode::Script => Mode::Llm,
            Mode::Llm => Mode::Script,
        }
    }
}

#[derive(Debug, Clone)]
struct SimCard {
    mode: Mode,
    free_at: f64,
    capable: bool,
    /// It is changing state (loading or unloading), not running a task: once free
    /// it takes work of its new state, so a card idle now need not turn for that.
    arriving: bool,
    /// How long a load takes on it.
    load_secs: f64,
}

/// Totally ordered f64 for the event heap (times are finite here).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct T(f64);
impl Eq for T {}
#[allow(clippy::derive_ord_xor_partial_ord)]
impl Ord for T {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Sends a card to `to` once it is free after `at`: it is unavailable for its load
/// time or the unload time.
fn switch(card: &mut SimCard, to: Mode, at: f64, cfg: &RmConfig) {
    card.free_at = card.free_at.max(at)
        + match to {
            Mode::Llm => card.load_secs,
            Mode::Script => cfg.unload_secs,
        };
    card.mode = to;
    card.arriving = true;
}

/// A class's place in the per-class arrays: script 0, llm 1, cpu (and any other) 2.
fn class_slot(c: TaskClass) -> usize {
    match c {
        TaskClass::Script => 0,
        TaskClass::Llm => 1,
        _ => 2,
    }
}

/// Concurrency groups: the group (its index among the configured ones) and limit
/// of each task, if it has one.
fn group_limits(view: &RigView) -> Vec<Option<(usize, u32)>> {
    let groups = &view.config.groups;
    let names: Vec<&String> = groups.keys().collect();
    view.work
        .iter()
        .map(|w| {
            let g = w.group.as_ref()?;
            let at = names.iter().position(|n| *n == g)?;
            Some((at, groups[g]))
        })
        .collect()
}

/// The view's cards as the projection moves them: a card loading or unloading is
/// already in its new state, busy for the rest of the change.
fn sim_cards(view: &RigView) -> Vec<SimCard> {
    let cfg = &view.config;
    view.cards
        .iter()
        .map(|c| {
            let (mode, extra) = match c.mode {
                CardMode::Script => (Mode::Script, 0.0),
                CardMode::Llm => (Mode::Llm, 0.0),
                CardMode::Loading => (Mode::Llm, c.load_secs),
                CardMode::Unloading => (Mode::Script, cfg.unload_secs),
            };
            SimCard {
                mode,
                free_at: c.busy_for.max(0.0) + extra,
                capable: c.llm_capable,
                arriving: c.mode != CardMode::Script && c.mode != CardMode::Llm,
                load_secs: c.load_secs,
            }
        })
        .collect()
}

/// One projection in progress: the DAG's progress, the cards, the clock's events.
struct Run<'v> {
    view: &'v RigView,
    cfg: &'v RmConfig,
    /// Unfinished dependencies of each task, and the tasks waiting on each.
    unmet: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    /// Ready tasks by class slot, oldest (lowest index) first.
    ready: [BTreeSet<usize>; 3],
    /// Ends of running tasks, earliest first.
    events: BinaryHeap<Reverse<(T, usize)>>,
    /// Each task's concurrency group and its limit, and how many of each group run.
    limit_of: Vec<Option<(usize, u32)>>,
    in_group: Vec<u32>,
    /// Tasks not yet ended.
    left: usize,
    /// Tasks running, and tasks still waiting on dependencies, by class slot.
    running: [usize; 3],
    waiting: [usize; 3],
    cards: Vec<SimCard>,
    /// The least and the most LLM cards allowed.
    bounds: (usize, usize),
    /// Cards the strategy moves now, and whether to the LLM state.
    now_moves: Vec<(usize, bool)>,
    /// When each batch's last task ended so far, and how many of its tasks have
    /// not ended.
    batch_ends: Vec<f64>,
    batch_left: Vec<usize>,
}

impl<'v> Run<'v> {
    /// The start: running tasks end after what they have left, tasks without
    /// unfinished dependencies are ready, the rest wait.
    fn new(view: &'v RigView) -> Self {
        let n = view.work.len();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, w) in view.work.iter().enumerate() {
            for &d in &w.deps {
                dependents[d].push(i);
            }
        }
        let cap = view.config.max_llm_gpus.map_or(usize::MAX, |m| m as usize);
        let floor = view.config.min_llm_gpus as usize;
        let batches = view.work.iter().map(|w| w.batch + 1).max().unwrap_or(0);
        let mut batch_left = vec![0usize; batches];
        for w in &view.work {
            batch_left[w.batch] += 1;
        }
        let mut run = Run {
            view,
            cfg: &view.config,
            unmet: view.work.iter().map(|w| w.deps.len()).collect(),
            dependents,
            ready: Default::default(),
            events: BinaryHeap::new(),
            limit_of: group_limits(view),
            in_group: vec![0u32; view.config.groups.len()],
            left: n,
            running: [0usize; 3],
            waiting: [0usize; 3],
            cards: sim_cards(view),
            bounds: (floor, cap),
            now_moves: Vec::new(),
            batch_ends: vec![0.0; batches],
            batch_left,
        };
        for (i, w) in view.work.iter().enumerate() {
            let slot = class_slot(w.class);
            if w.running {
                run.unmet[i] = 0;
                run.events.push(Reverse((T(w.left.max(0.0)), i)));
                run.running[slot] += 1;
                if let Some((g, _)) = run.limit_of[i] {
                    run.in_group[g] += 1;
                }
            } else if run.unmet[i] == 0 {
                run.ready[slot].insert(i);
            } else {
                run.waiting[slot] += 1;
            }
        }
        run
    }

    /// How many cards are in the LLM state.
    fn llm_cards(&self) -> usize {
        self.cards.iter().filter(|c| c.mode == Mode::Llm).count()
    }

    /// Whether task `i`'s concurrency group has room for it.
    fn open(&self, i: usize) -> bool {
        self.limit_of[i].is_none_or(|(g, l)| self.in_group[g] < l)
    }

    /// `Fixed(k)` and `Split(k)` start by moving cards now until `k` hold the model:
    /// free cards first, then those that free up soonest; ties by position. A card
    /// already changing state is not moved again.
    fn fix_llm_cards(&mut self, k: usize) {
        let have = self.llm_cards();
        let cards = &self.cards;
        let mut order: Vec<usize> = (0..cards.len()).collect();
        order.sort_by(|a, b| {
            cards[*a]
                .free_at
                .total_cmp(&cards[*b].free_at)
                .then(a.cmp(b))
        });
        let (to, movers): (Mode, Vec<usize>) = if k > have {
            let movers = order
                .iter()
                .copied()
                .filter(|i| {
                    cards[*i].mode == Mode::Script && cards[*i].capable && !cards[*i].arriving
                })
                .take(k - have)
                .collect();
            (Mode::Llm, movers)
        } else if k < have {
            let movers = order
                .iter()
                .copied()
                .filter(|i| cards[*i].mode == Mode::Llm && !cards[*i].arriving)
                .take(have - k)
                .collect();
            (Mode::Script, movers)
        } else {
            return;
        };
        for i in movers {
            switch(&mut self.cards[i], to, 0.0, self.cfg);
            self.now_moves.push((i, to == Mode::Llm));
        }
    }

    /// Turns card `i` to `to` at `t` if the LLM-card bounds allow it, keeping the
    /// count of LLM cards (`llm`) and noting a move made now. True if it turned.
    fn turn(&mut self, i: usize, to: Mode, t: f64, llm: &mut usize) -> bool {
        let (floor, cap) = self.bounds;
        let allowed = match to {
            Mode::Llm => self.cards[i].capable && *llm < cap,
            Mode::Script => *llm > floor,
        };
        if !allowed {
            return false;
        }
        if t == 0.0 {
            self.now_moves.push((i, to == Mode::Llm));
        }
        match to {
            Mode::Llm => *llm += 1,
            Mode::Script => *llm -= 1,
        }
        switch(&mut self.cards[i], to, t, self.cfg);
        true
    }

    /// Ends the tasks due by `t` and readies what waited only on them.
    fn complete_due(&mut self, t: f64) {
        while let Some(Reverse((T(at), i))) = self.events.peek().copied() {
            if at > t {
                break;
            }
            self.events.pop();
            self.left -= 1;
            let b = self.view.work[i].batch;
            self.batch_left[b] -= 1;
            self.batch_ends[b] = self.batch_ends[b].max(at);
            self.running[class_slot(self.view.work[i].class)] -= 1;
            if let Some((g, _)) = self.limit_of[i] {
                self.in_group[g] -= 1;
            }
            for &d in &self.dependents[i] {
                self.unmet[d] = self.unmet[d].saturating_sub(1);
                if self.unmet[d] == 0 && !self.view.work[d].running {
                    let slot = class_slot(self.view.work[d].class);
                    self.ready[slot].insert(d);
                    self.waiting[slot] = self.waiting[slot].saturating_sub(1);
                }
            }
        }
    }

    /// `Phases`: once the current phase's work (ready and running) is gone and the
    /// other phase has ready work, every card turns.
    fn phase_turn(&mut self, t: f64) {
        let llm_cards = self.llm_cards();
        let phase = if llm_cards > 0 {
            Mode::Llm
        } else {
            Mode::Script
        };
        let (s, o) = (phase.slot(), phase.other().slot());
        let drained = self.ready[s].is_empty() && self.running[s] == 0;
        if drained && !self.ready[o].is_empty() {
            let to = phase.other();
            let mut llm = llm_cards;
            for i in 0..self.cards.len() {
                if self.cards[i].mode != to {
                    self.turn(i, to, t, &mut llm);
                }
            }
        }
    }

    /// Free cards take work, as a worker claims: its own kind first, cpu work
    /// after (card::tier).
    fn take_work(&mut self, t: f64) {
        for card in 0..self.cards.len() {
            if self.cards[card].free_at > t {
                continue;
            }
            let own = self.cards[card].mode.slot();
            let pick = self.ready[own]
                .iter()
                .find(|i| self.open(**i))
                .or_else(|| self.ready[2].iter().find(|i| self.open(**i)))
                .copied();
            let Some(i) = pick else { continue };
            if let Some((g, _)) = self.limit_of[i] {
                self.in_group[g] += 1;
            }
            let class = self.view.work[i].class;
            debug_assert!(self.cards[card].mode.takes(class));
            self.ready[class_slot(class)].remove(&i);
            self.running[class_slot(class)] += 1;
            let end = t + self.view.work[i].secs.max(0.0);
            self.cards[card].free_at = end;
            self.cards[card].arriving = false;
            self.events.push(Reverse((T(end), i)));
        }
    }

    /// Stages, on demand, split: a card left idle with nothing of its kind ready
    /// turns when the other kind has work (ready and untaken, for on demand and
    /// split; any left at all, for stages).
    fn idle_turns(&mut self, t: f64, strategy: Strategy) {
        let mut llm = self.llm_cards();
        // Cards still arriving in a state will take its ready work.
        let mut turned = [0usize; 2];
        for c in self.cards.iter().filter(|c| c.arriving && c.free_at > t) {
            turned[c.mode.slot()] += 1;
        }
        for i in 0..self.cards.len() {
            let mode = self.cards[i].mode;
            if self.cards[i].free_at > t {
                continue;
            }
            let (s, o) = (mode.slot(), mode.other().slot());
            if self.ready[s].iter().any(|j| self.open(*j))
                || self.ready[2].iter().any(|j| self.open(*j))
            {
                continue;
            }
            let other_has = if matches!(strategy, Strategy::OnDemand | Strategy::Split(_)) {
                self.ready[o].iter().filter(|j| self.open(**j)).count() > turned[o]
            } else {
                !self.ready[o].is_empty() || self.running[o] > 0 || self.waiting[o] > 0
            };
            if other_has && self.turn(i, mode.other(), t, &mut llm) {
                turned[o] += 1;
            }
        }
    }

    /// The next moment something happens after `t` (infinite: nothing will).
    fn next_moment(&self, t: f64) -> f64 {
        let next_event = self.events.peek().map(|Reverse((T(at), _))| *at);
        let next_free = self
            .cards
            .iter()
            .map(|c| c.free_at)
            .filter(|f| *f > t)
            .fold(f64::INFINITY, f64::min);
        next_event.unwrap_or(f64::INFINITY).min(next_free)
    }

    /// What the projection found, with `makespan`: batches with a task that never
    /// ended never end.
    fn found(self, makespan: f64) -> Projection {
        let batch_ends = self
            .batch_ends
            .iter()
            .zip(&self.batch_left)
            .map(|(end, left)| if *left > 0 { f64::INFINITY } else { *end })
            .collect();
        Projection {
            makespan,
            now: self.now_moves,
            batch_ends,
        }
    }
}

/// Projects the rest of the work under `strategy`.
pub fn project(view: &RigView, strategy: Strategy) -> Projection {
    let mut run = Run::new(view);
    if let Strategy::Fixed(k) | Strategy::Split(k) = strategy {
        run.fix_llm_cards(k);
    }
    let mut t = 0.0f64;
    let mut guard = 0usize;
    while run.left > 0 {
        guard += 1;
        if guard > 20 * (view.work.len() + run.cards.len() + 10) {
            break;
        }
        run.complete_due(t);
        if run.left == 0 {
            break;
        }
        if strategy == Strategy::Phases {
            run.phase_turn(t);
        }
        run.take_work(t);
        if matches!(
            strategy,
            Strategy::Stages | Strategy::OnDemand | Strategy::Split(_)
        ) {
            run.idle_turns(t, strategy);
        }
        let next = run.next_moment(t);
        if !next.is_finite() {
            // Nothing runs and nothing will: the strategy cannot finish.
            return run.found(f64::INFINITY);
        }
        t = next;
    }
    let makespan = if run.left == 0 { t } else { f64::INFINITY };
    run.found(makespan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Card, RmConfig, RmPolicy, Work};

    fn view(cards: usize, work: Vec<Work>) -> RigView {
        RigView {
            config: RmConfig {
                policy: RmPolicy::Adaptive,
                model: "m".into(),
                min_llm_gpus: 0,
                max_llm_gpus: None,
                idle_unload_secs: 1800.0,
                load_secs: 100.0,
                unload_secs: 10.0,
                groups: Default::default(),
                models: Default::default(),
            },
            cards: (0..cards)
                .map(|i| Card {
                    worker: format!("w{i}"),
                    mode: CardMode::Script,
                    model: None,
                    running: None,
                    busy_for: 0.0,
                    llm_idle_secs: 0.0,
                    in_mode_secs: 1e9,
                    llm_capable: true,
                    cooling_down: false,
                    load_secs: 100.0,
                    vram_mb: None,
                })
                .collect(),
            work,
            estimates: Default::default(),
        }
    }

    fn w(class: TaskClass, secs: f64, deps: Vec<usize>) -> Work {
        Work {
            class,
            model: None,
            secs,
            ready_in: 0.0,
            running: false,
            left: secs,
            deps,
            group: None,
            batch: 0,
        }
    }

    #[test]
    fn a_stage_structured_batch_is_best_served_in_stages() {
        // 4 script (100 s) -> barrier -> 4 llm (50 s) on 2 cards, load 100 s.
        let mut work: Vec<Work> = (0..4)
            .map(|_| w(TaskClass::Script, 100.0, vec![]))
            .collect();
        work.push(w(TaskClass::Cpu, 0.0, vec![0, 1, 2, 3]));
        work.extend((0..4).map(|_| w(TaskClass::Llm, 50.0, vec![4])));
        let v = view(2, work);
        // Fixed(1): scripts on one card (400 s), the other loads at once; llm on it.
        assert_eq!(project(&v, Strategy::Fixed(1)).makespan, 600.0);
        // Phases: 200 s of scripts, both load (100 s), 2 x 50 s of llm.
        assert_eq!(project(&v, Strategy::Phases).makespan, 400.0);
        assert_eq!(project(&v, Strategy::Stages).makespan, 400.0);
        assert!(project(&v, Strategy::Fixed(0)).makespan.is_infinite());
        assert_eq!(project(&v, Strategy::Fixed(1)).now, vec![(0, true)]);
    }

    #[test]
    fn stages_load_during_the_tail_of_a_stage() {
        // 3 script tasks of 100 s on 2 cards: the second card is free at 100 s
        // with nothing left to run but llm work to come.
        let mut work: Vec<Work> = (0..3)
            .map(|_| w(TaskClass::Script, 100.0, vec![]))
            .collect();
        work.extend((0..2).map(|_| w(TaskClass::Llm, 50.0, vec![0, 1, 2])));
        let v = view(2, work);
        // Phases: scripts end at 200, both load to 300, llm 300-350.
        assert_eq!(project(&v, Strategy::Phases).makespan, 350.0);
        // Stages: card 1 loads 100-200, runs both llm 200-300.
        assert_eq!(project(&v, Strategy::Stages).makespan, 300.0);
    }

    #[test]
    fn a_running_task_with_an_unfinished_dependency_runs_once() {
        // Put in the queue by hand before its dependency ended, and claimed.
        let mut work = vec![w(TaskClass::Script, 100.0, vec![])];
        let mut running = w(TaskClass::Script, 50.0, vec![0]);
        running.running = true;
        work.push(running);
        let mut v = view(1, work);
        v.cards[0].busy_for = 50.0;
        v.cards[0].running = Some(TaskClass::Script);
        // The running one ends at 50, its dependency runs 50-150: once each.
        assert_eq!(project(&v, Strategy::Fixed(0)).makespan, 150.0);
    }
}
