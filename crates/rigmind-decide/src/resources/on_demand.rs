//! `on-demand`: a free card loads or unloads whenever the next ready task needs the
//! other state, as a bare per-request server behaves. A baseline for the simulator.

use super::cards::{load, load_candidates, unload, unload_candidates};
use super::demand::{demand, wanted_model};
use super::{CardMode, RigView, RmAction};

/// Turns free cards towards the kind of work that has more ready tasks than
/// free cards to take them.
pub(super) fn decide(view: &RigView) -> Vec<RmAction> {
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

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    #[test]
    fn on_demand_turns_a_free_card_for_the_next_ready_task() {
        let w = work(TaskClass::Script, 2, 10.0, 0.0);
        let v = view(RmPolicy::OnDemand, vec![card("w1", CardMode::Llm)], w);
        assert_eq!(unloads(&decide(&v)), vec!["w1"]);
    }
}
