//! The resource manager's I/O: reading the rig (worker state files, resource tasks
//! in flight, rig.toml) into a [`RigView`], and writing the decisions of
//! [`resources::decide`] as `load_llm` / `unload_llm` task files.
//!
//! Resource tasks live in the queue like any task, under the reserved batch id
//! [`RESOURCE_BATCH`], so a user sees them with `ls` and a restarted brain finds the
//! ones in flight by listing `queue/` and `processing/`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use rigmind_config::RigConfig;
use rigmind_queue::fsio::{self, Sync};
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{ResourceAction, TaskFile, TaskName, RESOURCE_BATCH};
use rigmind_queue::workers::{WorkerState, WorkerStatus};
use rigmind_queue::{Layout, LifeLock, TaskDir};
use rigmind_types::TaskClass;
use serde_json::json;

use crate::record::Recorder;
use crate::resources::{self, CardFacts, InFlight, RmAction, RmConfig};
use crate::state::BrainState;

/// How often the resource manager looks at the rig at most.
const EVERY: Duration = Duration::from_millis(250);
/// A model a server did not know is taken for unknown this long.
const UNKNOWN_FOR: Duration = Duration::from_secs(300);
/// After a resource task fails, its card is left alone this long.
const COOL_DOWN: Duration = Duration::from_secs(60);

/// The resource manager's memory between rounds: what it has sent, and the config.
pub struct ResourceManager {
    config: RigConfig,
    config_stamp: Option<SystemTime>,
    in_flight: BTreeMap<String, InFlight>,
    cool_down: HashMap<String, Instant>,
    /// When each model was found unknown to a server (forgotten after
    /// [`UNKNOWN_FOR`], so that a model pulled since is tried again).
    unknown_since: HashMap<String, Instant>,
    last_round: Option<Instant>,
    started: Instant,
    /// The `seq` of the last resource task written: two decided in the same
    /// millisecond must not share a file name.
    last_seq: u64,
    /// Where its rounds are recorded (`RIGMIND_RECORD_ROUNDS`), if anywhere.
    recorder: Recorder,
}

impl ResourceManager {
    /// Starts from the files: resource tasks still queued or running are in flight.
    pub fn new(layout: &Layout, config: RigConfig, recorder: Recorder) -> Self {
        let mut rm = Self {
            config,
            config_stamp: stamp(&layout.rig_toml()),
            in_flight: BTreeMap::new(),
            cool_down: HashMap::new(),
            unknown_since: HashMap::new(),
            last_round: None,
            started: Instant::now(),
            last_seq: 0,
            recorder,
        };
        for d in [TaskDir::Queue, TaskDir::Processing] {
            for name in resource_files(layout, d) {
                if let Ok(t) = TaskFile::read(&layout.dir(d).join(&name)) {
                    if let Some(f) = InFlight::of(&t) {
                        rm.in_flight.insert(name, f);
                    }
                }
            }
        }
        rm
    }

    pub fn config(&self) -> &RigConfig {
        &self.config
    }

    /// One round, at most every [`EVERY`]: reread rig.toml if it changed, follow the
    /// resource tasks in flight, read the workers, decide, write the decisions.
    /// True when the brain's own state changed (models found unknown, or forgotten),
    /// so that its release decisions are worth taking again.
    pub fn round(&mut self, layout: &Layout, logs: &Logs, state: &mut BrainState) -> bool {
        if self.last_round.is_some_and(|t| t.elapsed() < EVERY) {
            return false;
        }
        self.last_round = Some(Instant::now());
        let unknown_before = state.unknown_models.clone();
        if self.reload_config(layout, logs) {
            // The servers may have the model by now; try again.
            state.unknown_models.clear();
        }
        self.follow_in_flight(layout, logs, state);
        let changed = state.unknown_models != unknown_before;
        let now = Utc::now();
        let workers = read_workers(layout, now, self.config.defaults.stale_after_secs);
        if workers.iter().all(|w| w.gpu.is_none()) {
            return changed;
        }
        let config = RmConfig::from_rig(&self.config);
        let facts = self.card_facts(&workers, now);
        let view = resources::view_of(&config, &facts, &self.in_flight, state, now);
        let resources::Decided {
            actions,
            projection,
        } = resources::decide_round(&view);
        let recorder = &self.recorder;
        recorder.resources(now, &config, &facts, &self.in_flight, state, &actions);
        // Written with the next records (flush_records), only where due.
        for m in rigmind_decide::eta::note(state, &projection.batch_ends, now) {
            log_eta(logs, &m, &view.config.policy.name(), now);
        }
        for action in actions {
            if let Err(e) = self.send(layout, logs, &view, &action) {
                tracing::warn!(worker = %action.worker(), "writing a resource task: {e}");
            }
        }
        changed
    }

    /// Rereads rig.toml when it changed; true when a new config took effect.
    fn reload_config(&mut self, layout: &Layout, logs: &Logs) -> bool {
        let path = layout.rig_toml();
        let now = stamp(&path);
        if now == self.config_stamp {
            return false;
        }
        self.config_stamp = now;
        match RigConfig::load(&path) {
            Ok(c) => {
                self.config = c;
                let _ = logs.decision(
                    &Decision::new("config")
                        .kv("file", path.display())
                        .kv("policy", RmConfig::from_rig(&self.config).policy.name())
                        .kv("reason", "rig.toml changed; reloaded"),
                );
                true
            }
            Err(e) => {
                let _ = logs.decision(&Decision::new("config").kv("file", path.display()).kv(
                    "reason",
                    format!("rig.toml changed but is invalid, kept the last good one: {e}"),
                ));
                false
            }
        }
    }

    /// Forgets resource tasks that have finished; a failed one cools its card down,
    /// and a model the server does not know makes the llm tasks that need it fail.
    fn follow_in_flight(&mut self, layout: &Layout, logs: &Logs, state: &mut BrainState) {
        let names: Vec<String> = self.in_flight.keys().cloned().collect();
        for name in names {
            if layout.dir(TaskDir::Queue).join(&name).exists() {
                continue;
            }
            let running = layout.dir(TaskDir::Processing).join(&name);
            if running.exists() {
                // Its worker died holding it: nothing else requeues resource tasks,
                // and the card would look busy for ever.
                let worker = self.in_flight.get(&name).map(|f| f.worker.clone());
                if worker.is_some_and(|w| holder_gone(layout, &w, &running)) {
                    self.fail_lost(layout, logs, &running, &name);
                }
                continue;
            }
            let Some(f) = self.in_flight.remove(&name) else {
                continue;
            };
            if f.load {
                learn_load(layout, state, &name, &f);
            }
            let failed = layout.dir(TaskDir::Failed).join(&name);
            if let Ok(t) = TaskFile::read(&failed) {
                self.cool_down.insert(f.worker.clone(), Instant::now());
                // Only "not found": a refused request is not the model's fault.
                let unknown = t.error.as_deref().is_some_and(|e| e.contains("not found"));
                if f.load
                    && unknown
                    && t.failure_kind == Some(rigmind_queue::FailureKind::DefinitionError)
                {
                    self.unknown_since.insert(f.model.clone(), Instant::now());
                    let why = t.error.clone().unwrap_or_else(|| "unknown model".into());
                    state.unknown_models.insert(
                        f.model.clone(),
                        format!("model {} cannot be loaded: {why}", f.model),
                    );
                }
                let _ = logs.decision(
                    &Decision::new("resource_failed")
                        .kv("task", &t.name)
                        .kv("worker", &f.worker)
                        .kv("model", &f.model)
                        .kv("cool_down_s", COOL_DOWN.as_secs())
                        .kv(
                            "reason",
                            t.error.clone().unwrap_or_else(|| "failed".to_string()),
                        ),
                );
            }
        }
        self.cool_down.retain(|_, t| t.elapsed() < COOL_DOWN);
        let expired: Vec<String> = self
            .unknown_since
            .iter()
            .filter(|(_, t)| t.elapsed() >= UNKNOWN_FOR)
            .map(|(m, _)| m.clone())
            .collect();
        for m in expired {
            self.unknown_since.remove(&m);
            state.unknown_models.remove(&m);
        }
    }

    /// Files a resource task whose worker died as failed (`lost_worker`) and forgets
    /// it; the card is decided afresh once its worker is back.
    fn fail_lost(&mut self, layout: &Layout, logs: &Logs, path: &std::path::Path, name: &str) {
        let Ok(mut t) = TaskFile::read(path) else {
            return;
        };
        t.status = rigmind_queue::TaskStatus::Failed;
        t.failure_kind = Some(rigmind_queue::FailureKind::LostWorker);
        t.error = Some("its worker died while running it".into());
        t.finished_at = Some(rigmind_queue::time::now());
        if let Err(e) = rigmind_queue::file_into(layout, path, &t, TaskDir::Failed, Sync::Data) {
            tracing::warn!("{e}");
            return;
        }
        self.in_flight.remove(name);
        let _ = logs.decision(
            &Decision::new("lost")
                .kv("task", &t.name)
                .kv("worker", t.target_worker.as_deref().unwrap_or(""))
                .kv("model", t.model.as_deref().unwrap_or(""))
                .kv("failure_kind", "lost_worker")
                .kv(
                    "reason",
                    "its worker died while running it; the card is decided afresh",
                ),
        );
    }

    /// What the GPU workers' state files say of their cards, with the cards
    /// cooling down after a failed resource task; drained cards are left out.
    fn card_facts(&self, workers: &[WorkerState], now: DateTime<Utc>) -> Vec<CardFacts> {
        let secs_since = |t: Option<DateTime<Utc>>| {
            t.map_or(self.started.elapsed().as_secs_f64(), |t| {
                (now - t).num_milliseconds().max(0) as f64 / 1000.0
            })
        };
        workers
            .iter()
            // A drained card is left as it is: no load or unload is sent to it.
            .filter(|w| w.gpu.is_some() && !w.draining)
            .map(|w| CardFacts {
                worker: w.worker_id.clone(),
                loaded: w.gpu_state.is_some_and(|s| s.is_llm()),
                model: w.model.clone(),
                running: w.current_class,
                running_task: w.current_task.clone(),
                llm_idle_secs: secs_since(w.llm_idle_since),
                in_mode_secs: secs_since(w.gpu_state_since),
                // A worker told not to take llm work never gets a load.
                llm_capable: w.llm_url.is_some() && w.classes.contains(&TaskClass::Llm),
                cooling_down: self.cool_down.contains_key(&w.worker_id),
                vram_mb: self.card_vram_mb(w),
            })
            .collect()
    }

    /// A card's memory: its `[[gpu]]` entry's `vram_mb`, else the total its worker
    /// read through NVML (or the fake).
    fn card_vram_mb(&self, w: &WorkerState) -> Option<u64> {
        self.config
            .gpus
            .iter()
            .find(|g| g.worker == w.worker_id)
            .and_then(|g| g.vram_mb)
            .or_else(|| w.telemetry.as_ref().map(|t| t.memory_total_mb))
    }

    fn send(
        &mut self,
        layout: &Layout,
        logs: &Logs,
        view: &resources::RigView,
        action: &RmAction,
    ) -> Result<(), rigmind_queue::QueueError> {
        let (name, model, reason) = match action {
            RmAction::Load { model, reason, .. } => (ResourceAction::LoadLlm, model, reason),
            RmAction::Unload { model, reason, .. } => (ResourceAction::UnloadLlm, model, reason),
        };
        let mut t = resources::task_of(action, &view.config);
        t.seq = t.seq.max(self.last_seq + 1);
        self.last_seq = t.seq;
        t.write_to(&layout.dir(TaskDir::Queue), Sync::Data)?;
        if let Some(f) = InFlight::of(&t) {
            self.in_flight.insert(t.file_name(), f);
        }
        logs.decision(
            &Decision::new(name.as_str())
                .kv("worker", action.worker())
                .kv("model", model)
                .kv("policy", view.config.policy.name())
                .kv("task_id", &t.task_id)
                .kv("reason", reason),
        )?;
        let _ = logs.event(
            name.as_str(),
            crate::observe::obj(json!({"worker": action.worker(), "model": model,
                "policy": view.config.policy.name(), "task_id": t.task_id, "reason": reason})),
        );
        Ok(())
    }
}

/// The decision line of a batch whose ETA moved a lot (or appeared, or vanished).
fn log_eta(logs: &Logs, m: &rigmind_decide::eta::Moved, policy: &str, now: DateTime<Utc>) {
    let show =
        |t: Option<DateTime<Utc>>| t.map_or("never".to_string(), rigmind_queue::time::to_rfc3339);
    let reason = match (m.from, m.to) {
        (None, Some(_)) => "first projection that ends the batch".to_string(),
        (Some(_), None) => "the projection no longer ends the batch".to_string(),
        (Some(f), Some(t)) => format!(
            "the projection moved the end by {:+.0}s (estimates learned, cards moved, or tasks ran long)",
            rigmind_decide::eta::secs_between(f, t)
        ),
        (None, None) => "no change".to_string(),
    };
    let left =
        m.to.map(|t| format!("{:.0}", rigmind_decide::eta::secs_between(now, t)));
    let _ = logs.decision(
        &Decision::new("eta")
            .kv("batch", &m.batch)
            .kv("eta", show(m.to))
            .kv("was", show(m.from))
            .opt("in_s", left)
            .kv("policy", policy)
            .kv("reason", reason),
    );
}

/// Notes how long a completed `load_llm` took (its result's `elapsed_seconds`) for
/// its model on its worker's card: the resource manager plans with it
/// (`rigmind_decide::estimate::load_of`).
fn learn_load(layout: &Layout, state: &mut BrainState, name: &str, f: &InFlight) {
    let done = layout.dir(TaskDir::Complete).join(name);
    let Some(secs) = TaskFile::read(&done).ok().and_then(|t| t.elapsed_seconds) else {
        return;
    };
    let key = rigmind_decide::estimate::load_key(&f.model, &f.worker);
    state.learned_loads.entry(key).or_default().add(secs);
}

/// Whether the worker that claimed the resource task at `path` is gone: its life
/// lock is free, or it has been restarted since (the task's session is not the one
/// in its state file), or it never started the task within the claim grace.
fn holder_gone(layout: &Layout, worker: &str, path: &std::path::Path) -> bool {
    if LifeLock::is_held(&layout.worker_lock(worker)) == Some(false) {
        return true;
    }
    let Ok(t) = TaskFile::read(path) else {
        return false;
    };
    let live = rigmind_queue::workers::probe(layout, worker).session;
    match (&t.worker_session, live) {
        (Some(ran), Some(now)) => *ran != now,
        // Claimed (the rename set its change time) but never started.
        (None, _) => {
            let claimed = crate::observe::holder_of(&t, path).since;
            (Utc::now() - claimed).num_milliseconds() as f64 / 1000.0
                > crate::policy::CLAIM_GRACE_SECS
        }
        _ => false,
    }
}

fn stamp(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Resource task files in one directory.
fn resource_files(layout: &Layout, d: TaskDir) -> Vec<String> {
    fsio::list_names(&layout.dir(d))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| TaskName::parse(n).is_some_and(|tn| tn.batch == RESOURCE_BATCH))
        .collect()
}

/// The workers that are alive: their life lock is held (or, where there is no lock
/// to ask, their heartbeat is fresh) and they have not stopped.
pub fn read_workers(
    layout: &Layout,
    now: DateTime<Utc>,
    stale_after_secs: f64,
) -> Vec<WorkerState> {
    let Ok(all) = WorkerState::read_all(layout) else {
        return Vec::new();
    };
    all.into_iter()
        .flatten()
        .filter(|w| {
            if w.state == WorkerStatus::Stopped {
                return false;
            }
            match LifeLock::is_held(&layout.worker_lock(&w.worker_id)) {
                Some(held) => held,
                None => {
                    ((now - w.heartbeat_at).num_milliseconds() as f64) < stale_after_secs * 1000.0
                }
            }
        })
        .collect()
}
