//! Gate holders: `gates/<id>.json`, one per live `rigmind gate` that holds a slot of a
//! concurrency group (or a memory reservation) for a command run outside the queue.
//!
//! Liveness, not trust: the gate keeps its own file locked (`flock`) for its whole
//! life, from before the file appears under its name (it is written and locked under
//! a dot-name, then renamed in). A file whose lock can be taken has no live holder —
//! however the gate ended, `kill -9` included — and is removed by whoever finds it
//! ([`live`]). Gates take their slot under the claim lock, as workers claim.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::QueueError;
use crate::time::rfc3339;
use crate::{fsio, Layout, LifeLock};

/// What a gate file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// `<pid>-<8 hex>`, the file's name without `.json`.
    pub gate_id: String,
    /// The `rigmind gate` process (its command runs as its child).
    pub pid: u32,
    /// The concurrency group whose slot it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The RAM it reserved (`--mem-mb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_mb: Option<u64>,
    /// The command it runs, as argv.
    pub command: Vec<String>,
    #[serde(with = "rfc3339")]
    pub started_at: DateTime<Utc>,
}

impl GateRecord {
    /// A record for this process, running `command`.
    pub fn new(group: Option<String>, mem_mb: Option<u64>, command: Vec<String>) -> Self {
        let pid = std::process::id();
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Self {
            gate_id: format!("{pid}-{}", &tag[..8]),
            pid,
            group,
            mem_mb,
            command,
            started_at: crate::time::now(),
        }
    }
}

/// A gate file held by this process: the slot is taken while this value lives;
/// dropping it removes the file (a crash leaves it unlocked: dead).
#[derive(Debug)]
pub struct GateHold {
    _lock: fd_lock::RwLock<File>,
    path: PathBuf,
}

impl GateHold {
    /// Writes `record` as `gates/<id>.json`, locked before it appears. Call it under
    /// the claim lock, after counting.
    pub fn take(layout: &Layout, record: &GateRecord) -> Result<Self, QueueError> {
        let dir = layout.gates_dir();
        std::fs::create_dir_all(&dir).map_err(|e| QueueError::io("create directory", &dir, e))?;
        let path = dir.join(format!("{}.json", record.gate_id));
        let tmp = dir.join(format!(".{}.json.tmp", record.gate_id));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| QueueError::io("create", &tmp, e))?;
        file.write_all(&crate::json::to_bytes(record))
            .map_err(|e| QueueError::io("write", &tmp, e))?;
        let mut lock = fd_lock::RwLock::new(file);
        match lock.try_write() {
            // As in LifeLock: the kernel keeps the lock until the descriptor closes.
            Ok(guard) => std::mem::forget(guard),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(QueueError::io("lock", &tmp, e));
            }
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(QueueError::io("rename", &tmp, e));
        }
        Ok(Self { _lock: lock, path })
    }

    /// The gate file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for GateHold {
    fn drop(&mut self) {
        let _ = fsio::remove_if_exists(&self.path);
    }
}

/// The live gates under the root; files of dead gates are removed on the way. An
/// unreadable file of a live gate is skipped with a warning.
pub fn live(layout: &Layout) -> Result<Vec<GateRecord>, QueueError> {
    let dir = layout.gates_dir();
    let mut out = Vec::new();
    for name in fsio::list_names(&dir)? {
        let path = dir.join(&name);
        if !name.ends_with(".json") {
            continue;
        }
        match LifeLock::is_held(&path) {
            Some(true) => match read(&path) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("{e}"),
            },
            Some(false) => {
                tracing::info!("gate {}: its process is gone; slot freed", path.display());
                fsio::remove_if_exists(&path)?;
            }
            None => {}
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<GateRecord, QueueError> {
    let bytes = fsio::read_regular(path, "gate file")?;
    crate::json::from_slice(path, "gate file", &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_gate_is_live_and_a_dropped_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let r = GateRecord::new(
            Some("wl".into()),
            Some(100),
            vec!["sleep".into(), "1".into()],
        );
        let hold = GateHold::take(&layout, &r).unwrap();
        assert_eq!(live(&layout).unwrap(), std::slice::from_ref(&r));
        assert!(hold.path().ends_with(format!("gates/{}.json", r.gate_id)));
        drop(hold);
        assert!(live(&layout).unwrap().is_empty());
    }

    #[test]
    fn an_unlocked_file_is_a_dead_gate_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.gates_dir()).unwrap();
        let r = GateRecord::new(Some("wl".into()), None, vec!["x".into()]);
        let path = layout.gates_dir().join(format!("{}.json", r.gate_id));
        std::fs::write(&path, crate::json::to_bytes(&r)).unwrap();
        assert!(live(&layout).unwrap().is_empty());
        assert!(!path.exists());
    }
}
