//! One function per command; each returns the process exit code.

mod completions;
mod dir_counts;
mod drain;
mod find;
mod gate;
mod init;
mod logs;
pub mod overview;
mod progress;
mod report;
mod retry;
mod run;
mod simulate;
mod simulate_root;
mod status;
mod submit;
pub mod top;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rigmind_brain::{run_brain, BrainOptions};
use rigmind_plan::Severity;
use rigmind_types::TaskClass;
use rigmind_worker::{run_worker, WorkerOptions};

use crate::args::{BrainArgs, Command, GpusArgs, ValidateArgs, WorkerArgs};

pub use submit::{submit_plan_file, wait_for_batch, WaitOutcome};

/// Runs one `rigmind` command.
pub fn dispatch(cmd: Command) -> Result<i32> {
    if let Some(root) = writer_root(&cmd) {
        rigmind_queue::access::keep_umask(root);
    }
    match cmd {
        Command::Run(a) => run::run(a),
        Command::Submit(a) => submit::submit(a),
        Command::Wait(a) => submit::wait(a),
        Command::Status(a) => status::status(a),
        Command::Top(a) => top::top(a),
        Command::Validate(a) => validate(a),
        Command::Retry(a) => retry::retry(a),
        Command::Cancel(a) => submit::cancel(a),
        Command::Gpus(a) => gpus(a),
        Command::Gate(a) => gate::gate(a),
        Command::Simulate(a) => simulate::simulate(a),
        Command::Report(a) => report::report(a),
        Command::Logs(a) => logs::logs(a),
        Command::Drain(a) => drain::drain(a, false),
        Command::Resume(a) => drain::drain(a, true),
        Command::Init(a) => init::init(a),
        Command::Completions(a) => completions::completions(a),
        Command::Brain(a) => brain(a),
        Command::Worker(a) => worker(a),
    }
}

/// The root of a command that writes into it (its files must keep a locked-down
/// root's umask); the brain and the worker see to it themselves.
fn writer_root(cmd: &Command) -> Option<&std::path::Path> {
    match cmd {
        Command::Run(a) => Some(&a.root.root),
        Command::Submit(a) => Some(&a.root.root),
        Command::Retry(a) => Some(&a.root.root),
        Command::Cancel(a) => Some(&a.root.root),
        Command::Drain(a) | Command::Resume(a) => Some(&a.root.root),
        Command::Gate(a) => Some(&a.root.root),
        _ => None,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `rigmind gpus [--json]`
pub fn gpus(a: GpusArgs) -> Result<i32> {
    let telemetry = rigmind_gpu::open()?;
    let all = telemetry.all()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    println!(
        "{:<5} {:<44} {:<28} {:>9} {:>9} {:>9} {:>5} {:>5} {:>8}",
        "index", "uuid", "name", "total MB", "used MB", "free MB", "util", "temp", "power W"
    );
    for g in &all {
        println!(
            "{:<5} {:<44} {:<28} {:>9} {:>9} {:>9} {:>5} {:>5} {:>8}",
            g.index,
            g.uuid,
            g.name,
            g.memory_total_mb,
            g.memory_used_mb,
            g.memory_free_mb,
            g.utilization_percent
                .map_or("-".into(), |u| format!("{u}%")),
            g.temperature_c.map_or("-".into(), |t| format!("{t}C")),
            g.power_watts.map_or("-".into(), |p| format!("{p:.1}")),
        );
    }
    println!("({} telemetry)", telemetry.kind());
    match rigmind_gpu::read_cpu_temp() {
        Some(t) => println!("CPU: {} C ({})", t.celsius, t.sensor),
        None => println!("CPU: no temperature sensor"),
    }
    Ok(0)
}

/// `brain --root DIR`
pub fn brain(a: BrainArgs) -> Result<i32> {
    rigmind_queue::access::keep_umask(&a.root.root);
    let mut opts = BrainOptions::new(&a.root.root);
    opts.rescan_every = secs(a.rescan, "--rescan")?;
    opts.metrics_addr = a.metrics_addr;
    runtime()?.block_on(run_brain(opts, crate::signals::stop_requested()))?;
    Ok(0)
}

/// `worker --id ID [--gpu N] [--classes cpu,script] --root DIR`
pub fn worker(a: WorkerArgs) -> Result<i32> {
    rigmind_worker::check_worker_id(&a.id)?;
    rigmind_queue::access::keep_umask(&a.root.root);
    let mut opts = WorkerOptions::new(&a.id, &a.root.root);
    opts.gpu = a
        .gpu
        .as_deref()
        .map(str::parse::<rigmind_gpu::GpuSelector>)
        .transpose()
        .with_context(|| format!("worker '{}': --gpu", a.id))?;
    opts.llm_url = a.llm_url.clone();
    opts.classes = a
        .classes
        .iter()
        .map(|c| match c.parse::<TaskClass>() {
            Ok(TaskClass::Resource) => bail!(
                "worker '{}': class 'resource' is the brain's; workers take resource tasks addressed to them anyway",
                a.id
            ),
            Ok(class) => Ok(class),
            Err(e) => bail!("worker '{}': {e}", a.id),
        })
        .collect::<Result<_>>()?;
    opts.grace = secs(a.grace, "--grace")?;
    opts.rescan_every = secs(a.rescan, "--rescan")?;
    let summary = runtime()?.block_on(run_worker(opts, crate::signals::stop_requested()))?;
    tracing::info!(
        worker = %a.id,
        completed = summary.completed,
        failed = summary.failed,
        returned = summary.returned,
        "worker stopped"
    );
    Ok(0)
}

fn secs(v: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("{flag} {v}: not a number of seconds"))
}

/// `rigmind validate PLAN...`
pub fn validate(a: ValidateArgs) -> Result<i32> {
    let config =
        rigmind_config::RigConfig::load(&rigmind_queue::Layout::new(&a.root.root).rig_toml())?;
    let mut ok = true;
    for path in &a.plans {
        match rigmind_brain::submit::load_plan(path, &config) {
            Ok(plan) => {
                for w in &plan.warnings {
                    eprintln!("{w}");
                }
                println!(
                    "{}: valid plan '{}', {} tasks{}",
                    path.display(),
                    plan.name,
                    plan.jobs.len(),
                    match plan.warnings.len() {
                        0 => String::new(),
                        n => format!(", {n} warning(s)"),
                    }
                );
                // Freeing a million jobs one allocation at a time costs about a
                // third of the check; the memory goes back when the command ends.
                std::mem::forget(plan);
            }
            Err(e) => {
                ok = false;
                for d in &e.diagnostics {
                    eprintln!("{d}");
                }
                let errors = e
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count();
                println!("{}: invalid, {errors} error(s)", path.display());
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}
