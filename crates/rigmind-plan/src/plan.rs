//! The parsed plan ([`Plan`], its [`PlanTask`]s with their [`LlmFields`] and
//! [`ForEach`]), before `for_each` expansion: what [`crate::parse`] builds and the
//! dependency checks ([`crate::dag`]) and the expansion ([`crate::expand`]) read.
//! Its own module so that those depend on it, not on each other.

use std::path::PathBuf;

use rigmind_types::{Executor, TaskClass};

use crate::diag::Diagnostic;

/// What a `for_each` field iterates over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForEach {
    /// A glob relative to the plan's directory, expanded and sorted at submission.
    Glob(String),
    /// An inline list `[a, b, c]` (or a nested bullet list).
    List(Vec<String>),
}

/// One `## Task:` section with `## Defaults` already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanTask {
    pub name: String,
    /// Line of the task's heading.
    pub line: usize,
    pub task_class: Option<TaskClass>,
    pub command: Option<String>,
    /// Line of the `command` item (the heading's when there is none).
    pub command_line: usize,
    /// Names of plan tasks, as written.
    pub depends_on: Vec<String>,
    /// Line of the `depends_on` item, for dependency errors.
    pub depends_on_line: usize,
    pub priority: u8,
    /// `None`: not set by the task nor Defaults; the rig's default applies.
    pub timeout_secs: Option<f64>,
    /// `None`: not set by the task nor Defaults; the rig's default applies.
    pub retries: Option<u32>,
    pub executor: Executor,
    pub group: Option<String>,
    pub vram_mb: Option<u64>,
    /// Host RAM the task reserves while it runs (MB).
    pub mem_mb: Option<u64>,
    /// Its memory cap (MB); absent: `mem_mb` × rig.toml's `mem_limit_factor`.
    pub mem_limit_mb: Option<u64>,
    pub for_each: Option<ForEach>,
    pub for_each_line: usize,
    pub env: Vec<(String, String)>,
    pub llm: LlmFields,
    pub estimate_secs: Option<f64>,
    /// Prose and deeper headings inside the task: kept, never run.
    pub notes: String,
}

/// What an llm task sends to the server and where the answer goes, as the plan
/// writes it. A plan task and each of its jobs carry one (a fanned-out job's with
/// its item's values filled in).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmFields {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub prompt_file: Option<String>,
    pub system: Option<String>,
    pub output: Option<String>,
    /// `write_outside: true`: `output` may lie outside the plan's directory.
    pub write_outside: bool,
    pub sensitive: bool,
    /// `expect: json`: the answer must parse as JSON (a fenced json block counts).
    pub expect_json: bool,
    /// `endpoint: NAME`: runs on that `[[endpoint]]` of rig.toml, never on a card.
    pub endpoint: Option<String>,
    /// `requires_external: true`: starts on the last escalation tier.
    pub requires_external: bool,
}

/// A parsed plan, before `for_each` expansion.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The plan file as given.
    pub path: PathBuf,
    /// The plan's directory: commands run there and globs expand there.
    pub dir: PathBuf,
    pub name: String,
    pub description: String,
    pub tasks: Vec<PlanTask>,
    pub warnings: Vec<Diagnostic>,
}
