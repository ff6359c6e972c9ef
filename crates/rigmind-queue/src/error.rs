//! Errors of the queue protocol; each names the path it is about.

use std::path::PathBuf;

/// A failure to read, write or move a file of the shared directory.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// An I/O error on a path (disk full, permissions, vanished file).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not a valid task or record.
    #[error("{path}: not a valid {what}: {reason}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
}

impl QueueError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error is a file that vanished (another process moved it first).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}
