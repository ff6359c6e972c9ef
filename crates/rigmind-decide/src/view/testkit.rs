//! Builders of views shared by the resource manager's and the projection's tests.

use std::collections::BTreeMap;

use rigmind_types::TaskClass;

use super::{Card, CardMode, RigView, RmConfig, RmPolicy, Work};

pub(crate) fn cfg(policy: RmPolicy) -> RmConfig {
    RmConfig {
        policy,
        model: "m".into(),
        min_llm_gpus: 0,
        max_llm_gpus: None,
        idle_unload_secs: 1800.0,
        load_secs: 120.0,
        unload_secs: 10.0,
        groups: BTreeMap::new(),
        models: Default::default(),
    }
}

pub(crate) fn card(worker: &str, mode: CardMode) -> Card {
    Card {
        worker: worker.into(),
        mode,
        model: mode.is_llm().then(|| "m".to_string()),
        running: None,
        busy_for: 0.0,
        overdue: false,
        llm_idle_secs: 0.0,
        in_mode_secs: 1000.0,
        llm_capable: true,
        cooling_down: false,
        load_secs: 120.0,
        vram_mb: None,
    }
}

pub(crate) fn work(class: TaskClass, n: usize, secs: f64, ready_in: f64) -> Vec<Work> {
    (0..n)
        .map(|_| Work {
            model: (class == TaskClass::Llm).then(|| "m".to_string()),
            ready_in,
            ..Work::one(class, secs)
        })
        .collect()
}

pub(crate) fn view(policy: RmPolicy, cards: Vec<Card>, work: Vec<Work>) -> RigView {
    RigView {
        config: cfg(policy),
        cards,
        work,
        estimates: Default::default(),
        estimate_error: 0.0,
    }
}
