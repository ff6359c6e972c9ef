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
//! 5. **Critical path through packed sets.** Term 1, where a task that waits on
//!    several tasks also waits until that set could have run on the workers: the
//!    set's tasks start no earlier than the earliest of them can, and the workers
//!    that may run them (all `G`; for llm tasks the `C` cards, and for one model's
//!    only the cards that fit it), one task at a time, cannot finish them sooner
//!    than [`pack`] says. The same for each plan task's jobs, and each model's,
//!    followed by the shortest chain after any of them. This is what a stage behind
//!    a barrier costs: 22 tasks of 120 s on five cards take five rounds (600 s),
//!    not 22 × 120 / 5 (528 s).
//!
//! Each term holds for every schedule the model allows, so their maximum does. Not
//! counted, since a schedule may avoid them: unloads (a loaded card may run cpu
//! work to the end), more than one load per model, and waiting for a card.

use std::collections::{BTreeMap, BTreeSet};

use rigmind_config::RigConfig;
use rigmind_decide::view::ModelSizes;
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
    pub packed_path_s: f64,
}

impl BoundTerms {
    pub fn max(&self) -> f64 {
        self.critical_path_s
            .max(self.all_gpus_s)
            .max(self.llm_cards_s)
            .max(self.groups_s)
            .max(self.packed_path_s)
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

    // 1. Critical path (in dependency order: a plan may name a later task as
    // dependency).
    let order = plan.topological();
    let mut start = vec![0i64; n];
    let mut cp = 0i64;
    for &i in &order {
        let deps = &plan.jobs[i].depends_on;
        let mut s = deps.iter().map(|&d| start[d] + dur[d]).max().unwrap_or(0);
        if is_llm(i) && on_worker(i) {
            s = s.max(load);
        }
        start[i] = s;
        cp = cp.max(s + dur[i]);
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

    let packed_path_s = secs(packed_path(plan, rig, &order, &dur, load));

    BoundTerms {
        critical_path_s: secs(cp),
        all_gpus_s,
        llm_cards_s,
        groups_s,
        packed_path_s,
    }
}

/// Which workers may run a job: any of them, or for an llm task only the cards with
/// an LLM server that fit its model.
struct Machines {
    /// `G`: every worker.
    all: usize,
    /// `C`: the cards with an LLM server.
    llm: usize,
    /// Per llm job on a worker, its model's index into `fitting`.
    model: Vec<Option<usize>>,
    /// Per model, the cards with an LLM server that can hold it.
    fitting: Vec<usize>,
}

impl Machines {
    fn of(plan: &ExpandedPlan, rig: &RigConfig) -> Self {
        let sizes = ModelSizes::of(rig);
        let mut names: Vec<String> = Vec::new();
        let model = plan
            .jobs
            .iter()
            .map(|j| {
                if j.task_class != TaskClass::Llm || j.executor != Executor::Worker {
                    return None;
                }
                // A task that requires an external model starts on the escalation
                // ladder's last tier, whatever it names: any LLM card (no name
                // fits every card).
                let name = if j.llm.requires_external {
                    String::new()
                } else {
                    j.llm.model.clone().unwrap_or_else(|| rig.llm.model.clone())
                };
                Some(names.iter().position(|n| *n == name).unwrap_or_else(|| {
                    names.push(name);
                    names.len() - 1
                }))
            })
            .collect();
        let llm_cards = || rig.gpus.iter().filter(|g| g.ollama.is_some());
        let fitting = names
            .iter()
            .map(|name| llm_cards().filter(|g| sizes.fits(g.vram_mb, name)).count())
            .collect();
        Self {
            all: rig.gpus.len(),
            llm: llm_cards().count(),
            model,
            fitting,
        }
    }

    /// The least time `set` (job indices) needs on the workers from the earliest
    /// start among its jobs (`est`) to the end of the last one, as `(earliest start,
    /// span)`; `None` for fewer than two jobs on workers (their path says as much).
    fn span(
        &self,
        set: &[usize],
        dur: &[i64],
        est: &[i64],
        on_worker: &[bool],
    ) -> Option<(i64, i64)> {
        let mut all = Vec::new();
        let mut llm = Vec::new();
        let mut by_model: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
        let mut first = i64::MAX;
        for &i in set.iter().filter(|&&i| on_worker[i]) {
            first = first.min(est[i]);
            all.push(dur[i]);
            if let Some(m) = self.model[i] {
                llm.push(dur[i]);
                by_model.entry(m).or_default().push(dur[i]);
            }
        }
        if all.len() < 2 {
            return None;
        }
        let mut span = pack(&mut all, self.all).max(pack(&mut llm, self.llm));
        for (m, mut d) in by_model {
            span = span.max(pack(&mut d, self.fitting[m]));
        }
        Some((first, span))
    }
}

/// Term 5 of the module doc, in microseconds.
fn packed_path(
    plan: &ExpandedPlan,
    rig: &RigConfig,
    order: &[usize],
    dur: &[i64],
    load: i64,
) -> i64 {
    let n = plan.jobs.len();
    let on_worker: Vec<bool> = plan
        .jobs
        .iter()
        .map(|j| j.executor == Executor::Worker)
        .collect();
    let machines = Machines::of(plan, rig);

    let mut est = vec![0i64; n];
    let mut previous: Option<(&[usize], i64)> = None;
    for &k in order {
        let deps = plan.jobs[k].depends_on.as_slice();
        let mut start = deps.iter().map(|&d| est[d] + dur[d]).max().unwrap_or(0);
        // Items of one for_each share their dependencies: pack them once.
        let packed = match previous {
            Some((p, end)) if p == deps => end,
            _ => machines
                .span(deps, dur, &est, &on_worker)
                .map_or(0, |(first, span)| first + span),
        };
        previous = Some((deps, packed));
        start = start.max(packed);
        if machines.model[k].is_some() {
            start = start.max(load);
        }
        est[k] = start;
    }

    // The longest chain after each job ends.
    let mut tail = vec![0i64; n];
    for &k in order.iter().rev() {
        for &d in &plan.jobs[k].depends_on {
            tail[d] = tail[d].max(dur[k] + tail[k]);
        }
    }
    // Each plan task's jobs, and each model's, as one set followed by the shortest
    // chain after any of them.
    let mut sets: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut by_model: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, j) in plan.jobs.iter().enumerate() {
        sets.entry(j.plan_task_id.as_str()).or_default().push(i);
        if let Some(m) = machines.model[i] {
            by_model.entry(m).or_default().push(i);
        }
    }
    let through_sets = sets
        .values()
        .chain(by_model.values())
        .filter_map(|set| {
            let (first, span) = machines.span(set, dur, &est, &on_worker)?;
            let after = set.iter().map(|&i| tail[i]).min().unwrap_or(0);
            Some(first + span + after)
        })
        .max()
        .unwrap_or(0);
    let through_jobs = (0..n).map(|i| est[i] + dur[i]).max().unwrap_or(0);
    through_jobs.max(through_sets)
}

/// The least makespan of independent tasks of durations `d`, all available at once,
/// on `m` identical machines that run one at a time without preemption: the longest
/// task, the work over `m`, and the pigeonhole bound (of the `k·m + 1` longest tasks
/// some machine runs `k + 1`, so at least the `k + 1` shortest of them). For `n`
/// equal tasks of `p` it is `⌈n / m⌉ · p`. Sorts `d`.
pub fn pack(d: &mut [i64], m: usize) -> i64 {
    if d.is_empty() || m == 0 {
        return 0;
    }
    d.sort_unstable_by(|a, b| b.cmp(a));
    let total: i64 = d.iter().sum();
    let mut best = d[0].max(total / m as i64);
    // prefix[i] = d[0] + ... + d[i - 1]
    let mut prefix = Vec::with_capacity(d.len() + 1);
    prefix.push(0i64);
    for &x in d.iter() {
        prefix.push(prefix.last().copied().unwrap_or(0) + x);
    }
    let mut k = 1;
    while k * m < d.len() {
        // d[k·m − k ..= k·m]: the k + 1 shortest of the k·m + 1 longest
        let (lo, hi) = (k * m - k, k * m + 1);
        best = best.max(prefix[hi] - prefix[lo]);
        k += 1;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::pack;

    #[test]
    fn equal_tasks_take_whole_rounds() {
        // 22 tasks of 120 on 5 machines: 5 rounds, not 22 × 120 / 5 = 528.
        assert_eq!(pack(&mut [120; 22], 5), 600);
        assert_eq!(pack(&mut [120; 20], 5), 480);
        assert_eq!(pack(&mut [60; 27], 5), 360);
    }

    #[test]
    fn the_longest_task_or_the_work_over_the_machines() {
        assert_eq!(pack(&mut [100, 1, 1], 2), 100);
        assert_eq!(pack(&mut [], 3), 0);
        assert_eq!(pack(&mut [5, 5], 0), 0);
        // 3 + 3 + 2 + 2 + 2 = 12 on 2 machines: at least 6; of the 3 longest (3, 3, 2)
        // one machine runs two: at least 2 + 3 = 5, so 6 stands.
        assert_eq!(pack(&mut [2, 3, 2, 3, 2], 2), 6);
        // 10, 9, 9 on 2 machines: two of them share one, at least 9 + 9 = 18.
        assert_eq!(pack(&mut [9, 10, 9], 2), 18);
    }
}
