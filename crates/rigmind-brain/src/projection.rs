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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Script,
    Llm,
}

impl Mode {
    fn takes(self, class: TaskClass) -> bool {
        matches!(
            (self, class),
            (_, TaskClass::Cpu) | (Mode::Script, TaskClass::Script) | (Mode::Llm, TaskClass::Llm)
        )
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

/// Sends a card to `to` once it is free after `at`: it is unavailable for the load
/// or unload time.
fn switch(card: &mut SimCard, to: Mode, at: f64, cfg: &RmConfig) {
    card.free_at = card.free_at.max(at)
        + match to {
            Mode::Llm => cfg.load_secs,
            Mode::Script => cfg.unload_secs,
        };
    card.mode = to;
}

/// Turns card `i` to `to` at `t` if the LLM-card bounds (`floor`, `cap`) allow it,
/// keeping the count of LLM cards and noting a move made now. True if it turned.
#[allow(clippy::too_many_arguments)]
fn turn(
    c: &mut SimCard,
    i: usize,
    to: Mode,
    t: f64,
    llm: &mut usize,
    (floor, cap): (usize, usize),
    cfg: &RmConfig,
    now_moves: &mut Vec<(usize, bool)>,
) -> bool {
    let allowed = match to {
        Mode::Llm => c.capable && *llm < cap,
        Mode::Script => *llm > floor,
    };
    if !allowed {
        return false;
    }
    if t == 0.0 {
        now_moves.push((i, to == Mode::Llm));
    }
    match to {
        Mode::Llm => *llm += 1,
        Mode::Script => *llm -= 1,
    }
    switch(c, to, t, cfg);
    true
}

/// Projects the rest of the work under `strategy`.
pub fn project(view: &RigView, strategy: Strategy) -> Projection {
    let cfg = &view.config;
    let n = view.work.len();
    let mut unmet: Vec<usize> = view.work.iter().map(|w| w.deps.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, w) in view.work.iter().enumerate() {
        for &d in &w.deps {
            dependents[d].push(i);
        }
    }
    // Ready tasks by class, oldest (lowest index) first.
    let mut ready: [BTreeSet<usize>; 3] = Default::default();
    let slot = |c: TaskClass| match c {
        TaskClass::Script => 0,
        TaskClass::Llm => 1,
        _ => 2,
    };
    let mut events: BinaryHeap<Reverse<(T, usize)>> = BinaryHeap::new();
    // Concurrency groups: the limit of each task's group (if any), and how many
    // of each group run.
    let limit_of: Vec<Option<(usize, u32)>> = {
        let names: Vec<&String> = cfg.groups.keys().collect();
        view.work
            .iter()
            .map(|w| {
                let g = w.group.as_ref()?;
                let at = names.iter().position(|n| *n == g)?;
                Some((at, cfg.groups[g]))
            })
            .collect()
    };
    let mut in_group = vec![0u32; cfg.groups.len()];
    let mut left = n;
    let mut running = [0usize; 3];
    // Tasks still waiting on dependencies, by class.
    let mut waiting = [0usize; 3];
    for (i, w) in view.work.iter().enumerate() {
        if w.running {
            unmet[i] = 0;
            events.push(Reverse((T(w.left.max(0.0)), i)));
            running[slot(w.class)] += 1;
            if let Some((g, _)) = limit_of[i] {
                in_group[g] += 1;
            }
        } else if unmet[i] == 0 {
            ready[slot(w.class)].insert(i);
        } else {
            waiting[slot(w.class)] += 1;
        }
    }
    let mut cards: Vec<SimCard> = view
        .cards
        .iter()
        .map(|c| {
            let (mode, extra) = match c.mode {
                CardMode::Script => (Mode::Script, 0.0),
                CardMode::Llm => (Mode::Llm, 0.0),
                CardMode::Loading => (Mode::Llm, cfg.load_secs),
                CardMode::Unloading => (Mode::Script, cfg.unload_secs),
            };
            SimCard {
                mode,
                free_at: c.busy_for.max(0.0) + extra,
                capable: c.llm_capable,
            }
        })
        .collect();
    let cap = view.config.max_llm_gpus.map_or(usize::MAX, |m| m as usize);
    let floor = view.config.min_llm_gpus as usize;
    let mut now_moves = Vec::new();
    let bounds = (floor, cap);
    if let Strategy::Fixed(k) | Strategy::Split(k) = strategy {
        let have = cards.iter().filter(|c| c.mode == Mode::Llm).count();
        // Free cards first, then those that free up soonest; ties by position.
        let mut order: Vec<usize> = (0..cards.len()).collect();
        order.sort_by(|a, b| {
            cards[*a]
                .free_at
                .total_cmp(&cards[*b].free_at)
                .then(a.cmp(b))
        });
        if k > have {
            let movers: Vec<usize> = order
                .iter()
                .copied()
                .filter(|i| cards[*i].mode == Mode::Script && cards[*i].capable)
                .take(k - have)
                .collect();
            for i in movers {
                switch(&mut cards[i], Mode::Llm, 0.0, cfg);
                now_moves.push((i, true));
            }
        } else if k < have {
            let movers: Vec<usize> = order
                .iter()
                .copied()
                .filter(|i| cards[*i].mode == Mode::Llm)
                .take(have - k)
                .collect();
            for i in movers {
                switch(&mut cards[i], Mode::Script, 0.0, cfg);
                now_moves.push((i, false));
            }
        }
    }
    let mut t = 0.0f64;
    let mut guard = 0usize;
    while left > 0 {
        guard += 1;
        if guard > 20 * (n + cards.len() + 10) {
            break;
        }
        // Completions due now.
        while let Some(Reverse((T(at), i))) = events.peek().copied() {
            if at > t {
                break;
            }
            events.pop();
            left -= 1;
            running[slot(view.work[i].class)] -= 1;
            if let Some((g, _)) = limit_of[i] {
                in_group[g] -= 1;
            }
            for &d in &dependents[i] {
                unmet[d] = unmet[d].saturating_sub(1);
                if unmet[d] == 0 && !view.work[d].running {
                    ready[slot(view.work[d].class)].insert(d);
                    let w = &mut waiting[slot(view.work[d].class)];
                    *w = w.saturating_sub(1);
                }
            }
        }
        if left == 0 {
            break;
        }
        // Phase changes.
        let llm_cards = cards.iter().filter(|c| c.mode == Mode::Llm).count();
        match strategy {
            Strategy::Fixed(_) | Strategy::Split(_) => {}
            Strategy::Phases => {
                let phase = if llm_cards > 0 {
                    Mode::Llm
                } else {
                    Mode::Script
                };
                let (s, o) = (phase.slot(), phase.other().slot());
                let drained = ready[s].is_empty() && running[s] == 0;
                if drained && !ready[o].is_empty() {
                    let to = phase.other();
                    let mut llm = llm_cards;
                    for (i, c) in cards.iter_mut().enumerate() {
                        if c.mode != to {
                            turn(c, i, to, t, &mut llm, bounds, cfg, &mut now_moves);
                        }
                    }
                }
            }
            Strategy::Stages | Strategy::OnDemand => {}
        }
        // Free cards take work.
        for c in cards.iter_mut() {
            if c.free_at > t {
                continue;
            }
            let own = c.mode.slot();
            let open = |i: &usize| limit_of[*i].is_none_or(|(g, l)| in_group[g] < l);
            // As a worker claims: its own kind first, cpu work after (card::tier).
            let pick = ready[own]
                .iter()
                .find(|i| open(i))
                .or_else(|| ready[2].iter().find(|i| open(i)))
                .copied();
            let Some(i) = pick else { continue };
            if let Some((g, _)) = limit_of[i] {
                in_group[g] += 1;
            }
            debug_assert!(c.mode.takes(view.work[i].class));
            ready[slot(view.work[i].class)].remove(&i);
            running[slot(view.work[i].class)] += 1;
            let end = t + view.work[i].secs.max(0.0);
            c.free_at = end;
            events.push(Reverse((T(end), i)));
        }
        // Stages, on demand: a card left idle with nothing of its kind ready turns.
        if matches!(
            strategy,
            Strategy::Stages | Strategy::OnDemand | Strategy::Split(_)
        ) {
            let mut llm = cards.iter().filter(|c| c.mode == Mode::Llm).count();
            let open = |i: &usize| limit_of[*i].is_none_or(|(g, l)| in_group[g] < l);
            let mut turned = [0usize; 2];
            for (i, c) in cards.iter_mut().enumerate() {
                if c.free_at > t {
                    continue;
                }
                let (s, o) = (c.mode.slot(), c.mode.other().slot());
                if ready[s].iter().any(open) || ready[2].iter().any(open) {
                    continue;
                }
                let other_has = if matches!(strategy, Strategy::OnDemand | Strategy::Split(_)) {
                    ready[o].iter().filter(|i| open(i)).count() > turned[o]
                } else {
                    !ready[o].is_empty() || running[o] > 0 || waiting[o] > 0
                };
                if other_has
                    && turn(
                        c,
                        i,
                        c.mode.other(),
                        t,
                        &mut llm,
                        bounds,
                        cfg,
                        &mut now_moves,
                    )
                {
                    turned[o] += 1;
                }
            }
        }
        // Next moment something happens.
        let next_event = events.peek().map(|Reverse((T(at), _))| *at);
        let next_free = cards
            .iter()
            .map(|c| c.free_at)
            .filter(|f| *f > t)
            .fold(f64::INFINITY, f64::min);
        let next = next_event.unwrap_or(f64::INFINITY).min(next_free);
        if !next.is_finite() {
            // Nothing runs and nothing will: the strategy cannot finish.
            return Projection {
                makespan: f64::INFINITY,
                now: now_moves,
            };
        }
        t = next;
    }
    let makespan = if left == 0 { t } else { f64::INFINITY };
    Projection {
        makespan,
        now: now_moves,
    }
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
                })
                .collect(),
            work,
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
