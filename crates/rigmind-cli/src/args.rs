//! Command-line arguments of the three binaries.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The shared root: `--root`, else `RIGMIND_ROOT`, else `./shared`.
#[derive(Debug, Clone, Args)]
pub struct RootArg {
    /// The shared directory (default: $RIGMIND_ROOT, else ./shared).
    #[arg(long, env = "RIGMIND_ROOT", default_value = "shared")]
    pub root: PathBuf,
}

/// rigmind: a batch orchestrator for one multi-GPU box — run, submit, wait for,
/// inspect, retry and cancel plans, and run the brain and the workers.
#[derive(Debug, Parser)]
#[command(name = "rigmind", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a plan from start to end (brain, workers, submit, wait, stop).
    ///
    /// Starts a brain (unless one runs) and workers, submits, waits, stops them and
    /// prints a summary. Exit 0 iff every task completed.
    Run(RunArgs),
    /// Submit a plan to a running (or later started) brain; prints the batch id.
    Submit(SubmitArgs),
    /// Wait for a batch: exit 0 all complete, 1 any failed, 2 timed out or unknown.
    Wait(WaitArgs),
    /// Queue depths, workers and batches.
    Status(StatusArgs),
    /// Live full-screen view: cards, workers, queues, batches, decisions.
    ///
    /// Redrawn as the root's files change. Keys: Tab/arrows move, l log,
    /// r retry, c cancel batch, d drain / R resume worker, ? help, q quit. When
    /// stdout is not a terminal it prints `status --watch` instead.
    Top(TopArgs),
    /// Check plans without running them: exit 0 if valid (warnings allowed), 1 if not.
    Validate(ValidateArgs),
    /// Send failed tasks (one by id or name, or a whole batch's) back to the queue.
    Retry(RetryArgs),
    /// Cancel a batch: nothing more runs, running tasks are killed.
    ///
    /// Waiting tasks are not run, running ones are killed, all are recorded as
    /// cancelled.
    Cancel(CancelArgs),
    /// List the GPUs as the workers read them (NVML, or RIGMIND_FAKE_GPUS).
    ///
    /// Index, UUID, memory, utilisation, temperature, power.
    Gpus(GpusArgs),
    /// Simulate a plan on a rig in virtual time: makespan per policy.
    ///
    /// Runs through the live brain, resource manager and claim code: makespan per
    /// policy, GPU use, the lower bound. Exit 0 if some simulated policy finishes
    /// the plan, 1 if none does.
    Simulate(SimulateArgs),
    /// What really happened to a batch: time per worker, swaps, failures, per task.
    ///
    /// Read from its batch record and task files: per worker its task, swap and idle
    /// time, loads and unloads, failures and retries, per plan task the count, mean,
    /// 95th percentile and tokens/s, the slowest tasks. `--svg` draws the Gantt chart
    /// of the run as `simulate --svg` draws a prediction.
    Report(ReportArgs),
    /// A task's log, by its id, name or file name; -f follows it while it runs.
    Logs(LogsArgs),
    /// Drain a worker (or --all): it finishes what it runs and claims nothing new.
    ///
    /// Writes `workers/<id>.drain`; the worker says `draining` in its state file and
    /// its log, and the brain leaves its card alone. `rigmind resume` undoes it.
    Drain(DrainArgs),
    /// Resume a drained worker (or --all): it claims work again.
    Resume(DrainArgs),
    /// Create a root's directories; with --group, lock it down to one Unix group.
    ///
    /// With --group NAME: every directory and file under the root gets group NAME,
    /// directories become setgid with no access for others (drwxrws---), files lose
    /// their access for others, and every rigmind process working on the root keeps
    /// a umask of 007. Workers then refuse task files owned by someone outside the
    /// group (docs/safety.md).
    Init(InitArgs),
    /// Run a command outside the queue under the rig's rules: a group slot, RAM, safety.
    ///
    /// Takes a slot of --group (through the claim lock and the counts the workers
    /// use), checks the safety gates and --mem-mb, runs the command, frees the slot
    /// when it ends or the gate is killed. Waits for a slot by default; --no-wait
    /// exits 1 with the reasons; --check only says whether it could start now (exit
    /// 0, or 1 and the reasons, one per line). Exit: the command's status.
    Gate(GateArgs),
    /// Print a shell completion script: `rigmind completions bash > /etc/bash_completion.d/rigmind`.
    Completions(CompletionsArgs),
    /// Run the brain (same as the `brain` binary).
    Brain(BrainArgs),
    /// Run a worker (same as the `worker` binary).
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// The Unix group that alone may use the root (must exist: `groupadd NAME`).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The worker's id (`--id` of its `worker`).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub worker: Option<String>,
    /// Every worker that has run under the root.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub root: RootArg,
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// The concurrency group (rig.toml [groups]) whose slot the command takes.
    #[arg(long)]
    pub group: Option<String>,
    /// The RAM the command needs, in MB: available RAM less [safety]
    /// min_free_ram_mb less the other gates' reservations must cover it.
    #[arg(long, value_name = "N")]
    pub mem_mb: Option<u64>,
    /// Wait until it may start (the default).
    #[arg(long, conflicts_with = "no_wait")]
    pub wait: bool,
    /// Do not wait: exit 1 with the reasons when it may not start now.
    #[arg(long)]
    pub no_wait: bool,
    /// Only say whether it could start now: exit 0, or 1 and the reasons.
    #[arg(long, conflicts_with_all = ["wait", "no_wait"])]
    pub check: bool,
    #[command(flatten)]
    pub root: RootArg,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required_unless_present = "check", value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task's id, name (e.g. `transcribe[ep1]`) or file name.
    pub task: String,
    /// Follow the log while the task is queued or running (as `tail -f`).
    #[arg(short, long)]
    pub follow: bool,
    #[command(flatten)]
    pub root: RootArg,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The batch id.
    pub batch: String,
    /// Also write the run's Gantt chart (one row per worker) to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Also write one self-contained HTML page (the chart inline, the tables).
    #[arg(long)]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub root: RootArg,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The plan file (not with --root).
    #[arg(required_unless_present = "root", conflicts_with = "root")]
    pub plan: Option<PathBuf>,
    /// The rig: its [[gpu]] entries, [llm] load/unload times, [groups], policy.
    /// With --root, ROOT/rig.toml by default.
    #[arg(long, required_unless_present = "root")]
    pub rig: Option<PathBuf>,
    /// Simulate the rest of what is live under this root now (its batches'
    /// queued, running and waiting tasks, read as a restarting brain reads them,
    /// writing nothing), printing each batch's expected end.
    #[arg(long, value_name = "ROOT")]
    pub root: Option<PathBuf>,
    /// adaptive, phases, static (the best number of LLM cards), static-N,
    /// on-demand, or all. Default: the rig's own policy.
    #[arg(long)]
    pub policy: Option<String>,
    /// Run each task for a seeded time its estimate misjudges (×0.5 to ×2 per
    /// plan task, a heavy tail per task) instead of its estimate; the lower bound
    /// is computed from those times. The policies still see the estimates.
    #[arg(long, value_name = "SEED", conflicts_with = "root")]
    pub noise: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write a Gantt chart (one row per GPU, one chart per policy) to this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GpusArgs {
    /// Print JSON (one object per GPU) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan file.
    pub plan: PathBuf,
    #[command(flatten)]
    pub root: RootArg,
    /// How many CPU workers to start, 1 to 256 (default: one per GPU of rig.toml,
    /// else 2 CPU workers that also take script tasks).
    #[arg(long, value_parser = worker_count)]
    pub workers: Option<usize>,
    /// Passed to the brain it starts: serve /metrics and /health on HOST:PORT
    /// (ignored when a brain already runs on the root).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    pub plan: PathBuf,
    #[command(flatten)]
    pub root: RootArg,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The batch id that `submit` printed.
    pub batch: String,
    #[command(flatten)]
    pub root: RootArg,
    /// Give up after this many seconds (exit 2).
    #[arg(long)]
    pub timeout: Option<f64>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Print it again every SECS seconds (default 2) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// Seconds between redraws when no file changes (the cards' telemetry, the
    /// clocks); a change under the root redraws at once. Also the period of
    /// `status --watch` when stdout is not a terminal.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub every: f64,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Plan files.
    #[arg(required = true)]
    pub plans: Vec<PathBuf>,
    /// The root whose rig.toml gives the defaults (as `submit` would use).
    #[command(flatten)]
    pub root: RootArg,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// A failed task's id, name (e.g. `transcribe[ep1]`) or file name.
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub task: Option<String>,
    /// Every failed task of this batch instead.
    #[arg(long)]
    pub batch: Option<String>,
    #[command(flatten)]
    pub root: RootArg,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The batch id.
    pub batch: String,
    #[command(flatten)]
    pub root: RootArg,
    /// Seconds to wait for the brain to finish cancelling (then exit 2).
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

/// brain: reads submitted plans, releases their ready tasks into the queue, retries
/// and settles them, and manages the GPUs' LLM models. One per root.
#[derive(Debug, Clone, Parser)]
#[command(name = "brain", version)]
pub struct BrainArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// Seconds between full rescans of the directories (events can be lost).
    #[arg(long, default_value_t = 2.0)]
    pub rescan: f64,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics and a JSON summary at
    /// /health (metrics/rigmind.prom is written either way).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// worker: claims tasks from the queue and runs them, one at a time; one per GPU
/// (or a few for CPU work). SIGTERM or SIGINT stops it: a task still running after
/// --grace is stopped and put back into the queue without spending a retry.
#[derive(Debug, Clone, Parser)]
#[command(name = "worker", version)]
pub struct WorkerArgs {
    /// This worker's id (its state is workers/<id>.json): 1 to 64 of A-Z a-z 0-9
    /// _ - . (not starting with '.').
    #[arg(long)]
    pub id: String,
    /// The GPU to pin to, by NVML index or UUID: its commands run with
    /// CUDA_VISIBLE_DEVICES set to the card's UUID and RIGMIND_GPU to its index.
    /// Needs NVML (or RIGMIND_FAKE_GPUS=COUNTxMB for tests); without it the worker
    /// is a CPU worker.
    #[arg(long)]
    pub gpu: Option<String>,
    /// Its LLM server (Ollama), e.g. http://127.0.0.1:11435; default: the `ollama`
    /// of this card's [[gpu]] entry in rig.toml.
    #[arg(long)]
    pub llm_url: Option<String>,
    /// Task classes to claim, preferred first (cpu, script, llm). Default: cpu on a
    /// CPU worker; script, llm, cpu on a GPU worker (llm only with an LLM server).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    #[command(flatten)]
    pub root: RootArg,
    /// Seconds a running task may go on after SIGTERM before it is stopped and
    /// put back into the queue.
    #[arg(long, default_value_t = 30.0)]
    pub grace: f64,
    /// Seconds between full rescans of the queue (events can be lost).
    #[arg(long, default_value_t = 2.0)]
    pub rescan: f64,
}

/// The most workers `rigmind run --workers` starts: more than one box can use,
/// and few enough that a typo (`--workers 1000000`) is refused before anything
/// starts instead of forking processes until the system says no.
pub const MAX_WORKERS: usize = 256;

/// `--workers N`: a whole number from 1 to [`MAX_WORKERS`].
fn worker_count(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of workers"))?;
    if n == 0 || n > MAX_WORKERS {
        return Err(format!(
            "{n} workers: run starts 1 to {MAX_WORKERS} workers on one box"
        ));
    }
    Ok(n)
}
