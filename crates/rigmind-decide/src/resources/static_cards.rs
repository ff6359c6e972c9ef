//! `static`: a fixed number of cards keep the model loaded; the rest never load it.

use super::cards::{llm_cards, load, load_candidates, unload, unload_candidates};
use super::demand::{demand, wanted_model};
use super::{RigView, RmAction};
use crate::view::llm_card_limit;

/// Loads or unloads cards until the policy's count (at most the cap) hold the model.
pub(super) fn decide(view: &RigView) -> Vec<RmAction> {
    let target = llm_card_limit(view);
    let have = llm_cards(view);
    let model = wanted_model(view, &demand(view, 0.0));
    let mut out = Vec::new();
    if have < target {
        for c in load_candidates(view).into_iter().take(target - have) {
            out.push(load(
                c,
                &model,
                format!("static policy keeps {target} cards loaded; {have} are"),
            ));
        }
    } else if have > target {
        for c in unload_candidates(view).into_iter().take(have - target) {
            out.push(unload(
                c,
                format!("static policy keeps {target} cards loaded; {have} are"),
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
    fn static_keeps_its_count() {
        let v = view(
            RmPolicy::Static { llm_cards: 2 },
            (1..=3)
                .map(|i| card(&format!("w{i}"), CardMode::Script))
                .collect(),
            vec![],
        );
        assert_eq!(loads(&decide(&v)), vec!["w1", "w2"]);
        let v = view(
            RmPolicy::Static { llm_cards: 0 },
            vec![card("w1", CardMode::Llm)],
            work(TaskClass::Llm, 3, 10.0, 0.0),
        );
        assert_eq!(unloads(&decide(&v)), vec!["w1"]);
    }
}
