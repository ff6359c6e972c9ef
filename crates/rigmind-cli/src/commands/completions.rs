//! `rigmind completions bash|zsh|fish|elvish|powershell`: the completion script for
//! every `rigmind` command and flag, from the same argument definitions the
//! binary parses (clap_complete), printed on stdout.

use anyhow::Result;
use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};

/// Prints the script for `a.shell`.
pub fn completions(a: CompletionsArgs) -> Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "rigmind", &mut std::io::stdout());
    Ok(0)
}
