//! `phases`: the whole rig in one phase at a time, all script work, then all llm
//! work.

use super::cards::{idle_unloads, llm_cap, load, load_candidates, unload, unload_candidates};
use super::demand::{demand, wanted_model};
use super::{CardMode, RigView, RmAction};

/// Switches every card once the current phase has drained and the other has
/// ready work; unloads idle cards when no work is left.
pub(super) fn decide(view: &RigView) -> Vec<RmAction> {
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

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

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
}
