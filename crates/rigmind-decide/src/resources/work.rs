//! The work a brain's state holds, as the resource manager sees it: every job not
//! yet done, in groups of identical jobs, how long they run, and how soon they can
//! start.
//!
//! Grouping happens here, while walking the state, every round (nothing is kept
//! between rounds but the batch's index of the jobs not done,
//! [`Batch::unfinished`]): a batch of 100,000 jobs costs one array of its size,
//! one row per job not done, and one [`Work`] per group, not one per job. A group holds the jobs of one batch with the
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

/// [`work_of`], and the estimate of each plan task with a job not yet done in a
/// live batch, in one walk over the jobs.
pub fn work_and_estimates(
    state: &BrainState,
    default_model: &str,
    now: DateTime<Utc>,
) -> (Vec<Work>, BTreeMap<String, Estimate>) {
    let mut out = Vec::new();
    let mut estimates = BTreeMap::new();
    let active = state.batches.values().filter(|b| b.active());
    for (index, batch) in active.enumerate() {
        let mut g = Grouping::new(state, batch, default_model, now);
        g.push_into(index, &mut out);
        // Every plan task with a job not yet done has a group.
        for &first in &g.groups {
            let j = &batch.jobs[g.todo[first]];
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
    /// The jobs not done, in order: the only ones walked. A job's place in it is
    /// its position, which indexes `rows`.
    todo: Vec<usize>,
    /// Each job's position in `todo` ([`GONE`]: done).
    pos: Vec<u32>,
    /// One row per job not done, by position.
    rows: Vec<Row<'s>>,
    /// Each group's first job (its position).
    groups: Vec<usize>,
}

/// The position of a job done: it has no row.
const GONE: u32 = u32::MAX;

/// What the grouping knows of one job not done. The fields the walks need of
/// the job itself are copied out of its big struct in one pass, so that each
/// later walk reads a few bytes per job, not a cache line or two of a struct far
/// from the last; and all of it is one allocation per round sized by the jobs
/// not done, not one per field sized by all (a dozen arrays of 100,000 entries,
/// allocated, filled and freed every round, cost more than the walks).
#[derive(Clone, Copy)]
struct Row<'s> {
    /// Its dependencies (job indices; [`Grouping::pos`] gives their rows).
    deps: &'s [usize],
    /// Queued or running: it waits for nothing, whatever its dependencies.
    placed: bool,
    running: bool,
    /// Every dependency complete.
    unmet_none: bool,
    /// Its estimate, and what it has left.
    secs: f64,
    left: f64,
    /// Its kind: jobs of one kind share plan task, class, model, group and
    /// estimate (numbered as met; two runs of one kind may get two numbers).
    kind: u32,
    /// When it can start (`None` until [`Grouping::ready_times`]).
    at: Option<f64>,
    /// Whether it waits for unfinished jobs ([`Grouping::waits`]).
    waits: bool,
    /// Its key ([`Grouping::full_keys`]).
    full: Option<u64>,
    /// Its group (an index into `groups`).
    group: usize,
    /// The group whose job last counted it as a dependency
    /// ([`Grouping::dependencies`]).
    taken: usize,
}

impl Default for Row<'_> {
    fn default() -> Self {
        Row {
            deps: &[],
            placed: false,
            running: false,
            unmet_none: false,
            secs: 0.0,
            left: 0.0,
            kind: 0,
            at: None,
            waits: false,
            full: None,
            group: NONE,
            taken: NONE,
        }
    }
}

/// Whether two jobs are of one kind: plan task, class, model, concurrency group,
/// written estimate and endpoint. `same_task`: they are known to share their plan
/// task (one run of [`Batch::plan_task_runs`]), so its name is not compared.
fn alike(a: &Job, b: &Job, same_task: bool) -> bool {
    (same_task || a.plan_task_id == b.plan_task_id)
        && a.work.class == b.work.class
        && a.work.model == b.work.model
        && a.work.group == b.work.group
        && a.work.estimate_secs == b.work.estimate_secs
        && a.work.endpoint.is_some() == b.work.endpoint.is_some()
}

/// Marks a row with no group yet, or no group that took it.
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
        let todo = batch.unfinished();
        let mut pos = vec![GONE; batch.jobs.len()];
        let mut rows = Vec::with_capacity(todo.len());
        // The one pass over the jobs' structs (big, their strings elsewhere): alike
        // jobs come one after another, so each is compared with the last only.
        let mut last: Option<(&Job, f64, u32)> = None;
        let (runs, mut run, mut last_run) = (batch.plan_task_runs(), 0, usize::MAX);
        for (p, &i) in todo.iter().enumerate() {
            let j = &batch.jobs[i];
            pos[i] = p as u32;
            while runs.get(run + 1).is_some_and(|r| *r <= i) {
                run += 1;
            }
            let (s, k) = match last {
                Some((l, s, k)) if alike(l, j, run == last_run) => (s, k),
                _ => {
                    let k = last.map_or(0, |(_, _, k)| k + 1);
                    (estimate_of(state, j), k)
                }
            };
            (last, last_run) = (Some((j, s, k)), run);
            rows.push(Row {
                deps: &j.deps,
                placed: matches!(j.status, JobStatus::Queued | JobStatus::Processing),
                running: j.status == JobStatus::Processing,
                unmet_none: j.unmet == 0,
                secs: s,
                left: left_after(state, s, j, now),
                kind: k,
                ..Row::default()
            });
        }
        let mut g = Grouping {
            batch,
            default_model,
            todo,
            pos,
            rows,
            groups: Vec::new(),
        };
        let order = g.dependencies_first();
        g.ready_times(&order);
        for p in 0..g.rows.len() {
            g.rows[p].waits = g.waits(p);
        }
        g.full_keys(&order);
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

    /// Every row once, each after the rows of its unfinished dependencies (one
    /// queued or running waits for nothing: one put there by hand may still have
    /// unfinished dependencies): depth-first, without recursion, so that a chain
    /// of 100,000 does not overflow the stack. A row already on the way is not
    /// entered again, so a cycle (task files edited by hand) ends too.
    fn dependencies_first(&self) -> Vec<usize> {
        let rows = &self.rows;
        let mut order = Vec::with_capacity(rows.len());
        let mut seen = vec![false; rows.len()];
        let mut stack = Vec::new();
        for start in 0..rows.len() {
            stack.push((start, false));
            while let Some((p, expanded)) = stack.pop() {
                if expanded {
                    order.push(p);
                    continue;
                }
                if seen[p] {
                    continue;
                }
                seen[p] = true;
                stack.push((p, true));
                if !rows[p].placed {
                    stack.extend(
                        self.unfinished_deps(p)
                            .filter(|q| !seen[*q])
                            .map(|q| (q, false)),
                    );
                }
            }
        }
        order
    }

    /// How soon each unfinished job can start (`order`: dependencies first): the
    /// longest chain of unfinished dependencies before it, each taking what it
    /// has left.
    fn ready_times(&mut self, order: &[usize]) {
        for &p in order {
            let j = self.rows[p];
            let at = if j.placed || j.unmet_none {
                0.0
            } else {
                let after = self.unfinished_deps(p).map(|q| {
                    let d = &self.rows[q];
                    d.at.unwrap_or(0.0) + d.left
                });
                after.fold(0.0f64, f64::max)
            };
            self.rows[p].at = Some(at);
        }
    }

    /// The rows of the unfinished dependencies of the job at `p`.
    fn unfinished_deps(&self, p: usize) -> impl Iterator<Item = usize> + '_ {
        let deps = self.rows[p].deps.iter().map(|d| self.pos[*d]);
        deps.filter(|q| *q != GONE).map(|q| q as usize)
    }

    /// Whether the job at `p` waits for unfinished jobs (one queued or running
    /// waits for nothing: one put there by hand may still have unfinished
    /// dependencies).
    fn waits(&self, p: usize) -> bool {
        !self.rows[p].placed && self.unfinished_deps(p).next().is_some()
    }

    /// A hash of what makes the job at `p` alike to others, but for its
    /// dependencies: a running job is alike to none.
    fn own_key(&self, p: usize) -> u64 {
        let j = &self.rows[p];
        let mut h = Fx::default();
        if j.running {
            (0u8, self.todo[p]).hash(&mut h);
        } else {
            let at = j.at.unwrap_or(0.0);
            let kind = (j.kind, j.secs.to_bits());
            (1u8, kind, at.to_bits(), j.waits).hash(&mut h);
        }
        h.finish()
    }

    /// Puts every unfinished job in a group: alike jobs (their own keys) whose
    /// unfinished dependencies are in the same groups ([`Grouping::full_keys`]).
    fn assign(&mut self) {
        let mut by_key: HashMap<u64, usize, BuildHasherDefault<Fx>> = HashMap::default();
        // Alike jobs mostly come one after another: the last key is asked first.
        let mut last: Option<(u64, usize)> = None;
        for p in 0..self.rows.len() {
            let Some(key) = self.rows[p].full else {
                continue;
            };
            let g = match last {
                Some((k, g)) if k == key => g,
                _ => {
                    let next = self.groups.len();
                    let g = *by_key.entry(key).or_insert(next);
                    if g == next {
                        self.groups.push(p);
                    }
                    last = Some((key, g));
                    g
                }
            };
            self.rows[p].group = g;
        }
    }

    /// Each unfinished job's key (`order`: dependencies first): its own key with
    /// the set of its unfinished dependencies' keys, so that jobs of one key wait
    /// on jobs of the same keys (the same groups).
    fn full_keys(&mut self, order: &[usize]) {
        let mut keys = Vec::new();
        for &p in order {
            keys.clear();
            // A job that waits for nothing has no dependencies in its key.
            if self.rows[p].waits {
                let deps = self.unfinished_deps(p);
                keys.extend(deps.map(|q| self.rows[q].full.unwrap_or(0)));
            }
            keys.sort_unstable();
            keys.dedup();
            let mut h = Fx::default();
            (self.own_key(p), &keys).hash(&mut h);
            self.rows[p].full = Some(h.finish());
        }
    }

    /// The groups as [`Work`], appended to `out` (whose indices the dependencies
    /// use), for the batch at `index` among the active ones.
    fn push_into(&mut self, index: usize, out: &mut Vec<Work>) {
        let base = out.len();
        let mut items = vec![0usize; self.groups.len()];
        for row in &self.rows {
            items[row.group] += 1;
        }
        let deps = self.dependencies(&items);
        for (g, &first) in self.groups.iter().enumerate() {
            let (j, row) = (&self.batch.jobs[self.todo[first]], &self.rows[first]);
            let running = j.status == JobStatus::Processing;
            out.push(Work {
                class: Self::class(j),
                model: self.model(j).map(str::to_string),
                secs: row.secs,
                ready_in: row.at.unwrap_or(0.0),
                items: items[g],
                running,
                left: if running { row.left } else { row.secs },
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
    fn dependencies(&mut self, items: &[usize]) -> Vec<Vec<Dep>> {
        // Per group: (group waited on, edges, last job counted, item-wise so far).
        let mut acc: Vec<Vec<(usize, usize, usize, bool)>> = vec![Vec::new(); self.groups.len()];
        let (rows, pos) = (&mut self.rows, &self.pos);
        for p in 0..rows.len() {
            let j = rows[p];
            let b = j.group;
            if !j.waits {
                continue;
            }
            let unfinished = j.deps.iter().map(|d| pos[*d]).filter(|q| *q != GONE);
            for q in unfinished.map(|q| q as usize) {
                let a = rows[q].group;
                let shared = rows[q].taken == b;
                rows[q].taken = b;
                let e = match acc[b].iter().position(|e| e.0 == a) {
                    Some(k) => &mut acc[b][k],
                    None => {
                        acc[b].push((a, 0, NONE, true));
                        acc[b].last_mut().expect("just pushed")
                    }
                };
                e.3 &= e.2 != p && !shared;
                e.1 += 1;
                e.2 = p;
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
        let e = work_and_estimates(&state, "m", now).1;
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

    #[test]
    fn dependencies_in_a_cycle_still_give_work() {
        // Task files edited by hand can make two jobs wait on each other: the
        // round must still end (nothing of them is ever ready).
        let mut state = BrainState::default();
        state.insert(batch(&[&[1], &[0], &[]]));
        let work = work_of(&state, "m", Utc::now());
        assert_eq!(work.iter().map(|w| w.items).sum::<usize>(), 3);
    }
}
