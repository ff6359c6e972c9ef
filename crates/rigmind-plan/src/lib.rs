//! plan.md → a validated, expanded list of jobs with their dependencies.
//!
//! This crate owns everything about the format users write (`plan-format.md`): reading
//! the Markdown with pulldown-cmark ([`parse`]), expanding `for_each` and resolving the
//! three dependency rules ([`expand`]), and the checks that reject a plan whole
//! (cycles, unknown names, bad values). It does no queue or file-system work beyond
//! reading the plan and expanding its globs.

mod dag;
mod diag;
mod expand;
mod md;
mod parse;
mod plan;
mod shellsub;
mod suggest;

pub use diag::{Diagnostic, PlanError, Severity};
pub use expand::{expand, ExpandDefaults, ExpandedPlan, Job};
pub use parse::{parse_file, parse_str};
pub use plan::{ForEach, LlmFields, Plan, PlanTask};

use std::path::Path;

/// Reads, parses and expands a plan file with the built-in defaults.
pub fn load(path: &Path) -> Result<ExpandedPlan, PlanError> {
    let plan = parse_file(path)?;
    expand(&plan, &ExpandDefaults::default())
}
