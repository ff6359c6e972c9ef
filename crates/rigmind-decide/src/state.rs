//! What the brain has read of the files: batches, their jobs, and where each job is.
//!
//! The state is rebuilt from the files at start and kept in step with them by
//! [`BrainState::set_status`], which also keeps the derived indices (unmet dependency
//! counts, the ready set, failures not yet handled, the jobs not done) that let
//! [`crate::policy::decide`] work in time proportional to what changed, and the
//! resource manager in time proportional to what is left, not to the size of the
//! batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use rigmind_queue::batch::{BatchRecord, BatchState, Counts};
use rigmind_queue::task::{FailureKind, TaskStatus};
use rigmind_queue::workers::Liveness;
use serde::{Deserialize, Serialize};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// In `brain/private_tasks/<batch>/`, waiting on dependencies.
    Pending,
    Queued,
    Processing,
    Complete,
    Failed(FailureInfo),
}

impl JobStatus {
    /// The word for it in logs: the directory's name, `pending` for private_tasks
    /// (the word of [`TaskStatus`], so that logs and task files agree).
    pub fn as_str(self) -> &'static str {
        self.task_status().as_str()
    }

    /// The `status` a task file in this place carries.
    pub fn task_status(self) -> TaskStatus {
        match self {
            Self::Pending => TaskStatus::Pending,
            Self::Queued => TaskStatus::Queued,
            Self::Processing => TaskStatus::Processing,
            Self::Complete => TaskStatus::Complete,
            Self::Failed(_) => TaskStatus::Failed,
        }
    }

    /// Done, or failed for good: nothing more of it will run. A failure that will
    /// be retried is not done.
    pub fn is_done(self) -> bool {
        match self {
            Self::Complete => true,
            Self::Failed(f) => !f.retryable(),
            _ => false,
        }
    }
}

/// What the brain needs of a failure to decide what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureInfo {
    pub kind: FailureKind,
    /// Automatic retries already made.
    pub retry_count: u32,
    /// Automatic retries allowed.
    pub retries: u32,
    /// The escalation tier it failed on (`None`: it is on no tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<u32>,
    /// Failures on that tier, this one included.
    #[serde(default)]
    pub tier_failures: u32,
}

impl FailureInfo {
    /// Worker failures are retried while retries remain; definition errors,
    /// dependency failures and cancellations never are.
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::WorkerFailure
                | FailureKind::Timeout
                | FailureKind::LostWorker
                | FailureKind::Oom
        ) && self.retry_count < self.retries
    }
}

/// Who holds a task in `processing/`, as its file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `None` until the runner has written its start record.
    pub worker: Option<String>,
    pub session: Option<String>,
    pub pgid: Option<i32>,
    /// When it started (or, without a start record, when it was claimed).
    pub since: DateTime<Utc>,
}

/// One task of a batch, as the brain tracks it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    pub plan_task_id: String,
    pub task_id: String,
    pub file_name: String,
    pub status: JobStatus,
    /// Indices of the jobs it waits for.
    pub deps: Vec<usize>,
    /// Indices of the jobs waiting for it.
    pub dependents: Vec<usize>,
    /// How many of `deps` are not complete.
    pub unmet: usize,
    /// Set while the job is in `processing/`.
    pub holder: Option<Holder>,
    /// Its process group was killed by a cancellation.
    pub kill_sent: bool,
    /// Automatic retries spent, as its file last said: kept so that a task whose
    /// file vanishes is re-created with the retries it had left.
    pub retry_count: u32,
    /// What the resource manager weighs: class, model, expected run time.
    pub work: JobWork,
}

/// A job as demand on the rig, from its task file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobWork {
    pub class: Option<rigmind_types::TaskClass>,
    pub model: Option<String>,
    /// The plan's `estimate`.
    pub estimate_secs: Option<f64>,
    /// Its concurrency group.
    pub group: Option<String>,
    /// The endpoint an llm task runs on: no card is needed for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The plan's `endpoint:` pin, which every tier's endpoint follows when it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_endpoint: Option<String>,
}

impl JobWork {
    pub fn of(t: &rigmind_queue::task::TaskFile) -> Self {
        Self {
            class: t.task_class,
            model: t.model.clone(),
            estimate_secs: t.estimate_seconds,
            group: t.group.clone(),
            endpoint: t.endpoint.clone(),
            pinned_endpoint: t.pinned_endpoint.clone(),
        }
    }
}

/// A submitted plan and its jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    pub record: BatchRecord,
    pub jobs: Vec<Job>,
    pub by_file: HashMap<String, usize>,
    /// Pending jobs whose dependencies are all complete.
    pub ready: BTreeSet<usize>,
    /// Failed jobs whose consequence (retry, or failing dependents) is not decided.
    pub unhandled_failures: BTreeSet<usize>,
    /// Jobs back from failed: dependents failed because of them may run again.
    pub revived: BTreeSet<usize>,
    /// Jobs in `processing/`: the ones whose holder may be gone.
    pub running: BTreeSet<usize>,
    /// Jobs in the queue while a dependency is not complete (put there by hand).
    pub queued_early: BTreeSet<usize>,
    /// Queued jobs sent back for a retry, with the time their back-off ends.
    pub retry_at: BTreeMap<usize, DateTime<Utc>>,
    /// The record on disk is behind the state (bookkeeping of the writes, not an
    /// observation: left out of a recorded round).
    #[serde(skip)]
    pub dirty: bool,
    /// Jobs that reached complete or failed since the brain last took them, with
    /// the outcome (`complete` or the failure kind): its metrics count each end
    /// once, even one retried at once. Bookkeeping, left out of a recorded round;
    /// at most [`ENDED_MAX`] wait.
    #[serde(skip)]
    pub ended: Vec<(usize, &'static str)>,
    /// The jobs not done ([`JobStatus::is_done`]), one bit each, kept by
    /// [`Batch::set_status`]: the resource manager walks only these every round (a
    /// batch of 100,000 near its end has a few left). Not recorded: a batch read
    /// back from a recorded round has none, and [`Batch::unfinished`] walks it whole.
    #[serde(skip)]
    unfinished: Vec<u64>,
    /// The first job of each run of consecutive jobs of one plan task, found on
    /// first use (a job's plan task never changes once its batch is built).
    #[serde(skip)]
    plan_task_runs: std::sync::OnceLock<Vec<usize>>,
}

/// At most this many ends wait in a batch's [`Batch::ended`]; later ones are
/// dropped (nobody takes them in the simulator).
pub const ENDED_MAX: usize = 100_000;

impl Batch {
    /// Builds a batch from its jobs (deps given, dependents derived) and statuses.
    pub fn new(record: BatchRecord, mut jobs: Vec<Job>) -> Self {
        let by_file = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.file_name.clone(), i))
            .collect();
        for j in &mut jobs {
            j.dependents.clear();
        }
        for i in 0..jobs.len() {
            for d in jobs[i].deps.clone() {
                jobs[d].dependents.push(i);
            }
        }
        let unfinished = vec![0; jobs.len().div_ceil(64)];
        let mut b = Batch {
            record,
            jobs,
            by_file,
            ready: BTreeSet::new(),
            unhandled_failures: BTreeSet::new(),
            revived: BTreeSet::new(),
            running: BTreeSet::new(),
            queued_early: BTreeSet::new(),
            retry_at: BTreeMap::new(),
            dirty: true,
            ended: Vec::new(),
            unfinished,
            plan_task_runs: std::sync::OnceLock::new(),
        };
        for i in 0..b.jobs.len() {
            b.mark_unfinished(i);
            b.jobs[i].unmet = b.jobs[i]
                .deps
                .iter()
                .filter(|d| b.jobs[**d].status != JobStatus::Complete)
                .count();
            match b.jobs[i].status {
                JobStatus::Pending if b.jobs[i].unmet == 0 => {
                    b.ready.insert(i);
                }
                JobStatus::Failed(_) => {
                    b.unhandled_failures.insert(i);
                }
                JobStatus::Processing => {
                    b.running.insert(i);
                }
                JobStatus::Queued if b.jobs[i].unmet > 0 => {
                    b.queued_early.insert(i);
                }
                _ => {}
            }
        }
        b.refresh_counts();
        b
    }

    /// Sets job `i`'s bit of [`Batch::unfinished`] from its status.
    fn mark_unfinished(&mut self, i: usize) {
        let Some(word) = self.unfinished.get_mut(i / 64) else {
            return;
        };
        let bit = 1u64 << (i % 64);
        if self.jobs[i].status.is_done() {
            *word &= !bit;
        } else {
            *word |= bit;
        }
    }

    /// The indices of the jobs not done, in order.
    pub fn unfinished(&self) -> Vec<usize> {
        if self.unfinished.len() != self.jobs.len().div_ceil(64) {
            // Read back from a recorded round: no index.
            let todo = self.jobs.iter().enumerate();
            return todo
                .filter(|(_, j)| !j.status.is_done())
                .map(|(i, _)| i)
                .collect();
        }
        let mut out = Vec::new();
        for (w, &word) in self.unfinished.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                out.push(w * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
        out
    }

    /// The first job of each run of consecutive jobs of one plan task, in order
    /// (a plan task's jobs are usually one run: its `for_each` items).
    pub fn plan_task_runs(&self) -> &[usize] {
        self.plan_task_runs.get_or_init(|| {
            let mut last: Option<&str> = None;
            let mut runs = Vec::new();
            for (i, j) in self.jobs.iter().enumerate() {
                if last != Some(j.plan_task_id.as_str()) {
                    runs.push(i);
                    last = Some(&j.plan_task_id);
                }
            }
            runs
        })
    }

    /// Recomputes the record's counts from the jobs.
    pub fn refresh_counts(&mut self) {
        let mut c = Counts {
            total: self.jobs.len(),
            // Kept by refresh_live_counts, which depends on the time.
            retrying: self.record.counts.retrying,
            running: self.record.counts.running,
            ..Counts::default()
        };
        for j in &self.jobs {
            match j.status {
                JobStatus::Pending => c.pending += 1,
                JobStatus::Queued => c.queued += 1,
                JobStatus::Processing => c.processing += 1,
                JobStatus::Complete => c.complete += 1,
                JobStatus::Failed(_) => c.failed += 1,
            }
        }
        if c != self.record.counts {
            self.record.counts = c;
            self.dirty = true;
        }
    }

    /// Recomputes the counts that are not a job's place: `retrying` (queued jobs
    /// whose back-off ends after `now`; the others are forgotten) and `running`. A worker runs one task at a
    /// time, so its jobs in `processing/` count once per worker session; jobs with
    /// no start record yet have not started. The brain's own runner runs several
    /// at once: each counts.
    pub fn refresh_live_counts(&mut self, now: DateTime<Utc>) {
        self.retry_at.retain(|_, t| *t > now);
        let retrying = self.retry_at.len();
        let mut sessions = BTreeSet::new();
        let mut by_brain = 0;
        for h in self
            .running
            .iter()
            .filter_map(|&i| self.jobs[i].holder.as_ref())
        {
            match (h.worker.as_deref(), h.session.as_deref()) {
                (Some("brain"), _) => by_brain += 1,
                (Some(w), s) => {
                    sessions.insert((w, s));
                }
                (None, _) => {}
            }
        }
        let running = sessions.len() + by_brain;
        let c = &mut self.record.counts;
        if (c.retrying, c.running) != (retrying, running) {
            (c.retrying, c.running) = (retrying, running);
            self.dirty = true;
        }
    }

    /// True while some job can still run (pending, queued or processing, or a
    /// failure whose retry is not decided yet).
    pub fn active(&self) -> bool {
        let c = &self.record.counts;
        c.pending + c.queued + c.processing > 0 || !self.unhandled_failures.is_empty()
    }

    /// Moves job `i` to `status`, keeping counts and derived indices right.
    pub fn set_status(&mut self, i: usize, status: JobStatus) {
        let old = self.jobs[i].status;
        if old == status {
            return;
        }
        self.jobs[i].status = status;
        self.mark_unfinished(i);
        let was_complete = old == JobStatus::Complete;
        let is_complete = status == JobStatus::Complete;
        if was_complete != is_complete {
            for k in 0..self.jobs[i].dependents.len() {
                let d = self.jobs[i].dependents[k];
                let job = &mut self.jobs[d];
                if is_complete {
                    job.unmet = job.unmet.saturating_sub(1);
                } else {
                    job.unmet += 1;
                }
                let ready = job.status == JobStatus::Pending && job.unmet == 0;
                if ready {
                    self.ready.insert(d);
                } else {
                    self.ready.remove(&d);
                }
            }
        }
        match status {
            JobStatus::Pending if self.jobs[i].unmet == 0 => {
                self.ready.insert(i);
            }
            _ => {
                self.ready.remove(&i);
            }
        }
        match status {
            JobStatus::Failed(_) => {
                self.unhandled_failures.insert(i);
            }
            _ => {
                self.unhandled_failures.remove(&i);
            }
        }
        // Its dependents were revived when it came back; nothing more to do.
        if status == JobStatus::Complete {
            self.revived.remove(&i);
        }
        if status == JobStatus::Processing {
            self.running.insert(i);
        } else {
            self.running.remove(&i);
        }
        if status != JobStatus::Queued {
            self.retry_at.remove(&i);
        }
        if status == JobStatus::Queued && self.jobs[i].unmet > 0 {
            self.queued_early.insert(i);
        } else {
            self.queued_early.remove(&i);
        }
        if matches!(old, JobStatus::Failed(_))
            && matches!(
                status,
                JobStatus::Queued | JobStatus::Pending | JobStatus::Processing
            )
        {
            self.revived.insert(i);
        }
        let outcome = match status {
            JobStatus::Complete => Some("complete"),
            JobStatus::Failed(f) => Some(f.kind.as_str()),
            _ => None,
        };
        if let Some(o) = outcome.filter(|_| self.ended.len() < ENDED_MAX) {
            self.ended.push((i, o));
        }
        // Counts: one out, one in.
        let c = &mut self.record.counts;
        for (st, delta) in [(old, -1i64), (status, 1)] {
            let slot = match st {
                JobStatus::Pending => &mut c.pending,
                JobStatus::Queued => &mut c.queued,
                JobStatus::Processing => &mut c.processing,
                JobStatus::Complete => &mut c.complete,
                JobStatus::Failed(_) => &mut c.failed,
            };
            *slot = (*slot as i64 + delta).max(0) as usize;
        }
        self.dirty = true;
    }

    /// Adds what one llm result cost to its endpoint's sum in the record. Called
    /// once per result, when the job reaches complete or failed.
    pub fn add_cost(&mut self, endpoint: &str, usd: f64) {
        *self
            .record
            .cost_usd
            .entry(endpoint.to_string())
            .or_default() += usd;
        self.dirty = true;
    }

    /// The state the batch is in by its counts.
    pub fn settled_state(&self) -> BatchState {
        if self.active() {
            BatchState::Running
        } else if self.record.cancel_requested {
            BatchState::Cancelled
        } else if self.record.counts.failed > 0 {
            BatchState::Failed
        } else {
            BatchState::Complete
        }
    }
}

/// Everything the brain has read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BrainState {
    pub batches: BTreeMap<String, Batch>,
    /// The next submission sequence number (claim order across batches).
    pub next_seq: u64,
    /// What was last probed of each worker that holds a task.
    pub workers: BTreeMap<String, Liveness>,
    /// This brain's session: tasks it runs itself carry it.
    pub brain_session: String,
    /// Heartbeat age after which a worker whose lock cannot be asked is presumed dead.
    pub stale_after_secs: f64,
    /// Run times of completed tasks, by plan task id ([`crate::estimate`]).
    pub learned: HashMap<String, crate::learned::Learned>,
    /// Load times of completed `load_llm` tasks, by [`crate::estimate::load_key`]
    /// (model and worker).
    #[serde(default)]
    pub learned_loads: HashMap<String, crate::learned::Learned>,
    /// Models an LLM server refused to load as unknown, with the error: llm tasks
    /// that need them fail as definition errors instead of waiting for a load.
    pub unknown_models: BTreeMap<String, String>,
    /// The endpoints' models and the escalation tiers (rig.toml).
    #[serde(default)]
    pub ladder: crate::ladder::Ladder,
    /// Files of unfinished jobs found in no directory, since when (see
    /// `rigmind_brain::lost::follow_vanished`).
    #[serde(skip)]
    pub vanished: HashMap<String, std::time::Instant>,
    /// Files that are no known task's, judged and left where they are, by
    /// (size, mtime s, mtime ns, inode): not read again until they change.
    #[serde(skip)]
    pub judged: HashMap<std::path::PathBuf, (u64, i64, i64, u64)>,
    /// Ready tasks of new submissions not written into the queue yet, by batch, in
    /// claim order: written a bounded number per turn (`rigmind_brain::submit::queue_some`)
    /// so that a huge submission keeps no cancellation waiting. Their jobs are
    /// already `Queued`; nothing is decided about those until their files exist.
    pub queueing: BTreeMap<String, std::collections::VecDeque<rigmind_queue::task::TaskFile>>,
    /// Results seen arriving from runners since the brain last took them (for its
    /// metrics' duration histogram); bounded by [`ARRIVED_MAX`]. Bookkeeping of the
    /// brain's loop, not an observation: left out of a recorded round.
    #[serde(skip)]
    pub arrived: Vec<Arrived>,
}

/// At most this many [`Arrived`] results wait to be taken; later ones are dropped.
pub const ARRIVED_MAX: usize = 100_000;

/// A task's result as it arrived in `complete/` or `failed/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrived {
    pub class: Option<rigmind_types::TaskClass>,
    /// `complete`, or the failure kind's word.
    pub outcome: &'static str,
    /// Its `elapsed_seconds`, if it ran.
    pub elapsed_secs: Option<f64>,
}

impl BrainState {
    /// Adds a batch, advancing the sequence past its tasks.
    pub fn insert(&mut self, batch: Batch) {
        self.next_seq = self
            .next_seq
            .max(batch.record.seq_base + batch.jobs.len() as u64 + 1);
        self.batches.insert(batch.record.batch_id.clone(), batch);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rigmind_queue::batch::BatchState;

    /// A batch over `deps` (job i waits for deps[i]), all pending.
    pub fn batch(deps: &[&[usize]]) -> Batch {
        let jobs = deps
            .iter()
            .enumerate()
            .map(|(i, d)| Job {
                name: format!("j{i}"),
                plan_task_id: format!("j{i}"),
                task_id: format!("id{i}"),
                file_name: format!("p05-{i:08}-b-j{i}.json"),
                status: JobStatus::Pending,
                deps: d.to_vec(),
                dependents: vec![],
                unmet: 0,
                holder: None,
                kill_sent: false,
                retry_count: 0,
                work: JobWork::default(),
            })
            .collect();
        let record = BatchRecord {
            batch_id: "b".into(),
            name: "t".into(),
            plan_file: "plan.md".into(),
            workdir: ".".into(),
            submitted_at: rigmind_queue::time::parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
            finished_at: None,
            elapsed_seconds: None,
            state: BatchState::Running,
            counts: Counts::default(),
            seq_base: 1,
            cancel_requested: false,
            cost_usd: Default::default(),
            eta: None,
            eta_computed_at: None,
        };
        Batch::new(record, jobs)
    }

    #[test]
    fn completing_dependencies_makes_dependents_ready() {
        // 0 -> 2, 1 -> 2 (fan-in), 2 -> 3
        let mut b = batch(&[&[], &[], &[0, 1], &[2]]);
        assert_eq!(b.ready.iter().copied().collect::<Vec<_>>(), vec![0, 1]);
        b.set_status(0, JobStatus::Queued);
        b.set_status(1, JobStatus::Queued);
        assert!(b.ready.is_empty());
        b.set_status(0, JobStatus::Complete);
        assert!(b.ready.is_empty(), "2 still waits for 1");
        b.set_status(1, JobStatus::Complete);
        assert_eq!(b.ready.iter().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(b.record.counts.complete, 2);
        assert_eq!(b.record.counts.pending, 2);
    }

    #[test]
    fn the_unfinished_index_follows_every_status_and_survives_no_record() {
        // 70 jobs: more than one word of the index.
        let deps: Vec<&[usize]> = vec![&[]; 70];
        let mut b = batch(&deps);
        let all: Vec<usize> = (0..70).collect();
        assert_eq!(b.unfinished(), all);
        let retryable = FailureInfo {
            kind: FailureKind::Timeout,
            retry_count: 0,
            retries: 1,
            tier: None,
            tier_failures: 0,
        };
        let for_good = FailureInfo {
            retries: 0,
            ..retryable
        };
        b.set_status(3, JobStatus::Complete);
        b.set_status(64, JobStatus::Failed(for_good));
        b.set_status(65, JobStatus::Failed(retryable));
        b.set_status(66, JobStatus::Processing);
        let left: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| ![3, 64].contains(i))
            .collect();
        assert_eq!(b.unfinished(), left);
        // Sent back from complete (a result removed by hand): not done again.
        b.set_status(3, JobStatus::Queued);
        let left: Vec<usize> = all.iter().copied().filter(|i| *i != 64).collect();
        assert_eq!(b.unfinished(), left);
        // A batch read back from a recorded round has no index: walked whole.
        let json = serde_json::to_string(&b).unwrap();
        let read: Batch = serde_json::from_str(&json).unwrap();
        assert_eq!(read.unfinished(), left);
    }

    #[test]
    fn plan_task_runs_start_where_the_plan_task_changes() {
        let deps: Vec<&[usize]> = vec![&[]; 6];
        let mut b = batch(&deps);
        for (j, task) in b.jobs.iter_mut().zip(["a", "a", "b", "b", "b", "a"]) {
            j.plan_task_id = task.into();
        }
        assert_eq!(b.plan_task_runs(), &[0, 2, 5]);
    }
}
