//! `rigmind run PLAN`: the one-command path — brain, workers, submit, wait, stop.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rigmind_config::RigConfig;
use rigmind_queue::batch::{BatchRecord, BatchState};
use rigmind_queue::task::{TaskFile, TaskName};
use rigmind_queue::{fsio, Layout, LifeLock, TaskDir};

use super::submit::{ended_line, submit_plan_file, wait_for_batch, WaitOutcome};
use crate::args::RunArgs;

/// A child process started by `run`, stopped with SIGTERM at the end.
struct Started {
    what: String,
    child: Child,
}

/// `rigmind run PLAN [--root DIR] [--workers N]`
pub fn run(a: RunArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    let Some(workers) = prepare(&layout, &a)? else {
        return Ok(1);
    };
    let batch = match submit_plan_file(&layout, &a.plan) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(1);
        }
    };
    let mut started = start_processes(&layout, &workers, a.metrics_addr)?;
    let interrupted = watch_for_interrupt();
    let t0 = Instant::now();
    let (outcome, died) = wait_with_progress(&layout, &batch, &mut started, &interrupted, t0);
    let outcome = outcome?;
    stop_all(&mut started);
    Ok(exit_code(
        &layout,
        outcome,
        died,
        interrupted.load(Ordering::SeqCst),
        t0,
    ))
}

/// Every check made before anything is submitted or started: the plan, rig.toml's
/// worker ids, and that some worker can run the plan's LLM tasks. Returns the
/// workers to start, or `None` once the errors are printed (exit 1).
fn prepare(layout: &Layout, a: &RunArgs) -> Result<Option<Vec<WorkerPlan>>> {
    // Errors in the plan show before anything is decided or started.
    if let Err(e) = super::submit::check_readable(&a.plan) {
        eprintln!("{e}");
        return Ok(None);
    }
    layout.ensure()?;
    let config = RigConfig::load(&layout.rig_toml())?;
    let plan = match rigmind_brain::submit::load_plan(&a.plan, &config) {
        Ok(p) => p,
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            return Ok(None);
        }
    };
    if !worker_ids_valid(layout, &config) {
        return Ok(None);
    }
    let workers = worker_plan(layout, &config, a.workers);
    // Work nobody here could run would keep `run` waiting forever.
    // llm tasks an [[endpoint]] serves need no card: any worker runs them.
    let llm = rigmind_decide::tasks::card_llm_jobs(&plan, &config);
    if llm > 0 && !workers.iter().any(|w| w.llm) {
        eprintln!(
            "{}: {llm} llm task(s) no [[endpoint]] serves, and no GPU worker here has an LLM server: declare each card with its `ollama` or `llama_server` URL in {} ([[gpu]] entries), or an [[endpoint]] that serves the model; nothing was started",
            a.plan.display(),
            layout.rig_toml().display()
        );
        return Ok(None);
    }
    Ok(Some(workers))
}

/// Whether every `[[gpu]]` of rig.toml names a valid worker id; prints the first
/// bad one.
fn worker_ids_valid(layout: &Layout, config: &RigConfig) -> bool {
    for g in &config.gpus {
        if let Err(e) = rigmind_worker::check_worker_id(&g.worker) {
            eprintln!(
                "{}: [[gpu]] index {}: {e}",
                layout.rig_toml().display(),
                g.index
            );
            return false;
        }
    }
    true
}

/// Starts the brain (unless one already holds the root) and the workers.
fn start_processes(
    layout: &Layout,
    workers: &[WorkerPlan],
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<Vec<Started>> {
    let exe = std::env::current_exe().context("finding the rigmind executable")?;
    let mut started: Vec<Started> = Vec::new();
    if LifeLock::is_held(&layout.brain_lock()) == Some(true) {
        eprintln!(
            "rigmind: using the brain already running on {}",
            layout.root().display()
        );
    } else {
        let addr = metrics_addr.map(|a| a.to_string());
        let mut args = vec!["brain"];
        if let Some(a) = addr.as_deref() {
            args.extend(["--metrics-addr", a]);
        }
        started.push(spawn(&exe, layout, "brain", &args)?);
    }
    for w in workers {
        // A grace shorter than stop_all's deadline, so that a task still running
        // at Ctrl-C is stopped and put back by its worker, not orphaned.
        let mut args = vec!["worker", "--id", w.id.as_str(), "--grace", "10"];
        if let Some(c) = w.classes {
            args.extend(["--classes", c]);
        }
        if let Some(g) = w.gpu.as_deref() {
            args.extend(["--gpu", g]);
        }
        started.push(spawn(&exe, layout, &w.id, &args)?);
    }
    Ok(started)
}

/// A flag set on Ctrl-C (or SIGTERM), so that `run` stops the children cleanly
/// instead of leaving them behind.
fn watch_for_interrupt() -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(crate::signals::stop_requested());
            flag.store(true, Ordering::SeqCst);
        }
    });
    interrupted
}

/// Waits for the batch, showing its progress (`progress`: a bar on a terminal,
/// else a line when it changes); stops waiting
/// when a started process exits (returned as the second value) or on interrupt.
fn wait_with_progress(
    layout: &Layout,
    batch: &str,
    started: &mut [Started],
    interrupted: &AtomicBool,
    t0: Instant,
) -> (Result<WaitOutcome>, Option<String>) {
    let mut progress = super::progress::Progress::for_run(t0);
    let mut died: Option<String> = None;
    let outcome = wait_for_batch(layout, batch, None, |r: Option<&BatchRecord>| {
        if let Some(r) = r {
            progress.update(r);
        }
        for s in started.iter_mut() {
            if !matches!(s.child.try_wait(), Ok(None)) {
                died = Some(s.what.clone());
                return false;
            }
        }
        !interrupted.load(Ordering::SeqCst)
    });
    progress.finish();
    (outcome, died)
}

/// The exit code once the children are stopped: 1 if one of them died first, 130
/// on interrupt, else from the outcome (0 all complete, 1 failed or rejected, 2 no
/// result); prints the summary or the reason.
fn exit_code(
    layout: &Layout,
    outcome: WaitOutcome,
    died: Option<String>,
    interrupted: bool,
    t0: Instant,
) -> i32 {
    if let Some(what) = died {
        eprintln!(
            "rigmind: {what} exited before the batch was done; see {}",
            layout.logs_dir().join(format!("{what}.log")).display()
        );
        return 1;
    }
    if interrupted {
        eprintln!("rigmind: interrupted");
        return 130;
    }
    match outcome {
        WaitOutcome::Done(r) => {
            print_summary(layout, &r, t0.elapsed());
            if r.state == BatchState::Complete {
                0
            } else {
                1
            }
        }
        WaitOutcome::Rejected(errors) => {
            eprintln!("{errors}");
            1
        }
        WaitOutcome::TimedOut | WaitOutcome::Stopped => 2,
    }
}

/// One worker `run` starts.
struct WorkerPlan {
    id: String,
    gpu: Option<String>,
    /// `None`: the worker's own default for its kind.
    classes: Option<&'static str>,
    /// It has an LLM server.
    llm: bool,
}

/// The workers to start: `--workers N` CPU workers; else one per `[[gpu]]` of
/// rig.toml; else one per GPU that NVML (or RIGMIND_FAKE_GPUS) finds; else 2 CPU
/// workers that also take script tasks.
fn worker_plan(layout: &Layout, config: &RigConfig, n: Option<usize>) -> Vec<WorkerPlan> {
    if n.is_none() && !config.gpus.is_empty() {
        return config
            .gpus
            .iter()
            .map(|g| WorkerPlan {
                id: g.worker.clone(),
                gpu: Some(g.index.to_string()),
                classes: None,
                llm: g.llm_server().is_some(),
            })
            .collect();
    }
    if n.is_none() {
        if let Ok(found) = rigmind_gpu::open().and_then(|t| t.all()) {
            if !found.is_empty() {
                eprintln!(
                    "rigmind: no GPU declared in {}; starting one worker per GPU found ({}), without LLM servers",
                    layout.rig_toml().display(),
                    found.len()
                );
                return found
                    .iter()
                    .map(|g| WorkerPlan {
                        id: format!("worker_{}", g.index),
                        gpu: Some(g.index.to_string()),
                        classes: None,
                        llm: false,
                    })
                    .collect();
            }
        }
    }
    let count = n.unwrap_or_else(|| {
        eprintln!(
            "rigmind: no GPU declared in {} and none found; starting 2 CPU workers (classes cpu,script)",
            layout.rig_toml().display()
        );
        2
    });
    // Ids not held by a live worker, so that a second `run` on the root can coexist.
    let mut out = Vec::new();
    let mut k = 1;
    while out.len() < count {
        let id = format!("cpu_{k}");
        if LifeLock::is_held(&layout.worker_lock(&id)) != Some(true) {
            out.push(WorkerPlan {
                id,
                gpu: None,
                classes: Some("cpu,script"),
                llm: false,
            });
        }
        k += 1;
    }
    out
}

fn spawn(exe: &Path, layout: &Layout, what: &str, args: &[&str]) -> Result<Started> {
    let log_path = layout.logs_dir().join(format!("{what}.log"));
    let log = rigmind_queue::fsio::open_regular(
        &log_path,
        OpenOptions::new().create(true).append(true),
        "log",
    )?;
    let child = Command::new(exe)
        .args(args)
        .arg("--root")
        .arg(layout.root())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    Ok(Started {
        what: what.to_string(),
        child,
    })
}

/// SIGTERM to every child, then up to 15 s for them to exit before SIGKILL.
fn stop_all(started: &mut [Started]) {
    for s in started.iter() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for s in started.iter_mut() {
        loop {
            match s.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("rigmind: {} did not stop in time; killing it", s.what);
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// One line of progress: `running` is the tasks whose commands run now (a task
/// claimed, or whose result is being filed, is in processing/ but not running), and
/// a task waiting out its retry back-off is `retrying`, not queued or failed.
fn print_summary(layout: &Layout, r: &BatchRecord, took: Duration) {
    let c = r.counts;
    let counts = format!(
        "{} of {} complete, {} failed, in {:.1}s",
        c.complete,
        c.total,
        c.failed,
        took.as_secs_f64()
    );
    println!("{}", ended_line(r, &format!("'{}'", r.name), &counts));
    if c.failed == 0 {
        return;
    }
    let dir = layout.dir(TaskDir::Failed);
    for name in fsio::list_names(&dir).unwrap_or_default() {
        if TaskName::parse(&name).is_none_or(|n| n.batch != r.batch_id) {
            continue;
        }
        if let Ok(t) = TaskFile::read(&dir.join(&name)) {
            println!(
                "  failed: {} ({}): {}{}",
                t.name,
                t.failure_kind.map_or("failed", |k| k.as_str()),
                t.error.as_deref().unwrap_or(""),
                t.log_path
                    .as_ref()
                    .map_or(String::new(), |p| format!(" — log: {}", p.display()))
            );
        }
    }
}
