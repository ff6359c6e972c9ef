//! The demand a [`RigView`] holds, summed once per decision, and the model it
//! wants loaded next.

use std::collections::BTreeMap;

use rigmind_types::TaskClass;

use super::RigView;

/// The demand the view holds, summed once.
#[derive(Debug, Clone, Default)]
pub(super) struct Demand {
    /// Work (seconds) ready now and not running, by class.
    pub(super) ready_llm: f64,
    pub(super) ready_script: f64,
    /// Tasks ready now and not running.
    pub(super) ready_llm_n: usize,
    pub(super) ready_script_n: usize,
    pub(super) running_llm_n: usize,
    pub(super) running_script_n: usize,
    /// Work (seconds) that can start within the horizon, running work included.
    pub(super) soon_llm: f64,
    pub(super) soon_script: f64,
    pub(super) soon_llm_n: usize,
    /// All llm work left, and llm work by model (all of it, and what is ready).
    pub(super) left_llm_n: usize,
    pub(super) by_model: BTreeMap<String, f64>,
    pub(super) ready_by_model: BTreeMap<String, f64>,
}

pub(super) fn demand(view: &RigView, horizon: f64) -> Demand {
    let mut d = Demand::default();
    for w in view.work.iter().filter(|w| w.class != TaskClass::Cpu) {
        let llm = w.class == TaskClass::Llm;
        let ready = w.ready_in <= 0.0 && !w.running;
        let (n, all) = (w.items, w.secs * w.items as f64);
        if llm {
            d.left_llm_n += n;
            let m = w.model.clone().unwrap_or_else(|| view.config.model.clone());
            if ready {
                *d.ready_by_model.entry(m.clone()).or_default() += all;
            }
            *d.by_model.entry(m).or_default() += all;
        }
        match (llm, ready, w.running) {
            (true, true, _) => {
                d.ready_llm += all;
                d.ready_llm_n += n;
            }
            (false, true, _) => {
                d.ready_script += all;
                d.ready_script_n += n;
            }
            (true, _, true) => d.running_llm_n += n,
            (false, _, true) => d.running_script_n += n,
            _ => {}
        }
        if w.ready_in <= horizon {
            // A running task has, on average, half its run left.
            let secs = if w.running { all / 2.0 } else { all };
            if llm {
                d.soon_llm += secs;
                d.soon_llm_n += n;
            } else {
                d.soon_script += secs;
            }
        }
    }
    d
}

/// The model to load next: the one with the most ready llm work (else with the
/// most llm work left; the rig's model on a tie or when none waits).
pub(super) fn wanted_model(view: &RigView, d: &Demand) -> String {
    let pick = if d.ready_by_model.is_empty() {
        &d.by_model
    } else {
        &d.ready_by_model
    };
    let mut best = (
        view.config.model.clone(),
        pick.get(&view.config.model).copied().unwrap_or(0.0),
    );
    for (m, w) in pick {
        if *w > best.1 {
            best = (m.clone(), *w);
        }
    }
    best.0
}
