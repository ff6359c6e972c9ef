//! The demand-proportional rule `adaptive` falls back on when the batch is too big
//! to project every round: cards in proportion to the llm share of the coming work.

use super::cards::{llm_cap, llm_cards, load, load_candidates, unload, unload_candidates};
use super::demand::{demand, wanted_model, Demand};
use super::{RigView, RmAction};

/// The demand-proportional rule `adaptive` falls back on when the batch is too big
/// to project every round.
pub(super) fn decide(view: &RigView) -> Vec<RmAction> {
    let cfg = &view.config;
    let horizon = (3.0 * cfg.load_secs).max(60.0);
    let d = demand(view, horizon);
    let have = llm_cards(view);
    let floor = (cfg.min_llm_gpus as usize).min(llm_cap(view));
    if let Some(turn) = free_for_scripts(view, &d, have, floor) {
        return vec![turn];
    }
    let target = target_cards(view, &d, have, floor);
    if target > have {
        let model = wanted_model(view, &d);
        let reason = format!(
            "{} llm tasks ready ({:.0}s of llm work due within {:.0}s), {} llm cards",
            d.ready_llm_n, d.soon_llm, horizon, have
        );
        return load_candidates(view)
            .into_iter()
            .take(target - have)
            .map(|c| load(c, &model, reason.clone()))
            .collect();
    }
    if target < have {
        return unloads(view, &d, target, have);
    }
    Vec::new()
}

/// Script work ready and no card to run it: llm work that waits on it would
/// wait for ever. A free loaded card with nothing ready to run turns.
fn free_for_scripts(view: &RigView, d: &Demand, have: usize, floor: usize) -> Option<RmAction> {
    let script_cards = view.cards.len() - have;
    if d.ready_script_n > 0 && script_cards == 0 && d.ready_llm_n == 0 && have > floor {
        let c = unload_candidates(view).into_iter().find(|c| c.free())?;
        return Some(unload(
            c,
            format!(
                "{} script tasks ready, no llm task ready, and no card runs script work",
                d.ready_script_n
            ),
        ));
    }
    None
}

/// How many cards the llm share of the coming work calls for, within the bounds.
fn target_cards(view: &RigView, d: &Demand, have: usize, floor: usize) -> usize {
    let gpus = view.cards.len();
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
        .min(llm_cap(view));
    // While script work waits, one card stays for it (when there are two or more).
    if gpus > 1 && d.soon_script > 0.0 {
        target = target.min(gpus - 1);
    }
    // A further card pays only if its share of the llm work outweighs its load.
    while target > have.max(1) && d.soon_llm / (target as f64) < view.config.load_secs {
        target -= 1;
    }
    // The only card: it serves whichever kind is ready now.
    if gpus == 1 && d.ready_llm_n == 0 && d.ready_script_n > 0 {
        target = 0;
    }
    target.max(floor)
}

/// Unloads down to `target` cards: only what script work will use, and never a
/// card just loaded while llm work remains (hysteresis: a load is paid for once);
/// a card idle past `idle_unload` goes anyway.
fn unloads(view: &RigView, d: &Demand, target: usize, have: usize) -> Vec<RmAction> {
    let cfg = &view.config;
    let script_wants = d.ready_script_n > 0;
    let mut extra = have - target;
    let mut out = Vec::new();
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
    out
}
