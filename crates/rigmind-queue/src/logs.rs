//! The two brain logs: `brain_decisions.log` for people, `events.jsonl` for programs.
//!
//! A decision line is `TIME decision=KIND key=value ... reason="..."`: one line per
//! decision, greppable by any key. Values with spaces or quotes are quoted.

use std::fmt::Write as _;
use std::path::PathBuf;

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
            let _ = write!(s, " {k}={}", quote(v));
        }
        s
    }
}

fn quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '=' && !c.is_control());
    if plain {
        v.to_string()
    } else {
        let escaped: String = v
            .chars()
            .flat_map(|c| match c {
                '"' => vec!['\\', '"'],
                '\\' => vec!['\\', '\\'],
                '\n' => vec!['\\', 'n'],
                c if c.is_control() => vec![' '],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// Appends decisions and events under a root.
#[derive(Debug, Clone)]
pub struct Logs {
    decisions: PathBuf,
    events: PathBuf,
}

impl Logs {
    pub fn new(layout: &Layout) -> Self {
        Self {
            decisions: layout.decisions_log(),
            events: layout.events_log(),
        }
    }

    /// Writes one decision line, stamped with the time.
    pub fn decision(&self, d: &Decision) -> Result<(), QueueError> {
        let line = format!("{} {}", crate::time::now_rfc3339(), d.render());
        append_or_replace(&self.decisions, &line)
    }

    /// Writes one event as a JSON line, with `ts` and `event` first.
    pub fn event(
        &self,
        event: &str,
        mut fields: serde_json::Map<String, Value>,
    ) -> Result<(), QueueError> {
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), Value::String(crate::time::now_rfc3339()));
        obj.insert("event".into(), Value::String(event.to_string()));
        obj.append(&mut fields);
        append_or_replace(&self.events, &Value::Object(obj).to_string())
    }
}

/// Appends a line to a log. A log that is not a regular file (a FIFO someone made
/// under its name) is renamed aside to `<name>.not-a-file` (a rename never opens
/// it, so nothing blocks) and the line goes into a fresh log: no decision is lost
/// and nobody waits on a reader that never comes.
fn append_or_replace(path: &std::path::Path, line: &str) -> Result<(), QueueError> {
    match fsio::append_line(path, line) {
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
            fsio::append_line(path, line)
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
        assert_eq!(quote("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
        assert_eq!(quote(""), "\"\"");
    }
}
