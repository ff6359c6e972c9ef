//! Which model each card of a projection holds: a loaded card runs only its own
//! model's llm work, a card the projection loads takes the model the live model
//! step would give it, and the model step's switches happen in the projection
//! as they would live ([`crate::resources`]' `models` module: a card whose model
//! has nothing ready moves to a model no card holds; a bare card is loaded for
//! such a model while the rig runs llm work; a card whose model has no work left
//! is freed).
//!
//! Without this the look-ahead counted cards, not models: a card loading the 14B
//! was projected to run the 7B's work too, so it saw no cost in loading the wrong
//! model or too few cards of the right one.

use super::progress::ModelWork;
use super::{Mode, Run};
use crate::view::llm_card_limit;

/// The llm models of a projection's work and which cards fit each.
pub(super) struct Models<'v> {
    /// The models the work needs (canonical names), sorted.
    pub(super) names: Vec<&'v str>,
    /// Each work's model (an index into `names`; `None` for work that is not llm).
    pub(super) of_work: Vec<Option<usize>>,
    /// Whether each card (by position) fits each model.
    pub(super) fits: Vec<Vec<bool>>,
    /// The rig's default model's index, if the work needs it.
    default: Option<usize>,
}

impl<'v> Models<'v> {
    /// The models of `view`'s llm work, and which of its cards fit each.
    pub(super) fn of(view: &'v crate::view::RigView) -> Self {
        let model = |w: &'v crate::view::Work| {
            (w.class == rigmind_types::TaskClass::Llm)
                .then(|| w.model.as_deref().unwrap_or(&view.config.model))
        };
        // Sorted, so that ties between models break by name as the live step's do.
        let mut names: Vec<&'v str> = view.work.iter().filter_map(model).collect();
        names.sort_unstable();
        names.dedup();
        let of_work = view
            .work
            .iter()
            .map(|w| model(w).and_then(|m| names.binary_search(&m).ok()))
            .collect();
        let fits = view
            .cards
            .iter()
            .map(|c| {
                names
                    .iter()
                    .map(|m| view.config.models.fits(c.vram_mb, m))
                    .collect()
            })
            .collect();
        let default = names.iter().position(|n| *n == view.config.model);
        Self {
            names,
            of_work,
            fits,
            default,
        }
    }

    /// The index of `model` among the work's models (`None`: no work needs it).
    pub(super) fn index(&self, model: Option<&str>, default: &str) -> Option<usize> {
        self.names.binary_search(&model.unwrap_or(default)).ok()
    }
}

/// Which of the loaded cards an unload frees first, by what its model loses: a
/// model with nothing ready (0), one another card also holds (1), the only copy
/// of a model whose work is ready (2). Freeing the last copy while its work is
/// ready starves that model, and the model step then loads it elsewhere at once:
/// the unload becomes a move of the model at the price of a load.
pub(super) fn unload_rank(need: &Need) -> u8 {
    if need.work.ready_n == 0 {
        0
    } else if need.held > 1 {
        1
    } else {
        2
    }
}

/// What a model's llm work amounts to at one moment of a projection.
#[derive(Default, Clone, Copy)]
pub(super) struct Need {
    /// Its work ready and not taken, and not yet ended (seconds never below zero).
    work: ModelWork,
    /// Cards in the LLM state holding it.
    pub(super) held: usize,
}

impl Run<'_> {
    /// Each model's ready and unfinished work and its holders, now: O(models +
    /// cards), the work's side kept by the DAG's progress as it moves.
    pub(super) fn needs(&self) -> Vec<Need> {
        let mut out: Vec<Need> = (0..self.models.names.len())
            .map(|m| {
                let w = self.dag.model_work(m);
                let work = ModelWork {
                    ready_secs: w.ready_secs.max(0.0),
                    left_secs: w.left_secs.max(0.0),
                    ..w
                };
                Need { work, held: 0 }
            })
            .collect();
        for c in self.cards.iter().filter(|c| c.mode == Mode::Llm) {
            if let Some(m) = c.model {
                out[m].held += 1;
            }
        }
        out
    }

    /// The model card `card` would be loaded with ([`Run::best_model`] of those
    /// it fits). `None`: no model it fits has work.
    pub(super) fn model_for(&self, card: usize) -> Option<usize> {
        self.best_model(|m| self.models.fits[card][m])
    }

    /// The model one more card should hold, of those `ok` allows with work left:
    /// a model with ready work and no card first, then the most ready work per
    /// card holding it, then the most work left per card, then the rig's model
    /// (the live model step's rule).
    pub(super) fn best_model(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let needs = self.needs();
        let key = |m: usize| {
            let n = needs[m];
            let per = (n.held + 1) as f64;
            (
                n.work.ready_n > 0 && n.held == 0,
                n.work.ready_secs / per,
                n.work.left_secs / per,
                Some(m) == self.models.default,
            )
        };
        (0..needs.len())
            .filter(|&m| ok(m) && needs[m].work.left_n > 0)
            .max_by(|&a, &b| {
                let (x, y) = (key(a), key(b));
                x.0.cmp(&y.0)
                    .then(x.1.total_cmp(&y.1))
                    .then(x.2.total_cmp(&y.2))
                    .then(x.3.cmp(&y.3))
                    .then(b.cmp(&a))
            })
    }

    /// The card of `among` a load of model `m` at `t` goes to, as the live model
    /// step moves it: cards free at `t` first, then the smallest that fits (big
    /// cards stay free for big models), then the soonest free, then by position.
    pub(super) fn card_for(&self, m: usize, among: &[usize], t: f64) -> Option<usize> {
        let size = |i: usize| self.view.cards[i].vram_mb.unwrap_or(u64::MAX);
        among
            .iter()
            .copied()
            .filter(|&i| self.models.fits[i][m])
            .min_by(|&a, &b| {
                let (x, y) = (&self.cards[a], &self.cards[b]);
                (x.free_at > t)
                    .cmp(&(y.free_at > t))
                    .then(size(a).cmp(&size(b)))
                    .then(x.free_at.total_cmp(&y.free_at))
                    .then(a.cmp(&b))
            })
    }

    /// The live model step's moves ([`crate::resources`]' `models::switches`), as
    /// they would come at `t`, on cards free at `t`: a loaded card whose model has
    /// no work left is freed (and nothing else happens at that moment); else each
    /// model with ready work and no card, the most ready first, gets one: a loaded
    /// card with nothing of its own model ready (a switch: unload and load), else,
    /// while some card holds a model and the cap allows, a bare card not freed
    /// within a round trip while script work is ready, else a loaded card whose
    /// model another card also holds, when the ready work pays for the switch;
    /// smallest card that fits first. Not moves of the strategy: a live round that
    /// makes them decides nothing else, so at `t = 0` the view has none to make.
    pub(super) fn model_switches(&mut self, t: f64) {
        // One model, held by every loaded card: nothing to switch (the common case,
        // kept cheap: this runs at every step of every strategy).
        let settled = self
            .cards
            .iter()
            .filter(|c| c.mode == Mode::Llm)
            .all(|c| c.model == Some(0));
        if self.models.names.len() < 2 && (self.models.names.is_empty() || settled) {
            return;
        }
        if self.cards.iter().all(|c| c.free_at > t) || !self.model_step_due(t) {
            return;
        }
        let needs = self.needs();
        if needs.iter().all(|n| n.work.left_n == 0) {
            return;
        }
        let mut freed = false;
        for i in 0..self.cards.len() {
            let c = &self.cards[i];
            let idle = c.mode == Mode::Llm && c.model.is_none_or(|m| needs[m].work.left_n == 0);
            if c.free_at <= t && idle && !(t == 0.0 && c.cooling) {
                super::switch(&mut self.cards[i], Mode::Script, t, self.cfg);
                self.cards[i].model = None;
                freed = true;
            }
        }
        if freed {
            return;
        }
        let mut starved: Vec<usize> = (0..needs.len())
            .filter(|&m| needs[m].work.ready_n > 0 && needs[m].held == 0)
            .collect();
        starved.sort_by(|&a, &b| {
            needs[b]
                .work
                .ready_secs
                .total_cmp(&needs[a].work.ready_secs)
                .then(a.cmp(&b))
        });
        for m in starved {
            self.place(m, t);
        }
    }

    /// Whether the model step has anything to do at `t`, asked without allocating
    /// (it runs at every step): a free loaded card whose model has no work left, or
    /// a model with ready work that no card holds.
    fn model_step_due(&self, t: f64) -> bool {
        let left = |m: usize| self.dag.model_work(m).left_n > 0;
        let idle = self
            .cards
            .iter()
            .any(|c| c.free_at <= t && c.mode == Mode::Llm && !c.model.is_some_and(&left));
        idle || (0..self.models.names.len()).any(|m| {
            self.dag.model_work(m).ready_n > 0
                && !self
                    .cards
                    .iter()
                    .any(|c| c.mode == Mode::Llm && c.model == Some(m))
        })
    }

    /// Gives model `m`, ready and held by no card, a card free at `t` if one
    /// qualifies (see [`Run::model_switches`]).
    fn place(&mut self, m: usize, t: f64) {
        let needs = self.needs();
        let own_left = |c: &super::SimCard| c.model.map_or(0.0, |o| needs[o].work.left_secs);
        let size = |i: usize| self.view.cards[i].vram_mb.unwrap_or(u64::MAX);
        let mut cands: Vec<usize> = (0..self.cards.len())
            .filter(|&i| {
                let c = &self.cards[i];
                c.free_at <= t && c.capable && self.models.fits[i][m] && !(t == 0.0 && c.cooling)
            })
            .collect();
        cands.sort_by(|&a, &b| {
            size(a)
                .cmp(&size(b))
                .then(own_left(&self.cards[a]).total_cmp(&own_left(&self.cards[b])))
                .then(a.cmp(&b))
        });
        let loaded = |i: usize| self.cards[i].mode == Mode::Llm;
        let own_ready = |i: usize| self.cards[i].model.map_or(0, |o| needs[o].work.ready_n);
        let cost = |i: usize| self.cfg.unload_secs + self.cards[i].load_secs;
        let pick = cands
            .iter()
            .copied()
            .find(|&i| loaded(i) && own_ready(i) == 0);
        let pick = pick.or_else(|| {
            let llm = self.llm_cards();
            // As live: `static` keeps its count, and no card loads past it.
            let cap = self.bounds.1.min(llm_card_limit(self.view));
            if llm == 0 || llm >= cap {
                return None;
            }
            let trip = self.cfg.load_secs + self.cfg.unload_secs;
            let script_ready = !self.dag.none_ready(Mode::Script.slot());
            cands.iter().copied().find(|&i| {
                let just_freed = script_ready && t - self.cards[i].since < trip;
                !loaded(i) && !just_freed
            })
        });
        let pick = pick.or_else(|| {
            cands.iter().copied().find(|&i| {
                let held = self.cards[i].model.map_or(0, |o| needs[o].held);
                loaded(i)
                    && held > 1
                    && needs[m].work.ready_secs > cost(i)
                    && t - self.cards[i].since >= 2.0 * cost(i)
            })
        });
        let Some(i) = pick else { return };
        if loaded(i) {
            // A switch: the unload, then the load.
            super::switch(&mut self.cards[i], Mode::Script, t, self.cfg);
            let at = self.cards[i].free_at;
            super::switch(&mut self.cards[i], Mode::Llm, at, self.cfg);
        } else {
            super::switch(&mut self.cards[i], Mode::Llm, t, self.cfg);
        }
        self.cards[i].model = Some(m);
    }
}
