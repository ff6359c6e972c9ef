//! When `adaptive` may move cards: the hysteresis that keeps them from flapping.
//!
//! A projection that moves cards now must beat standing still by a margin
//! ([`pays`]):
//! - any move: 2 % of the standing-still end, at least one unload time;
//! - a load on one card with an unload on another in the same round (a *move* of
//!   the model): more than the move costs in card time (one load and one unload),
//!   since the projection's estimates are no better than that;
//! - a card that just loaded ([`just_loaded`]) keeps its model while llm work for
//!   it is ready, or will be within the time a round trip (unload and load back)
//!   takes, as long as another card runs script work: unloading it would only
//!   mean loading again.

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
    let mut margin = (0.02 * still).max(cfg.unload_secs);
    let loads = proj.now.iter().any(|(_, to_llm)| *to_llm);
    let unloads = proj.now.iter().any(|(_, to_llm)| !*to_llm);
    if loads && unloads {
        margin = margin.max(cfg.load_secs + cfg.unload_secs);
    }
    if proj.now.iter().any(|&(i, to_llm)| !to_llm && kept(view, i)) {
        return false;
    }
    proj.makespan < still - margin
}

/// A card keeps its model: it just loaded, llm work for its model is ready or will
/// be within a round trip, and another card runs script work meanwhile.
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
    let model = card.model.as_deref().unwrap_or(&cfg.model);
    just_loaded(card, trip)
        && scripts_go_on
        && view
            .work
            .iter()
            .any(|w| w.model.as_deref() == Some(model) && !w.running && w.ready_in <= trip)
}

/// A card in the LLM state that loaded within the last round trip: its load has not
/// paid for itself yet.
fn just_loaded(card: &Card, trip: f64) -> bool {
    // `in_mode_secs` counts from the start of the load.
    card.mode == CardMode::Llm && card.in_mode_secs < trip + trip
}
