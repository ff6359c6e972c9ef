//! Running `llm` tasks and the resource manager's `load_llm` / `unload_llm` tasks
//! against the LLM server of the runner's GPU.
//!
//! An llm task's `prompt` is the trusted instruction; the text of its `prompt_file`
//! goes to the model fenced as untrusted data ([`rigmind_llm::prompt::fenced_prompt`]).
//! The response goes to `output` (or only into the result record), the prompt and
//! response of every task not marked `sensitive` to `logs/training_samples.jsonl`,
//! and a sensitive task's log holds its timings only, never its text.
//!
//! A card's server is an Ollama or a llama-server router ([`Backend`]); an llm
//! task with an `endpoint` runs on that `[[endpoint]]` instead, on whichever
//! worker claimed it. Ollama keeps its `/api/generate` path; every other kind is
//! asked through its chat call. The result records the model, endpoint, prompt
//! and completion tokens, tokens/s, load time and cost.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rigmind_config::Endpoint;
use rigmind_llm::samples::{append_sample, TrainingSample};
use rigmind_llm::{Backend, ChatMessage, ChatRequest, GenerateRequest, Generation, LlmError};
use rigmind_queue::task::{FailureKind, ResourceAction, TaskFile};

use crate::shell::Abort;
use crate::{LlmStats, RunOutcome};

/// Reads the memory in use on the runner's GPU, in MB (`None`: unknown).
pub type VramProbe = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// An `[[endpoint]]` and its client (`Err`: why it cannot be called, e.g. its
/// key variable is unset; said when a task needs it).
pub type EndpointClient = (Endpoint, Result<Backend, String>);

/// What a runner needs to run llm and resource tasks.
#[derive(Clone)]
pub struct LlmRunner {
    /// The card's server (Ollama or llama-server); `None`: a worker without one,
    /// which runs endpoint tasks only.
    pub card: Option<Backend>,
    /// The endpoints of rig.toml by name.
    pub endpoints: Arc<std::collections::BTreeMap<String, EndpointClient>>,
    /// `keep_alive` sent with loads and generations (rig.toml `[llm] keep_alive`).
    pub keep_alive: String,
    /// `logs/training_samples.jsonl`.
    pub samples: PathBuf,
    /// Used after an unload to wait until the card's memory is back.
    pub vram_used_mb: Option<VramProbe>,
    /// What each load added to the card's memory use (MB, by model), read around
    /// the load: what an unload waits to get back when the server does not say
    /// what the model holds (llama-server).
    pub loaded_vram: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
}

impl std::fmt::Debug for LlmRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmRunner")
            .field("url", &self.card.as_ref().map(Backend::base_url))
            .field("endpoints", &self.endpoints.keys().collect::<Vec<_>>())
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

fn failed(kind: FailureKind, reason: String, started: Instant) -> RunOutcome {
    RunOutcome {
        failure: Some((kind, reason.clone())),
        error_snippet: Some(tail(&reason)),
        elapsed_secs: started.elapsed().as_secs_f64(),
        ..RunOutcome::default()
    }
}

fn tail(s: &str) -> String {
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(200)).collect()
}

fn llm_failure(e: &LlmError) -> FailureKind {
    if e.is_definition_error() {
        FailureKind::DefinitionError
    } else if matches!(e, LlmError::Timeout { .. }) {
        FailureKind::Timeout
    } else {
        FailureKind::WorkerFailure
    }
}

/// An error as a sensitive task may record it: its kind and server, never text
/// that could quote the prompt or the answer.
fn redacted(e: &LlmError) -> String {
    let kind = match e {
        LlmError::UnknownModel { .. } => "unknown model",
        LlmError::Unreachable { .. } => "server unreachable",
        LlmError::Timeout { .. } => "timed out",
        LlmError::Server { .. } => "server error",
        LlmError::BadRequest { .. } => "request refused as bad",
        LlmError::Protocol { .. } => "broken response",
        LlmError::StillLoaded { .. } => "model still loaded",
        LlmError::BadUrl { .. } => "bad server URL",
        LlmError::Unauthorized { .. } => "API key refused",
        LlmError::NoApiKey { .. } => "API key not set",
        LlmError::RateLimited { .. } => "rate limited",
        LlmError::NotLoaded { .. } => "model not loaded",
        LlmError::LoadFailed { .. } => "model failed to load",
    };
    format!(
        "{kind} at {} (details withheld: the task is sensitive)",
        e.url()
    )
}

/// Appends to the task's log; a log that cannot be written is not worth failing for.
fn log(path: &Path, text: &str) {
    let file = rigmind_queue::fsio::open_regular(
        path,
        std::fs::OpenOptions::new().create(true).append(true),
        "task log",
    );
    if let Ok(mut f) = file {
        let _ = writeln!(f, "{text}");
    }
}

/// Runs `fut` unless the task times out or the runner aborts.
async fn bounded<T>(
    fut: impl std::future::Future<Output = T>,
    timeout_secs: f64,
    mut abort: Abort,
) -> Result<T, Bound> {
    let limit = Duration::from_secs_f64(timeout_secs.clamp(0.001, 1e9));
    tokio::select! {
        r = tokio::time::timeout(limit, fut) => r.map_err(|_| Bound::TimedOut),
        _ = async { while !*abort.borrow() { if abort.changed().await.is_err() { std::future::pending::<()>().await } } } => Err(Bound::Aborted),
    }
}

enum Bound {
    TimedOut,
    Aborted,
}

fn bound_outcome(b: Bound, task: &TaskFile, started: Instant) -> RunOutcome {
    match b {
        Bound::Aborted => RunOutcome {
            aborted: true,
            elapsed_secs: started.elapsed().as_secs_f64(),
            ..RunOutcome::default()
        },
        Bound::TimedOut => failed(
            FailureKind::Timeout,
            format!(
                "timeout: no answer after {}; the request was dropped",
                rigmind_types::format_duration(task.timeout_seconds)
            ),
            started,
        ),
    }
}

/// Runs an llm task, or a resource task (`resource`), against the runner's LLM
/// server, after writing the attempt's `header` into its log.
pub async fn run_on_server(
    task: &TaskFile,
    llm: &LlmRunner,
    resource: bool,
    workdir: &Path,
    log_path: &Path,
    header: &str,
    abort: Abort,
) -> RunOutcome {
    let started = Instant::now();
    log(log_path, header);
    if resource {
        run_resource(task, llm, log_path, abort, started).await
    } else {
        run_llm(task, llm, workdir, log_path, abort, started).await
    }
}

/// Runs one llm task: builds the fenced prompt, generates (streaming) on its
/// endpoint or the card's server, checks `expect`, writes the output, the log
/// and the training sample.
async fn run_llm(
    task: &TaskFile,
    llm: &LlmRunner,
    workdir: &Path,
    log_path: &Path,
    abort: Abort,
    started: Instant,
) -> RunOutcome {
    let server = match server_of(task, llm) {
        Ok(s) => s,
        Err((kind, reason)) => return failed(kind, reason, started),
    };
    let req = match request(task, llm, workdir, &server) {
        Ok(req) => req,
        Err((kind, reason)) => return failed(kind, reason, started),
    };
    if !task.sensitive {
        log(
            log_path,
            &format!("--- prompt ---\n{}\n--- response ---", req.prompt),
        );
    }
    let generation =
        match bounded(generate(server.backend, &req), task.timeout_seconds, abort).await {
            Err(b) => return bound_outcome(b, task, started),
            Ok(Err(e)) => return generation_failed(task, &e, log_path, started),
            Ok(Ok(g)) => g,
        };
    let answer = Answer {
        prompt: req.prompt,
        generation,
        server,
    };
    keep_answer(task, llm, answer, workdir, log_path, started)
}

/// The server an llm task goes to: its endpoint, or the card's.
struct Server<'a> {
    backend: &'a Backend,
    endpoint: Option<&'a Endpoint>,
}

fn server_of<'a>(task: &TaskFile, llm: &'a LlmRunner) -> Result<Server<'a>, (FailureKind, String)> {
    let Some(name) = &task.endpoint else {
        return llm
            .card
            .as_ref()
            .map(|backend| Server {
                backend,
                endpoint: None,
            })
            .ok_or_else(|| {
                (
                    FailureKind::WorkerFailure,
                    format!(
                        "llm task '{}' needs a card's LLM server and this worker has none",
                        task.name
                    ),
                )
            });
    };
    match llm.endpoints.get(name) {
        None => Err((
            FailureKind::DefinitionError,
            format!(
                "llm task '{}': endpoint '{name}' is not declared in rig.toml",
                task.name
            ),
        )),
        Some((_, Err(why))) => Err((
            FailureKind::WorkerFailure,
            format!("endpoint '{name}': {why}"),
        )),
        Some((e, Ok(backend))) => Ok(Server {
            backend,
            endpoint: Some(e),
        }),
    }
}

/// One generation: Ollama's `/api/generate`, every other kind's chat call.
async fn generate(backend: &Backend, req: &GenerateRequest) -> Result<Generation, LlmError> {
    let mut on_token = |_: &str| {};
    match backend {
        Backend::Ollama { client, .. } => client.generate(req, &mut on_token).await,
        other => {
            let mut messages = Vec::new();
            if let Some(sys) = &req.system {
                messages.push(ChatMessage::new("system", sys.clone()));
            }
            messages.push(ChatMessage::new("user", req.prompt.clone()));
            let chat = ChatRequest {
                model: req.model.clone(),
                messages,
                stream: req.stream,
                keep_alive: None,
                options: req.options.clone(),
            };
            other.chat(&chat, &mut on_token).await
        }
    }
}

/// The model as `backend` (or the endpoint's model list) spells it: llama-server
/// and OpenAI-style servers know no `:latest` tag.
pub fn wire_model(backend: &Backend, endpoint: Option<&Endpoint>, model: &str) -> String {
    let canonical = rigmind_types::canonical_model(model);
    if let Some(m) = endpoint.and_then(|e| {
        e.models
            .iter()
            .find(|m| rigmind_types::canonical_model(m) == canonical)
    }) {
        return m.clone();
    }
    match backend {
        Backend::Ollama { .. } => model.to_string(),
        _ => model.strip_suffix(":latest").unwrap_or(model).to_string(),
    }
}

/// An llm task's request: its model, and the fenced prompt (its `prompt` as the
/// instruction, the text of its `prompt_file` as data).
fn request(
    task: &TaskFile,
    llm: &LlmRunner,
    workdir: &Path,
    server: &Server<'_>,
) -> Result<GenerateRequest, (FailureKind, String)> {
    let Some(instruction) = task.prompt.clone() else {
        return Err((
            FailureKind::DefinitionError,
            format!("llm task '{}' has no prompt", task.name),
        ));
    };
    let Some(model) = task.model.clone() else {
        return Err((
            FailureKind::DefinitionError,
            format!("llm task '{}' names no model", task.name),
        ));
    };
    let mut data = prompt_data(task, workdir)?;
    let mut name = task.prompt_file.clone();
    // An escalated task: the earlier tiers' answers and errors go in as data,
    // after the task's own data.
    if let Some(earlier) = crate::answer::earlier_attempts(task) {
        let own = data.map(|d| format!("{d}\n\n")).unwrap_or_default();
        data = Some(format!("{own}{earlier}"));
        name = Some(match name {
            Some(f) => format!("{f} and the earlier attempts"),
            None => "the earlier attempts at this task".to_string(),
        });
    }
    let prompt = rigmind_llm::prompt::fenced_prompt(&instruction, data.as_deref(), name.as_deref());
    Ok(GenerateRequest {
        model: wire_model(server.backend, server.endpoint, &model),
        prompt,
        system: task.system.clone(),
        stream: true,
        keep_alive: Some(llm.keep_alive.clone()),
        options: None,
    })
}

/// The text of the task's `prompt_file` (relative to its workdir), if it has one.
fn prompt_data(task: &TaskFile, workdir: &Path) -> Result<Option<String>, (FailureKind, String)> {
    let Some(f) = &task.prompt_file else {
        return Ok(None);
    };
    let path = workdir.join(f);
    match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
            (
                FailureKind::DefinitionError,
                format!("prompt_file {} is not UTF-8 text", path.display()),
            )
        }),
        // Often written by the task before: a retry may find it.
        Err(e) => Err((
            FailureKind::WorkerFailure,
            format!("cannot read prompt_file {}: {e}", path.display()),
        )),
    }
}

/// A generation the server refused or broke off: logged (redacted for a sensitive
/// task) and failed by its kind.
fn generation_failed(
    task: &TaskFile,
    e: &LlmError,
    log_path: &Path,
    started: Instant,
) -> RunOutcome {
    let text = if task.sensitive {
        redacted(e)
    } else {
        e.to_string()
    };
    log(log_path, &format!("--- rigmind: {text} ---"));
    failed(llm_failure(e), text, started)
}

/// A generation with the prompt that asked for it and the server that gave it.
struct Answer<'a> {
    prompt: String,
    generation: Generation,
    server: Server<'a>,
}

/// Keeps an answer: in the log (its text unless the task is sensitive, and its
/// timings), checked against `expect`, in the task's `output`, and as a training
/// sample; then the outcome.
fn keep_answer(
    task: &TaskFile,
    llm: &LlmRunner,
    answer: Answer<'_>,
    workdir: &Path,
    log_path: &Path,
    started: Instant,
) -> RunOutcome {
    let generation = &answer.generation;
    if !task.sensitive {
        log(log_path, &generation.response);
    }
    let stats = stats_of(generation, answer.server.endpoint);
    log(
        log_path,
        &format!(
            "--- rigmind: model {} at {}: {} tokens, {} tokens/s, {:.3}s ---",
            generation.model,
            answer.server.backend.base_url(),
            generation.eval_count.map_or("?".into(), |n| n.to_string()),
            stats
                .tokens_per_second
                .map_or("?".into(), |t| format!("{t:.1}")),
            started.elapsed().as_secs_f64()
        ),
    );
    let text = match checked_output(task, &generation.response) {
        Ok(text) => text,
        Err(reason) => {
            log(log_path, &format!("--- rigmind: {reason} ---"));
            let mut out = failed(FailureKind::WorkerFailure, reason, started);
            out.failed_output = (!task.sensitive).then(|| {
                crate::answer::cut(&generation.response, crate::answer::FAILED_OUTPUT_MAX)
            });
            out.llm = Some(stats);
            return out;
        }
    };
    if let Err(reason) = write_output(task, workdir, &text) {
        return failed(FailureKind::WorkerFailure, reason, started);
    }
    if !task.sensitive {
        keep_sample(
            task,
            llm,
            answer.prompt,
            generation,
            stats.tokens_per_second,
        );
    }
    RunOutcome {
        return_code: Some(0),
        elapsed_secs: started.elapsed().as_secs_f64(),
        output_lines: generation.response.lines().count() as u64,
        llm: Some(stats),
        ..RunOutcome::default()
    }
}

/// What the result records of a generation: model, tokens, speed, load time
/// and (with the endpoint's prices) cost.
fn stats_of(g: &Generation, endpoint: Option<&Endpoint>) -> LlmStats {
    let cost =
        endpoint.and_then(|e| e.cost(g.prompt_eval_count.unwrap_or(0), g.eval_count.unwrap_or(0)));
    LlmStats {
        model: g.model.clone(),
        eval_count: g.eval_count,
        tokens_per_second: g.tokens_per_second(),
        prompt_tokens: g.prompt_eval_count,
        load_seconds: g.load_duration_ns.map(|ns| ns as f64 / 1e9),
        cost_usd: cost,
    }
}

/// The text `output` gets: the answer, or with `expect: json` the parsed JSON,
/// pretty-printed; `Err` when the answer breaks `expect`.
fn checked_output(task: &TaskFile, response: &str) -> Result<String, String> {
    match task.expect.as_deref() {
        Some("json") => {
            let v = crate::answer::expected_json(response)?;
            Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n")
        }
        _ => Ok(response.to_string()),
    }
}

/// Writes the response to the task's `output` (relative to its workdir), if it
/// names one; says why not on failure.
fn write_output(task: &TaskFile, workdir: &Path, response: &str) -> Result<(), String> {
    let Some(out) = &task.output else {
        return Ok(());
    };
    let path = workdir.join(out);
    // The plan was checked when it was read; this catches hand-edited task
    // files and links inside the plan's directory that lead elsewhere.
    if !task.write_outside && !rigmind_queue::access::contained(workdir, Path::new(out), &[workdir])
    {
        return Err(format!(
            "output {} is outside the plan's directory {} (the plan may allow it with 'write_outside: true')",
            path.display(),
            workdir.display()
        ));
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    rigmind_queue::fsio::write_atomic(&path, response.as_bytes(), rigmind_queue::fsio::Sync::Data)
        .map_err(|e| format!("writing output {}: {e}", path.display()))
}

/// Appends the prompt and the answer to `logs/training_samples.jsonl`; a sample
/// that cannot be written is said, not failed for.
fn keep_sample(
    task: &TaskFile,
    llm: &LlmRunner,
    prompt: String,
    generation: &Generation,
    tps: Option<f64>,
) {
    let sample = TrainingSample {
        ts: rigmind_queue::time::now_rfc3339(),
        task_id: task.task_id.clone(),
        batch_id: task.batch_id.clone(),
        task_name: task.name.clone(),
        model: generation.model.clone(),
        system: task.system.clone(),
        prompt,
        response: generation.response.clone(),
        eval_count: generation.eval_count,
        tokens_per_second: tps,
    };
    if let Err(e) = append_sample(&llm.samples, &sample) {
        tracing::warn!(task = %task.name, "writing {}: {e}", llm.samples.display());
    }
}

/// Runs a `load_llm` or `unload_llm` task. An unload ends once the server no longer
/// lists the model and, where the card's memory can be read, once most of the
/// memory the model held is free again.
async fn run_resource(
    task: &TaskFile,
    llm: &LlmRunner,
    log_path: &Path,
    abort: Abort,
    started: Instant,
) -> RunOutcome {
    let model = task.model.clone().unwrap_or_default();
    let Some(card) = llm.card.as_ref() else {
        return failed(
            FailureKind::WorkerFailure,
            format!(
                "resource task '{}' needs a card's LLM server and this worker has none",
                task.name
            ),
            started,
        );
    };
    let url = card.base_url().to_string();
    let wire = wire_model(card, None, &model);
    let limit = Duration::from_secs_f64(task.timeout_seconds.clamp(1.0, 1e9));
    let mut load_time = None;
    let result = match ResourceAction::from_name(&task.name) {
        Some(ResourceAction::LoadLlm) => {
            let used_before = llm.vram_used_mb.as_ref().and_then(|f| f());
            bounded(card.load(&wire), task.timeout_seconds, abort)
                .await
                .map(|r| {
                    r.map(|took| {
                        load_time = Some(took.as_secs_f64());
                        let added = note_load(llm, &model, used_before);
                        format!(
                            "loaded {model} at {url} in {:.3}s{added}",
                            took.as_secs_f64()
                        )
                    })
                })
        }
        Some(ResourceAction::UnloadLlm) => {
            let noted = llm
                .loaded_vram
                .lock()
                .ok()
                .and_then(|mut m| m.remove(&model));
            let held = held_vram(card, &model).await.or(noted);
            let used_before = llm.vram_used_mb.as_ref().and_then(|f| f());
            // The memory wait is part of the unload: under the same timeout and abort.
            let unload = async {
                let took = card.unload(&wire, limit).await?;
                let back = wait_memory_back(llm, used_before, held, limit).await;
                Ok::<_, LlmError>(format!(
                    "unloaded {model} at {url} in {:.3}s{back}",
                    took.as_secs_f64()
                ))
            };
            bounded(unload, task.timeout_seconds, abort).await
        }
        None => {
            return failed(
                FailureKind::DefinitionError,
                format!(
                    "resource task '{}' is not load_llm or unload_llm",
                    task.name
                ),
                started,
            )
        }
    };
    match result {
        Err(b) => bound_outcome(b, task, started),
        Ok(Err(e)) => {
            log(log_path, &format!("--- rigmind: {e} ---"));
            failed(llm_failure(&e), e.to_string(), started)
        }
        Ok(Ok(line)) => {
            log(log_path, &format!("--- rigmind: {line} ---"));
            RunOutcome {
                return_code: Some(0),
                elapsed_secs: started.elapsed().as_secs_f64(),
                output_lines: 1,
                llm: Some(LlmStats {
                    model,
                    load_seconds: load_time,
                    ..LlmStats::default()
                }),
                ..RunOutcome::default()
            }
        }
    }
}

/// Notes what the load of `model` added to the card's memory use, for the
/// unload to wait for; says it for the log.
fn note_load(llm: &LlmRunner, model: &str, used_before: Option<u64>) -> String {
    let (Some(probe), Some(before)) = (&llm.vram_used_mb, used_before) else {
        return String::new();
    };
    let Some(after) = probe() else {
        return String::new();
    };
    let added = after.saturating_sub(before);
    if let Ok(mut m) = llm.loaded_vram.lock() {
        m.insert(model.to_string(), added);
    }
    format!("; GPU memory {before} MB -> {after} MB")
}

/// The VRAM the server says the model holds, in MB. Only Ollama says
/// (`/api/ps`); for a llama-server router the unload waits for what the
/// card's memory grew by at the load ([`note_load`]), when this worker did it.
async fn held_vram(card: &Backend, model: &str) -> Option<u64> {
    let Backend::Ollama { client, .. } = card else {
        return None;
    };
    let ps = client.ps().await.ok()?;
    ps.iter()
        .find(|m| m.is(model))
        .map(|m| m.size_vram / (1024 * 1024))
}

/// Waits until the card's memory use has dropped by most of what the model held;
/// says how it went, for the log.
async fn wait_memory_back(
    llm: &LlmRunner,
    used_before: Option<u64>,
    held_mb: Option<u64>,
    limit: Duration,
) -> String {
    let (Some(probe), Some(before)) = (&llm.vram_used_mb, used_before) else {
        return String::new();
    };
    let Some(held) = held_mb else {
        let now = probe().map_or("?".into(), |u| u.to_string());
        return format!("; GPU memory {before} MB -> {now} MB");
    };
    if held == 0 {
        return String::new();
    }
    let target = before.saturating_sub(held * 8 / 10);
    let deadline = Instant::now() + limit;
    loop {
        let now = probe();
        if now.is_some_and(|u| u <= target) {
            return format!("; GPU memory {before} MB -> {} MB", now.unwrap_or(0));
        }
        if Instant::now() >= deadline {
            return format!(
                "; GPU memory still {} MB (was {before} MB, the model held {held} MB)",
                now.map_or("?".into(), |u| u.to_string())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_output(out: &str, outside: bool) -> TaskFile {
        let mut t = TaskFile::new("b1", "s", rigmind_types::TaskClass::Llm);
        t.output = Some(out.into());
        t.write_outside = outside;
        t
    }

    #[test]
    fn an_output_outside_the_plan_s_directory_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan");
        std::fs::create_dir_all(&plan).unwrap();
        std::os::unix::fs::symlink(dir.path(), plan.join("up")).unwrap();
        assert_eq!(
            write_output(&with_output("out/a.md", false), &plan, "a"),
            Ok(())
        );
        assert!(plan.join("out/a.md").exists());
        for bad in ["../b.md", "up/c.md", "/tmp/rigmind-never.md"] {
            let why = write_output(&with_output(bad, false), &plan, "x").unwrap_err();
            assert!(why.contains("outside the plan's directory"), "{bad}: {why}");
        }
        assert!(!dir.path().join("b.md").exists() && !dir.path().join("c.md").exists());
        assert_eq!(
            write_output(&with_output("../b.md", true), &plan, "b"),
            Ok(())
        );
        assert!(dir.path().join("b.md").exists());
    }
}
