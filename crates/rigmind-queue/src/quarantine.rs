//! Moving aside what is not a valid task: `tasks/rejected/`.
//!
//! Anything found in a task directory that cannot be read as a task (not JSON,
//! empty, truncated, binary, wrong fields, a directory, a name that is not UTF-8) is
//! renamed into `tasks/rejected/` under its own name (with `.1`, `.2`, ... if that is
//! taken), so that no process stalls on it and nothing is lost: the bytes are all
//! still there for a person to look at.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::QueueError;
use crate::layout::Layout;
use crate::task::TaskFile;

/// A file younger than this may still be being written by hand (`cat > queue/x`),
/// so it is given time before it is judged.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Why a directory entry is not a valid task, or `None` when it is one (or is too
/// fresh to judge, or is gone).
pub fn judge(path: &Path, now: SystemTime) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if let Ok(m) = meta.modified() {
        if now.duration_since(m).unwrap_or_default() < SETTLE {
            return None;
        }
    }
    if meta.is_dir() {
        return Some("a directory, not a task file".into());
    }
    // Judged from the entry alone: opening a FIFO could block, and a rename
    // moves it aside without opening it.
    if !meta.is_file() {
        return Some(format!(
            "not a regular file ({})",
            crate::fsio::kind_of(meta.file_type())
        ));
    }
    if path.file_name().and_then(OsStr::to_str).is_none() {
        return Some("the file name is not UTF-8".into());
    }
    if meta.len() > crate::fsio::MAX_READ_BYTES {
        return Some(crate::fsio::too_big(meta.len()));
    }
    let bytes = match crate::fsio::read_regular(path, "task file") {
        Ok(b) => b,
        Err(QueueError::Invalid { reason, .. }) => return Some(reason),
        Err(e) if e.is_not_found() => return None,
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    match TaskFile::from_bytes(path, &bytes) {
        Ok(_) => None,
        Err(QueueError::Invalid { reason, .. }) => Some(reason),
        Err(e) => Some(e.to_string()),
    }
}

/// Moves `path` into `tasks/rejected/`; returns where it went.
pub fn quarantine(layout: &Layout, path: &Path) -> Result<PathBuf, QueueError> {
    let dir = layout.rejected_dir();
    std::fs::create_dir_all(&dir).map_err(|e| QueueError::Io {
        op: "create directory",
        path: dir.clone(),
        source: e,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unnamed".into());
    let mut to = dir.join(&name);
    let mut k = 1;
    while to.exists() {
        to = dir.join(format!("{name}.{k}"));
        k += 1;
    }
    std::fs::rename(path, &to).map_err(|e| QueueError::Io {
        op: "move aside",
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(to)
}

/// The entries of a directory whose names are not visible UTF-8 task names: the
/// ones `fsio::list_names` cannot return (names that are not UTF-8).
pub fn odd_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_str().is_none())
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_and_moves_aside_without_losing_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        layout.ensure().unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        let q = layout.dir(crate::TaskDir::Queue);
        std::fs::write(q.join("junk.json"), b"{ not json").unwrap();
        std::fs::write(q.join("empty.json"), b"").unwrap();
        std::fs::create_dir(q.join("adir")).unwrap();
        let mut good = TaskFile::new("b", "n", rigmind_types::TaskClass::Cpu);
        good.status = crate::TaskStatus::Queued;
        let good_path = good.write_to(&q, crate::fsio::Sync::None).unwrap();

        assert!(judge(&q.join("junk.json"), later)
            .unwrap()
            .contains("key must be a string"));
        assert_eq!(
            judge(&q.join("empty.json"), later).unwrap(),
            "the file is empty"
        );
        assert!(judge(&q.join("adir"), later).unwrap().contains("directory"));
        assert_eq!(judge(&good_path, later), None);
        // Too fresh to judge: it may still be being written.
        assert_eq!(judge(&q.join("junk.json"), SystemTime::now()), None);

        let to = quarantine(&layout, &q.join("junk.json")).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"{ not json");
        std::fs::write(q.join("junk.json"), b"again").unwrap();
        let to2 = quarantine(&layout, &q.join("junk.json")).unwrap();
        assert!(to2.ends_with("junk.json.1"), "{to2:?}");
    }
}
