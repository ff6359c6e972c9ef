//! The rest of what is live under a root, simulated (`rigmind simulate --root`):
//! the state a brain starting now would rebuild (the brain's own read-only
//! rebuild gives it), its live batches run on as one, from now, on the rig's GPUs.
//!
//! The start is what the files say: queued tasks are in the virtual queue,
//! running ones run on their worker's card (or beside the cards, where their
//! worker is not a `[[gpu]]` of rig.toml) for what their estimate has left,
//! cards hold the model their workers report; a failure that will be retried
//! runs again, one that will not fails its dependents. Run times are the
//! estimates the live resource manager uses (learned from the runs seen). Not
//! simulated: retry back-offs and the resource tasks in flight (the
//! simulated manager decides the cards afresh).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rigmind_config::RigConfig;
use rigmind_decide::resources::{self, RmPolicy};
use rigmind_decide::state::{Batch, BrainState, FailureInfo, Job, JobStatus};
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::task::{TaskFile, TaskName};
use rigmind_queue::workers::WorkerState;
use rigmind_queue::{FailureKind, Layout, TaskDir};
use rigmind_types::TaskClass;

use super::{finished, us, BatchTrack, Item, Running, Sim, SimError, SimResult, SIM_BATCH};

/// What a simulation of a live root starts from.
#[derive(Debug, Clone)]
pub struct LiveStart {
    /// The state a brain starting now would have
    /// (`rigmind_brain::rebuild::rebuild_read_only`).
    pub state: BrainState,
    /// The task files of the unfinished jobs, by file name (a job whose file could
    /// not be read is simulated from what the state knows of it).
    pub tasks: HashMap<String, TaskFile>,
    /// The model each worker's card holds now, by worker id.
    pub models: BTreeMap<String, String>,
    /// When the root was read: the simulation's time zero.
    pub now: DateTime<Utc>,
}

impl LiveStart {
    /// Reads the unfinished jobs' task files and the workers' models under the
    /// root, for `state`. Reads only.
    pub fn read(layout: &Layout, state: BrainState, now: DateTime<Utc>) -> Self {
        let mut tasks = HashMap::new();
        for b in state.batches.values().filter(|b| b.active()) {
            let id = &b.record.batch_id;
            for j in b.jobs.iter().filter(|j| !finished(j.status)) {
                let dir = match j.status {
                    JobStatus::Pending => layout.private_dir(id),
                    JobStatus::Queued => layout.dir(TaskDir::Queue),
                    JobStatus::Processing => layout.dir(TaskDir::Processing),
                    _ => layout.dir(TaskDir::Failed),
                };
                if let Ok(t) = TaskFile::read(&dir.join(&j.file_name)) {
                    tasks.insert(j.file_name.clone(), t);
                }
            }
        }
        let models = WorkerState::read_all(layout)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .filter(|w| w.gpu_state.is_some_and(|s| s.is_llm()))
            .filter_map(|w| Some((w.worker_id, w.model?)))
            .collect();
        Self {
            state,
            tasks,
            models,
            now,
        }
    }

    /// The live batches, in the state's order: id and plan name.
    pub fn batches(&self) -> Vec<(String, String)> {
        live(&self.state)
            .map(|b| (b.record.batch_id.clone(), b.record.name.clone()))
            .collect()
    }
}

fn live(state: &BrainState) -> impl Iterator<Item = &Batch> {
    state.batches.values().filter(|b| b.active())
}

/// Simulates the rest of what is live in `start` on the rig's GPUs under
/// `policy`; [`SimResult::batch_ends`] gives each live batch's end, in seconds
/// from `start.now`.
pub fn simulate_live(
    start: &LiveStart,
    rig: &RigConfig,
    policy: RmPolicy,
) -> Result<SimResult, SimError> {
    if rig.gpus.is_empty() {
        return Err(SimError::NoGpus);
    }
    let mut sim = Sim::live(start, rig, policy);
    sim.place(start);
    sim.run()
}

/// The live batches' jobs as one batch, with each job's batch, its task file and
/// how long a running one has left.
struct Merged {
    jobs: Vec<Job>,
    tasks: Vec<TaskFile>,
    origin: Vec<usize>,
    left: Vec<f64>,
}

fn merge(start: &LiveStart) -> Merged {
    let mut m = Merged {
        jobs: Vec::new(),
        tasks: Vec::new(),
        origin: Vec::new(),
        left: Vec::new(),
    };
    for (bi, b) in live(&start.state).enumerate() {
        let offset = m.jobs.len();
        for j in &b.jobs {
            let mut job = j.clone();
            job.deps = j.deps.iter().map(|d| d + offset).collect();
            m.left
                .push(resources::left_of(&start.state, j, start.now).max(0.0));
            m.tasks.push(task_of(start, &b.record.batch_id, &job));
            m.jobs.push(job);
            m.origin.push(bi);
        }
    }
    fail_for_good(&mut m.jobs);
    m
}

/// A retried failure runs again (pending); a failure for good fails every job
/// that depends on it, as the live brain's cascade would.
fn fail_for_good(jobs: &mut [Job]) {
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    for (i, j) in jobs.iter().enumerate() {
        for &d in &j.deps {
            dependents[d].push(i);
        }
    }
    let mut stack = Vec::new();
    for (i, j) in jobs.iter_mut().enumerate() {
        match j.status {
            JobStatus::Failed(f) if f.retryable() => j.status = JobStatus::Pending,
            JobStatus::Failed(_) => stack.push(i),
            _ => {}
        }
    }
    let cascaded = JobStatus::Failed(FailureInfo {
        kind: FailureKind::DependencyFailed,
        retry_count: 0,
        retries: 0,
        tier: None,
        tier_failures: 0,
    });
    while let Some(i) = stack.pop() {
        for &d in &dependents[i] {
            if matches!(jobs[d].status, JobStatus::Pending) {
                jobs[d].status = cascaded;
                stack.push(d);
            }
        }
    }
}

/// The job's task file as read, queued-ready for the simulator (a file dropped by
/// hand is let in, as the brain stamps it); or one made from the job.
fn task_of(start: &LiveStart, batch: &str, job: &Job) -> TaskFile {
    let mut t = start.tasks.get(&job.file_name).cloned().unwrap_or_else(|| {
        let class = job.work.class.unwrap_or(TaskClass::Cpu);
        let mut t = TaskFile::new(batch, &job.name, class);
        t.task_id = job.task_id.clone();
        t.plan_task_id = job.plan_task_id.clone();
        t.model = job.work.model.clone();
        t.estimate_seconds = job.work.estimate_secs;
        t.group = job.work.group.clone();
        t.endpoint = job.work.endpoint.clone();
        if let Some(tn) = TaskName::parse(&job.file_name) {
            t.seq = tn.seq;
            t.priority = 10 - tn.rank.min(9);
        }
        t
    });
    t.released_by.get_or_insert_with(|| "brain".into());
    t
}

impl<'a> Sim<'a> {
    /// The simulation of a live root: its batches as one, tracked apart.
    fn live(start: &LiveStart, rig: &'a RigConfig, policy: RmPolicy) -> Self {
        let m = merge(start);
        let record = BatchRecord::submitted(
            SIM_BATCH,
            "live",
            "".into(),
            ".".into(),
            start.now,
            m.jobs.len(),
            1,
        );
        let mut batch = Batch::new(record, m.jobs);
        // Decided above (fail_for_good): nothing is left for the policy to cascade.
        batch.unhandled_failures.clear();
        batch.refresh_counts();
        let mut state = BrainState {
            brain_session: "sim".into(),
            stale_after_secs: rig.defaults.stale_after_secs,
            learned: start.state.learned.clone(),
            learned_loads: start.state.learned_loads.clone(),
            ..BrainState::default()
        };
        state.insert(batch);
        let mut sim = Self::with(rig, policy, state, m.tasks, start.now);
        sim.batches = live(&start.state)
            .map(|b| BatchTrack {
                id: b.record.batch_id.clone(),
                left: 0,
                end: 0,
            })
            .collect();
        let unfinished: Vec<usize> = (sim.batch_ref().jobs.iter().enumerate())
            .filter(|(_, j)| !finished(j.status))
            .map(|(i, _)| m.origin[i])
            .collect();
        for b in unfinished {
            sim.batches[b].left += 1;
        }
        sim.origin = m.origin;
        // Running jobs end after what they have left (parked in `real` until
        // placed).
        for (i, left) in m.left.into_iter().enumerate() {
            if sim.batch_ref().jobs[i].status == JobStatus::Processing {
                sim.real[i] = us(left);
            }
        }
        sim
    }

    /// Puts the start in place: the cards' models, queued jobs in the queue,
    /// running jobs on their worker (or beside the cards).
    fn place(&mut self, start: &LiveStart) {
        for w in &mut self.workers {
            w.model = start.models.get(&w.id).cloned();
            let s = rigmind_decide::claim::state_for(w.model.as_deref(), None);
            w.set_state(s, 0);
        }
        let jobs: Vec<(usize, JobStatus, Option<String>)> = self
            .batch_ref()
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| {
                (
                    i,
                    j.status,
                    j.holder.as_ref().and_then(|h| h.worker.clone()),
                )
            })
            .collect();
        for (i, status, holder) in jobs {
            match status {
                JobStatus::Queued => self.enqueue(i),
                JobStatus::Processing => self.resume(i, holder.as_deref()),
                _ => {}
            }
        }
    }

    /// A job running now goes on on its worker's card for what it has left, or
    /// beside the cards when its worker is no free `[[gpu]]`.
    fn resume(&mut self, i: usize, holder: Option<&str>) {
        let left = self.real[i];
        let t = &self.tasks[i];
        let file = t.file_name();
        // Its full estimate again, for what the learned estimates note at its end.
        self.real[i] = us(resources::estimate_of(
            &self.state,
            &self.batch_ref().jobs[i],
        ));
        let on = holder.and_then(|h| {
            self.workers
                .iter()
                .position(|w| w.id == h && w.running.is_none())
        });
        if let Some(wi) = on {
            let full = std::mem::replace(&mut self.real[i], left);
            // A card that cannot start it (a model it lacks) leaves it beside.
            if self.start(wi, file.clone(), Item::Job(i)).is_ok() {
                self.real[i] = full;
                return;
            }
            self.real[i] = full;
        }
        let t = &self.tasks[i];
        let run = Running {
            item: Item::Job(i),
            file,
            name: t.name.clone(),
            class: t.task_class.unwrap_or(TaskClass::Cpu),
            groups: t.held_groups().collect(),
            mem_mb: t.mem_mb,
            end: left,
        };
        self.hold(i, "brain");
        self.brain.push((run, 0));
    }
}
