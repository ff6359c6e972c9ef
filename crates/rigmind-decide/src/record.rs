//! A decision round as the live brain saw and decided it, one JSON line each, so
//! that it can be replayed through the simulator's rounds (`rigmind_sim::round`)
//! and the decisions compared (tests/replay.rs). The brain writes them when
//! `RIGMIND_RECORD_ROUNDS=FILE` is set (`rigmind_brain::record`).
//!
//! A round carries what its decision was taken from: the whole [`BrainState`]
//! (without its write bookkeeping), the time, and for the resource manager the
//! cards' facts, the resource tasks in flight and its settings.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::Action;
use crate::resources::{CardFacts, InFlight, RmAction, RmConfig};
use crate::state::BrainState;

/// The environment variable naming the file the brain records its rounds into.
pub const RECORD_ROUNDS_ENV: &str = "RIGMIND_RECORD_ROUNDS";

/// One recorded round: borrowed while written, owned once read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Round<'a> {
    Brain(BrainRound<'a>),
    Resources(ResourcesRound<'a>),
}

/// One call of `policy::decide`: the state before, the time, the actions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrainRound<'a> {
    /// Which run of decide-and-apply rounds it belongs to (one per loop step).
    pub converge: u64,
    /// Its place in that run: round `n + 1` saw the state round `n` left.
    pub round: u32,
    pub now: DateTime<Utc>,
    pub state: Cow<'a, BrainState>,
    pub actions: Cow<'a, [Action]>,
}

/// One call of `resources::decide`: what the resource manager observed, and the
/// actions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourcesRound<'a> {
    pub now: DateTime<Utc>,
    pub config: Cow<'a, RmConfig>,
    pub cards: Cow<'a, [CardFacts]>,
    pub in_flight: Cow<'a, BTreeMap<String, InFlight>>,
    pub state: Cow<'a, BrainState>,
    pub actions: Cow<'a, [RmAction]>,
}
