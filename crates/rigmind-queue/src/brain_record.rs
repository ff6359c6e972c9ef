//! `brain/brain.json`: the running brain's heartbeat record (who it is, since when,
//! how many batches it holds). The brain rewrites it on each heartbeat and removes it
//! when it stops; `rigmind status` and a second brain refused start read its `pid`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::QueueError;
use crate::fsio;
use crate::layout::Layout;

/// The record in `brain/brain.json`.
///
/// The fields are declared in alphabetical order because the file was first written
/// from an untyped JSON map, which sorts its keys: the bytes on disk stay as they
/// were. Every field but `pid` has a default, so a record missing one still gives
/// its pid, as the untyped reading did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrainRecord {
    /// How many batches the brain holds.
    #[serde(default)]
    pub batches: usize,
    /// When it last wrote this record (`None`, written `""`, if a record lacks it).
    #[serde(default, with = "crate::time::rfc3339_or_empty")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The brain's process id.
    pub pid: u64,
    /// How many of its batches are not done.
    #[serde(default)]
    pub running_batches: usize,
    /// When the brain started (`None`, written `""`, if a record lacks it).
    #[serde(default, with = "crate::time::rfc3339_or_empty")]
    pub started_at: Option<DateTime<Utc>>,
}

impl BrainRecord {
    /// Writes the record over `brain/brain.json` (atomically; not flushed: it is
    /// rewritten at every heartbeat).
    pub fn write(&self, layout: &Layout) -> Result<(), QueueError> {
        fsio::write_atomic(&layout.brain_state(), &self.to_bytes(), fsio::Sync::None)
    }

    /// The record's bytes as written to disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::json::to_bytes(self)
    }

    /// Reads `brain/brain.json`.
    pub fn read(layout: &Layout) -> Result<Self, QueueError> {
        let path = layout.brain_state();
        let bytes = fsio::read(&path)?;
        crate::json::from_slice(&path, "brain record", &bytes)
    }

    /// The pid in `brain/brain.json`, if the file can be read and names one.
    pub fn read_pid(layout: &Layout) -> Option<u64> {
        Self::read(layout).ok().map(|r| r.pid)
    }

    /// Removes `brain/brain.json` (the brain stopping); one already gone is fine.
    pub fn remove(layout: &Layout) -> Result<(), QueueError> {
        fsio::remove_if_exists(&layout.brain_state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_keys_in_the_old_order() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.brain_dir()).unwrap();
        let r = BrainRecord {
            batches: 3,
            heartbeat_at: crate::time::parse_rfc3339("2024-01-01T00:00:01.250Z"),
            pid: 42,
            running_batches: 1,
            started_at: crate::time::parse_rfc3339("2024-01-01T00:00:00.000Z"),
        };
        r.write(&layout).unwrap();
        let text = std::fs::read_to_string(layout.brain_state()).unwrap();
        // What `serde_json::json!` wrote before the record had a type (times in
        // the brain's form, milliseconds and `Z`).
        let untyped = serde_json::json!({
            "pid": 42,
            "started_at": "2024-01-01T00:00:00.000Z",
            "heartbeat_at": "2024-01-01T00:00:01.250Z",
            "batches": 3,
            "running_batches": 1,
        });
        let mut old = serde_json::to_string_pretty(&untyped).unwrap();
        old.push('\n');
        assert_eq!(text, old);
        assert_eq!(BrainRecord::read(&layout).unwrap(), r);
        assert_eq!(BrainRecord::read_pid(&layout), Some(42));
        BrainRecord::remove(&layout).unwrap();
        assert_eq!(BrainRecord::read_pid(&layout), None);
    }

    #[test]
    fn a_record_with_only_a_pid_gives_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.brain_dir()).unwrap();
        std::fs::write(layout.brain_state(), br#"{"pid": 7, "extra": true}"#).unwrap();
        assert_eq!(BrainRecord::read_pid(&layout), Some(7));
        std::fs::write(layout.brain_state(), br#"{"started_at": "x"}"#).unwrap();
        assert_eq!(BrainRecord::read_pid(&layout), None);
    }
}
