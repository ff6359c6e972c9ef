//! The two brain logs: `brain_decisions.log` for people, `events.jsonl` for programs.
//!
//! A decision line is `TIME decision=KIND key=value ... reason="..."`: one line per
//! decision, greppable by any key. Values with spaces or quotes are quoted.
//!
//! Both logs stay open between lines ([`Logs`]); a burst of lines (a bulk release)
//! can be gathered and written together ([`Logs::hold`]).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::QueueError;
use crate::fsio;
use crate::layout::Layout;

/// One line of `brain_decisions.log`, built field by field.
#[derive(Debug, Clone)]
pub struct Decision {
    kind: &'static str,
    fields: Vec<(&'static str, String)>,
}

impl Decision {
    /// A decision of a kind (`release`, `complete`, `fail`, `cascade`, ...).
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            fields: Vec::new(),
        }
    }

    /// Adds `key=value`.
    pub fn kv(mut self, key: &'static str, value: impl ToString) -> Self {
        self.fields.push((key, value.to_string()));
        self
    }

    /// Adds `key=value` when there is a value.
    pub fn opt(self, key: &'static str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.kv(key, v),
            None => self,
        }
    }

    /// The line as written, without its timestamp.
    pub fn render(&self) -> String {
        let mut s = format!("decision={}", self.kind);
        for (k, v) in &self.fields {
            s.push(' ');
            s.push_str(k);
            s.push('=');
            quote_into(&mut s, v);
        }
        s
    }
}

/// Appends `v` to `out`, in double quotes (with `"`, `\\` and newlines escaped,
/// other control characters made spaces) unless it is one plain word.
fn quote_into(out: &mut String, v: &str) {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '=' && !c.is_control());
    if plain {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends decisions and events under a root.
///
/// Each log is opened once and kept open (a line used to cost an open, a write and
/// a close). Every line is still one `write` on an `O_APPEND` file, so lines from
/// several processes never interleave, and it reaches the file at once, unless a
/// [`Hold`] is alive: then lines are gathered and written together (at most
/// [`HOLD_BYTES`] per write) when the last hold ends. Clones share the open files.
#[derive(Debug, Clone)]
pub struct Logs {
    decisions: Arc<Mutex<LogFile>>,
    events: Arc<Mutex<LogFile>>,
    holds: Arc<AtomicUsize>,
}

/// Lines gathered under a hold are written once this many bytes are waiting.
pub const HOLD_BYTES: usize = 64 * 1024;

/// How often the path of an open log is looked at again: a log removed, renamed
/// away or replaced by hand gets a fresh file within this time.
const RECHECK: Duration = Duration::from_secs(1);

impl Logs {
    pub fn new(layout: &Layout) -> Self {
        Self {
            decisions: Arc::new(Mutex::new(LogFile::new(layout.decisions_log()))),
            events: Arc::new(Mutex::new(LogFile::new(layout.events_log()))),
            holds: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Writes one decision line, stamped with the time.
    pub fn decision(&self, d: &Decision) -> Result<(), QueueError> {
        let line = format!("{} {}", crate::time::now_rfc3339(), d.render());
        self.line(&self.decisions, &line)
    }

    /// Writes one event as a JSON line with `ts` and `event` added (its keys in
    /// alphabetical order, as a JSON map is written).
    pub fn event(
        &self,
        event: &str,
        mut fields: serde_json::Map<String, Value>,
    ) -> Result<(), QueueError> {
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), Value::String(crate::time::now_rfc3339()));
        obj.insert("event".into(), Value::String(event.to_string()));
        obj.append(&mut fields);
        self.line(&self.events, &Value::Object(obj).to_string())
    }

    /// Writes one event given as a record that carries its own `ts` and `event`
    /// fields, declared in alphabetical order like every other event line: the
    /// per-task events of a bulk release, without building a map for each.
    pub fn event_record<T: serde::Serialize>(&self, record: &T) -> Result<(), QueueError> {
        let line = serde_json::to_string(record).map_err(|e| QueueError::Invalid {
            path: lock(&self.events).path.clone(),
            what: "event",
            reason: format!("cannot be written as JSON: {e}"),
        })?;
        self.line(&self.events, &line)
    }

    /// Gathers the lines of a burst (a bulk release: one write per 64 KiB instead
    /// of two per task) until the returned guard is dropped, which writes them.
    /// A process killed meanwhile loses the gathered lines, as it would lose the
    /// line of a move it had made but not yet logged.
    pub fn hold(&self) -> Hold<'_> {
        self.holds.fetch_add(1, Ordering::SeqCst);
        Hold { logs: self }
    }

    /// Writes what a hold gathered.
    pub fn flush(&self) -> Result<(), QueueError> {
        let d = lock(&self.decisions).flush();
        let e = lock(&self.events).flush();
        d.and(e)
    }

    fn line(&self, log: &Mutex<LogFile>, line: &str) -> Result<(), QueueError> {
        let held = self.holds.load(Ordering::SeqCst) > 0;
        lock(log).line(line, held)
    }
}

/// Lines are gathered while this lives (see [`Logs::hold`]).
#[must_use = "lines are gathered only while the hold lives"]
#[derive(Debug)]
pub struct Hold<'a> {
    logs: &'a Logs,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if self.logs.holds.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Err(e) = self.logs.flush() {
                tracing::warn!("{e}");
            }
        }
    }
}

/// A poisoned lock only means a panic while a line was added: the log goes on.
fn lock(m: &Mutex<LogFile>) -> std::sync::MutexGuard<'_, LogFile> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One log: its path, the file open on it (opened at the first line, so a
/// process that logs nothing creates nothing) and the lines not written yet.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    open: Option<OpenLog>,
    pending: String,
}

#[derive(Debug)]
struct OpenLog {
    file: File,
    /// (device, inode) of the file opened, to tell whether the path still names it.
    id: (u64, u64),
    checked: Instant,
}

impl LogFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            open: None,
            pending: String::new(),
        }
    }

    fn line(&mut self, line: &str, held: bool) -> Result<(), QueueError> {
        self.pending.push_str(line);
        self.pending.push('\n');
        if held && self.pending.len() < HOLD_BYTES {
            return Ok(());
        }
        self.flush()
    }

    /// Writes the pending lines with one `write`. On failure they are dropped (as
    /// a line was before) and the file is opened afresh next time.
    fn flush(&mut self) -> Result<(), QueueError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = open_log(&self.path, &mut self.open).and_then(|f| {
            f.write_all(self.pending.as_bytes())
                .map_err(|e| QueueError::io("append to", &self.path, e))
        });
        self.pending.clear();
        if result.is_err() {
            self.open = None;
        }
        result
    }
}

/// The open log at `path`, opened (again) when there is none yet or the path names
/// another file than the one open (removed, rotated, replaced by hand).
fn open_log<'a>(path: &Path, open: &'a mut Option<OpenLog>) -> Result<&'a mut File, QueueError> {
    let current = match open {
        Some(o) if o.checked.elapsed() < RECHECK => true,
        Some(o) => {
            let same = std::fs::symlink_metadata(path)
                .is_ok_and(|m| m.is_file() && (m.dev(), m.ino()) == o.id);
            o.checked = Instant::now();
            same
        }
        None => false,
    };
    if !current {
        let file = open_or_replace(path)?;
        let m = file
            .metadata()
            .map_err(|e| QueueError::io("stat", path, e))?;
        *open = Some(OpenLog {
            file,
            id: (m.dev(), m.ino()),
            checked: Instant::now(),
        });
    }
    Ok(&mut open.as_mut().expect("opened above").file)
}

/// Opens a log for appending. A log that is not a regular file (a FIFO someone made
/// under its name) is renamed aside to `<name>.not-a-file` (a rename never opens
/// it, so nothing blocks) and a fresh log is opened: no decision is lost and nobody
/// waits on a reader that never comes.
fn open_or_replace(path: &Path) -> Result<File, QueueError> {
    let open = || fsio::open_regular(path, OpenOptions::new().create(true).append(true), "log");
    match open() {
        Err(QueueError::Invalid { reason, .. }) => {
            let aside = path.with_extension(format!(
                "{}.not-a-file",
                path.extension().and_then(|e| e.to_str()).unwrap_or("log")
            ));
            tracing::warn!(
                "{}: {reason}; moved aside to {}",
                path.display(),
                aside.display()
            );
            std::fs::rename(path, &aside).map_err(|e| QueueError::Io {
                op: "move aside",
                path: path.to_path_buf(),
                source: e,
            })?;
            open()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_lines_are_greppable_key_value() {
        let d = Decision::new("release")
            .kv("batch", "ab12")
            .kv("task", "transcribe[ep1]")
            .opt("worker", None::<String>)
            .kv("reason", "all 2 dependencies complete");
        assert_eq!(
            d.render(),
            "decision=release batch=ab12 task=transcribe[ep1] reason=\"all 2 dependencies complete\""
        );
        let quote = |v: &str| {
            let mut s = String::new();
            quote_into(&mut s, v);
            s
        };
        assert_eq!(quote("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a\\b\tc"), "\"a\\\\b c\"");
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn lines_arrive_at_once_unless_held_and_a_removed_log_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.logs_dir()).unwrap();
        let logs = Logs::new(&layout);
        logs.decision(&Decision::new("one")).unwrap();
        assert_eq!(lines(&layout.decisions_log()).len(), 1);
        {
            let other = logs.clone();
            let _hold = logs.hold();
            let _inner = other.hold();
            logs.decision(&Decision::new("two")).unwrap();
            logs.event("two", Default::default()).unwrap();
            assert_eq!(lines(&layout.decisions_log()).len(), 1, "held");
            assert!(lines(&layout.events_log()).is_empty(), "held");
        }
        assert_eq!(lines(&layout.decisions_log()).len(), 2);
        assert_eq!(lines(&layout.events_log()).len(), 1);
        // Removed by hand: a fresh log once the path is looked at again.
        std::fs::remove_file(layout.decisions_log()).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        logs.decision(&Decision::new("three")).unwrap();
        let now = lines(&layout.decisions_log());
        assert_eq!(now.len(), 1);
        assert!(now[0].ends_with("decision=three"), "{now:?}");
    }
}
