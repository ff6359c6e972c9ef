//! A quick projection of the rest of a batch under a plan for the cards: the
//! `adaptive` resource manager's look-ahead.
//!
//! [`project`] list-schedules the unfinished DAG of a [`RigView`] on its cards in
//! virtual time — each free card takes the oldest ready work its state allows (cpu on
//! any card), a card that changes state is unavailable for the load or unload time —
//! under one [`Strategy`], and returns the projected end and the state changes the
//! strategy makes right now. It is a model, not the simulator: it has no queue files,
//! no claim lock and no brain rounds, only the DAG, the estimates and the cards.
//!
//! The DAG comes in groups of identical items ([`crate::resources::Work`]), and a
//! free card takes a *chunk* of its group's ready items, run back to back: the
//! class's ready items over `CHUNKS_PER_CARD` per able card, at most the card's share
//! of the group, at least one ([`Run::chunk`]: guided self-scheduling). A batch of a
//! few hundred tasks gets chunks of one, task by task as a list schedule would;
//! a group of 33,333 items on five cards takes about 600 chunks. It is
//! deterministic and costs O((chunks + groups + group edges) · log groups) per
//! strategy (`progress` holds the DAG's side).

mod follow;
mod models;
mod progress;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rigmind_types::TaskClass;

use crate::view::{CardMode, RigView, RmConfig, RmPolicy};
pub use follow::{projection_of, strategy_of};
use models::{unload_rank, Models};
use progress::Progress;

/// A chunk is at most the class's ready items over this many per able card (and
/// at most a card's share of its group, [`Run::chunk`]): large enough that small
/// batches are projected task by task (a chunk of one), small enough that the last
/// chunks are short and balance the cards' ends.
pub const CHUNKS_PER_CARD: usize = 16;

/// How long the projection keeps a card a failed resource task left alone out of
/// its moves: long enough not to be a move made now.
const COOLING_SECS: f64 = 1.0;

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
    /// Seconds from now until each batch's last task ends, by the works' `batch`
    /// (0 for a batch with no work; infinite: it never does).
    pub batch_ends: Vec<f64>,
    /// Cards (indices into the view's cards) the strategy moves now, and whether to
    /// the LLM state (`true`) or to the script state.
    pub now: Vec<(usize, bool)>,
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
    /// Its task has run past its estimate ([`crate::view::Card::overdue`]).
    overdue: bool,
    /// The model it holds or loads in the LLM state (an index into
    /// [`Models::names`]; `None`: none, or one no work needs).
    model: Option<usize>,
    /// When its last change of state began (negative: before the projection's now).
    since: f64,
    /// A resource task for it failed a moment ago ([`crate::view::Card::cooling_down`]):
    /// the live policy leaves it alone now, so the projection moves it no sooner.
    cooling: bool,
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
    card.since = card.free_at.max(at);
    card.free_at = card.since
        + match to {
            Mode::Llm => card.load_secs,
            Mode::Script => cfg.unload_secs,
        };
    card.mode = to;
    card.arriving = true;
}

/// Concurrency groups: the group (its index among the configured ones) and limit
/// of each work, if it has one.
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
fn sim_cards(view: &RigView, models: &Models<'_>) -> Vec<SimCard> {
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
                // A card a failed resource task left alone is not moved now, but is
                // not lost to the projection either: busy for a moment.
                free_at: (c.busy_for.max(0.0) + extra).max(if c.cooling_down {
                    COOLING_SECS
                } else {
                    0.0
                }),
                capable: c.llm_capable,
                arriving: c.mode != CardMode::Script && c.mode != CardMode::Llm,
                load_secs: c.load_secs,
                overdue: c.overdue,
                model: match mode {
                    Mode::Llm => models.index(c.model.as_deref(), &cfg.model),
                    Mode::Script => None,
                },
                since: -c.in_mode_secs,
                cooling: c.cooling_down,
            }
        })
        .collect()
}

/// One projection in progress: the DAG's progress, the cards, the clock's events.
struct Run<'v> {
    view: &'v RigView,
    cfg: &'v RmConfig,
    dag: Progress<'v>,
    /// Ends of running chunks, earliest first: (end, group, items).
    events: BinaryHeap<Reverse<(T, usize, usize)>>,
    /// Each work's concurrency group and its limit, and how many of each group run.
    limit_of: Vec<Option<(usize, u32)>>,
    in_group: Vec<u32>,
    cards: Vec<SimCard>,
    /// The least and the most LLM cards allowed.
    bounds: (usize, usize),
    /// Cards the strategy moves now, and whether to the LLM state.
    now_moves: Vec<(usize, bool)>,
    /// When each batch's last item ended so far.
    batch_ends: Vec<f64>,
    /// The work's models and the cards that fit them.
    models: Models<'v>,
}

impl<'v> Run<'v> {
    /// The start: running jobs end after what they have left, items without
    /// unfinished dependencies are ready, the rest wait.
    fn new(view: &'v RigView) -> Self {
        let cap = view.config.max_llm_gpus.map_or(usize::MAX, |m| m as usize);
        let floor = view.config.min_llm_gpus as usize;
        let batches = view.work.iter().map(|w| w.batch + 1).max().unwrap_or(0);
        let models = Models::of(view);
        let mut run = Run {
            view,
            cfg: &view.config,
            dag: Progress::new(view, models.of_work.clone(), models.names.len()),
            events: BinaryHeap::new(),
            limit_of: group_limits(view),
            in_group: vec![0u32; view.config.groups.len()],
            cards: sim_cards(view, &models),
            bounds: (floor, cap),
            now_moves: Vec::new(),
            batch_ends: vec![0.0; batches],
            models,
        };
        for (g, w) in view.work.iter().enumerate() {
            if w.running {
                run.events.push(Reverse((T(w.left.max(0.0)), g, w.items)));
                run.dag.start_running(g);
                if let Some((k, _)) = run.limit_of[g] {
                    run.in_group[k] += 1;
                }
            }
        }
        run
    }

    /// How many cards are in the LLM state.
    fn llm_cards(&self) -> usize {
        self.cards.iter().filter(|c| c.mode == Mode::Llm).count()
    }

    /// Whether work `i`'s concurrency group has room for one more chunk.
    fn open(&self, i: usize) -> bool {
        self.limit_of[i].is_none_or(|(g, l)| self.in_group[g] < l)
    }

    /// `Fixed(k)` and `Split(k)` start by moving cards now until `k` hold a model,
    /// each load as the live model step gives it its model and card
    /// ([`Run::best_model`], [`Run::card_for`]); an unload frees first the cards
    /// whose model loses least ([`models::unload_rank`]: nothing of it ready, then
    /// held by another card too, the only copy of a model with ready work last),
    /// then those that free up soonest, ties by position. Not moved now: a card
    /// already changing state, one a failed resource task left alone, and one
    /// whose task has run past its estimate (its end is a guess, and a change
    /// queued behind a heavy-tailed task waits as long as it runs).
    ///
    /// Later (`t > 0`), `Fixed(k)` loads cards free at `t` again, each with a model
    /// whose work is ready, up to `k`, as later live rounds would: under the
    /// `static` policy whenever fewer than `k` cards are in the LLM state (what
    /// `static` does each round), under the others only when none is (the only
    /// card was skipped now, or the model step freed the last one when its model's
    /// work ended), since a later `adaptive` round chooses afresh. Without it, a
    /// second model's work released behind a barrier never ran in the projection.
    /// Only from none for `adaptive`: a top-up whenever fewer than `k` are loaded
    /// kept duplicates of a model loaded, and over noise seeds 1–12 two-models went
    /// from 1.142 to 1.155 of the bound.
    fn fix_llm_cards(&mut self, k: usize, t: f64) {
        let have = self.llm_cards();
        if t > 0.0 {
            let tops_up = matches!(self.cfg.policy, RmPolicy::Static { .. }) || have == 0;
            if k <= have || !tops_up || self.dag.none_ready(Mode::Llm.slot()) {
                return;
            }
        }
        let cards = &self.cards;
        let mut order: Vec<usize> = (0..cards.len()).collect();
        order.sort_by(|a, b| {
            cards[*a]
                .free_at
                .total_cmp(&cards[*b].free_at)
                .then(a.cmp(b))
        });
        if k > have {
            let mut movable: Vec<usize> = order
                .into_iter()
                .filter(|&i| {
                    let c = &self.cards[i];
                    let now_ok = !c.arriving && !c.overdue && !c.cooling;
                    let later_ok = c.free_at <= t;
                    c.mode == Mode::Script && c.capable && if t == 0.0 { now_ok } else { later_ok }
                })
                .collect();
            for _ in have..k {
                let fits = &self.models.fits;
                let ready = |m: usize| t == 0.0 || self.dag.model_work(m).ready_n > 0;
                let Some(m) = self.best_model(|m| ready(m) && movable.iter().any(|&i| fits[i][m]))
                else {
                    break;
                };
                let Some(i) = self.card_for(m, &movable, t) else {
                    break;
                };
                movable.retain(|&c| c != i);
                switch(&mut self.cards[i], Mode::Llm, t, self.cfg);
                self.cards[i].model = Some(m);
                if t == 0.0 {
                    self.now_moves.push((i, true));
                }
            }
        } else if k < have {
            let mut movers: Vec<usize> = order
                .iter()
                .copied()
                .filter(|i| {
                    let c = &cards[*i];
                    c.mode == Mode::Llm && !c.arriving && !c.overdue && !c.cooling
                })
                .collect();
            // One at a time: each card freed leaves its model one holder fewer,
            // which may make another card its only copy. Of equal ranks, the
            // first in `order` (the soonest free).
            let mut needs = self.needs();
            for _ in k..have {
                let rank = |i: usize| self.cards[i].model.map_or(0, |m| unload_rank(&needs[m]));
                let Some(at) = (0..movers.len()).min_by_key(|&x| (rank(movers[x]), x)) else {
                    break;
                };
                let i = movers.remove(at);
                if let Some(m) = self.cards[i].model {
                    needs[m].held -= 1;
                }
                switch(&mut self.cards[i], Mode::Script, 0.0, self.cfg);
                self.cards[i].model = None;
                self.now_moves.push((i, false));
            }
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
        // Now, a card a failed resource task left alone stays so, and a card whose
        // task ran past its estimate is not given a change to queue behind it.
        let c = &self.cards[i];
        if !allowed || (t == 0.0 && (c.cooling || c.overdue)) {
            return false;
        }
        let model = match to {
            Mode::Llm => match self.model_for(i) {
                Some(m) => Some(m),
                None => return false,
            },
            Mode::Script => None,
        };
        if t == 0.0 {
            self.now_moves.push((i, to == Mode::Llm));
        }
        match to {
            Mode::Llm => *llm += 1,
            Mode::Script => *llm -= 1,
        }
        switch(&mut self.cards[i], to, t, self.cfg);
        self.cards[i].model = model;
        true
    }

    /// Ends the chunks due by `t` and readies what waited only on them.
    fn complete_due(&mut self, t: f64) {
        while let Some(Reverse((T(at), g, items))) = self.events.peek().copied() {
            if at > t {
                break;
            }
            self.events.pop();
            self.dag.end(g, items);
            if let Some((k, _)) = self.limit_of[g] {
                self.in_group[k] -= 1;
            }
            let b = self.view.work[g].batch;
            self.batch_ends[b] = self.batch_ends[b].max(at);
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
        let drained = self.dag.none_ready(s) && self.dag.running[s] == 0;
        if drained && !self.dag.none_ready(o) {
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
    /// after (card::tier); a chunk of the group's ready items, run back to back.
    fn take_work(&mut self, t: f64) {
        for card in 0..self.cards.len() {
            if self.cards[card].free_at > t {
                continue;
            }
            let c = &self.cards[card];
            let pick = self
                .dag
                .ready_of(c.mode.slot(), c.model)
                .find(|&g| self.open(g))
                .or_else(|| self.dag.ready_groups(2).find(|&g| self.open(g)));
            let Some(g) = pick else { continue };
            if let Some((k, _)) = self.limit_of[g] {
                self.in_group[k] += 1;
            }
            let w = &self.view.work[g];
            debug_assert!(self.cards[card].mode.takes(w.class));
            let items = self.chunk(g);
            self.dag.take(g, items);
            let end = t + items as f64 * w.secs.max(0.0);
            self.cards[card].free_at = end;
            self.cards[card].arriving = false;
            self.events.push(Reverse((T(end), g, items)));
        }
    }

    /// How many ready items of work `g` a card takes at once: the items of its
    /// class ready in all groups over [`CHUNKS_PER_CARD`] per card able to take
    /// them, but no more than the card's share of the group, at least one.
    ///
    /// Counted over the class, not the group: 300 chains side by side, each
    /// with a group of a hundred items ready, are as much work as one group of
    /// 30,000, and chunks of one or two items made the two-model round at 100,000
    /// tasks spend most of its time on chunk events. The share keeps the cards
    /// on the group the claim order gives them together, as workers are.
    fn chunk(&self, g: usize) -> usize {
        let class = self.view.work[g].class;
        let able = self
            .cards
            .iter()
            .filter(|c| c.mode.takes(class))
            .count()
            .max(1);
        let of_class = self.dag.ready_total[progress::class_slot(class)];
        let share = self.dag.ready_items(g) / able;
        share.min(of_class / (able * CHUNKS_PER_CARD)).max(1)
    }

    /// Whether more items than `than` of slot `slot` are ready in open groups.
    fn ready_beyond(&self, slot: usize, than: usize) -> bool {
        let mut n = 0usize;
        for g in self.dag.ready_groups(slot) {
            if self.open(g) {
                n += self.dag.ready_items(g);
                if n > than {
                    return true;
                }
            }
        }
        false
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
            if self
                .dag
                .ready_of(s, self.cards[i].model)
                .any(|g| self.open(g))
                || self.dag.ready_groups(2).any(|g| self.open(g))
            {
                continue;
            }
            let other_has = if matches!(strategy, Strategy::OnDemand | Strategy::Split(_)) {
                self.ready_beyond(o, turned[o])
            } else {
                !self.dag.none_ready(o) || self.dag.running[o] > 0 || self.dag.waiting[o] > 0
            };
            if other_has && self.turn(i, mode.other(), t, &mut llm) {
                turned[o] += 1;
            }
        }
    }

    /// The next moment something happens after `t` (infinite: nothing will).
    fn next_moment(&self, t: f64) -> f64 {
        let next_event = self.events.peek().map(|Reverse((T(at), _, _))| *at);
        let next_free = self
            .cards
            .iter()
            .map(|c| c.free_at)
            .filter(|f| *f > t)
            .fold(f64::INFINITY, f64::min);
        next_event.unwrap_or(f64::INFINITY).min(next_free)
    }
}

/// Projects the rest of the work under `strategy`.
pub fn project(view: &RigView, strategy: Strategy) -> Projection {
    let mut run = Run::new(view);
    if let Strategy::Fixed(k) | Strategy::Split(k) = strategy {
        run.fix_llm_cards(k, 0.0);
    }
    let mut t = 0.0f64;
    let mut guard = 0usize;
    let items: usize = run.dag.left;
    while run.dag.left > 0 {
        guard += 1;
        if guard > 20 * (items + view.work.len() + run.cards.len() + 10) {
            break;
        }
        run.complete_due(t);
        if run.dag.left == 0 {
            break;
        }
        if strategy == Strategy::Phases {
            run.phase_turn(t);
        }
        run.model_switches(t);
        if let (Strategy::Fixed(k), true) = (strategy, t > 0.0) {
            run.fix_llm_cards(k, t);
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
            return run.finish(f64::INFINITY);
        }
        t = next;
    }
    let makespan = if run.dag.left == 0 { t } else { f64::INFINITY };
    run.finish(makespan)
}

impl Run<'_> {
    /// The projection found: a batch with items not ended never ends.
    fn finish(mut self, makespan: f64) -> Projection {
        for (g, w) in self.view.work.iter().enumerate() {
            if self.dag.unended(g) {
                self.batch_ends[w.batch] = f64::INFINITY;
            }
        }
        Projection {
            makespan,
            batch_ends: self.batch_ends,
            now: self.now_moves,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testkit::{card, cfg};
    use crate::view::{Card, Dep, RmConfig, Work};

    /// `cards` bare script cards, each loading in `load` s, unloading in `unload` s.
    pub(super) fn rig(cards: usize, work: Vec<Work>, load: f64, unload: f64) -> RigView {
        RigView {
            config: RmConfig {
                load_secs: load,
                unload_secs: unload,
                ..cfg(RmPolicy::Adaptive)
            },
            cards: (0..cards)
                .map(|i| Card {
                    in_mode_secs: 1e9,
                    load_secs: load,
                    ..card(&format!("w{i}"), CardMode::Script)
                })
                .collect(),
            work,
            estimates: Default::default(),
            estimate_error: 0.0,
        }
    }

    fn view(cards: usize, work: Vec<Work>) -> RigView {
        rig(cards, work, 100.0, 10.0)
    }

    fn w(class: TaskClass, secs: f64, deps: Vec<usize>) -> Work {
        let mut w = Work::one(class, secs);
        w.deps = deps.into_iter().map(Dep::all).collect();
        w
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

    #[test]
    fn ready_work_is_taken_in_claim_order_not_in_the_order_of_the_view() {
        // One card, two ready 10 s jobs of two batches: the one the workers would
        // claim first (its file name sorts first) runs first, though listed second.
        let mut work = vec![
            Work::one(TaskClass::Script, 10.0),
            Work::one(TaskClass::Script, 10.0),
        ];
        work[0].claim = (5, 7);
        work[1].claim = (5, 3);
        work[1].batch = 1;
        let p = project(&view(1, work), Strategy::Fixed(0));
        assert_eq!(p.batch_ends, vec![20.0, 10.0]);
    }

    #[test]
    fn a_loaded_card_runs_only_its_own_models_work() {
        // The card holds model `a`; ten 5 s jobs need `m`. It is freed (10 s, the
        // model step's move, not the strategy's), loaded with `m` (100 s), then
        // runs them: model-blind, the projection had it run them at once (50 s).
        let mut v = view(1, (0..10).map(|_| w(TaskClass::Llm, 5.0, vec![])).collect());
        v.cards[0].mode = CardMode::Llm;
        v.cards[0].model = Some("a".into());
        let p = project(&v, Strategy::OnDemand);
        assert_eq!(p.makespan, 10.0 + 100.0 + 50.0);
        assert!(p.now.is_empty(), "{:?}", p.now);
    }

    #[test]
    fn a_load_goes_to_a_card_that_fits_the_model_waiting() {
        // The 14B's work waits; the first card (6 GB) cannot hold it, the second
        // (24 GB) can: the load goes there, as the live model step would move it.
        let mut work: Vec<Work> = (0..4).map(|_| w(TaskClass::Llm, 30.0, vec![])).collect();
        for x in &mut work {
            x.model = Some("qwen2.5:14b".into());
        }
        let mut v = view(2, work);
        v.config.models.vram_mb.insert("qwen2.5:14b".into(), 10_500);
        v.config.models.margin_mb = 512;
        v.cards[0].vram_mb = Some(6144);
        v.cards[1].vram_mb = Some(24_576);
        let p = project(&v, Strategy::Fixed(1));
        assert_eq!(p.now, vec![(1, true)]);
        assert_eq!(p.makespan, 100.0 + 4.0 * 30.0);
    }

    #[test]
    fn a_card_whose_task_ran_past_its_estimate_is_not_given_a_load() {
        // Card 0 is expected to free first, but only because its task is overdue
        // (its end is a guess): the load goes to card 1, busy for a known 50 s.
        let mut work = vec![w(TaskClass::Llm, 30.0, vec![])];
        work[0].model = Some("m".into());
        let mut v = view(2, work);
        for (c, busy) in v.cards.iter_mut().zip([1.0, 50.0]) {
            c.running = Some(TaskClass::Script);
            c.busy_for = busy;
        }
        v.cards[0].overdue = true;
        assert_eq!(project(&v, Strategy::Fixed(1)).now, vec![(1, true)]);
        v.cards[0].overdue = false;
        assert_eq!(project(&v, Strategy::Fixed(1)).now, vec![(0, true)]);
    }

    #[test]
    fn fixed_loads_a_card_skipped_now_once_it_frees() {
        // The only card runs an overdue script (1 s left by its estimate): no load
        // is queued behind it now, but once it frees it loads (100 s) and runs the
        // llm job (30 s). Before, the projection never loaded it: never finished.
        let mut work = vec![w(TaskClass::Llm, 30.0, vec![])];
        work[0].model = Some("m".into());
        let mut v = view(1, work);
        v.cards[0].running = Some(TaskClass::Script);
        v.cards[0].busy_for = 1.0;
        v.cards[0].overdue = true;
        let p = project(&v, Strategy::Fixed(1));
        assert!(p.now.is_empty(), "{:?}", p.now);
        assert_eq!(p.makespan, 1.0 + 100.0 + 30.0);
    }

    #[test]
    fn a_reload_later_goes_to_the_smallest_card_free_then() {
        // Card 2 (6 GB) holds `a`, whose last job ends at 15 s; `b`'s job waits on
        // it. Card 0 (24 GB, slow to load) has been idle from the start, card 1
        // (6 GB) frees at 15 s too: `b` goes to card 1, the smallest free at 15 s
        // (an idle-from-the-start card used to count as "free" before any other).
        let mut a = w(TaskClass::Llm, 15.0, vec![]);
        a.model = Some("a".into());
        a.running = true;
        a.left = 15.0;
        let mut script = w(TaskClass::Script, 15.0, vec![]);
        script.running = true;
        script.left = 15.0;
        let mut b = w(TaskClass::Llm, 10.0, vec![0]);
        b.model = Some("b".into());
        let mut v = view(3, vec![a, script, b]);
        v.config.models.vram_mb.insert("b".into(), 4000);
        v.config.models.margin_mb = 512;
        for (c, mb) in v.cards.iter_mut().zip([24_576, 6144, 6144]) {
            c.vram_mb = Some(mb);
        }
        v.cards[0].load_secs = 200.0;
        (v.cards[1].running, v.cards[1].busy_for) = (Some(TaskClass::Script), 15.0);
        v.cards[2].mode = CardMode::Llm;
        v.cards[2].model = Some("a".into());
        (v.cards[2].running, v.cards[2].busy_for) = (Some(TaskClass::Llm), 15.0);
        let p = project(&v, Strategy::Fixed(1));
        assert!(p.now.is_empty(), "{:?}", p.now);
        assert_eq!(p.makespan, 15.0 + 100.0 + 10.0);
    }

    #[test]
    fn under_static_a_card_skipped_now_is_loaded_once_it_frees() {
        // Fixed(2), four 100 s llm jobs; card 1's script ran past its estimate, so
        // only card 0 loads now. Under `static`, whose every round tops up to its
        // count, card 1 loads once it frees (1 s) and the jobs run on both: 301 s.
        // Under `adaptive`, a later round chooses afresh: the projection reloads
        // only when no card is loaded, and card 0 runs all four: 500 s.
        let work: Vec<Work> = (0..4).map(|_| w(TaskClass::Llm, 100.0, vec![])).collect();
        let mut v = view(2, work);
        (v.cards[1].running, v.cards[1].busy_for) = (Some(TaskClass::Script), 1.0);
        v.cards[1].overdue = true;
        let adaptive = project(&v, Strategy::Fixed(2));
        assert_eq!((adaptive.makespan, adaptive.now), (500.0, vec![(0, true)]));
        v.config.policy = RmPolicy::Static { llm_cards: 2 };
        let fixed = project(&v, Strategy::Fixed(2));
        assert_eq!((fixed.makespan, fixed.now), (301.0, vec![(0, true)]));
    }

    #[test]
    fn under_static_the_model_step_loads_no_card_past_the_count() {
        // Card 0 holds `a` (two 10 s jobs ready), `b`'s job waits with no holder,
        // card 1 is bare. The model step loads `b` on card 1 (100 s) where the
        // policy allows two loaded cards; under `static` with one it loads none
        // (as live) until `a`'s work is done at 20 s: card 0 unloads, which leaves
        // no card loaded, and `Fixed(1)` loads card 1, free then: 20 + 100 + 10.
        let mut work: Vec<Work> = (0..3).map(|_| w(TaskClass::Llm, 10.0, vec![])).collect();
        for (x, m) in work.iter_mut().zip(["a", "a", "b"]) {
            x.model = Some(m.into());
        }
        let mut v = view(2, work);
        v.cards[0].mode = CardMode::Llm;
        v.cards[0].model = Some("a".into());
        assert_eq!(project(&v, Strategy::Fixed(1)).makespan, 110.0);
        v.config.policy = RmPolicy::Static { llm_cards: 1 };
        assert_eq!(project(&v, Strategy::Fixed(1)).makespan, 130.0);
    }

    #[test]
    fn an_unload_frees_a_card_whose_model_another_card_holds() {
        // Card 0 holds `a` and frees first; cards 1 and 2 hold `b`. Work of both
        // models is ready. Going from three loaded cards to two frees a `b` card:
        // freeing card 0 (the soonest free, the rule before) starved `a`, and the
        // model step then loads `a` elsewhere, a move at the price of a load. Seen
        // in two-models (noisy, seed 7): the only 7B card freed, a 14B card
        // switched to the 7B, and the freed card loaded the 7B again 10 s later.
        let mut work: Vec<Work> = (0..6).map(|_| w(TaskClass::Llm, 60.0, vec![])).collect();
        for (x, m) in work.iter_mut().zip(["a", "a", "b", "b", "b", "b"]) {
            x.model = Some(m.into());
        }
        work.extend((0..4).map(|_| w(TaskClass::Script, 60.0, vec![])));
        let mut v = view(3, work);
        for (i, m) in ["a", "b", "b"].into_iter().enumerate() {
            v.cards[i].mode = CardMode::Llm;
            v.cards[i].model = Some(m.into());
            (v.cards[i].running, v.cards[i].busy_for) =
                (Some(TaskClass::Llm), 10.0 * (i + 1) as f64);
        }
        let p = project(&v, Strategy::Fixed(2));
        assert_eq!(p.now, vec![(1, false)]);
        // Down to one card: the second `b` card is then the only copy too, and
        // the soonest free of the two only copies goes.
        let p = project(&v, Strategy::Fixed(1));
        assert_eq!(p.now, vec![(1, false), (0, false)]);
        // With `a`'s work waiting on a script job (not ready), card 0 goes first
        // although it frees last now.
        for (i, c) in v.cards.iter_mut().enumerate() {
            c.busy_for = 30.0 - 10.0 * i as f64;
        }
        v.work.push(w(TaskClass::Script, 60.0, vec![]));
        let gate = v.work.len() - 1;
        for x in &mut v.work[..2] {
            x.deps = vec![Dep::all(gate)];
        }
        let p = project(&v, Strategy::Fixed(2));
        assert_eq!(p.now, vec![(0, false)]);
    }

    #[test]
    fn fixed_reloads_for_a_second_model_behind_a_barrier() {
        // The card holds `a`: two 10 s jobs of `a`, a barrier, two of `b`. Once
        // `a`'s work ends the model step frees the card (unload 10 s); `Fixed(1)`
        // then loads `b` (100 s), which runs its two jobs. Before, nothing loaded
        // a bare card again: never finished.
        let mut work = vec![
            w(TaskClass::Llm, 10.0, vec![]),
            w(TaskClass::Llm, 10.0, vec![]),
        ];
        work.push(w(TaskClass::Cpu, 0.0, vec![0, 1]));
        work.extend((0..2).map(|_| w(TaskClass::Llm, 10.0, vec![2])));
        for (x, m) in work.iter_mut().zip(["a", "a", "", "b", "b"]) {
            x.model = (!m.is_empty()).then(|| m.to_string());
        }
        let mut v = view(1, work);
        v.cards[0].mode = CardMode::Llm;
        v.cards[0].model = Some("a".into());
        let p = project(&v, Strategy::Fixed(1));
        assert!(p.now.is_empty(), "{:?}", p.now);
        assert_eq!(p.makespan, 20.0 + 10.0 + 100.0 + 20.0);
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;
    use crate::view::{Dep, Work};

    fn view(cards: usize, work: Vec<Work>) -> RigView {
        super::tests::rig(cards, work, 30.0, 5.0)
    }

    /// `n` script items of 10 s → `n` llm items of 7 s, each on its own script
    /// item → one cpu report on all: as groups, and as one work per job.
    fn stages(n: usize) -> (Vec<Work>, Vec<Work>) {
        let one = |class, secs| Work::one(class, secs);
        let mut grouped = vec![
            Work {
                items: n,
                ..one(TaskClass::Script, 10.0)
            },
            Work {
                items: n,
                ..one(TaskClass::Llm, 7.0)
            },
            one(TaskClass::Cpu, 1.0),
        ];
        grouped[1].deps = vec![Dep {
            on: 0,
            each: Some(n),
        }];
        grouped[2].deps = vec![Dep::all(1)];
        let mut jobs: Vec<Work> = (0..n).map(|_| one(TaskClass::Script, 10.0)).collect();
        for i in 0..n {
            jobs.push(Work {
                deps: vec![Dep::all(i)],
                ..one(TaskClass::Llm, 7.0)
            });
        }
        jobs.push(Work {
            deps: (n..2 * n).map(Dep::all).collect(),
            ..one(TaskClass::Cpu, 1.0)
        });
        (grouped, jobs)
    }

    #[test]
    fn a_small_group_projects_exactly_as_its_jobs_one_by_one() {
        let (grouped, jobs) = stages(23);
        for s in [
            Strategy::Fixed(1),
            Strategy::Split(2),
            Strategy::Phases,
            Strategy::Stages,
            Strategy::OnDemand,
        ] {
            let (g, j) = (
                project(&view(3, grouped.clone()), s),
                project(&view(3, jobs.clone()), s),
            );
            assert_eq!(g, j, "{s:?}");
            assert!(g.makespan.is_finite(), "{s:?}");
        }
    }

    #[test]
    fn chunks_are_sized_by_the_work_of_the_class_not_of_the_group() {
        // One group of 111 script items on 3 cards: chunks of 111 / 48 = 2. Three
        // hundred such groups side by side are 33,300 items: the first chunk is a
        // card's share of its group (37), not 2 (the 100,000-task two-model round spent
        // most of its time on chunk events; the share shrinks as the group
        // drains); the cards still end together.
        let group = || Work {
            items: 111,
            ..Work::one(TaskClass::Script, 1.0)
        };
        let one = view(3, vec![group()]);
        assert_eq!(Run::new(&one).chunk(0), 2);
        let many = view(3, (0..300).map(|_| group()).collect());
        assert_eq!(Run::new(&many).chunk(0), 37);
        assert_eq!(
            project(&many, Strategy::Fixed(0)).makespan,
            300.0 * 111.0 / 3.0
        );
    }

    #[test]
    fn a_big_group_runs_in_chunks_and_ends_on_time() {
        // 30,000 script items of 1 s, then as many of 1 s each on its own: 60,000 s
        // of work on 3 script cards, none idle, ends at 20,000 s (+ the report).
        let mut big = vec![
            Work {
                items: 30_000,
                ..Work::one(TaskClass::Script, 1.0)
            },
            Work {
                items: 30_000,
                ..Work::one(TaskClass::Script, 1.0)
            },
            Work::one(TaskClass::Cpu, 1.0),
        ];
        big[1].deps = vec![Dep {
            on: 0,
            each: Some(30_000),
        }];
        big[2].deps = vec![Dep::all(1)];
        big[2].batch = 1;
        let p = project(&view(3, big), Strategy::Fixed(0));
        assert_eq!(p.makespan, 20_001.0);
        assert_eq!(p.batch_ends, vec![20_000.0, 20_001.0]);
    }
}
