//! What the resource manager observes of the rig, and what it writes: the facts a
//! worker publishes about its card ([`CardFacts`]), the resource tasks in flight
//! ([`InFlight`]), the [`Card`]s and [`RigView`] built from them
//! ([`Card::observe`], [`view_of`]), and the resource task a decision becomes
//! ([`task_of`]). The live brain (`rigmind_brain::rig`) gathers the facts from the
//! workers' state files and the queue; the simulator from its virtual workers; both
//! build their cards and tasks here, so neither mirrors the other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rigmind_queue::task::{ResourceAction, TaskFile};
use rigmind_types::TaskClass;
use serde::{Deserialize, Serialize};

use super::work::overdue;
use super::{left_of, work_and_estimates, Card, CardMode, RigView, RmAction, RmConfig};
use crate::estimate::load_of;
use crate::state::BrainState;

/// One GPU worker's card as its worker last published it, with what the brain
/// adds (`cooling_down`). Clocks are already counted in seconds: each caller
/// has its own time (the wall clock, or the simulator's virtual one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardFacts {
    pub worker: String,
    /// Its card is in an LLM state (a model loaded, or booting one).
    pub loaded: bool,
    /// The model its LLM server holds.
    pub model: Option<String>,
    /// The class of the task it runs now.
    pub running: Option<TaskClass>,
    /// The task id of the task it runs now.
    pub running_task: Option<String>,
    /// Seconds since it last ran an llm task or finished loading.
    pub llm_idle_secs: f64,
    /// Seconds since its card last crossed between LLM and script states.
    pub in_mode_secs: f64,
    /// It has an LLM server and claims llm work.
    pub llm_capable: bool,
    /// A resource task for it failed a moment ago.
    pub cooling_down: bool,
    /// Its memory in MB: `[[gpu]] vram_mb`, else its worker's NVML reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_mb: Option<u64>,
}

/// A resource task written and not yet seen finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub worker: String,
    /// A `load_llm` (else an `unload_llm`).
    pub load: bool,
    pub model: String,
}

impl InFlight {
    /// The resource task `t` as in flight; `None` for any other task, or one
    /// addressed to no worker.
    pub fn of(t: &TaskFile) -> Option<Self> {
        if !t.is_resource() {
            return None;
        }
        Some(Self {
            worker: t.target_worker.clone()?,
            load: t.resource_action() == Some(ResourceAction::LoadLlm),
            model: t.model.clone().unwrap_or_default(),
        })
    }
}

impl Card {
    /// The card of `facts`, counting the resource task in flight for it (a load
    /// or unload in flight decides its mode and model), the time its current
    /// task has left in `state` at `now`, and its load time (`config`'s, corrected
    /// by the loads learned in `state`).
    pub fn observe(
        facts: &CardFacts,
        in_flight: &BTreeMap<String, InFlight>,
        state: &BrainState,
        (config, now): (&RmConfig, DateTime<Utc>),
    ) -> Self {
        let flight = in_flight.values().find(|f| f.worker == facts.worker);
        let mode = match flight {
            Some(f) if f.load => CardMode::Loading,
            Some(_) => CardMode::Unloading,
            None if facts.loaded => CardMode::Llm,
            None => CardMode::Script,
        };
        let model = flight
            .map(|f| f.model.clone())
            .or_else(|| facts.model.clone());
        let loads = model.as_deref().unwrap_or(&config.model);
        let (busy_for, overdue) = facts
            .running_task
            .as_deref()
            .map_or((0.0, false), |id| running_left(state, id, now));
        Card {
            worker: facts.worker.clone(),
            mode,
            load_secs: load_of(state, loads, &facts.worker, config.load_secs).secs(),
            model,
            running: facts.running,
            busy_for,
            overdue,
            llm_idle_secs: facts.llm_idle_secs,
            in_mode_secs: facts.in_mode_secs,
            llm_capable: facts.llm_capable,
            cooling_down: facts.cooling_down,
            vram_mb: facts.vram_mb,
        }
    }
}

/// Everything [`super::decide`] looks at: the cards of `facts` and the work of
/// `state` at `now`.
pub fn view_of(
    config: &RmConfig,
    facts: &[CardFacts],
    in_flight: &BTreeMap<String, InFlight>,
    state: &BrainState,
    now: DateTime<Utc>,
) -> RigView {
    let (work, estimates) = work_and_estimates(state, &config.model, now);
    RigView {
        config: config.clone(),
        cards: facts
            .iter()
            .map(|f| Card::observe(f, in_flight, state, (config, now)))
            .collect(),
        work,
        estimates,
        estimate_error: crate::estimate::estimate_error(state),
    }
}

/// How long the running job with this task id is expected to go on (0: not
/// known, as for a resource task), and whether it has run past its estimate.
fn running_left(state: &BrainState, task_id: &str, now: DateTime<Utc>) -> (f64, bool) {
    for b in state.batches.values() {
        for &i in &b.running {
            let j = &b.jobs[i];
            if j.task_id != task_id {
                continue;
            }
            return (left_of(state, j, now), overdue(state, j, now));
        }
    }
    (0.0, false)
}

/// The resource task `action` becomes, addressed to its worker. It times out
/// after 5 × the expected cost, at least 300 s: generous, since a load that hangs
/// is a dead server, not a slow one. Its `seq` is the caller's to set.
pub fn task_of(action: &RmAction, config: &RmConfig) -> TaskFile {
    let (name, model, cost) = match action {
        RmAction::Load { model, .. } => (ResourceAction::LoadLlm, model, config.load_secs),
        RmAction::Unload { model, .. } => (ResourceAction::UnloadLlm, model, config.unload_secs),
    };
    let timeout = (cost * 5.0).max(300.0);
    TaskFile::resource(name, action.worker(), model, timeout)
}
