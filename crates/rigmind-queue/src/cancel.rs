//! Cancellation markers: `tasks/cancel/<batch>`.
//!
//! `rigmind cancel` writes a marker (atomically, flushed with its directory entry);
//! writing it *is* the acceptance of the cancellation. From then on no claim takes a
//! task of that batch ([`crate::claim`] checks under the claim lock) and no runner
//! starts one it claimed just before (it checks again, see `rigmind-exec`). The brain
//! reads the markers first in each turn of its loop and does the rest: it files what
//! waits as cancelled and kills what runs. A marker is a tiny JSON file saying who
//! asked and when; an empty one (`touch tasks/cancel/<batch>`) works too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::QueueError;
use crate::fsio::{self, Sync};
use crate::layout::Layout;

/// What a marker says (all optional: a hand-made empty marker is valid).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CancelMarker {
    #[serde(default)]
    pub batch: String,
    /// Who asked (the user name of the `rigmind cancel` process).
    #[serde(default)]
    pub requested_by: Option<String>,
    #[serde(default, with = "crate::time::rfc3339_opt")]
    pub requested_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Whether `batch` can name a marker file: not empty, no path separators, not a
/// dot-name (which every reader skips).
pub fn valid_batch_name(batch: &str) -> bool {
    !batch.is_empty()
        && !batch.starts_with('.')
        && !batch.contains(['/', '\\', '\0'])
        && batch.len() <= 200
}

/// Writes the marker of `batch`: the cancellation is accepted once this returns.
/// Flushed with its directory entry, since a power cut must not undo an acceptance.
pub fn write_marker(
    layout: &Layout,
    batch: &str,
    requested_by: &str,
) -> Result<PathBuf, QueueError> {
    let path = layout.cancel_marker(batch);
    if !valid_batch_name(batch) {
        return Err(QueueError::Invalid {
            path,
            what: "cancellation marker",
            reason: format!("'{batch}' is not a batch id"),
        });
    }
    let marker = CancelMarker {
        batch: batch.to_string(),
        requested_by: Some(requested_by.to_string()),
        requested_at: Some(crate::time::now()),
    };
    fsio::write_atomic(&path, &crate::json::to_bytes(&marker), Sync::Dir)?;
    Ok(path)
}

/// Reads a marker; an empty or unreadable one says only its batch (its file name).
pub fn read_marker(layout: &Layout, batch: &str) -> CancelMarker {
    let mut m = std::fs::read(layout.cancel_marker(batch))
        .ok()
        .and_then(|b| serde_json::from_slice::<CancelMarker>(&b).ok())
        .unwrap_or_default();
    m.batch = batch.to_string();
    m
}

/// Moves the marker of `batch` aside into `tasks/rejected/` (as `cancel.<batch>`,
/// or with a millisecond suffix when that name is taken), for a marker that can
/// no longer apply; returns where it went.
pub fn set_aside_marker(layout: &Layout, batch: &str) -> Result<PathBuf, QueueError> {
    let from = layout.cancel_marker(batch);
    let mut to = layout.rejected_dir().join(format!("cancel.{batch}"));
    if to.exists() {
        to = layout.rejected_dir().join(format!(
            "cancel.{batch}.{}",
            chrono::Utc::now().timestamp_millis()
        ));
    }
    std::fs::rename(&from, &to).map_err(|source| QueueError::Io {
        op: "move a cancel marker aside",
        path: from,
        source,
    })?;
    Ok(to)
}

/// Whether a marker for `batch` exists now (one `stat`).
pub fn is_cancelled(layout: &Layout, batch: &str) -> bool {
    valid_batch_name(batch) && layout.cancel_marker(batch).exists()
}

/// A file-system timestamp this close to the moment the directory was listed may
/// be shared with a change made just after the listing (timestamps come from a
/// clock that ticks every few milliseconds), so such a listing is not trusted.
const RACY: Duration = Duration::from_millis(100);

/// A cached view of `tasks/cancel/`: one `stat` of the directory per look, a new
/// listing only when its modification time changed (or is too recent to trust).
#[derive(Debug)]
pub struct CancelMarkers {
    dir: PathBuf,
    /// The directory's mtime when it was last listed, if that listing is trusted.
    listed_mtime: Option<SystemTime>,
    batches: BTreeSet<String>,
}

impl CancelMarkers {
    pub fn new(layout: &Layout) -> Self {
        Self {
            dir: layout.cancel_dir(),
            listed_mtime: None,
            batches: BTreeSet::new(),
        }
    }

    /// Brings the view up to date; true when it was re-listed. An error (the
    /// directory cannot be read) keeps nothing cached, so the next look lists again.
    pub fn refresh(&mut self) -> Result<bool, QueueError> {
        let mtime = match std::fs::metadata(&self.dir) {
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.listed_mtime = None;
                return Err(QueueError::io("stat", &self.dir, e));
            }
        };
        if mtime.is_some() && mtime == self.listed_mtime {
            return Ok(false);
        }
        let listed_at = SystemTime::now();
        let names = fsio::list_names(&self.dir).inspect_err(|_| self.listed_mtime = None)?;
        self.batches = names.into_iter().collect();
        self.listed_mtime =
            mtime.filter(|m| listed_at.duration_since(*m).is_ok_and(|age| age >= RACY));
        Ok(true)
    }

    /// Whether `batch` has a marker, as of the last [`CancelMarkers::refresh`].
    pub fn contains(&self, batch: &str) -> bool {
        self.batches.contains(batch)
    }

    /// Every batch with a marker, as of the last refresh.
    pub fn batches(&self) -> &BTreeSet<String> {
        &self.batches
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_seen_at_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        let mut view = CancelMarkers::new(&layout);
        view.refresh().unwrap();
        assert!(view.is_empty());
        write_marker(&layout, "abc123", "alice").unwrap();
        // However soon after the last look: the listing was too recent to trust.
        view.refresh().unwrap();
        assert!(view.contains("abc123"));
        assert!(is_cancelled(&layout, "abc123"));
        assert_eq!(
            read_marker(&layout, "abc123").requested_by.as_deref(),
            Some("alice")
        );
        std::fs::write(layout.cancel_marker("def456"), b"").unwrap();
        view.refresh().unwrap();
        assert!(view.contains("def456"));
        assert_eq!(read_marker(&layout, "def456").batch, "def456");
        assert!(write_marker(&layout, "../x", "bob").is_err());
    }
}
