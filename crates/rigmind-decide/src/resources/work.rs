//! The work a brain's state holds, as the resource manager sees it: every job not
//! yet done, in groups of identical jobs, how long they run, and how soon they can
//! start.
//!
//! Grouping happens here, while walking the state, every round (nothing is kept
//! between rounds): a batch of 100,000 jobs costs a few arrays of its size and one
//! [`Work`] per group, not one per job. A group holds the jobs of one batch with the
//! same plan task, class, model, concurrency group, estimate, start time
//! (`ready_in`), and the same groups of unfinished dependencies; a running job is a
//! group of its own. Between groups a dependency is item-wise (each job waits on
//! its own job of the other group: a `for_each` stage after another) or, for
//! anything else, all-of (a fan-in; conservative where a job waits on only some).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use chrono::{DateTime, Utc};
use rigmind_types::TaskClass;

use super::{Dep, Work};
use crate::estimate::Estimate;
use crate::state::{Batch, BrainState, Job, JobStatus};

/// The work a brain's state holds, with the look-ahead of the module doc: every job
/// not yet done, in groups, the dependencies among them, and how long a running
/// one has left at `now`. Run times are [`Estimate::of_job`]'s: the plan's
/// `estimate` corrected by the runs seen of the same plan task.
pub fn work_of(state: &BrainState, default_model: &str, now: DateTime<Utc>) -> Vec<Work> {
    work_and_estimates(state, default_model, now).0
}

/// [`work_of`] and [`estimates_of`] in one walk over the jobs.
pub fn work_and_estimates(
    state: &BrainState,
    default_model: &str,
    now: DateTime<Utc>,
) -> (Vec<Work>, BTreeMap<String, Estimate>) {
    let mut out = Vec::new();
    let mut estimates = BTreeMap::new();
    let active = state.batches.values().filter(|b| b.active());
    for (index, batch) in active.enumerate() {
        let g = Grouping::new(state, batch, default_model, now);
        g.push_into(index, &mut out);
        // Every plan task with a job not yet done has a group.
        for &first in &g.groups {
            let j = &batch.jobs[first];
            if !estimates.contains_key(&j.plan_task_id) {
                estimates.insert(j.plan_task_id.clone(), Estimate::of_job(state, j));
            }
        }
    }
    (out, estimates)
}

/// One batch's unfinished jobs, grouped.
struct Grouping<'s> {
    batch: &'s Batch,
    default_model: &'s str,
    /// Each job's estimate, what it has left, and when it can start (`None`: done).
    secs: Vec<f64>,
    left: Vec<f64>,
    at: Vec<Option<f64>>,
    /// Each job's kind: jobs of one kind share plan task, class, model, group and
    /// estimate (numbered as met; two runs of one kind may get two numbers).
    kind: Vec<u32>,
    /// Whether each job waits for unfinished jobs ([`Grouping::waits`]).
    waits: Vec<bool>,
    /// Each unfinished job's group (an index into `groups`).
    group_of: Vec<usize>,
    /// Each group's first job.
    groups: Vec<usize>,
}

/// Whether two jobs are of one kind: plan task, class, model, concurrency group,
/// written estimate and endpoint.
fn alike(a: &Job, b: &Job) -> bool {
    a.plan_task_id == b.plan_task_id
        && a.work.class == b.work.class
        && a.work.model == b.work.model
        && a.work.group == b.work.group
        && a.work.estimate_secs == b.work.estimate_secs
        && a.work.endpoint.is_some() == b.work.endpoint.is_some()
}

/// Marks a job with no group (done).
const NONE: usize = usize::MAX;

/// A fast hasher for the grouping keys (FxHash's rule): they are built here, not
/// chosen by anyone, so no protection against crafted collisions is needed, and
/// SipHash was an eighth of a round at 100,000 jobs.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl<'s> Grouping<'s> {
    /// Walks `batch`: estimates (one look-up per plan task), start times, groups.
    fn new(
        state: &BrainState,
        batch: &'s Batch,
        default_model: &'s str,
        now: DateTime<Utc>,
    ) -> Self {
        let n = batch.jobs.len();
        let (mut secs, mut left, mut kind) = (vec![0.0; n], vec![0.0; n], vec![0u32; n]);
        // One pass over the jobs (big structs, their strings elsewhere): alike jobs
        // come one after another, so each is compared with the last only.
        let mut last: Option<(&Job, f64, u32)> = None;
        for (i, j) in batch.jobs.iter().enumerate() {
            if is_done(j.status) {
                continue;
            }
            let (s, k) = match last {
                Some((l, s, k)) if alike(l, j) => (s, k),
                _ => {
                    let k = last.map_or(0, |(_, _, k)| k + 1);
                    (estimate_of(state, j), k)
                }
            };
            last = Some((j, s, k));
            (secs[i], left[i], kind[i]) = (s, left_after(state, s, j, now), k);
        }
        let done: Vec<bool> = batch.jobs.iter().map(|j| is_done(j.status)).collect();
        let at = ready_times(batch, &done, |i| left[i]);
        let mut g = Grouping {
            batch,
            default_model,
            secs,
            left,
            kind,
            at,
            waits: Vec::new(),
            group_of: vec![NONE; n],
            groups: Vec::new(),
        };
        g.waits = (0..n).map(|i| g.waits(i)).collect();
        g.assign();
        g
    }

    /// The class the resource manager sees for job `j`.
    fn class(j: &Job) -> TaskClass {
        match j.work.class {
            // An endpoint runs it: no card is needed, like cpu work.
            Some(TaskClass::Llm) if j.work.endpoint.is_some() => TaskClass::Cpu,
            Some(c @ (TaskClass::Script | TaskClass::Llm)) => c,
            _ => TaskClass::Cpu,
        }
    }

    /// The model job `j` needs (llm work only).
    fn model(&self, j: &'s Job) -> Option<&'s str> {
        (Self::class(j) == TaskClass::Llm)
            .then(|| j.work.model.as_deref().unwrap_or(self.default_model))
    }

    /// Whether job `i` waits for unfinished jobs (one queued or running waits for
    /// nothing: one put there by hand may still have unfinished dependencies).
    fn waits(&self, i: usize) -> bool {
        let j = &self.batch.jobs[i];
        !matches!(j.status, JobStatus::Queued | JobStatus::Processing)
            && j.deps.iter().any(|d| self.at[*d].is_some())
    }

    /// A hash of what makes job `i` alike to others, but for its dependencies: a
    /// running job is alike to none.
    fn own_key(&self, i: usize) -> u64 {
        let j = &self.batch.jobs[i];
        let mut h = Fx::default();
        if j.status == JobStatus::Processing {
            (0u8, i).hash(&mut h);
        } else {
            let at = self.at[i].unwrap_or(0.0);
            let kind = (self.kind[i], self.secs[i].to_bits());
            (1u8, kind, at.to_bits(), self.waits[i]).hash(&mut h);
        }
        h.finish()
    }

    /// Puts every unfinished job in a group: alike jobs (their own keys) whose
    /// unfinished dependencies are in the same groups ([`Grouping::full_keys`]).
    fn assign(&mut self) {
        let full = self.full_keys();
        let mut by_key: HashMap<u64, usize, BuildHasherDefault<Fx>> = HashMap::default();
        // Alike jobs mostly come one after another: the last key is asked first.
        let mut last: Option<(u64, usize)> = None;
        for (i, key) in full.into_iter().enumerate() {
            let Some(key) = key else { continue };
            let g = match last {
                Some((k, g)) if k == key => g,
                _ => {
                    let next = self.groups.len();
                    let g = *by_key.entry(key).or_insert(next);
                    if g == next {
                        self.groups.push(i);
                    }
                    last = Some((key, g));
                    g
                }
            };
            self.group_of[i] = g;
        }
    }

    /// Each unfinished job's key: its own key with the set of its unfinished
    /// dependencies' keys, so that jobs of one key wait on jobs of the same keys
    /// (the same groups). Memoised, depth-first without recursion, as
    /// [`ready_times`].
    fn full_keys(&self) -> Vec<Option<u64>> {
        let n = self.batch.jobs.len();
        let own: Vec<u64> = (0..n)
            .map(|i| {
                if self.at[i].is_some() {
                    self.own_key(i)
                } else {
                    0
                }
            })
            .collect();
        let mut full: Vec<Option<u64>> = vec![None; n];
        let (mut stack, mut keys) = (Vec::new(), Vec::new());
        for start in (0..n).filter(|i| self.at[*i].is_some()) {
            stack.push((start, false));
            while let Some((i, expanded)) = stack.pop() {
                if full[i].is_some() {
                    continue;
                }
                let deps = self.batch.jobs[i].deps.iter().copied();
                let mut unfinished = deps.filter(|d| self.at[*d].is_some() && self.waits[i]);
                if !expanded {
                    stack.push((i, true));
                    stack.extend(
                        unfinished
                            .filter(|d| full[*d].is_none())
                            .map(|d| (d, false)),
                    );
                    continue;
                }
                keys.clear();
                keys.extend(unfinished.by_ref().map(|d| full[d].unwrap_or(0)));
                keys.sort_unstable();
                keys.dedup();
                let mut h = Fx::default();
                (own[i], &keys).hash(&mut h);
                full[i] = Some(h.finish());
            }
        }
        full
    }

    /// The groups as [`Work`], appended to `out` (whose indices the dependencies
    /// use), for the batch at `index` among the active ones.
    fn push_into(&self, index: usize, out: &mut Vec<Work>) {
        let base = out.len();
        let mut items = vec![0usize; self.groups.len()];
        for &g in self.group_of.iter().filter(|g| **g != NONE) {
            items[g] += 1;
        }
        let deps = self.dependencies(&items);
        for (g, &first) in self.groups.iter().enumerate() {
            let j = &self.batch.jobs[first];
            let running = j.status == JobStatus::Processing;
            out.push(Work {
                class: Self::class(j),
                model: self.model(j).map(str::to_string),
                secs: self.secs[first],
                ready_in: self.at[first].unwrap_or(0.0),
                items: items[g],
                running,
                left: if running {
                    self.left[first]
                } else {
                    self.secs[first]
                },
                deps: deps[g]
                    .iter()
                    .map(|d| Dep {
                        on: base + d.on,
                        each: d.each,
                    })
                    .collect(),
                group: j.work.group.clone(),
                batch: index,
                claim: rigmind_queue::task::TaskName::parse(&j.file_name)
                    .map_or((0, 0), |n| (n.rank, n.seq)),
            });
        }
    }

    /// Each group's dependencies on the others (group indices of this batch):
    /// item-wise when each waiting job has one job of the other group and no two
    /// share it, and there are no more of them than the other group has items;
    /// all-of otherwise.
    fn dependencies(&self, items: &[usize]) -> Vec<Vec<Dep>> {
        // Per group: (group waited on, edges, last job counted, item-wise so far).
        let mut acc: Vec<Vec<(usize, usize, usize, bool)>> = vec![Vec::new(); self.groups.len()];
        // The group whose job last counted each job as its dependency.
        let mut taken = vec![NONE; self.batch.jobs.len()];
        for (i, j) in self.batch.jobs.iter().enumerate() {
            let b = self.group_of[i];
            if b == NONE || !self.waits[i] {
                continue;
            }
            for &d in j.deps.iter().filter(|d| self.group_of[**d] != NONE) {
                let a = self.group_of[d];
                let shared = taken[d] == b;
                taken[d] = b;
                let e = match acc[b].iter().position(|e| e.0 == a) {
                    Some(k) => &mut acc[b][k],
                    None => {
                        acc[b].push((a, 0, NONE, true));
                        acc[b].last_mut().expect("just pushed")
                    }
                };
                e.3 &= e.2 != i && !shared;
                e.1 += 1;
                e.2 = i;
            }
        }
        acc.into_iter()
            .map(|list| {
                list.into_iter()
                    .map(|(a, edges, _, each)| Dep {
                        on: a,
                        each: (each && edges <= items[a]).then_some(edges),
                    })
                    .collect()
            })
            .collect()
    }
}

/// How soon each unfinished job of `batch` can start (`None` for jobs `done`, a
/// compact copy of their statuses: the big jobs are not visited per edge): the
/// longest chain of unfinished dependencies before it, each taking what it has
/// `left`. Memoised; computed depth-first without recursion.
fn ready_times(batch: &Batch, done: &[bool], left: impl Fn(usize) -> f64) -> Vec<Option<f64>> {
    let n = batch.jobs.len();
    let mut at: Vec<Option<f64>> = vec![None; n];
    let mut stack = Vec::new();
    for start in 0..n {
        if at[start].is_some() || done[start] {
            continue;
        }
        stack.push((start, false));
        while let Some((i, expanded)) = stack.pop() {
            if at[i].is_some() {
                continue;
            }
            let j = &batch.jobs[i];
            if matches!(j.status, JobStatus::Queued | JobStatus::Processing) || j.unmet == 0 {
                at[i] = Some(0.0);
                continue;
            }
            if !expanded {
                stack.push((i, true));
                for &d in &j.deps {
                    if at[d].is_none() && !done[d] {
                        stack.push((d, false));
                    }
                }
                continue;
            }
            let mut ready = 0.0f64;
            for &d in &j.deps {
                if done[d] {
                    continue;
                }
                ready = ready.max(at[d].unwrap_or(0.0) + left(d));
            }
            at[i] = Some(ready);
        }
    }
    at
}

/// The estimate of each plan task with a job not yet done in a live batch.
pub fn estimates_of(state: &BrainState) -> BTreeMap<String, Estimate> {
    let mut out = BTreeMap::new();
    for batch in state.batches.values().filter(|b| b.active()) {
        let mut last: Option<&str> = None;
        for j in batch.jobs.iter().filter(|j| !is_done(j.status)) {
            // The jobs of a plan task come one after another: one look-up each.
            if last == Some(j.plan_task_id.as_str()) {
                continue;
            }
            last = Some(&j.plan_task_id);
            if !out.contains_key(&j.plan_task_id) {
                out.insert(j.plan_task_id.clone(), Estimate::of_job(state, j));
            }
        }
    }
    out
}

/// A job's expected run time, in seconds ([`Estimate::of_job`]).
pub fn estimate_of(state: &BrainState, job: &crate::state::Job) -> f64 {
    Estimate::of_job(state, job).secs()
}

/// How long a job still needs at `now`: its estimate, less what it has run if it
/// runs (past its estimate: a little more, not nothing).
pub fn left_of(state: &BrainState, job: &crate::state::Job, now: DateTime<Utc>) -> f64 {
    left_after(state, estimate_of(state, job), job, now)
}

/// Whether a running job has run past its estimate at `now`: when it will end
/// cannot be told (a heavy-tailed task runs on long after).
pub(super) fn overdue(state: &BrainState, job: &Job, now: DateTime<Utc>) -> bool {
    match (&job.holder, job.status) {
        (Some(h), JobStatus::Processing) => {
            let ran = (now - h.since).num_milliseconds().max(0) as f64 / 1000.0;
            ran > estimate_of(state, job)
        }
        _ => false,
    }
}

/// What a job whose estimate is `s` still needs at `now`: for a running one, its
/// estimate less what it has run, or, when longer, what the runs seen of its
/// plan task that went on past that time took beyond it (their median). Run
/// times are heavy-tailed: a job that has run long is likely to run on, and a
/// projection that expects it to end at once frees its card too soon.
fn left_after(state: &BrainState, s: f64, job: &Job, now: DateTime<Utc>) -> f64 {
    match (&job.holder, job.status) {
        (Some(h), JobStatus::Processing) => {
            let ran = (now - h.since).num_milliseconds().max(0) as f64 / 1000.0;
            let by_estimate = (s - ran).max(0.05 * s);
            let seen = state.learned.get(&job.plan_task_id);
            match seen.and_then(|l| l.median_past(ran)) {
                Some(m) => by_estimate.max(m - ran),
                None => by_estimate,
            }
        }
        _ => s,
    }
}

/// Done, or failed for good: no demand. A failure that will be retried still is.
fn is_done(s: JobStatus) -> bool {
    match s {
        JobStatus::Complete => true,
        JobStatus::Failed(f) => !f.retryable(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::batch;

    /// prep ×3 → label ×3 (item-wise) → report (fan-in), prep[0] complete.
    fn three_stages() -> BrainState {
        let mut b = batch(&[&[], &[], &[], &[0], &[1], &[2], &[3, 4, 5]]);
        for (i, j) in b.jobs.iter_mut().enumerate() {
            let (task, class) = match i {
                0..=2 => ("prep", TaskClass::Script),
                3..=5 => ("label", TaskClass::Llm),
                _ => ("report", TaskClass::Cpu),
            };
            j.plan_task_id = task.into();
            j.work.class = Some(class);
            j.work.estimate_secs = Some(10.0);
        }
        b.set_status(0, JobStatus::Complete);
        let mut state = BrainState::default();
        state.insert(b);
        state
    }

    #[test]
    fn alike_jobs_form_one_group_and_stages_wait_item_wise() {
        let work = work_of(&three_stages(), "m", Utc::now());
        let shape: Vec<(TaskClass, usize, f64, Vec<Dep>)> = work
            .iter()
            .map(|w| (w.class, w.items, w.ready_in, w.deps.clone()))
            .collect();
        let each = |on, n| Dep { on, each: Some(n) };
        assert_eq!(
            shape,
            vec![
                // prep[1], prep[2]: ready.
                (TaskClass::Script, 2, 0.0, vec![]),
                // label[0]: its prep is done.
                (TaskClass::Llm, 1, 0.0, vec![]),
                // label[1], label[2]: each on its own prep.
                (TaskClass::Llm, 2, 10.0, vec![each(0, 2)]),
                // report: all of label (label[0] alone is one item either way).
                (TaskClass::Cpu, 1, 20.0, vec![each(1, 1), Dep::all(2)]),
            ]
        );
        assert!(work.iter().all(|w| w.batch == 0 && !w.running));
    }

    #[test]
    fn jobs_waiting_on_different_groups_are_not_one_group() {
        // prep[0], prep[1] run (a group each), so tag[0], tag[1] are two groups of
        // one; post[0], post[1] then wait on different groups: two groups too (as
        // one group of two, each dependency would seem to free one of them).
        let mut b = batch(&[&[], &[], &[0], &[1], &[2], &[3]]);
        for (i, j) in b.jobs.iter_mut().enumerate() {
            j.plan_task_id = ["prep", "tag", "post"][i / 2].into();
            j.work.class = Some([TaskClass::Script, TaskClass::Llm][i / 2 % 2]);
            j.work.estimate_secs = Some(10.0);
        }
        b.set_status(0, JobStatus::Processing);
        b.set_status(1, JobStatus::Processing);
        let mut state = BrainState::default();
        state.insert(b);
        let work = work_of(&state, "m", Utc::now());
        let items: Vec<usize> = work.iter().map(|w| w.items).collect();
        assert_eq!(items, vec![1; 6]);
        let each = |on| vec![Dep { on, each: Some(1) }];
        assert_eq!(work[4].deps, each(2));
        assert_eq!(work[5].deps, each(3));
    }

    #[test]
    fn the_resource_managers_work_uses_the_learned_estimate() {
        let mut b = batch(&[&[], &[]]);
        for j in &mut b.jobs {
            j.plan_task_id = "prep".into();
            j.work.estimate_secs = Some(4.0);
        }
        let mut state = BrainState::default();
        state.insert(b);
        let now = chrono::Utc::now();
        let work = work_of(&state, "m", now);
        assert_eq!(work[0].secs, 4.0);
        for _ in 0..3 {
            state.learned.entry("prep".into()).or_default().add(7.5);
        }
        let work = work_of(&state, "m", now);
        assert_eq!(work[0].secs, 6.625);
        let e = estimates_of(&state);
        assert_eq!(e["prep"].to_string(), "learned:6.6s n=3");
    }

    #[test]
    fn a_job_that_ran_long_is_expected_to_run_on_as_the_longer_runs_seen_did() {
        let mut b = batch(&[&[]]);
        b.jobs[0].plan_task_id = "judge".into();
        b.jobs[0].work.estimate_secs = Some(100.0);
        b.set_status(0, JobStatus::Processing);
        let now = Utc::now();
        let ran = |secs: i64| crate::state::Holder {
            worker: None,
            session: None,
            pgid: None,
            since: now - chrono::Duration::seconds(secs),
        };
        let mut state = BrainState::default();
        state.insert(b);
        let runs = [100.0, 100.0, 100.0, 300.0, 500.0];
        let learned = state.learned.entry("judge".into()).or_default();
        for s in runs {
            learned.add(s);
        }
        let left = |state: &mut BrainState, secs| {
            let b = state.batches.values_mut().next().expect("one batch");
            b.jobs[0].holder = Some(ran(secs));
            let j = b.jobs[0].clone();
            left_of(state, &j, now)
        };
        // Early on, the estimate (100 as written and seen) less what it ran.
        assert_eq!(left(&mut state, 30), 70.0);
        // Past the usual 100 s, only the runs of 300 and 500 s went on: their
        // median (400 s) less the 150 s it ran, where the estimate alone says 5 s.
        assert_eq!(left(&mut state, 150), 250.0);
        // Past every run seen: the estimate's floor, 5 % of it.
        assert_eq!(left(&mut state, 600), 5.0);
    }
}
