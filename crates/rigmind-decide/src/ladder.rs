//! Where an llm task runs and how it climbs: the `[[endpoint]]` that serves its
//! model (an endpoint task needs no card), and the `[escalation]` tiers it moves
//! up when it keeps failing ([`Ladder`]). Submission ([`crate::tasks`]) and the
//! brain's failure policy ([`crate::policy`]) both read it; it is part of the
//! brain's state so that the policy stays a pure function of that state.
//!
//! Model names compare in canonical form (`m` is `m:latest`), as everywhere in
//! the brain; the worker sends each server its own spelling.

use rigmind_config::RigConfig;
use rigmind_types::canonical_model;
use serde::{Deserialize, Serialize};

/// The endpoints' models and the escalation tiers of rig.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ladder {
    /// `[escalation] tiers`, canonical, smallest first.
    pub tiers: Vec<String>,
    /// Failures on one tier before the task moves up.
    pub after_failures: u32,
    /// Each endpoint's name and canonical models, in rig.toml order.
    pub endpoints: Vec<(String, Vec<String>)>,
}

impl Ladder {
    /// The ladder of a rig.
    pub fn of(config: &RigConfig) -> Self {
        Ladder {
            tiers: config
                .escalation
                .tiers
                .iter()
                .map(|t| canonical_model(t))
                .collect(),
            after_failures: config.escalation.after_failures,
            endpoints: config
                .endpoints
                .iter()
                .map(|e| {
                    let models = e.models.iter().map(|m| canonical_model(m)).collect();
                    (e.name.clone(), models)
                })
                .collect(),
        }
    }

    /// The endpoint an llm task for `model` runs on: `pinned` (the plan's
    /// `endpoint:`) when that endpoint serves it, else the first endpoint that
    /// lists it; `None`: a card runs it.
    pub fn endpoint_for(&self, model: &str, pinned: Option<&str>) -> Option<String> {
        let model = canonical_model(model);
        let serves = |(_, ms): &&(String, Vec<String>)| ms.contains(&model);
        if let Some(p) = pinned {
            if let Some((n, _)) = self.endpoints.iter().filter(serves).find(|(n, _)| n == p) {
                return Some(n.clone());
            }
        }
        self.endpoints
            .iter()
            .find(|e| serves(e))
            .map(|(n, _)| n.clone())
    }

    /// Whether an endpoint of this name is declared.
    pub fn has_endpoint(&self, name: &str) -> bool {
        self.endpoints.iter().any(|(n, _)| n == name)
    }

    /// The tier (1-based) and model an llm task for `model` starts on: the last
    /// tier when it `requires_external`, else its model's tier; `None` when its
    /// model is on no tier (it never escalates).
    pub fn start(&self, model: &str, requires_external: bool) -> Option<(u32, String)> {
        if requires_external {
            let last = self.tiers.last()?;
            return Some((self.tiers.len() as u32, last.clone()));
        }
        let model = canonical_model(model);
        let i = self.tiers.iter().position(|t| *t == model)?;
        Some((i as u32 + 1, model))
    }

    /// The tier above `tier`, with its model, if there is one.
    pub fn next(&self, tier: u32) -> Option<(u32, &str)> {
        self.tiers
            .get(tier as usize)
            .map(|m| (tier + 1, m.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Ladder {
        Ladder {
            tiers: vec![
                "small:latest".into(),
                "big:latest".into(),
                "huge:latest".into(),
            ],
            after_failures: 2,
            endpoints: vec![
                ("lan".into(), vec!["big:latest".into()]),
                (
                    "cloud".into(),
                    vec!["big:latest".into(), "huge:latest".into()],
                ),
            ],
        }
    }

    #[test]
    fn endpoints_serve_their_models_and_a_pin_wins() {
        let l = ladder();
        assert_eq!(l.endpoint_for("small", None), None, "a card runs it");
        assert_eq!(l.endpoint_for("big", None).as_deref(), Some("lan"));
        assert_eq!(
            l.endpoint_for("big", Some("cloud")).as_deref(),
            Some("cloud")
        );
        assert_eq!(
            l.endpoint_for("huge", Some("lan")).as_deref(),
            Some("cloud")
        );
    }

    #[test]
    fn tasks_start_on_their_models_tier_and_climb() {
        let l = ladder();
        assert_eq!(l.start("small", false), Some((1, "small:latest".into())));
        assert_eq!(l.start("small", true), Some((3, "huge:latest".into())));
        assert_eq!(l.start("other", false), None);
        assert_eq!(l.next(1), Some((2, "big:latest")));
        assert_eq!(l.next(3), None);
    }
}
