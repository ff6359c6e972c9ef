//! Which cards may move, and the actions that move them: the pieces every policy
//! shares.

use super::demand::Demand;
pub(super) use super::llm_cap;
use super::{Card, CardMode, RigView, RmAction};

pub(super) fn llm_cards(view: &RigView) -> usize {
    view.cards.iter().filter(|c| c.mode.is_llm()).count()
}

/// Cards that could take a load now, best first: free script cards before busy ones.
pub(super) fn load_candidates(view: &RigView) -> Vec<&Card> {
    let mut c: Vec<&Card> = view
        .cards
        .iter()
        .filter(|c| c.llm_capable && c.mode == CardMode::Script && !c.cooling_down)
        .collect();
    c.sort_by_key(|c| (!c.free(), c.worker.clone()));
    c
}

/// Cards that could be unloaded now, best first: free ones, the longest idle first.
pub(super) fn unload_candidates(view: &RigView) -> Vec<&Card> {
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

pub(super) fn load(card: &Card, model: &str, reason: String) -> RmAction {
    RmAction::Load {
        worker: card.worker.clone(),
        model: model.to_string(),
        reason,
    }
}

pub(super) fn unload(card: &Card, reason: String) -> RmAction {
    RmAction::Unload {
        worker: card.worker.clone(),
        model: card.model.clone().unwrap_or_default(),
        reason,
    }
}

/// Loaded cards idle past `idle_unload` with no llm work waiting.
pub(super) fn idle_unloads(view: &RigView, d: &Demand) -> Vec<RmAction> {
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
