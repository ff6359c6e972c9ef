//! The command-line faces of rigmind: `rigmind` (the operator's tool), `brain` and
//! `worker`. The binaries only call [`rigmind_main`], [`brain_main`] and
//! [`worker_main`]; everything they do is in [`commands`].

pub mod args;
pub mod commands;
mod signals;

use anyhow::Result;
use clap::Parser;

pub use args::{BrainArgs, Cli, Command, WorkerArgs};

/// `rigmind ...`
pub fn rigmind_main() -> Result<i32> {
    let cli = Cli::parse();
    init_tracing(matches!(
        cli.command,
        Command::Brain(_) | Command::Worker(_)
    ));
    if matches!(
        cli.command,
        Command::Status(_)
            | Command::Top(_)
            | Command::Gpus(_)
            | Command::Validate(_)
            | Command::Simulate(_)
            | Command::Completions(_)
    ) {
        // Commands that only print end quietly when their reader goes away
        // (`rigmind status | head`), as Unix tools do, instead of panicking on the
        // closed pipe. Not for commands that own processes or files they must tidy.
        // SAFETY: restoring a signal's default disposition; no handler, no memory.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    commands::dispatch(cli.command)
}

/// `brain ...`: the same as `rigmind brain ...`.
pub fn brain_main() -> Result<i32> {
    init_tracing(true);
    commands::brain(BrainArgs::parse())
}

/// `worker ...`: the same as `rigmind worker ...`.
pub fn worker_main() -> Result<i32> {
    init_tracing(true);
    commands::worker(WorkerArgs::parse())
}

/// Logs go to stderr; `RIGMIND_LOG` (e.g. `debug`) overrides the level.
fn init_tracing(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RIGMIND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
