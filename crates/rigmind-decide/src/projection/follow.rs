//! The projection a resource-manager policy follows ([`projection_of`]): the one it
//! made itself this round, else one under the strategy that mirrors it
//! ([`strategy_of`]). The ETAs ([`crate::eta`]) and the round's decision
//! ([`crate::resources::decide_round`]) take it from here.

use super::{project, Projection, Strategy};
use crate::view::{llm_card_limit, RigView, RmPolicy};

/// The projection strategy that moves the cards as the view's policy does:
/// `static` keeps its number of cards (at most the cap), `phases` and
/// `on-demand` are their own strategies, and `adaptive` — where it projected
/// nothing this round (a model swap, no llm work left, a very large batch) —
/// is taken as `stages`, the plan it most often follows.
pub fn strategy_of(view: &RigView) -> Strategy {
    match view.config.policy {
        RmPolicy::Static { .. } => Strategy::Fixed(llm_card_limit(view)),
        RmPolicy::Phases => Strategy::Phases,
        RmPolicy::OnDemand => Strategy::OnDemand,
        RmPolicy::Adaptive => Strategy::Stages,
    }
}

/// The projection the policy follows: `followed` (what the policy itself
/// projected and chose this round) when there is one, else the projection under
/// [`strategy_of`].
pub fn projection_of(view: &RigView, followed: Option<Projection>) -> Projection {
    followed.unwrap_or_else(|| project(view, strategy_of(view)))
}
