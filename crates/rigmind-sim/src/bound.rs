//! A lower bound on the makespan of a plan on a rig, whatever the policy.
//!
//! Durations are the simulator's (each task's `estimate`, else
//! [`DEFAULT_ESTIMATE_SECS`](rigmind_decide::resources::DEFAULT_ESTIMATE_SECS)); `L` is
//! rig.toml's `[llm] load_seconds`; `G` the number of `[[gpu]]` workers, `C` those
//! with an LLM server; `M` the number of distinct models the plan's llm tasks need.
//! The bound is the largest of:
//!
//! 1. **Critical path with the first load.** The longest dependency chain, where an
//!    llm task cannot start before `L`: every card starts without a model, and the
//!    first load takes `L` from time 0 at the earliest. (`executor: brain` tasks are
//!    on the path too.)
//! 2. **All GPUs busy.** `(W + M·L) / G`, where `W` sums the tasks the workers run
//!    (all but `executor: brain`): each worker runs one task at a time, and every
//!    model needed is loaded at least once, on some worker, taking `L` of its time.
//! 3. **LLM cards busy.** `(W_llm + M·L) / C`, where `W_llm` sums the llm tasks: they
//!    run only on the `C` cards with an LLM server, which also carry those loads.
//! 4. **Concurrency groups.** For each rig.toml group with limit `k`, the summed
//!    duration of its tasks divided by `k`: at most `k` of them run at any moment.
//!
//! Each term holds for every schedule the model allows, so their maximum does. Not
//! counted, since a schedule may avoid them: unloads (a loaded card may run cpu
//! work to the end), more than one load per model, and waiting for a card.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rigmind_config::RigConfig;
use rigmind_plan::ExpandedPlan;
use rigmind_types::{Executor, TaskClass};

use crate::engine::{estimate, secs, us};

/// The terms of the bound, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundTerms {
    pub critical_path_s: f64,
    pub all_gpus_s: f64,
    pub llm_cards_s: f64,
    pub groups_s: f64,
}

impl BoundTerms {
    pub fn max(&self) -> f64 {
        self.critical_path_s
            .max(self.all_gpus_s)
            .max(self.llm_cards_s)
            .max(self.groups_s)
    }
}

/// The lower bound of the module doc, in seconds.
pub fn lower_bound(plan: &ExpandedPlan, rig: &RigConfig) -> f64 {
    bound_terms(plan, rig).max()
}

/// Each term of the lower bound.
pub fn bound_terms(plan: &ExpandedPlan, rig: &RigConfig) -> BoundTerms {
    let n = plan.jobs.len();
    let load = us(rig.llm.load_seconds);
    let dur: Vec<i64> = plan
        .jobs
        .iter()
        .map(|j| us(estimate(j.estimate_secs)))
        .collect();
    let on_worker = |i: usize| plan.jobs[i].executor == Executor::Worker;
    let is_llm = |i: usize| plan.jobs[i].task_class == TaskClass::Llm;

    // 1. Critical path (Kahn's order: a plan may name a later task as dependency).
    let mut indeg: Vec<usize> = plan.jobs.iter().map(|j| j.depends_on.len()).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, j) in plan.jobs.iter().enumerate() {
        for &d in &j.depends_on {
            dependents[d].push(i);
        }
    }
    let mut start = vec![0i64; n];
    let mut queue: VecDeque<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut cp = 0i64;
    while let Some(i) = queue.pop_front() {
        if is_llm(i) && on_worker(i) {
            start[i] = start[i].max(load);
        }
        let end = start[i] + dur[i];
        cp = cp.max(end);
        for &k in &dependents[i] {
            start[k] = start[k].max(end);
            indeg[k] -= 1;
            if indeg[k] == 0 {
                queue.push_back(k);
            }
        }
    }

    // 2 and 3. Work over the GPUs and over the LLM cards.
    let models: BTreeSet<String> = plan
        .jobs
        .iter()
        .filter(|j| j.task_class == TaskClass::Llm && j.executor == Executor::Worker)
        .map(|j| j.llm.model.clone().unwrap_or_else(|| rig.llm.model.clone()))
        .collect();
    let loads = load * models.len() as i64;
    let work: i64 = (0..n).filter(|&i| on_worker(i)).map(|i| dur[i]).sum();
    let llm_work: i64 = (0..n)
        .filter(|&i| on_worker(i) && is_llm(i))
        .map(|i| dur[i])
        .sum();
    let g = rig.gpus.len();
    let c = rig.gpus.iter().filter(|g| g.ollama.is_some()).count();
    let all_gpus_s = if g > 0 {
        secs(work + loads) / g as f64
    } else {
        0.0
    };
    let llm_cards_s = if c > 0 && llm_work > 0 {
        secs(llm_work + loads) / c as f64
    } else {
        0.0
    };

    // 4. Concurrency groups.
    let mut by_group: BTreeMap<&str, i64> = BTreeMap::new();
    for (i, j) in plan.jobs.iter().enumerate() {
        if let Some(gr) = &j.group {
            *by_group.entry(gr.as_str()).or_default() += dur[i];
        }
    }
    let groups_s = by_group
        .iter()
        .filter_map(|(gr, w)| {
            let limit = *rig.groups.get(*gr)?;
            (limit > 0).then(|| secs(*w) / f64::from(limit))
        })
        .fold(0.0, f64::max);

    BoundTerms {
        critical_path_s: secs(cp),
        all_gpus_s,
        llm_cards_s,
        groups_s,
    }
}
