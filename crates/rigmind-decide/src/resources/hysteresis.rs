//! When `adaptive` may move cards: the hysteresis that keeps them from flapping.
//!
//! A projection that moves cards now must beat standing still by a margin
//! ([`pays`]):
//! - any move: 2 % of the standing-still end, at least one unload time; only the
//!   unload time when the move displaces nothing ([`displaces`]: every card it
//!   moves is free and nothing of its current kind is ready, the move on-demand
//!   would make);
//! - a load on one card with an unload on another in the same round (a *move* of
//!   the model): more than the move costs in card time (one load and one unload),
//!   since the projection's estimates are no better than that;
//! - a move that displaces ready work (a load while script work is ready, an
//!   unload while llm work is ready): at least the estimate error seen
//!   ([`RigView::estimate_error`]) times the dearest such move (a load's time on
//!   its card; for an unload while work for the card's own model is ready, the
//!   unload and the load that would bring the model back for it). Where
//!   estimates have proven wrong the projection's small gains are within its
//!   error, and a card taken from ready work is the bet most likely to lose (a
//!   straggler on the work it left); an unload priced at its own 10 s let a
//!   noisy projection free a card for a gain of 30 s and load it again a round
//!   later;
//! - a card that just loaded ([`just_loaded`]) keeps its model while llm work for
//!   it is ready, or will be within the time a round trip (unload and load back)
//!   takes as long as another card runs script work: unloading it would only
//!   mean loading again.

use rigmind_types::TaskClass;

use crate::projection::Projection;

use super::{Card, CardMode, RigView};

/// True when `proj`, which moves cards now, gains enough over standing still
/// (`still`) to be worth its moves (see the module doc).
pub(super) fn pays(view: &RigView, still: f64, proj: &Projection) -> bool {
    let cfg = &view.config;
    if !proj.makespan.is_finite() {
        return false;
    }
    if !still.is_finite() {
        return true;
    }
    let (displacing, at_stake) = displaces(view, proj);
    let mut margin = if displacing {
        (0.02 * still).max(cfg.unload_secs)
    } else {
        cfg.unload_secs
    };
    let loads = proj.now.iter().any(|(_, to_llm)| *to_llm);
    let unloads = proj.now.iter().any(|(_, to_llm)| !*to_llm);
    if loads && unloads {
        margin = margin.max(cfg.load_secs + cfg.unload_secs);
    }
    margin = margin.max(view.estimate_error.max(0.0) * at_stake);
    if proj.now.iter().any(|&(i, to_llm)| !to_llm && kept(view, i)) {
        return false;
    }
    proj.makespan < still - margin
}

/// Whether the moves `proj` makes now displace anything (a card it moves is busy,
/// or work of a moved card's current kind is ready), and the dearest move that
/// takes a card from ready work (a load's time on its card while script work is
/// ready; while work for the card's own model is ready, an unload and the card's
/// load back: a round trip; 0 when none does).
fn displaces(view: &RigView, proj: &Projection) -> (bool, f64) {
    let ready = |class: TaskClass| {
        view.work
            .iter()
            .any(|w| !w.running && w.ready_in <= 0.0 && w.class == class)
    };
    let (script_ready, llm_ready) = (ready(TaskClass::Script), ready(TaskClass::Llm));
    let mut displacing = false;
    let mut at_stake = 0.0f64;
    for &(i, to_llm) in &proj.now {
        let card = view.cards.get(i);
        displacing |= card.is_none_or(|c| !c.free());
        let load = card.map_or(view.config.load_secs, |c| c.load_secs);
        if to_llm {
            displacing |= script_ready;
            if script_ready {
                at_stake = at_stake.max(load);
            }
        } else {
            displacing |= llm_ready;
            // Only work for the card's own model would need it loaded again.
            if card.is_some_and(|c| waiting_for(view, c, 0.0)) {
                at_stake = at_stake.max(load + view.config.unload_secs);
            }
        }
    }
    (displacing, at_stake)
}

/// A card keeps its model: it just loaded, and llm work for its model is ready, or
/// will be within a round trip while another card runs script work.
fn kept(view: &RigView, i: usize) -> bool {
    let Some(card) = view.cards.get(i) else {
        return false;
    };
    let cfg = &view.config;
    let trip = cfg.load_secs + cfg.unload_secs;
    let scripts_go_on = view
        .cards
        .iter()
        .enumerate()
        .any(|(k, c)| k != i && matches!(c.mode, CardMode::Script | CardMode::Unloading));
    // Work for its model ready now keeps it whatever the other cards do: freed, it
    // could be loaded again for that work at once, and the two would never end.
    just_loaded(card, trip)
        && (waiting_for(view, card, 0.0) || (scripts_go_on && waiting_for(view, card, trip)))
}

/// Whether llm work for `card`'s model (the rig's model when it names none) waits,
/// not running, ready within `secs` (only llm work names a model).
fn waiting_for(view: &RigView, card: &Card, secs: f64) -> bool {
    let model = card.model.as_deref().unwrap_or(&view.config.model);
    view.work
        .iter()
        .any(|w| w.model.as_deref() == Some(model) && !w.running && w.ready_in <= secs)
}

/// A card in the LLM state that loaded within the last round trip: its load has not
/// paid for itself yet.
fn just_loaded(card: &Card, trip: f64) -> bool {
    // `in_mode_secs` counts from the start of the load.
    card.mode == CardMode::Llm && card.in_mode_secs < trip + trip
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;
    use super::{kept, pays};
    use crate::projection::Projection;

    /// A projection that loads card 0 now and ends at `makespan`.
    fn loading(makespan: f64) -> Projection {
        moving(makespan, true)
    }

    /// A projection that frees card 0 now and ends at `makespan`.
    fn freeing(makespan: f64) -> Projection {
        moving(makespan, false)
    }

    fn moving(makespan: f64, to_llm: bool) -> Projection {
        Projection {
            makespan,
            batch_ends: vec![makespan],
            now: vec![(0, to_llm)],
        }
    }

    #[test]
    fn a_load_that_takes_a_card_from_ready_work_must_beat_the_estimate_error() {
        // script-heavy (noisy) at minute 13: loading a free card while script work
        // is ready projects 502 s against 541 s standing still (39 s gained).
        let mut w = work(TaskClass::Script, 9, 100.0, 0.0);
        w.extend(work(TaskClass::Llm, 4, 120.0, 0.0));
        let cards = vec![card("w1", CardMode::Script), card("w2", CardMode::Script)];
        let mut v = view(RmPolicy::Adaptive, cards, w);
        // Estimates that held: the 2 % margin (10.8 s) is all it must beat.
        assert!(pays(&v, 541.0, &loading(502.0)));
        // Estimates off by about half: the load must gain 0.5 × its 120 s.
        v.estimate_error = 0.5;
        assert!(!pays(&v, 541.0, &loading(502.0)));
        assert!(pays(&v, 541.0, &loading(480.0)));
        // With no script work ready the free card displaces nothing: the error
        // does not count, nor the 2 % margin (only the unload time, 10 s).
        v.work.retain(|w| w.class == TaskClass::Llm);
        assert!(pays(&v, 541.0, &loading(502.0)));
        assert!(pays(&v, 541.0, &loading(530.0)));
        assert!(!pays(&v, 541.0, &loading(532.0)));
    }

    #[test]
    fn an_unload_from_ready_llm_work_must_beat_the_error_times_a_round_trip() {
        // Two loaded cards (load 120 s, unload 10 s), llm and script work ready;
        // freeing card 0 projects 470 s against 500 s standing still (30 s gained).
        let mut w = work(TaskClass::Llm, 6, 60.0, 0.0);
        w.extend(work(TaskClass::Script, 6, 60.0, 0.0));
        let cards = vec![card("w1", CardMode::Llm), card("w2", CardMode::Llm)];
        let mut v = view(RmPolicy::Adaptive, cards, w);
        // Estimates that held: the 2 % margin (10 s) is all it must beat.
        assert!(pays(&v, 500.0, &freeing(470.0)));
        // Estimates off by a quarter: the unload must gain 0.25 × (10 s + 120 s),
        // the round trip that brings the model back for the llm work it left
        // (priced at its own 10 s, 2.5 s, it went through).
        v.estimate_error = 0.25;
        assert!(!pays(&v, 500.0, &freeing(470.0)));
        assert!(pays(&v, 500.0, &freeing(467.0)));
    }

    #[test]
    fn a_card_that_just_loaded_keeps_its_model_while_work_for_it_is_ready() {
        // w1 finished loading 30 s ago (a round trip is 130 s); w2 holds the
        // model too, so no card runs script work.
        let mut w1 = card("w1", CardMode::Llm);
        w1.in_mode_secs = 30.0;
        let w2 = card("w2", CardMode::Llm);
        let mut v = view(
            RmPolicy::Adaptive,
            vec![w1, w2],
            work(TaskClass::Llm, 3, 60.0, 0.0),
        );
        // Ready now: kept, whatever the other cards do (before, only beside
        // script work, and a model step could load it again the moment it went).
        assert!(kept(&v, 0));
        assert!(!pays(&v, 1000.0, &freeing(1.0)));
        // Ready only within the round trip: kept only beside script work.
        v.work = work(TaskClass::Llm, 3, 60.0, 50.0);
        assert!(!kept(&v, 0));
        v.cards[1] = card("w2", CardMode::Script);
        assert!(kept(&v, 0));
        // Loaded long ago: not kept.
        v.cards[0].in_mode_secs = 1000.0;
        assert!(!kept(&v, 0));
    }
}
