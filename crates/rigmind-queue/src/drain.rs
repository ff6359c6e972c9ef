//! Draining a worker: `workers/<id>.drain`, a marker file `rigmind drain` writes and
//! `rigmind resume` removes. A worker that finds its marker finishes what it runs and
//! claims nothing new (resource tasks included), says so in its state file
//! (`draining`) and its log; the brain leaves its card out of the resource manager's
//! view meanwhile. The marker is the state: `ls workers/` shows who is drained, and
//! `rm workers/gpu0.drain` resumes as well as `rigmind resume gpu0`.

use std::path::PathBuf;

use crate::error::QueueError;
use crate::{fsio, Layout};

impl Layout {
    /// The marker that drains worker `worker`.
    pub fn drain_marker(&self, worker: &str) -> PathBuf {
        self.workers_dir().join(format!("{worker}.drain"))
    }
}

/// Drains `worker`: writes its marker (when and by whom, for a person reading it).
/// True if it was not drained before.
pub fn request(layout: &Layout, worker: &str, by: &str) -> Result<bool, QueueError> {
    let path = layout.drain_marker(worker);
    let fresh = !path.exists();
    let note = format!("drained at {} by {by}\n", crate::time::now_rfc3339());
    fsio::write_atomic(&path, note.as_bytes(), fsio::Sync::Data)?;
    Ok(fresh)
}

/// Resumes `worker`: removes its marker. True if it was drained.
pub fn lift(layout: &Layout, worker: &str) -> Result<bool, QueueError> {
    let path = layout.drain_marker(worker);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(QueueError::io("remove", &path, e)),
    }
}

/// Whether `worker` is drained (its marker exists).
pub fn is_drained(layout: &Layout, worker: &str) -> bool {
    layout.drain_marker(worker).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_drains_and_its_removal_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        assert!(!is_drained(&layout, "gpu0"));
        assert!(request(&layout, "gpu0", "test").unwrap());
        assert!(
            !request(&layout, "gpu0", "test").unwrap(),
            "already drained"
        );
        assert!(is_drained(&layout, "gpu0") && !is_drained(&layout, "gpu1"));
        let note = std::fs::read_to_string(layout.drain_marker("gpu0")).unwrap();
        assert!(
            note.starts_with("drained at ") && note.ends_with(" by test\n"),
            "{note}"
        );
        assert!(lift(&layout, "gpu0").unwrap());
        assert!(!lift(&layout, "gpu0").unwrap(), "not drained any more");
        assert!(!is_drained(&layout, "gpu0"));
    }
}
