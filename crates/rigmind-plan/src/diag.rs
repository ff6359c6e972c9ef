//! Diagnostics: every message names the file and line, `path:line: message`
//! (`path: message` for findings about the whole file).

use std::fmt;
use std::path::PathBuf;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The plan is rejected whole.
    Error,
    /// Reported, the plan still runs (e.g. an inferred task_class).
    Warning,
}

/// One finding about a plan, at a line (1-based; 0 for the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `path:line: message`; a finding about the whole file (line 0: it could not
    /// be read, its path is not UTF-8) is `path: message`, with no made-up line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        match self.severity {
            Severity::Error => write!(f, ": {}", self.message),
            Severity::Warning => write!(f, ": warning: {}", self.message),
        }
    }
}

/// A rejected plan: at least one error, plus any warnings found on the way.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PlanError {
    /// Errors first, in line order, then warnings.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one plan file.
pub(crate) struct Diags {
    path: PathBuf,
    pub(crate) list: Vec<Diagnostic>,
}

impl Diags {
    pub(crate) fn new(path: &std::path::Path) -> Self {
        Self {
            path: path.to_path_buf(),
            list: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, line: usize, message: impl Into<String>) {
        self.push(line, Severity::Error, message.into());
    }

    pub(crate) fn warning(&mut self, line: usize, message: impl Into<String>) {
        self.push(line, Severity::Warning, message.into());
    }

    fn push(&mut self, line: usize, severity: Severity, message: String) {
        self.list.push(Diagnostic {
            path: self.path.clone(),
            line,
            severity,
            message,
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Severity::Error)
    }

    /// Errors first in line order, then warnings in line order (stable within a line).
    pub(crate) fn sorted(mut self) -> Vec<Diagnostic> {
        self.list
            .sort_by_key(|d| (d.severity == Severity::Warning, d.line));
        self.list
    }

    /// `Err` with every diagnostic when there is an error, else the warnings.
    pub(crate) fn finish(self) -> Result<Vec<Diagnostic>, PlanError> {
        let failed = self.has_errors();
        let diagnostics = self.sorted();
        if failed {
            Err(PlanError { diagnostics })
        } else {
            Ok(diagnostics)
        }
    }
}
