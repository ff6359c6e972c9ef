//! What a worker is and holds: its options and classes, its card and LLM server, and
//! the state it publishes in `workers/<id>.json`. This [`Profile`] decides what the
//! worker may claim ([`Profile::context`]); this module also finds the card and the
//! server when the worker starts and writes the state file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use rigmind_config::RigConfig;
use rigmind_exec::llm::LlmRunner;
use rigmind_exec::{Filed, Finished};
use rigmind_llm::{Api, Backend};
use rigmind_queue::task::{ResourceAction, TaskFile};
use rigmind_queue::workers::{WorkerState, WorkerStatus};
use rigmind_queue::Layout;
use rigmind_types::TaskClass;

use crate::card::{self, Card, ClaimContext};
use crate::{WorkerError, WorkerOptions};
use rigmind_decide::claim::ClaimCard;

/// How often the card and the host are read while claiming.
const READ_EVERY: Duration = Duration::from_millis(250);

/// Everything a worker knows of itself that decides what it may claim.
pub(crate) struct Profile {
    pub(crate) opts: WorkerOptions,
    pub(crate) classes: Vec<TaskClass>,
    pub(crate) config: RigConfig,
    pub(crate) card: Option<Card>,
    pub(crate) llm: Option<LlmRunner>,
    /// Its published state; `state.gates` are the safety gates violated at the
    /// last reading.
    pub(crate) state: WorkerState,
    pub(crate) gates_read: Option<Instant>,
}

impl Profile {
    /// What the claim rules ([`card::tier`]) see of this worker at `now`.
    pub(crate) fn context(&self, now: chrono::DateTime<Utc>) -> ClaimContext<'_> {
        let card = self.card.as_ref().map(|c| ClaimCard {
            model: c.model.as_deref(),
            vram_free_mb: Some(c.info.memory_free_mb),
        });
        ClaimContext::new(
            &self.opts.id,
            &self.classes,
            card,
            self.llm.as_ref().is_some_and(|l| l.card.is_some()),
            self.state.gates.is_empty(),
            now,
        )
    }

    /// Reads the card and the host again (at most every [`READ_EVERY`]) and says
    /// so, once, when the gates change.
    pub(crate) fn read_gates(&mut self, force: bool) {
        if !force && self.gates_read.is_some_and(|t| t.elapsed() < READ_EVERY) {
            return;
        }
        self.gates_read = Some(Instant::now());
        let info = self.card.as_mut().map(|c| c.refresh().clone());
        let card::GateReading {
            host,
            cpu,
            violations: gates,
        } = card::gates(&self.config.safety, info.as_ref());
        if gates != self.state.gates {
            if gates.is_empty() {
                tracing::info!(worker = %self.opts.id, "safety gates clear again: claiming script and llm work");
            } else {
                tracing::warn!(worker = %self.opts.id, gates = ?gates, "safety gate violated: no script or llm work is claimed until it clears");
            }
        }
        self.state.host = host;
        self.state.cpu_temp = cpu;
        self.state.telemetry = info;
        self.state.gates = gates;
    }

    /// Sets the card's state from what runs now, then writes the state file.
    pub(crate) fn publish(
        &mut self,
        layout: &Layout,
        state: WorkerStatus,
        task: Option<&TaskFile>,
    ) {
        if let Some(card) = self.card.as_mut() {
            let running = task.and_then(|t| Some((t.task_class?, t.name.as_str())));
            let s = card.state_for(running);
            card.set_state(s);
            self.state.gpu_state = Some(card.state);
            self.state.gpu_state_since = Some(card.state_since);
            self.state.model = card.model.clone();
            self.state.llm_idle_since = card.llm_idle_since;
        }
        self.state.current_class = task.and_then(|t| t.task_class);
        publish(layout, &mut self.state, state, task);
    }

    /// The heartbeat while a task runs: reads the gates and stamps the state file,
    /// leaving what it says runs alone.
    pub(crate) fn beat_while_running(&mut self, layout: &Layout) {
        self.read_gates(true);
        self.note_drain(layout);
        self.state.heartbeat_at = rigmind_queue::time::now();
        let _ = self.state.write(layout);
    }

    /// Looks at the worker's drain marker (`rigmind drain`); a change goes into the
    /// state (written by the caller) and the log. True if changed.
    pub(crate) fn note_drain(&mut self, layout: &Layout) -> bool {
        let id = &self.opts.id;
        let drained = rigmind_queue::drain::is_drained(layout, id);
        if drained == self.state.draining {
            return false;
        }
        self.state.draining = drained;
        if drained {
            let marker = layout.drain_marker(id);
            tracing::info!(worker = %id, marker = %marker.display(), "drained: finishes what it runs and claims nothing new until `rigmind resume`");
        } else {
            tracing::info!(worker = %id, "resumed: claims work again");
        }
        true
    }

    /// After a run, on a card: what the run changed on the card is noted, and after
    /// a resource task published before the task is filed, so that the resource
    /// manager never sees the task done and the card in its old state.
    pub(crate) async fn after_run(&mut self, layout: &Layout, finished: &Finished, stopping: bool) {
        if self.card.is_none() {
            return;
        }
        self.note_finished(&finished.task, finished.filed == Filed::Complete);
        if finished.task.task_class == Some(TaskClass::Resource) {
            if finished.filed != Filed::Complete {
                self.sync_model().await;
            }
            self.read_gates(true);
            let state = if stopping {
                WorkerStatus::Stopping
            } else {
                WorkerStatus::Busy
            };
            self.publish(layout, state, None);
        }
    }

    /// After a run: a load or unload changes what the card holds; an llm task
    /// resets its idle clock.
    fn note_finished(&mut self, task: &TaskFile, ok: bool) {
        let Some(card) = self.card.as_mut() else {
            return;
        };
        let now = rigmind_queue::time::now();
        match (task.task_class, task.resource_action()) {
            (Some(TaskClass::Resource), Some(ResourceAction::LoadLlm)) if ok => {
                card.model = task.model.clone();
                card.llm_idle_since = Some(now);
            }
            (Some(TaskClass::Resource), _) if ok => card.model = None,
            (Some(TaskClass::Llm), _) => card.llm_idle_since = Some(now),
            _ => {}
        }
    }

    /// Asks the LLM server what it holds, so that a model unloaded behind the
    /// worker's back (keep_alive ran out, the server restarted) is noticed.
    pub(crate) async fn sync_model(&mut self) {
        let Some(card) = self.card.as_mut() else {
            return;
        };
        let Some(server) = self.llm.as_ref().and_then(|l| l.card.as_ref()) else {
            return;
        };
        let url = server.base_url().to_string();
        let listed = tokio::time::timeout(Duration::from_secs(2), loaded_models(server)).await;
        let Ok(Ok(models)) = listed else { return };
        let is_listed = |m: &str| {
            models
                .iter()
                .any(|r| *r == rigmind_types::canonical_model(m))
        };
        match card.model.clone() {
            Some(m) if !is_listed(&m) => {
                tracing::warn!(worker = %self.opts.id, model = %m, url = %url, "the model is no longer loaded (keep_alive ran out or the server restarted)");
                card.model = None;
            }
            None => {
                if let Some(r) = models.first() {
                    tracing::info!(worker = %self.opts.id, model = %r, url = %url, "the LLM server holds a model: the card is in its LLM state");
                    card.model = Some(r.clone());
                    card.llm_idle_since = Some(rigmind_queue::time::now());
                }
            }
            _ => {}
        }
    }
}

/// The models a card's server holds, canonical: Ollama's `/api/ps`, a
/// llama-server router's `/models` entries whose status is loaded (or loading).
async fn loaded_models(server: &Backend) -> Result<Vec<String>, rigmind_llm::LlmError> {
    let names = match server {
        Backend::Ollama { client, .. } => client.ps().await?.into_iter().map(|m| m.name).collect(),
        Backend::LlamaServer(c) => c
            .models()
            .await?
            .into_iter()
            .filter(|(_, st)| {
                matches!(
                    st,
                    rigmind_llm::ModelStatus::Loaded | rigmind_llm::ModelStatus::Loading
                )
            })
            .map(|(id, _)| id)
            .collect(),
        _ => Vec::new(),
    };
    Ok(names
        .iter()
        .map(|n: &String| rigmind_types::canonical_model(n))
        .collect())
}

/// Finds the worker's card and LLM server (rig.toml's `[[gpu]]` entry, or
/// `--llm-url`). A GPU that cannot be found stops the worker at once.
pub(crate) fn set_up_card(
    opts: &WorkerOptions,
    config: &RigConfig,
) -> Result<(Option<Card>, Option<String>), WorkerError> {
    let gpu_err = |source| WorkerError::Gpu {
        id: opts.id.clone(),
        source,
    };
    let Some(sel) = &opts.gpu else {
        return Ok((None, opts.llm_url.clone()));
    };
    let telemetry = rigmind_gpu::open().map_err(gpu_err)?;
    let info = telemetry.find(sel).map_err(gpu_err)?;
    let entry = config
        .gpus
        .iter()
        .find(|g| g.index == info.index)
        .or_else(|| config.gpus.iter().find(|g| g.worker == opts.id));
    let url = opts.llm_url.clone().or_else(|| {
        entry
            .and_then(|g| g.llm_server())
            .map(|(_, u)| u.to_string())
    });
    tracing::info!(
        worker = %opts.id,
        gpu = info.index,
        uuid = %info.uuid,
        name = %info.name,
        telemetry = telemetry.kind(),
        memory_total_mb = info.memory_total_mb,
        llm = ?url,
        "pinned to GPU"
    );
    Ok((Some(Card::new(telemetry, info)), url))
}

/// The classes the worker claims: `--classes`, else what its card and server
/// allow. llm work without an LLM server is refused.
pub(crate) fn claim_classes(
    opts: &WorkerOptions,
    card: bool,
    llm_url: Option<&str>,
) -> Result<Vec<TaskClass>, WorkerError> {
    let classes = if !opts.classes.is_empty() {
        opts.classes.clone()
    } else {
        rigmind_decide::claim::default_classes(card, llm_url.is_some())
    };
    if classes.contains(&TaskClass::Llm) && llm_url.is_none() {
        return Err(WorkerError::BadOptions {
            id: opts.id.clone(),
            why: "llm work needs an LLM server: give --llm-url, or an `ollama` or `llama_server` URL in rig.toml's [[gpu]] entry for this card".into(),
        });
    }
    Ok(classes)
}

/// The clients of the worker's LLM servers: its card's (rig.toml's `[[gpu]]`
/// `ollama` / `llama_server`, or `--llm-url`, an Ollama) and every
/// `[[endpoint]]`'s. `None` when it has neither.
pub(crate) fn llm_runner(
    opts: &WorkerOptions,
    config: &RigConfig,
    layout: &Layout,
    card: Option<&Card>,
    llm_url: Option<&str>,
) -> Result<Option<LlmRunner>, WorkerError> {
    if llm_url.is_none() && config.endpoints.is_empty() {
        return Ok(None);
    }
    // The task's own timeout bounds each request (rigmind-exec), so the
    // clients' whole-request limit must not cut a long generation short.
    let limits =
        |b: Backend| b.with_timeouts(Duration::from_secs(5), Duration::from_secs(365 * 86400));
    let card_server = match llm_url {
        Some(url) => {
            let api = card_api(opts, config, card, url);
            let backend =
                Backend::for_card(api, url, &config.llm.keep_alive).map_err(|source| {
                    WorkerError::Llm {
                        id: opts.id.clone(),
                        url: url.to_string(),
                        source: Box::new(source),
                    }
                })?;
            Some(limits(backend))
        }
        None => None,
    };
    let endpoints = config
        .endpoints
        .iter()
        .map(|e| {
            let client = Backend::for_endpoint(e)
                .map(limits)
                .map_err(|err| err.to_string());
            (e.name.clone(), (e.clone(), client))
        })
        .collect();
    Ok(Some(LlmRunner {
        card: card_server,
        endpoints: std::sync::Arc::new(endpoints),
        keep_alive: config.llm.keep_alive.clone(),
        samples: layout.logs_dir().join("training_samples.jsonl"),
        vram_used_mb: card.map(|c| {
            let p = c.probe();
            std::sync::Arc::new(p) as rigmind_exec::llm::VramProbe
        }),
        loaded_vram: Default::default(),
    }))
}

/// The kind of the card's server: what rig.toml's `[[gpu]]` entry for the card
/// says (`llama_server` or `ollama`) when it names this URL; else Ollama.
fn card_api(opts: &WorkerOptions, config: &RigConfig, card: Option<&Card>, url: &str) -> Api {
    config
        .gpus
        .iter()
        .filter(|g| card.is_some_and(|c| c.index == g.index) || g.worker == opts.id)
        .filter_map(|g| g.llm_server())
        .find(|(_, u)| *u == url)
        .map_or(Api::Ollama, |(api, _)| api)
}

/// The state file of a worker that has just started (idle, nothing done yet).
pub(crate) fn first_state(
    opts: &WorkerOptions,
    session: String,
    classes: &[TaskClass],
    card: Option<&Card>,
    llm_url: Option<String>,
) -> WorkerState {
    let now = rigmind_queue::time::now();
    WorkerState {
        worker_id: opts.id.clone(),
        session,
        pid: std::process::id(),
        hostname: hostname(),
        gpu: card.map(|c| c.index.to_string()),
        classes: classes.to_vec(),
        state: WorkerStatus::Idle,
        current_task: None,
        current_task_name: None,
        started_at: now,
        heartbeat_at: now,
        tasks_done: 0,
        tasks_failed: 0,
        gpu_uuid: card.map(|c| c.info.uuid.clone()),
        gpu_state: card.map(|c| c.state),
        gpu_state_since: None,
        model: None,
        llm_url,
        llm_idle_since: None,
        current_class: None,
        telemetry: None,
        telemetry_source: card.map(|c| c.source().to_string()),
        host: None,
        cpu_temp: None,
        gates: Vec::new(),
        draining: false,
    }
}

/// Where a task without a `workdir` runs: the worker's own directory.
pub(crate) fn default_workdir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// Writes the state file saying `state` and the task that runs (if any).
pub(crate) fn publish(
    layout: &Layout,
    me: &mut WorkerState,
    state: WorkerStatus,
    task: Option<&TaskFile>,
) {
    me.state = state;
    me.current_task = task.map(|t| t.task_id.clone());
    me.current_task_name = task.map(|t| t.name.clone());
    me.heartbeat_at = rigmind_queue::time::now();
    if let Err(e) = me.write(layout) {
        tracing::warn!(worker = %me.worker_id, "{e}");
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
