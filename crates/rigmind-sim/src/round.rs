//! One decision round of the simulator, from what it observes: the entry points
//! the [`engine`](crate::engine) calls at each instant. They take what the live
//! brain observes too (its state, the time, the cards' facts, the resource tasks in
//! flight), so a round the live brain recorded (`RIGMIND_RECORD_ROUNDS`, see
//! [`rigmind_decide::record`]) can be replayed through them and its decisions
//! compared (tests/replay.rs).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rigmind_decide::effect;
use rigmind_decide::policy::{self, Action};
use rigmind_decide::resources::{self, CardFacts, InFlight, RmAction, RmConfig};
use rigmind_decide::state::BrainState;

/// The brain's release policy at `now`, with each action's effect applied to
/// `state` as the live apply layer applies it. `Err` names the first action whose
/// effect depends on files the simulator does not have (a failure's record).
pub fn brain(state: &mut BrainState, now: DateTime<Utc>) -> Result<Vec<Action>, Action> {
    let actions = policy::decide(state, now);
    for a in &actions {
        if !effect::apply(state, a, now) {
            return Err(a.clone());
        }
    }
    Ok(actions)
}

/// The resource manager's decisions at `now`, for cards with these `facts` and
/// these resource tasks in flight.
pub fn resources(
    config: &RmConfig,
    facts: &[CardFacts],
    in_flight: &BTreeMap<String, InFlight>,
    state: &BrainState,
    now: DateTime<Utc>,
) -> Vec<RmAction> {
    resources::decide(&resources::view_of(config, facts, in_flight, state, now))
}
