//! The discrete-event loop: one plan, one rig, one resource policy, virtual time.
//!
//! Time is kept in whole microseconds (`i64`) so that sums of durations and the
//! thresholds the policies compare against (`in_mode_secs >= load_secs`, idle
//! timers) are exact; it is handed to the live code as seconds (`f64`) and as a
//! `DateTime<Utc>` counted from a fixed epoch.
//!
//! At each instant the loop repeats, until nothing changes: (1) the brain's
//! [`round::brain`] (the release policy and the state effects of its releases and
//! settles), then its releases are put into the virtual queue; (2) the resource
//! manager's [`round::resources`] over the cards' facts, whose actions become
//! resource tasks in the virtual queue; (3) every free worker, in worker-id order,
//! claims its best task by [`claim::tier`] through [`QueueIndex::best`]. Then time advances to the
//! next task end, or to the next instant at which a card's clock crosses a
//! threshold the policies look at (hysteresis, idle unload), whichever is first.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rigmind_config::RigConfig;
use rigmind_decide::claim::{self, ClaimCard, ClaimContext};
use rigmind_decide::estimate::load_key;
use rigmind_decide::policy::Action;
use rigmind_decide::resources::{
    self, CardFacts, InFlight, RmAction, RmConfig, RmPolicy, DEFAULT_ESTIMATE_SECS,
};
use rigmind_decide::state::{Batch, BrainState, Holder, JobStatus};
use rigmind_decide::tasks::{job_of, task_files};
use rigmind_plan::ExpandedPlan;
use rigmind_queue::aging::Aging;
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::claim::QueueIndex;
use rigmind_queue::task::{TaskFile, TaskStatus, LOAD_LLM, UNLOAD_LLM};
use rigmind_queue::workers::Liveness;
use rigmind_types::{Executor, GpuState, TaskClass};

use crate::round;

mod live;
pub use live::{simulate_live, LiveStart};

/// The batch id the simulated submission gets.
pub const SIM_BATCH: &str = "sim";

/// The session every simulated worker runs under.
const WORKER_SESSION: &str = "sim-worker";

/// Virtual time zero, as the live code sees it.
pub fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("a valid constant")
        .with_timezone(&Utc)
}

/// Microseconds of virtual time.
type Us = i64;

pub(crate) fn us(secs: f64) -> Us {
    (secs * 1e6).round() as Us
}

pub(crate) fn secs(t: Us) -> f64 {
    t as f64 / 1e6
}

/// The run time the simulator (and the resource manager) assumes for a task.
pub(crate) fn estimate(e: Option<f64>) -> f64 {
    e.unwrap_or(DEFAULT_ESTIMATE_SECS)
}

/// What a stretch of a GPU's time was spent on.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentKind {
    /// A plan task.
    Task { name: String, class: TaskClass },
    /// A `load_llm` resource task.
    Load,
    /// An `unload_llm` resource task.
    Unload,
}

/// One stretch of a GPU's time, in virtual seconds from the submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub kind: SegmentKind,
}

/// One GPU worker's timeline and totals.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuTimeline {
    pub worker: String,
    pub llm_capable: bool,
    /// In time order, clipped to the makespan.
    pub segments: Vec<Segment>,
    /// Seconds running plan tasks.
    pub busy_s: f64,
    /// Seconds loading and unloading the model.
    pub loading_s: f64,
    /// The rest of the makespan.
    pub idle_s: f64,
}

/// A finished simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    pub policy: RmPolicy,
    /// Seconds from the submission until the batch settled.
    pub makespan_s: f64,
    /// One per `[[gpu]]`, in worker-id order.
    pub gpus: Vec<GpuTimeline>,
    /// `executor: brain` tasks (run by the brain, beside the GPUs).
    pub brain_segments: Vec<Segment>,
    pub loads: usize,
    pub unloads: usize,
    /// Every load started: when (virtual seconds), on which worker, which model.
    pub loaded: Vec<(f64, String, String)>,
    /// Plan-task seconds summed over the GPUs / (makespan × GPUs).
    pub gpu_busy_fraction: f64,
    pub tasks_completed: usize,
    /// Seconds from the start until each batch's last task ended, by batch id:
    /// the one simulated batch of a plan, or each live batch of a root
    /// ([`simulate_live`]).
    pub batch_ends: Vec<(String, f64)>,
}

/// Why a simulation gave no makespan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("the rig has no [[gpu]] entry: the simulator runs one worker per [[gpu]] of rig.toml")]
    NoGpus,
    /// The policy never finishes the plan on this rig.
    #[error("{policy} is infeasible: {reason}")]
    Infeasible {
        policy: String,
        /// The last instant at which anything happened.
        at_s: f64,
        reason: String,
    },
    /// The loop went on past its iteration cap: a policy that keeps acting.
    #[error("{policy}: no progress after {iterations} steps at t={at_s}s ({what})")]
    Runaway {
        policy: String,
        at_s: f64,
        iterations: u64,
        what: String,
    },
    /// The policy asked for something the rig cannot do.
    #[error("{policy}: {what}")]
    Unsupported { policy: String, what: String },
}

/// What a running or queued task is.
#[derive(Debug, Clone)]
enum Item {
    Job(usize),
    Load { model: String },
    Unload,
}

#[derive(Debug, Clone)]
struct Running {
    item: Item,
    file: String,
    name: String,
    class: TaskClass,
    /// The concurrency groups it holds a slot of ([`claim::held_groups`]).
    groups: Vec<String>,
    /// The host RAM it reserves (`mem_mb`).
    mem_mb: Option<u64>,
    end: Us,
}

/// A GPU worker and its card, as the live worker tracks them (`Me`, `rigmind_worker::card::Card`).
#[derive(Debug)]
struct Worker {
    id: String,
    llm_capable: bool,
    classes: Vec<TaskClass>,
    vram_mb: Option<u64>,
    model: Option<String>,
    gpu_state: GpuState,
    state_since: Us,
    llm_idle_since: Option<Us>,
    running: Option<Running>,
    segments: Vec<(Us, Us, SegmentKind)>,
}

impl SimError {
    /// What went wrong, without the policy's name.
    pub fn reason(&self) -> String {
        match self {
            Self::Infeasible { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

impl Worker {
    /// Mirrors `rigmind_worker::card::Card::set_state`: the clock restarts on an LLM/script crossing.
    fn set_state(&mut self, s: GpuState, now: Us) {
        if s.is_llm() != self.gpu_state.is_llm() {
            self.state_since = now;
        }
        self.gpu_state = s;
    }
}

struct Sim<'a> {
    rig: &'a RigConfig,
    cfg: RmConfig,
    state: BrainState,
    tasks: Vec<TaskFile>,
    /// How long each job really runs: its estimate, or the truth of a noisy run
    /// ([`crate::noise`]).
    real: Vec<Us>,
    index: QueueIndex,
    queued: BTreeMap<String, Item>,
    workers: Vec<Worker>,
    /// `executor: brain` tasks running, with their start.
    brain: Vec<(Running, Us)>,
    brain_segments: Vec<(Us, Us, SegmentKind)>,
    in_flight: BTreeMap<String, InFlight>,
    next_rm_seq: u64,
    now: Us,
    /// The last instant at which anything happened (for a deadlock's report).
    last_change: Us,
    loads: usize,
    unloads: usize,
    loaded: Vec<(f64, String, String)>,
    completed: usize,
    /// Virtual time zero as the live code sees it: [`epoch`] for a plan, the
    /// moment the root was read for a live root.
    start: DateTime<Utc>,
    /// Per job, the batch it came from (an index into `batches`); per batch, its
    /// id, how many of its jobs are left and when its last one so far ended.
    origin: Vec<usize>,
    batches: Vec<BatchTrack>,
}

/// A batch's progress in a simulation.
#[derive(Debug, Clone)]
struct BatchTrack {
    id: String,
    left: usize,
    end: Us,
}

/// Runs `plan` on the rig's GPUs under `policy`, through the live decision code.
pub fn simulate(
    plan: &ExpandedPlan,
    rig: &RigConfig,
    policy: RmPolicy,
) -> Result<SimResult, SimError> {
    simulate_truth(plan, plan, rig, policy)
}

/// Runs `plan` (what the brain and the policies see: its written estimates) with
/// the run times of `truth` (the same plan, each job's `estimate_secs` its real run
/// time; see [`crate::noise::truth`]).
pub fn simulate_truth(
    plan: &ExpandedPlan,
    truth: &ExpandedPlan,
    rig: &RigConfig,
    policy: RmPolicy,
) -> Result<SimResult, SimError> {
    if rig.gpus.is_empty() {
        return Err(SimError::NoGpus);
    }
    let mut sim = Sim::new(plan, rig, policy);
    sim.real = truth
        .jobs
        .iter()
        .map(|j| us(estimate(j.estimate_secs)))
        .collect();
    sim.run()
}

impl<'a> Sim<'a> {
    fn new(plan: &ExpandedPlan, rig: &'a RigConfig, policy: RmPolicy) -> Self {
        let seq_base = 1;
        let tasks = task_files(plan, SIM_BATCH, seq_base, rig, epoch());
        let jobs = tasks
            .iter()
            .zip(&plan.jobs)
            .map(|(t, j)| job_of(t, j.depends_on.clone()))
            .collect::<Vec<_>>();
        let record = BatchRecord::submitted(
            SIM_BATCH,
            &plan.name,
            plan.path.clone(),
            plan.dir.clone(),
            epoch(),
            jobs.len(),
            seq_base,
        );
        let mut state = BrainState {
            brain_session: "sim".into(),
            stale_after_secs: rig.defaults.stale_after_secs,
            ..BrainState::default()
        };
        state.insert(Batch::new(record, jobs));
        let real = tasks
            .iter()
            .map(|t| us(estimate(t.estimate_seconds)))
            .collect();
        let mut sim = Self::with(rig, policy, state, tasks, epoch());
        sim.real = real;
        sim
    }

    /// A simulation of `state` (one batch, [`SIM_BATCH`], whose jobs are
    /// `tasks`) on the rig's GPUs under `policy`, every worker free and bare, from
    /// `start`; each job runs for its estimate until `real` says otherwise.
    fn with(
        rig: &'a RigConfig,
        policy: RmPolicy,
        state: BrainState,
        tasks: Vec<TaskFile>,
        start: DateTime<Utc>,
    ) -> Self {
        let mut state = state;
        // Every worker is alive, under the session its tasks carry.
        for g in &rig.gpus {
            state.workers.insert(
                g.worker.clone(),
                Liveness {
                    lock_held: Some(true),
                    session: Some(WORKER_SESSION.to_string()),
                    heartbeat_at: None,
                },
            );
        }
        let mut cfg = RmConfig::from_rig(rig);
        cfg.policy = policy;
        let mut workers: Vec<Worker> = rig
            .gpus
            .iter()
            .map(|g| {
                let llm_capable = g.ollama.is_some();
                Worker {
                    id: g.worker.clone(),
                    llm_capable,
                    // The live worker's default classes for a GPU worker.
                    classes: claim::default_classes(true, llm_capable),
                    vram_mb: g.vram_mb,
                    model: None,
                    gpu_state: GpuState::Idle,
                    state_since: 0,
                    llm_idle_since: None,
                    running: None,
                    segments: Vec::new(),
                }
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        let b = &state.batches[SIM_BATCH];
        let real = b
            .jobs
            .iter()
            .map(|j| us(resources::estimate_of(&state, j)))
            .collect();
        let left = b.jobs.iter().filter(|j| !finished(j.status)).count();
        let origin = vec![0; tasks.len()];
        Self {
            rig,
            cfg,
            state,
            tasks,
            real,
            index: QueueIndex::with_aging(Aging::new(rig.scheduling.aging_seconds_per_level)),
            queued: BTreeMap::new(),
            workers,
            brain: Vec::new(),
            brain_segments: Vec::new(),
            in_flight: BTreeMap::new(),
            next_rm_seq: 1,
            now: 0,
            last_change: 0,
            loads: 0,
            unloads: 0,
            loaded: Vec::new(),
            completed: 0,
            start,
            origin,
            batches: vec![BatchTrack {
                id: SIM_BATCH.to_string(),
                left,
                end: 0,
            }],
        }
    }

    fn at(&self) -> DateTime<Utc> {
        self.start + chrono::Duration::microseconds(self.now)
    }

    fn batch(&mut self) -> &mut Batch {
        self.state
            .batches
            .get_mut(SIM_BATCH)
            .expect("the simulated batch")
    }

    fn batch_ref(&self) -> &Batch {
        &self.state.batches[SIM_BATCH]
    }

    fn name(&self) -> String {
        self.cfg.policy.name()
    }

    fn runaway(&self, iterations: u64, what: &str) -> SimError {
        SimError::Runaway {
            policy: self.name(),
            at_s: secs(self.now),
            iterations,
            what: what.to_string(),
        }
    }

    fn run(&mut self) -> Result<SimResult, SimError> {
        let jobs = self.tasks.len() as u64;
        let cap = 1_000_000 + 200 * jobs;
        let mut steps = 0u64;
        loop {
            steps += 1;
            if steps > cap {
                return Err(self.runaway(steps, "event cap reached"));
            }
            // Everything that happens at this instant.
            let mut rounds = 0u64;
            loop {
                rounds += 1;
                if rounds > 10_000 {
                    return Err(self.runaway(rounds, "decisions at one instant never settle"));
                }
                let mut changed = self.brain_round()?;
                if self.batch_ref().record.state.is_done() {
                    return Ok(self.finish());
                }
                changed |= self.rm_round()?;
                changed |= self.claim_round()?;
                if !changed {
                    break;
                }
                self.last_change = self.now;
            }
            let next_end = self
                .workers
                .iter()
                .filter_map(|w| w.running.as_ref().map(|r| r.end))
                .chain(self.brain.iter().map(|(r, _)| r.end))
                .min();
            let next = match (next_end, self.next_timer()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => return Err(self.deadlock()),
                },
            };
            self.now = next;
            if self.complete_due() {
                self.last_change = self.now;
            }
        }
    }

    /// The brain's decision rounds at this instant ([`round::brain`]), each
    /// followed by putting its releases into the virtual queue.
    fn brain_round(&mut self) -> Result<bool, SimError> {
        let mut changed = false;
        for _ in 0..1000 {
            let now = self.at();
            let actions = round::brain(&mut self.state, now).unwrap_or_else(|a| unsimulated(&a));
            if actions.is_empty() {
                return Ok(changed);
            }
            changed = true;
            for a in actions {
                match a {
                    Action::Release { batch, job, .. } => {
                        debug_assert_eq!(batch, SIM_BATCH);
                        self.enqueue(job);
                    }
                    Action::Settle { .. } => {}
                    other => unsimulated(&other),
                }
            }
        }
        Err(self.runaway(1000, "the brain's decisions never settle"))
    }

    /// A load of a model onto a card too small for it is a policy's error: no
    /// policy may decide one (`resources::ModelSizes::fits`).
    fn no_load_too_big(&self, wi: usize, item: &Item) -> Result<(), SimError> {
        let w = &self.workers[wi];
        let model = flight_model(item);
        if self.cfg.models.fits(w.vram_mb, &model) {
            return Ok(());
        }
        Err(SimError::Unsupported {
            policy: self.name(),
            what: format!(
                "load_llm of {model} ({} MB) on worker '{}', whose card has {} MB",
                self.cfg.models.need(&model).unwrap_or(0),
                w.id,
                w.vram_mb.unwrap_or(0)
            ),
        })
    }

    /// A released job goes into the virtual queue, or, an `executor: brain` one,
    /// starts at once: the brain claims and runs its own tasks.
    fn enqueue(&mut self, job: usize) {
        let mut t = self.tasks[job].clone();
        t.status = TaskStatus::Queued;
        let file = t.file_name();
        if t.executor == Executor::Brain {
            self.hold(job, "brain");
            let run = Running {
                item: Item::Job(job),
                file,
                name: t.name.clone(),
                class: t.task_class.unwrap_or(TaskClass::Cpu),
                groups: t.held_groups().collect(),
                mem_mb: t.mem_mb,
                end: self.now + self.real[job],
            };
            self.brain.push((run, self.now));
        } else {
            self.index.insert(&file, &t);
            self.queued.insert(file, Item::Job(job));
        }
    }

    /// The cards' facts, as the live workers publish them in their state files.
    fn card_facts(&self) -> Vec<CardFacts> {
        let b = self.batch_ref();
        self.workers
            .iter()
            .map(|w| CardFacts {
                worker: w.id.clone(),
                loaded: w.gpu_state.is_llm(),
                model: w.model.clone(),
                running: w.running.as_ref().map(|r| r.class),
                // Only a plan job has a task the brain knows (a resource task
                // leaves the card's time left at 0).
                running_task: match w.running.as_ref().map(|r| &r.item) {
                    Some(Item::Job(i)) => Some(b.jobs[*i].task_id.clone()),
                    _ => None,
                },
                // Never set: counted from the brain's start, as live.
                llm_idle_secs: secs(self.now - w.llm_idle_since.unwrap_or(0)),
                in_mode_secs: secs(self.now - w.state_since),
                llm_capable: w.llm_capable,
                cooling_down: false,
                vram_mb: w.vram_mb,
            })
            .collect()
    }

    fn rm_round(&mut self) -> Result<bool, SimError> {
        let facts = self.card_facts();
        let actions = round::resources(&self.cfg, &facts, &self.in_flight, &self.state, self.at());
        for a in &actions {
            self.send(a)?;
        }
        Ok(!actions.is_empty())
    }

    /// Writes one decision as the live `ResourceManager::send` does, into the
    /// virtual queue, with a deterministic `seq`.
    fn send(&mut self, action: &RmAction) -> Result<(), SimError> {
        let mut t = resources::task_of(action, &self.cfg);
        let worker = action.worker();
        if !self.workers.iter().any(|w| w.id == worker) {
            return Err(SimError::Unsupported {
                policy: self.name(),
                what: format!("{} for unknown worker '{worker}'", t.name),
            });
        }
        t.seq = self.next_rm_seq;
        self.next_rm_seq += 1;
        let file = t.file_name();
        self.index.insert(&file, &t);
        let flight = InFlight::of(&t).expect("a resource task addressed to its worker");
        let item = if flight.load {
            Item::Load {
                model: flight.model.clone(),
            }
        } else {
            Item::Unload
        };
        self.queued.insert(file.clone(), item);
        self.in_flight.insert(file, flight);
        Ok(())
    }

    /// Concurrency groups at their limit, counted over the groups the tasks
    /// running hold (the live claim lock counts those of `processing/`), under
    /// rig.toml's `[groups]`, which the live GPU worker claims under too.
    fn full_groups(&self) -> BTreeSet<String> {
        let running = self
            .workers
            .iter()
            .filter_map(|w| w.running.as_ref())
            .chain(self.brain.iter().map(|(r, _)| r))
            .flat_map(|r| r.groups.iter().map(String::as_str));
        claim::full_groups(running, &self.rig.groups)
    }

    /// The RAM free for a reservation, as the live claim lock computes it
    /// ([`claim::room_mb`]): the virtual host (`[safety] host_ram_mb`) holds
    /// nothing else, and each running task holds its whole `mem_mb` (it uses what
    /// it reserved, which is all the live lock counts too). `None`: no host RAM is
    /// given, memory holds nothing back.
    fn mem_room(&self) -> Option<u64> {
        let total = self.rig.safety.host_ram_mb?;
        let holders: Vec<claim::Reservation> = self
            .workers
            .iter()
            .filter_map(|w| w.running.as_ref())
            .chain(self.brain.iter().map(|(r, _)| r))
            .filter_map(|r| {
                Some(claim::Reservation {
                    mem_mb: r.mem_mb?,
                    used_mb: 0,
                })
            })
            .collect();
        Some(claim::room_mb(
            total,
            self.rig.safety.min_free_ram_mb,
            &holders,
        ))
    }

    fn claim_round(&mut self) -> Result<bool, SimError> {
        let mut changed = false;
        let now = self.at();
        for wi in 0..self.workers.len() {
            if self.workers[wi].running.is_some() {
                continue;
            }
            let full = self.full_groups();
            let room = self.mem_room();
            let w = &self.workers[wi];
            // As the live worker's `Profile::context`: its card, no safety gate
            // violated.
            let card = ClaimCard {
                model: w.model.as_deref(),
                vram_free_mb: w.vram_mb,
            };
            let ctx = ClaimContext::new(&w.id, &w.classes, Some(card), w.llm_capable, true, now);
            let best = self
                .index
                .best(now, |e| {
                    // The live lock's filter, less its cancelled-batch check: the
                    // simulator cancels nothing.
                    claim::admissible(e, &full, room).ok()?;
                    claim::tier(&ctx, e)
                })
                .map(|e| e.file_name.clone());
            let Some(file) = best else { continue };
            self.index.forget(&file);
            let item = self
                .queued
                .remove(&file)
                .expect("every indexed file is a queued item");
            self.start(wi, file, item)?;
            changed = true;
        }
        Ok(changed)
    }

    fn start(&mut self, wi: usize, file: String, item: Item) -> Result<(), SimError> {
        let now = self.now;
        let mem_mb = match &item {
            Item::Job(i) => self.tasks[*i].mem_mb,
            _ => None,
        };
        let (name, class, groups, dur, kind) = match &item {
            Item::Job(i) => {
                let t = &self.tasks[*i];
                let class = t.task_class.unwrap_or(TaskClass::Cpu);
                let kind = SegmentKind::Task {
                    name: t.name.clone(),
                    class,
                };
                let r = (
                    t.name.clone(),
                    class,
                    t.held_groups().collect(),
                    self.real[*i],
                    kind,
                );
                let worker = self.workers[wi].id.clone();
                self.hold(*i, &worker);
                r
            }
            Item::Load { .. } => {
                if !self.workers[wi].llm_capable {
                    return Err(SimError::Unsupported {
                        policy: self.name(),
                        what: format!(
                            "load_llm for worker '{}', whose [[gpu]] has no ollama server",
                            self.workers[wi].id
                        ),
                    });
                }
                self.no_load_too_big(wi, &item)?;
                self.loads += 1;
                self.loaded
                    .push((secs(now), self.workers[wi].id.clone(), flight_model(&item)));
                (
                    LOAD_LLM.to_string(),
                    TaskClass::Resource,
                    Vec::new(),
                    us(self.cfg.load_secs),
                    SegmentKind::Load,
                )
            }
            Item::Unload => {
                self.unloads += 1;
                (
                    UNLOAD_LLM.to_string(),
                    TaskClass::Resource,
                    Vec::new(),
                    us(self.cfg.unload_secs),
                    SegmentKind::Unload,
                )
            }
        };
        let w = &mut self.workers[wi];
        let s = rigmind_decide::claim::state_for(w.model.as_deref(), Some((class, name.as_str())));
        w.set_state(s, now);
        w.segments.push((now, now + dur, kind));
        w.running = Some(Running {
            item,
            file,
            name,
            class,
            groups,
            mem_mb,
            end: now + dur,
        });
        Ok(())
    }

    /// Applies every task end due now: workers in id order, then the brain's tasks.
    /// True when some task ended.
    fn complete_due(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        for wi in 0..self.workers.len() {
            let due = self.workers[wi]
                .running
                .as_ref()
                .is_some_and(|r| r.end <= now);
            if !due {
                continue;
            }
            let r = self.workers[wi].running.take().expect("due");
            any = true;
            match &r.item {
                Item::Job(i) => {
                    self.job_done(*i);
                    if r.class == TaskClass::Llm {
                        self.workers[wi].llm_idle_since = Some(now);
                    }
                }
                // `Me::note_finished`: a load sets the model and the idle clock.
                Item::Load { model } => {
                    let w = &mut self.workers[wi];
                    w.model = Some(model.clone());
                    w.llm_idle_since = Some(now);
                    self.in_flight.remove(&r.file);
                    // As the live brain does when a load completes: its time is learned.
                    let key = load_key(model, &self.workers[wi].id);
                    let learned = self.state.learned_loads.entry(key).or_default();
                    learned.add(self.cfg.load_secs);
                }
                Item::Unload => {
                    self.workers[wi].model = None;
                    self.in_flight.remove(&r.file);
                }
            }
            let w = &mut self.workers[wi];
            let s = rigmind_decide::claim::state_for(w.model.as_deref(), None);
            w.set_state(s, now);
        }
        let (done, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.brain)
            .into_iter()
            .partition(|(r, _)| r.end <= now);
        self.brain = still;
        any |= !done.is_empty();
        for (r, start) in done {
            if let Item::Job(i) = r.item {
                self.job_done(i);
                self.brain_segments.push((
                    start,
                    now,
                    SegmentKind::Task {
                        name: r.name,
                        class: r.class,
                    },
                ));
            }
        }
        any
    }

    /// A job claimed by `worker` (or the brain): in `processing/`, with the holder
    /// the live brain reads from its start record.
    fn hold(&mut self, i: usize, worker: &str) {
        let since = self.at();
        let session = if worker == "brain" {
            self.state.brain_session.clone()
        } else {
            WORKER_SESSION.to_string()
        };
        let b = self.batch();
        b.set_status(i, JobStatus::Processing);
        b.jobs[i].holder = Some(Holder {
            worker: Some(worker.to_string()),
            session: Some(session),
            pgid: None,
            since,
        });
    }

    fn job_done(&mut self, i: usize) {
        let t = &self.tasks[i];
        let (plan_task_id, secs_run) = (t.plan_task_id.clone(), secs(self.real[i]));
        let b = self.batch();
        b.set_status(i, JobStatus::Complete);
        b.jobs[i].holder = None;
        // As `observe` does on a completion: the run time is learned.
        self.state
            .learned
            .entry(plan_task_id)
            .or_default()
            .add(secs_run);
        self.completed += 1;
        let track = &mut self.batches[self.origin[i]];
        track.left = track.left.saturating_sub(1);
        track.end = self.now;
    }

    /// The next instant, after now, at which a card's clock reaches a threshold the
    /// policies compare it with: `in_mode_secs` or `llm_idle_secs` reaching the
    /// load, unload or idle-unload time. Nothing else changes while no task ends.
    fn next_timer(&self) -> Option<Us> {
        let marks = [
            us(self.cfg.load_secs),
            us(self.cfg.unload_secs),
            us(self.cfg.idle_unload_secs),
        ];
        self.workers
            .iter()
            .flat_map(|w| {
                let idle = w.llm_idle_since.unwrap_or(0);
                marks
                    .iter()
                    .flat_map(move |m| [w.state_since + m, idle + m])
                    .collect::<Vec<_>>()
            })
            .filter(|t| *t > self.now)
            .min()
    }

    fn deadlock(&self) -> SimError {
        let b = self.batch_ref();
        let mut left: BTreeMap<TaskClass, usize> = BTreeMap::new();
        let mut queued: Vec<usize> = Vec::new();
        for (i, j) in b.jobs.iter().enumerate() {
            if j.status != JobStatus::Complete {
                *left
                    .entry(j.work.class.unwrap_or(TaskClass::Cpu))
                    .or_default() += 1;
            }
            if j.status == JobStatus::Queued {
                queued.push(i);
            }
        }
        let total: usize = left.values().sum();
        let by_class = left
            .iter()
            .map(|(c, n)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut why = Vec::new();
        let llm_waits = queued
            .iter()
            .any(|&i| b.jobs[i].work.class == Some(TaskClass::Llm));
        let script_waits = queued
            .iter()
            .any(|&i| b.jobs[i].work.class == Some(TaskClass::Script));
        if llm_waits {
            if !self.workers.iter().any(|w| w.llm_capable) {
                why.push("llm work waits and no [[gpu]] has an ollama server".to_string());
            } else if self.workers.iter().all(|w| w.model.is_none()) {
                why.push("llm work waits and the policy loads the model on no card".to_string());
            } else {
                why.push("llm work waits for a model no card holds".to_string());
            }
        }
        if script_waits && self.workers.iter().all(|w| w.model.is_some()) {
            why.push(
                "script work waits and every card holds the model (the policy unloads none)"
                    .to_string(),
            );
        }
        let max_vram = self.workers.iter().filter_map(|w| w.vram_mb).max();
        for &i in &queued {
            let t = &self.tasks[i];
            if let (Some(need), Some(max)) = (t.vram_mb, max_vram) {
                if self.workers.iter().all(|w| w.vram_mb.is_some()) && need > max {
                    why.push(format!(
                        "task '{}' needs {need} MB of VRAM, more than any card has ({max} MB)",
                        t.name
                    ));
                    break;
                }
            }
        }
        if why.is_empty() {
            why.push("no queued task can be claimed by any worker".into());
        }
        SimError::Infeasible {
            policy: self.name(),
            at_s: secs(self.last_change),
            reason: format!(
                "stuck from t={}s, nothing runs and nothing will change: {total} of {} tasks never finished ({by_class}); {}",
                secs(self.last_change),
                b.jobs.len(),
                why.join("; ")
            ),
        }
    }

    fn finish(&self) -> SimResult {
        let end = self.now;
        let clip = |segs: &[(Us, Us, SegmentKind)]| -> Vec<Segment> {
            segs.iter()
                .filter(|(s, e, _)| s < e && *s < end)
                .map(|(s, e, k)| Segment {
                    start: secs(*s),
                    end: secs((*e).min(end)),
                    kind: k.clone(),
                })
                .collect()
        };
        let mut busy_all = 0;
        let gpus: Vec<GpuTimeline> = self
            .workers
            .iter()
            .map(|w| {
                let (mut busy, mut loading) = (0, 0);
                for (s, e, k) in &w.segments {
                    let d = (*e).min(end) - (*s).min(end);
                    match k {
                        SegmentKind::Task { .. } => busy += d,
                        SegmentKind::Load | SegmentKind::Unload => loading += d,
                    }
                }
                busy_all += busy;
                GpuTimeline {
                    worker: w.id.clone(),
                    llm_capable: w.llm_capable,
                    segments: clip(&w.segments),
                    busy_s: secs(busy),
                    loading_s: secs(loading),
                    idle_s: secs(end - busy - loading),
                }
            })
            .collect();
        let gpu_busy_fraction = if end > 0 {
            busy_all as f64 / (end as f64 * gpus.len() as f64)
        } else {
            0.0
        };
        SimResult {
            policy: self.cfg.policy,
            makespan_s: secs(end),
            gpus,
            brain_segments: clip(&self.brain_segments),
            loads: self.loads,
            unloads: self.unloads,
            loaded: self.loaded.clone(),
            gpu_busy_fraction,
            tasks_completed: self.completed,
            batch_ends: self
                .batches
                .iter()
                .map(|b| (b.id.clone(), secs(b.end)))
                .collect(),
        }
    }
}

/// The model of a load (empty for anything else).
fn flight_model(item: &Item) -> String {
    match item {
        Item::Load { model } => model.clone(),
        _ => String::new(),
    }
}

/// Complete, or failed for good: nothing more of it runs.
fn finished(s: JobStatus) -> bool {
    match s {
        JobStatus::Complete => true,
        JobStatus::Failed(f) => !f.retryable(),
        _ => false,
    }
}

/// The brain decided something only failures, cancellations or hand moves cause.
fn unsimulated(a: &Action) -> ! {
    panic!(
        "simulator: the brain decided {a:?}, which only failures, \
         cancellations or hand moves can cause; none is simulated"
    )
}
